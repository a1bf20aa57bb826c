"""RetinaFace (MobileNet-0.25) face detector on ONNX Runtime, with its scale policy.

The network sees each photo at a few sizes (`scales`, long side in pixels); the
detections of all passes are merged with OpenCV's NMS. Small faces in crowd
photos need an upscaled pass, large close-ups a downscaled one: the default was
chosen by measuring recall per face-size bucket (see README, "Detector").

The upscaled passes are a cascade: the pass at the smallest size runs first with
a low score threshold, and the larger passes look only at the region around its
small, uncertain candidates (the whole photo when it found no face at all). A
selfie then costs one small pass, a crowd photo one small pass plus the part of
the photo where the crowd is.

Before any pass, a greyscale photo is tinted to a skin-like hue and a washed-out one is
stretched to more contrast: RetinaFace loses faces on both (`grey_tint`, `min_contrast`).
Only the detector sees these changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .faces import Faces

MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)
_MEAN_BGR_LIST = MEAN_BGR.tolist()  # blobFromImage with swapRB takes the mean in the order after the swap
_MEAN_RGB = MEAN_BGR[::-1].tolist()
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCE = (0.1, 0.2)
PAD_TO = 64


@dataclass(frozen=True)
class DetectorConfig:
    """Scales are target long sides in pixels; 0 means the photo's own size."""

    scales: tuple[int, ...] = (0, 960)
    max_upscale: float = 3.0
    # in an upscaled pass, keep only faces at most this wide in the network's input;
    # larger faces come from the pass at the smallest size, which sees them best
    max_face_upscaled: float = 160.0
    score_threshold: float = 0.5
    # cascade: base-pass candidates scoring at least `refine_score` and at most
    # `refine_max_face` px wide (in the base pass's input) are looked at again, upscaled,
    # within `refine_margin` px (or 1.5 face widths) around them; None: full upscaled passes
    refine_score: float | None = 0.05
    refine_max_face: float = 48.0
    refine_margin: float = 32.0
    # RetinaFace's largest anchors are 512 px: a face much wider than that in a pass's input
    # splits into several high-scoring boxes on its parts (a phone close-up at 960 px). When
    # the smallest pass finds a face at least `large_face` px wide in its input (or no face), a pass with
    # the long side at `large_side` px finds the large faces, and boxes lying at least
    # half inside one of them are dropped as its parts; None: no such pass
    large_face: float | None = 256.0
    large_side: int = 448
    # boxes of different passes on one face (one on the eyes and mask, one on the forehead and
    # eyes) overlap at IoU 0.3-0.4; two annotated Kaggle faces overlap that much only twice in
    # 4,072, so 0.3 merges the first and keeps the second (tuning photos: false detections
    # 0.48 -> 0.44 per photo, recall unchanged; README, "Detector")
    nms_iou: float = 0.3
    # a box lying at least this much (share of its area) inside a larger box is a part of that
    # face (a mouth, a masked chin), not another face; None keeps them
    contained: float | None = 0.8
    # narrower faces are dropped: the classifier cannot judge a mask there, and on the first
    # 300 Kaggle photos 8-12 px boxes were mostly false detections (bench note in README)
    min_face: float = 12.0
    # faces narrower than `small_face` px must score at least `small_face_score`: most
    # false detections are small (and mostly real faces nobody annotated), and a small,
    # uncertain box is the one a reviewer cannot check either; chosen on the tuning photos
    # (README, "Detector"): false detections -33 %, recall (>= 16 px) -1.7 points
    small_face: float = 32.0
    small_face_score: float = 0.7
    max_side: int = 1600
    # RetinaFace leans on skin hue: on greyscale photos (night and CCTV cameras, black-and-white
    # prints) it found 0.84 of the faces >= 16 px of the Kaggle tuning photos instead of 0.91.
    # A photo with (almost) no colour is tinted with these channel gains (luminance kept) for
    # the detector only, which gives 0.91 again (README, "Detector"); None: off
    grey_tint: tuple[float, float, float] | None = (1.0, 0.8, 0.65)
    # washed-out photos (haze, flare, a window between camera and people) lose faces too: at
    # half contrast, recall >= 16 px fell from 0.91 to 0.86. A photo whose luminance spreads
    # over fewer levels than this (1st to 99th percentile) is stretched to it around mid-grey,
    # for the detector only (README, "Detector"); None: off
    min_contrast: float | None = 200.0
    # reported boxes follow how people draw faces (forehead to chin), not RetinaFace's
    # tighter boxes: width/height factors and centre shifts in units of the box,
    # measured by bench/box_geometry.py on the tuning photos; crops for the classifier
    # use the raw boxes
    box_scale: tuple[float, float] = (1.05, 0.90)
    box_shift: tuple[float, float] = (0.0, 0.12)


