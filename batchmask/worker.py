"""The per-photo work, run inside engine processes: decode -> detect -> classify -> annotate.

Each worker process builds one `Worker` (models loaded once) from a picklable
`WorkerConfig`, then handles batches of `(path, relpath)` tasks. Results are
small dicts (boxes and scores, never pixels) sent back to the driver.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .annotate import annotate
from .classifier import MaskClassifier, crop_faces
from .detector import DetectorConfig, RetinaFace
from .faces import Faces
from .images import DEFAULT_MAX_PIXELS, EXTENSIONS, ImageError, load_image
from .storage import UnsafePathError, atomic_write_bytes, safe_join

ANNOTATED_DIR = "annotated"
_NAME_ERRORS = (errno.ENAMETOOLONG, errno.EEXIST, errno.ENOTDIR, errno.EISDIR)
_KEEP_EXT = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class WorkerConfig:
    detector_path: str
    classifier_dir: str | None = None
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    threshold: float | None = None  # None: the model's own threshold
    labels: int = 3  # 2: `incorrect` folds into `unmasked`
    annotate_root: str | None = None  # OUTPUT/annotated, or None for --no-annotate
    crops_root: str | None = None  # data build: where face crops are written
    crop_size: int = 128
    crop_margin: float = 1.3
    crop_largest_only: bool = False
    crop_pad: float = 0.0  # pad by this share of the side before detecting (tight crops)
    crop_fallback_side: int = 0  # no face found in a photo this small: use the whole photo
    max_pixels: int = DEFAULT_MAX_PIXELS
    threads: int = 1
    timeout: float | None = None  # seconds per photo


def annotated_name(rel: str) -> str:
    """Annotated copies keep the input's name; formats not worth re-encoding get `.png`
    appended (`x.gif` -> `x.gif.png`). A PNG already named like such a copy (`x.gif.png`,
    `x.gif.png.png`, ...) gets one `.png` more, so two inputs never share a copy."""
    if os.path.splitext(rel)[1].lower() not in _KEEP_EXT:
        return rel + ".png"
    stem = rel
    while stem.lower().endswith(".png"):
        stem = stem[:-4]
    if stem != rel and os.path.splitext(stem)[1].lower() in EXTENSIONS - _KEEP_EXT:
        return rel + ".png"
    return rel


class PhotoTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so no `except Exception` on the way swallows it."""


def _on_alarm(signum, frame):
    raise PhotoTimeout()


