import numpy as np

from batchmask.evaluation.matching import iou_matrix, match, size_bucket


def test_iou_of_identical_disjoint_and_half_overlapping_boxes():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 0, 15, 10]])
    np.testing.assert_allclose(iou_matrix(a, b)[0], [1.0, 0.0, 1 / 3])


def test_match_is_one_to_one_highest_score_first():
    gt = np.array([[0, 0, 10, 10]])
    preds = np.array([[0, 0, 10, 9], [0, 0, 10, 10]])
    # the higher-scored prediction takes the box even though the other overlaps it as well
    assert match(preds, [0.9, 0.6], gt).tolist() == [0, -1]
    assert match(preds, [0.6, 0.9], gt).tolist() == [-1, 0]


def test_match_requires_iou_strictly_above_threshold():
    gt = np.array([[0, 0, 10, 10]])
    assert match(np.array([[5, 0, 15, 10]]), [1.0], gt).tolist() == [-1]
    assert match(np.zeros((0, 4)), [], gt).tolist() == []


def test_size_buckets():
    assert [size_bucket(w) for w in (3, 16, 31.9, 64, 500)] == ["<16", "16-32", "16-32", "64-128", ">=128"]