# `--fast`: one pass at the photo's own size (long side at most 1,000 px, so a 12 MP JPEG is
# decoded at a quarter of its size), no upscaled look for small faces; the close-up pass
# (`large_face`) stays. About twice the photos per second; faces under 32 px are found less
# often (README, "Fast mode").
FAST = DetectorConfig(scales=(0,), max_side=1000, refine_score=None)


def detector_config(fast: bool = False) -> DetectorConfig:
    return FAST if fast else DetectorConfig()


@lru_cache(maxsize=64)
def _anchors(height: int, width: int) -> np.ndarray:
    """Anchor centres and sizes (cx, cy, w, h) in pixels, in the network's output order."""
    out = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centres = np.stack([(xs.ravel() + 0.5) * stride, (ys.ravel() + 0.5) * stride], 1)
        for_sizes = [np.hstack([centres, np.full((len(centres), 2), s, np.float32)]) for s in sizes]
        out.append(np.stack(for_sizes, 1).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


class RetinaFace:
    def __init__(self, model_path: str, config: DetectorConfig | None = None, threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # a memory pattern is planned and kept for every input shape, and photos come in many
        # shapes: with it, a worker's peak RSS kept growing (423 MB after 60 12-MP photos, 325 MB
        # without, and no slower; README, "Benchmarks")
        opts.enable_mem_pattern = False
        self.session = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
        self.config = config or DetectorConfig()

    def plan(self, height: int, width: int) -> list[float]:
        """Resize factors for one photo: each scale's long side, capped in both directions."""
        cfg = self.config
        long_side = max(height, width)
        factors = []
        for target in cfg.scales:
            f = 1.0 if target == 0 else target / long_side
            f = min(f, cfg.max_upscale, cfg.max_side / long_side)
            if not any(abs(f - g) < 0.05 * g for g in factors):
                factors.append(f)
        return factors

    def detect(self, rgb: np.ndarray, pad: int = 0) -> Faces:
        """Faces in an RGB uint8 image (H×W×3), boxes in that image's pixels. `pad` px of the
        mean colour are added around it first (tight face crops: the face reaches the edges);
        boxes may then reach outside the image."""
        cfg = self.config
        sample = _grid(rgb)
        grey = cfg.grey_tint is not None and is_greyscale(sample)
        if cfg.min_contrast is not None:
            lo, hi = luminance_range(sample)
            if 1 <= hi - lo < cfg.min_contrast:
                rgb = stretched(rgb, lo, hi, cfg.min_contrast)
        if grey:
            rgb = tinted(rgb, cfg.grey_tint)
        if pad:
            rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=_MEAN_RGB)
            return self._detect(rgb).shifted(-pad, -pad)
        return self._detect(rgb)

    def _detect(self, rgb: np.ndarray) -> Faces:
        cfg = self.config
        h, w = rgb.shape[:2]
        factors = self.plan(h, w)
        base = min(factors)
        low = cfg.score_threshold if cfg.refine_score is None else min(cfg.refine_score, cfg.score_threshold)
        candidates = self._detect_once(rgb, base, low)
        found = candidates[candidates.det_scores >= cfg.score_threshold]
        parts = [found]
        region = None if cfg.refine_score is None else self._refine_region(candidates, found, base, h, w)
        for f in factors:
            if f == base or region == (0, 0, 0, 0):
                continue
            more = self._detect_region(rgb, f, region)
            parts.append(more[more.widths * f <= cfg.max_face_upscaled])
        faces = Faces.concat(parts)
        large = self._large_faces(rgb, found, base)
        if len(large):
            faces = Faces.concat([faces[~_inside_any(faces.boxes, large.boxes, 0.5)], large])
        if len(faces) == 0:
            return faces
        boxes = faces.boxes
        xywh = np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
        keep = cv2.dnn.NMSBoxes(xywh.tolist(), faces.det_scores.tolist(), 0.0, cfg.nms_iou)
        keep = np.asarray(keep, int).reshape(-1)
        faces = faces[keep]
        faces.boxes[:, [0, 2]] = faces.boxes[:, [0, 2]].clip(0, w)
        faces.boxes[:, [1, 3]] = faces.boxes[:, [1, 3]].clip(0, h)
        faces = faces[(faces.widths >= cfg.min_face) & ((faces.widths >= cfg.small_face) | (faces.det_scores >= cfg.small_face_score))]
        if cfg.contained is not None:
            faces = faces[~_inside_larger(faces.boxes, cfg.contained)]
        order = np.lexsort((faces.boxes[:, 0], faces.boxes[:, 1]))
        return faces[order]

    def _large_faces(self, rgb: np.ndarray, found: Faces, base: float) -> Faces:
        """Faces at least `large_face` px wide in the smallest pass, seen again in a downscaled pass."""
        cfg = self.config
        long_side = max(rgb.shape[:2])
        factor = cfg.large_side / long_side
        if cfg.large_face is None or factor > 0.8 * base:
            return Faces()  # not much smaller than the smallest pass: it would see the same
        if len(found) and not (found.widths * base >= cfg.large_face).any():
            return Faces()  # a photo with no face at all may be one face too large to see
        faces = self._detect_once(rgb, factor, cfg.score_threshold)
        return faces[faces.widths * base >= cfg.large_face]

    def _refine_region(self, candidates: Faces, found: Faces, base: float, h: int, w: int) -> tuple[int, int, int, int] | None:
        """Where the upscaled passes look: None for the whole photo, an empty box for nowhere."""
        cfg = self.config
        if len(found) == 0:
            return None  # nothing at the base size: small faces may be anywhere
        small = candidates[(candidates.det_scores >= cfg.refine_score) & (candidates.widths * base <= cfg.refine_max_face)]
        if len(small) == 0:
            return (0, 0, 0, 0)
        margin = np.maximum(cfg.refine_margin / base, 1.5 * small.widths)[:, None]
        lo = (small.boxes[:, :2] - margin).min(0)
        hi = (small.boxes[:, 2:] + margin).max(0)
        x1, y1 = max(0, int(lo[0])), max(0, int(lo[1]))
        x2, y2 = min(w, int(math.ceil(hi[0]))), min(h, int(math.ceil(hi[1])))
        if x2 - x1 < 2 or y2 - y1 < 2:
            return (0, 0, 0, 0)
        if (x2 - x1) * (y2 - y1) >= 0.8 * w * h:
            return None
        return (x1, y1, x2, y2)

    def _detect_region(self, rgb: np.ndarray, factor: float, region: tuple[int, int, int, int] | None) -> Faces:
        """One pass over `region` of the photo (None: all of it); faces cut by an inner edge of the region are dropped."""
        if region is None:
            return self._detect_once(rgb, factor, self.config.score_threshold)
        x1, y1, x2, y2 = region
        h, w = rgb.shape[:2]
        faces = self._detect_once(rgb[y1:y2, x1:x2], factor, self.config.score_threshold)
        if len(faces) == 0:
            return faces
        faces = faces.shifted(x1, y1)
        b, edge = faces.boxes, 2.0 / factor
        cut = ((x1 > 0) & (b[:, 0] <= x1 + edge)) | ((y1 > 0) & (b[:, 1] <= y1 + edge))
        cut |= ((x2 < w) & (b[:, 2] >= x2 - edge)) | ((y2 < h) & (b[:, 3] >= y2 - edge))
        return faces[~cut]

    def reported(self, faces: Faces, height: int, width: int) -> Faces:
        """Faces with boxes converted to the annotation convention (see `box_scale`)."""
        if len(faces) == 0:
            return faces
        b = faces.boxes
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        sx, sy = self.config.box_scale
        dx, dy = self.config.box_shift
        cx, cy = (b[:, 0] + b[:, 2]) / 2 + dx * w, (b[:, 1] + b[:, 3]) / 2 + dy * h
        boxes = np.stack([cx - w * sx / 2, cy - h * sy / 2, cx + w * sx / 2, cy + h * sy / 2], 1)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        order = np.lexsort((boxes[:, 0], boxes[:, 1]))  # the `face` index: by top edge, then left edge, as reported
        return Faces(boxes, faces.det_scores, faces.landmarks, faces.mask_scores, faces.incorrect_scores)[order]

    def _detect_once(self, rgb: np.ndarray, factor: float, threshold: float) -> Faces:
        h, w = rgb.shape[:2]
        nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
        interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
        img = rgb if (nh, nw) == (h, w) else cv2.resize(rgb, (nw, nh), interpolation=interp)
        ph, pw = -(-nh // PAD_TO) * PAD_TO, -(-nw // PAD_TO) * PAD_TO
        # pad with the mean colour (0 after subtraction), then BGR, minus mean, NCHW in one C++ call
        padded = cv2.copyMakeBorder(img, 0, ph - nh, 0, pw - nw, cv2.BORDER_CONSTANT, value=_MEAN_RGB)
        blob = cv2.dnn.blobFromImage(padded, 1.0, None, _MEAN_BGR_LIST, swapRB=True, crop=False)
        loc, conf, landm = self.session.run(None, {"input": blob})
        scores = conf[0, :, 1]
        idx = np.flatnonzero(scores >= threshold)
        if len(idx) == 0:
            return Faces()
        a = _anchors(ph, pw)[idx]
        loc, landm = loc[0, idx], landm[0, idx]
        centre = a[:, :2] + loc[:, :2] * VARIANCE[0] * a[:, 2:]
        size = a[:, 2:] * np.exp(loc[:, 2:] * VARIANCE[1])
        boxes = np.hstack([centre - size / 2, centre + size / 2])
        pts = a[:, None, :2] + landm.reshape(-1, 5, 2) * VARIANCE[0] * a[:, None, 2:]
        sx, sy = w / nw, h / nh
        return Faces(boxes, scores[idx], pts).scaled(sx, sy)


def _grid(rgb: np.ndarray, points: int = 20000) -> np.ndarray:
    """About `points` pixels of the photo on a regular grid: enough to judge its colour and contrast."""
    step = max(1, int(math.sqrt(rgb.shape[0] * rgb.shape[1] / points)))
    return np.ascontiguousarray(rgb[::step, ::step])


def luminance_range(rgb: np.ndarray, share: float = 0.01) -> tuple[int, int]:
    """The luminance levels below which `share` and above which `share` of the pixels lie."""
    counts = np.bincount(cv2.cvtColor(_grid(rgb), cv2.COLOR_RGB2GRAY).ravel(), minlength=256).cumsum()
    return int(np.searchsorted(counts, share * counts[-1])), int(np.searchsorted(counts, (1 - share) * counts[-1]))


def stretched(rgb: np.ndarray, lo: int, hi: int, spread: float) -> np.ndarray:
    """RGB with luminance levels lo..hi mapped linearly onto `spread` levels centred on mid-grey."""
    gain = spread / (hi - lo)
    return cv2.convertScaleAbs(rgb, alpha=gain, beta=127.5 - spread / 2 - lo * gain)


def is_greyscale(rgb: np.ndarray, tolerance: int = 12, share: float = 0.01) -> bool:
    """Whether fewer than `share` of the pixels (a grid of about 20,000) differ between
    channels by more than `tolerance`: JPEG noise and a coloured timestamp do not count."""
    r, g, b = cv2.split(_grid(rgb))
    spread = cv2.max(cv2.absdiff(r, g), cv2.absdiff(g, b))
    return np.count_nonzero(spread > tolerance) < share * spread.size


def tinted(rgb: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    """RGB with each channel scaled by `gains`, normalised so that luminance stays the same."""
    g = np.asarray(gains, np.float64)
    g = g / (0.299 * g[0] + 0.587 * g[1] + 0.114 * g[2])
    return cv2.transform(rgb, np.diag(g)).astype(np.uint8)


def _share_inside(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """[i, j]: the share of box i's area that lies inside box j."""
    tl = np.maximum(boxes[:, None, :2], others[None, :, :2])
    br = np.minimum(boxes[:, None, 2:], others[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    return inter / np.maximum(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1), 1e-6)[:, None]


def _inside_any(boxes: np.ndarray, others: np.ndarray, share: float) -> np.ndarray:
    """True for each box with at least `share` of its area inside one of `others`."""
    return (_share_inside(boxes, others) >= share).any(1)


def _inside_larger(boxes: np.ndarray, share: float) -> np.ndarray:
    """True for each box with at least `share` of its area inside a larger box."""
    if len(boxes) < 2:
        return np.zeros(len(boxes), bool)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return ((_share_inside(boxes, boxes) >= share) & (area[None, :] > area[:, None])).any(1)
