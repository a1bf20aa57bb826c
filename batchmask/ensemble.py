"""Several trained classifiers averaged into one ONNX model (an ensemble).

Classifiers trained differently (MobileNetV3 from scratch, the FER network's
pretrained layers) make different mistakes on real photos; the mean of their
probabilities is measurably better than either (README, "Classifier"). The members
are merged into a single graph (shared input, ONNX `Mean` of the softmax outputs),
so the runtime stays what it was: one file, one checksum, one session per worker.
Needs the `onnx` package (the `train` extra); inference does not.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from .classifier import CLASSES
from .models import verified_model
from .onnx_rewrite import fuse_hard_activations
from .storage import atomic_write_json

INPUT = "input"
OUTPUT = "probabilities"


class EnsembleError(ValueError):
    """Members that cannot be averaged together (too few, other labels or input sizes): a usage error,
    unlike a corrupt member (`ModelError`)."""


def combine(members: list[Path], out: Path) -> dict:
    """Write OUT/model.onnx averaging the members' probabilities, and its model.json; returns the metadata."""
    import onnx
    import onnx.version_converter
    from onnx import compose, helper

    if len(members) < 2:
        raise EnsembleError("an ensemble needs at least two models")
    metas, models = [], []
    for folder in members:
        path, meta = verified_model(Path(folder))
        if meta.get("kind") != "classifier" or meta.get("labels") != list(CLASSES):
            raise EnsembleError(f"{folder}: not a three-label batchmask classifier (labels {meta.get('labels')})")
        twin = next((members[i] for i, m in enumerate(metas) if m.get("sha256") == meta.get("sha256")), None)
        if twin is not None:
            raise EnsembleError(f"{folder} holds the same model as {twin} (same checksum): an ensemble averages different models")
        if metas and meta.get("input_size") != metas[0].get("input_size"):
            raise EnsembleError(f"{folder}: input size {meta.get('input_size')} differs from {members[0]}'s {metas[0].get('input_size')}")
        model = onnx.load(str(path))
        if len(model.graph.input) != 1 or len(model.graph.output) != 1:
            raise EnsembleError(f"{path}: expected one input and one output")
        metas.append(meta)
        models.append(model)

    # one graph has one opset: members exported at an older one are converted up to the newest
    def default_opset(m):
        return max((op.version for op in m.opset_import if op.domain in ("", "ai.onnx")), default=0)

    target = max(default_opset(m) for m in models)
    models = [m if default_opset(m) == target else onnx.version_converter.convert_version(m, target) for m in models]
    for model in models:
        fuse_hard_activations(model)  # members exported before the rewrite existed get it too
    graphs, opsets, ir = [], {}, 0
    for i, model in enumerate(models):
        model = compose.add_prefix(model, f"m{i}_")
        graphs.append(model.graph)
        ir = max(ir, model.ir_version)
        for op in model.opset_import:
            opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)

    first_input = graphs[0].input[0]
    graph_input = helper.make_tensor_value_info(INPUT, first_input.type.tensor_type.elem_type,
                                                [d.dim_value or d.dim_param or None for d in first_input.type.tensor_type.shape.dim])
    nodes, initializers = [], []
    for g in graphs:
        nodes.append(helper.make_node("Identity", [INPUT], [g.input[0].name]))
        nodes.extend(g.node)
        initializers.extend(g.initializer)
    nodes.append(helper.make_node("Mean", [g.output[0].name for g in graphs], [OUTPUT]))
    graph_output = helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, [None, len(CLASSES)])
    graph = helper.make_graph(nodes, "batchmask_ensemble", [graph_input], [graph_output], initializers)
    merged = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())])
    merged.ir_version = ir
    onnx.checker.check_model(merged)

    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.onnx.tmp"
    onnx.save(merged, str(tmp))
    tmp.replace(out / "model.onnx")
    digest = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    for stale in out.glob("training_curves_*.png"):  # an earlier ensemble's members
        stale.unlink()
    for i, folder in enumerate(members):
        curves = Path(folder) / "training_curves.png"
        if curves.is_file():
            shutil.copyfile(curves, out / f"training_curves_{i + 1}.png")
        for nested in sorted(Path(folder).glob("training_curves_*.png")):  # a member that is an ensemble itself
            shutil.copyfile(nested, out / f"training_curves_{i + 1}.{nested.stem.rsplit('_', 1)[1]}.png")
    head = metas[0]
    meta = {
        "name": "mask-classifier-ensemble",
        "kind": "classifier",
        "file": "model.onnx",
        "sha256": digest,
        "input_size": head["input_size"],
        "input": head.get("input", "NHWC float32 RGB 0..255"),
        "crop_margin": head.get("crop_margin"),
        "crop_levels": head.get("crop_levels"),
        "labels": list(CLASSES),
        "output": f"mean of {len(members)} members' softmax: P(masked), P(incorrect), P(unmasked)",
        "decision": head.get("decision", "masked if P(masked) >= threshold, else the likelier of incorrect and unmasked"),
        "threshold": round(sum(m.get("threshold", 0.5) for m in metas) / len(metas), 2),
        "members": [
            {"name": m.get("name"), "from": str(folder), "sha256": m["sha256"], "training": _brief(m.get("training", {})),
             "test_metrics": m.get("metrics", {}).get("test"), "curves": f"training_curves_{i + 1}.png"}
            for i, (m, folder) in enumerate(zip(metas, members))
        ],
    }
    atomic_write_json(out / "model.json", meta)
    return meta


def _brief(training: dict) -> dict:
    keep = ("data", "architecture", "seed", "epochs_run", "epochs_max", "tensorflow", "backbone", "created")
    return {k: training[k] for k in keep if k in training}
