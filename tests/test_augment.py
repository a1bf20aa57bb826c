"""Training augmentation: real-world variation without changing what the label means."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def samples():
    tf = pytest.importorskip("tensorflow", reason="training needs the 'train' extra")
    from batchmask.training import INPUT_SIZE, _augment

    tf.random.set_seed(0)  # the same draws every run
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    ds = tf.data.Dataset.from_tensors((crop, 0)).repeat(160).map(_augment(tf, 128, INPUT_SIZE, 1.10 / 1.3))
    return crop, np.stack([img.numpy() for img, _ in ds])


def test_augmented_crops_keep_shape_and_range_and_vary(samples):
    crop, out = samples
    assert out.shape == (160, 96, 96, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    means = out.mean(axis=(1, 2, 3))
    assert len(np.unique(np.round(means, 3))) > 150
    # light varies both ways: darker (low light) and brighter (backlight) than the source
    assert means.min() < 0.75 * crop.mean() and means.max() > 1.2 * crop.mean()
    # some are blurred or low-resolution: much less pixel-to-pixel change than the noise source
    detail = np.abs(np.diff(out, axis=2)).mean(axis=(1, 2, 3))
    assert (detail < 0.5 * np.median(detail)).sum() >= 10


def test_occlusion_covers_a_side_never_the_mouth(samples):
    _, out = samples
    flat_columns = (out.std(axis=1) < 1e-3).all(axis=-1)  # (n, width): a constant column
    assert (flat_columns[:, :10].all(1) | flat_columns[:, -10:].all(1)).sum() >= 3
    mouth = out[:, 55:90, 30:66]
    assert (mouth.reshape(len(out), -1, 3).std(axis=1) > 1).any(1).all()
