"""Annotated copies: every face keeps a readable label, wherever and however large it is."""

import numpy as np

from batchmask.annotate import COLOURS, annotate
from batchmask.faces import Faces


def faces(boxes, mask_score):
    n = len(boxes)
    return Faces(np.asarray(boxes, np.float32), np.full(n, 0.9), np.zeros((n, 5, 2)), np.full(n, mask_score), np.zeros(n))


def label_pixels(drawn, colour, rows=slice(None)):
    return int(np.all(drawn[rows] == colour, axis=2).sum())


def test_a_face_filling_the_photo_keeps_its_label_inside_the_photo():
    grey = np.full((240, 240, 3), 128, np.uint8)
    for box in ([20, 30, 230, 239], [0, 0, 240, 240], [5, 200, 60, 240]):  # large, whole photo, at the bottom edge
        drawn = annotate(grey, faces([box], 0.95), ["masked"])
        assert label_pixels(drawn, COLOURS["masked"]) > 300, box  # a filled label, not only the box outline


def test_labels_in_a_crowd_do_not_cover_each_other():
    grey = np.full((300, 400, 3), 128, np.uint8)
    boxes = [[x, y, x + 18, y + 20] for y in range(40, 260, 36) for x in range(10, 380, 30)]
    drawn = annotate(grey, faces(boxes, 0.1), ["unmasked"] * len(boxes))
    alone = sum(label_pixels(annotate(grey, faces([b], 0.1), ["unmasked"]), COLOURS["unmasked"]) for b in boxes[:3]) / 3
    # short labels ("U 0.90") for faces this small, most of them placed where no other label is
    assert label_pixels(drawn, COLOURS["unmasked"]) > 0.6 * alone * len(boxes)


def test_labels_do_not_hide_other_faces_where_there_is_room():
    """Two rows of faces, close together: the lower row's labels go below its faces, not over the row above."""
    grey = np.full((220, 300, 3), 128, np.uint8)
    boxes = [[x, y, x + 40, y + 40] for y in (40, 84) for x in (10, 110, 210)]
    drawn = annotate(grey, faces(boxes, 0.1), ["unmasked"] * len(boxes))
    fill = np.all(drawn == COLOURS["unmasked"], axis=2)
    inside = sum(int(fill[y1 + 3:y2 - 3, x1 + 3:x2 - 3].sum()) for x1, y1, x2, y2 in boxes)
    assert inside == 0
    assert label_pixels(drawn, COLOURS["unmasked"]) > 6 * 150  # every face still has its label


def test_labels_carry_the_face_index_when_a_photo_has_several_faces():
    """`#i` is the face's index in faces.csv: a photo with two faces gets wider labels than
    the same faces unnumbered; a photo with one face is not numbered."""
    grey = np.full((200, 400, 3), 128, np.uint8)
    two = faces([[20, 60, 140, 180], [220, 60, 340, 180]], 0.95)
    numbered = label_pixels(annotate(grey, two, ["masked"] * 2), COLOURS["masked"])
    plain = label_pixels(annotate(grey, two, ["masked"] * 2, numbered=False), COLOURS["masked"])
    assert numbered > plain * 1.1
    one = faces([[20, 60, 140, 180]], 0.95)
    assert label_pixels(annotate(grey, one, ["masked"]), COLOURS["masked"]) == label_pixels(annotate(grey, one, ["masked"], numbered=False), COLOURS["masked"])