class Worker:
    def __init__(self, config: WorkerConfig):
        self.config = config
        if config.timeout and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGALRM, _on_alarm)
        cv2.setNumThreads(1)
        self.detector = RetinaFace(config.detector_path, config.detector, threads=config.threads)
        self.classifier = MaskClassifier(config.classifier_dir, config.threads) if config.classifier_dir else None
        if self.classifier is not None and config.threshold is None:
            self.threshold = self.classifier.threshold
        else:
            self.threshold = 0.5 if config.threshold is None else config.threshold

    def detect(self, rgb: np.ndarray) -> Faces:
        """Classified faces with boxes in the reported (annotation) convention."""
        return self.detector.reported(self.detect_raw(rgb), *rgb.shape[:2])

    def detect_raw(self, rgb: np.ndarray) -> Faces:
        """Classified faces with the detector's own boxes (what the classifier crops from)."""
        faces = self.detector.detect(rgb, pad=int(round(self.config.crop_pad * max(rgb.shape[:2]))))
        h, w = rgb.shape[:2]
        if len(faces) == 0 and max(h, w) <= self.config.crop_fallback_side:
            faces = Faces([[0, 0, w, h]], [0.0], np.zeros((1, 5, 2)))
        if self.classifier is not None and len(faces):
            faces.set_probabilities(self.classifier.predict(rgb, faces.boxes))
        return faces

    def handle(self, tasks: list[tuple]) -> list[dict]:
        """Tasks are (path, relpath) or, for data build, (path, relpath, mask spec)."""
        return [self.handle_one(*task) for task in tasks]

    def handle_one(self, path: str, rel: str, mask: dict | None = None) -> dict:
        t0 = time.perf_counter()
        result = {"image": rel, "status": "ok", "error": "", "width": 0, "height": 0, "pid": os.getpid()}
        timer = bool(self.config.timeout) and threading.current_thread() is threading.main_thread()
        try:
            if timer:
                # soft limit: raised at the next Python step; the engine kills a worker stuck in C code
                signal.setitimer(signal.ITIMER_REAL, self.config.timeout)
            img = load_image(path, self.config.max_pixels, target_side=self.config.detector.max_side)
            result["width"], result["height"] = img.width, img.height
            result["taken"], result["camera"] = img.taken, img.camera
            raw = self.detect_raw(img.pixels)
            faces = self.detector.reported(raw, *img.pixels.shape[:2])
            labels = faces.labels(self.threshold, self.config.labels)
            if self.config.annotate_root:
                try:
                    self._write_annotated(rel, img.pixels, faces, labels)
                except OSError as e:  # the photo is fine, its copy's name is not (too long, a folder already there)
                    if e.errno not in _NAME_ERRORS:
                        raise
                    result["error"] = f"annotated copy not written: {e.strerror or e}"
            if self.config.crops_root:
                result["crops"] = self._write_crops(rel, img.pixels, raw, mask)
            full = faces.scaled(img.scale, img.height / img.pixels.shape[0])
            result["faces"] = {
                "boxes": np.round(full.boxes.astype(np.float64), 1).tolist(),
                "det_scores": np.round(full.det_scores.astype(np.float64), 4).tolist(),
                "landmarks": np.round(full.landmarks.astype(np.float64), 1).tolist(),
                "mask_scores": _rounded(full.mask_scores),
                "incorrect_scores": _rounded(full.incorrect_scores),
                "labels": labels if self.classifier is not None else [],
            }
        except PhotoTimeout:
            result = {**result, "status": "error", "error": f"timed out after {self.config.timeout:g} s", "faces": None, "crops": None}
        except ImageError as e:
            result.update(status="error", error=str(e))
        except UnsafePathError as e:
            result.update(status="error", error=str(e))
        except OSError as e:
            result.update(status="error", error=f"I/O error: {e.strerror or e}", disk_full=e.errno == errno.ENOSPC)
        except Exception as e:  # a bug or a decoder failure must not end the run
            tb = traceback.extract_tb(e.__traceback__)[-1]
            result.update(status="error", error=f"internal error: {type(e).__name__}: {e} ({Path(tb.filename).name}:{tb.lineno})")
        finally:
            if timer:
                signal.setitimer(signal.ITIMER_REAL, 0)
        result["ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return result

    def _write_annotated(self, rel: str, rgb: np.ndarray, faces: Faces, labels: list[str]) -> None:
        remote = "://" in self.config.annotate_root
        if remote:
            from .remote import join, write_bytes

            target = Path(annotated_name(rel))
        else:
            target = safe_join(self.config.annotate_root, annotated_name(rel))
        drawn = annotate(rgb, faces, labels)
        ext = target.suffix.lower()
        params = [cv2.IMWRITE_JPEG_QUALITY, 90] if ext in (".jpg", ".jpeg") else []
        # cvtColor, not drawn[:, :, ::-1]: OpenCV copies a reversed-stride view pixel by pixel first
        # (about 20 ms on a 2,000 px copy, as long as the encoding itself)
        ok, buf = cv2.imencode(ext if ext in _KEEP_EXT else ".png", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise OSError(f"could not encode annotated image as {ext}")
        if remote:
            write_bytes(join(self.config.annotate_root, annotated_name(rel)), buf.tobytes())
        else:
            atomic_write_bytes(target, buf.tobytes(), durable=False)

    def _write_crops(self, rel: str, rgb: np.ndarray, faces: Faces, mask: dict | None) -> list[dict]:
        if len(faces) == 0:
            return []
        idx = np.arange(len(faces))
        if self.config.crop_largest_only:
            idx = [int(np.argmax(faces.widths * faces.det_scores))]
        if mask is not None:
            if faces.det_scores[idx[0]] <= 0:
                return []  # no landmarks to place a mask on (whole-photo fallback)
            from .datasets.masks import draw_mask

            rgb = draw_mask(rgb, faces.landmarks[idx[0]], mask["style"], mask["wear"], np.random.default_rng(mask["seed"]))
        crops = crop_faces(rgb, faces.boxes[idx], self.config.crop_size, self.config.crop_margin, fit_inside=True)
        written = []
        for k, (i, crop) in enumerate(zip(idx, crops)):
            name = crop_name(rel, k)
            target = safe_join(self.config.crops_root, name)
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            atomic_write_bytes(target, buf.tobytes(), durable=False)
            written.append({"crop": name, "width": float(faces.widths[i]), "det_score": float(faces.det_scores[i])})
        return written


def crop_name(rel: str, k: int = 0) -> str:
    """The file a data build writes for face k of the photo whose crops go to `rel`."""
    return f"{rel}.face{k}.jpg"


def _rounded(scores: np.ndarray) -> list:
    return [None if np.isnan(s) else round(float(s), 4) for s in scores.astype(np.float64)]


_WORKER: Worker | None = None


def _exit_with_parent(parent: int) -> None:
    """A worker whose driver died (SIGKILL, OOM) must not keep running as an orphan."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def init_worker(config: WorkerConfig, driver: int | None = None) -> None:
    """Process-pool initializer: load the models once per process. `driver` is the driver's pid,
    given by the driver itself: a driver killed before this runs leaves getppid() already 1."""
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle: it drains and commits
    threading.Thread(target=_exit_with_parent, args=(driver or os.getppid(),), daemon=True).start()
    _WORKER = Worker(config)


def run_tasks(tasks: list[tuple]) -> list[dict]:
    assert _WORKER is not None, "init_worker was not called in this process"
    return _WORKER.handle(tasks)
