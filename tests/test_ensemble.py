"""`batchmask ensemble` on small hand-built ONNX classifiers (no training needed)."""

import hashlib
import json
import shutil

import numpy as np
import pytest

from batchmask.classifier import MaskClassifier
from conftest import batchmask

onnx = pytest.importorskip("onnx", reason="ensembles need the 'train' extra")
from onnx import TensorProto, helper  # noqa: E402


def tiny_classifier(folder, weights, opset):
    """A three-label classifier: mean colour of the crop -> linear -> softmax, as batchmask.train would write it."""
    nodes = [
        helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("GlobalAveragePool", ["nchw"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 96, 96, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor("w", TensorProto.FLOAT, [3, 3], np.asarray(weights, np.float32).ravel().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    folder.mkdir()
    onnx.save(model, str(folder / "model.onnx"))
    meta = {"name": folder.name, "kind": "classifier", "file": "model.onnx", "input_size": 96,
            "sha256": hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest(),
            "labels": ["masked", "incorrect", "unmasked"], "threshold": 0.4, "crop_margin": 1.2,
            "training": {"seed": 0, "architecture": "tiny"}}
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def test_the_ensemble_averages_its_members_even_across_opsets(tmp_path):
    a = tiny_classifier(tmp_path / "a", [[0.02, 0, -0.02], [0, 0.01, 0], [-0.01, 0, 0.03]], opset=13)
    b = tiny_classifier(tmp_path / "b", [[-0.01, 0.02, 0], [0.03, 0, -0.01], [0, 0, 0.01]], opset=17)
    out = tmp_path / "both"
    r = batchmask("ensemble", a, b, "--out", out)
    assert r.returncode == 0, r.stderr
    crops = (np.random.default_rng(0).random((5, 96, 96, 3)) * 255).astype(np.uint8)
    pa, pb = MaskClassifier(a).predict_crops(crops), MaskClassifier(b).predict_crops(crops)
    assert not np.allclose(pa, pb)
    assert np.allclose(MaskClassifier(out).predict_crops(crops), (pa + pb) / 2, atol=1e-6)
    meta = json.loads((out / "model.json").read_text())
    assert meta["threshold"] == 0.4 and meta["crop_margin"] == 1.2 and [m["name"] for m in meta["members"]] == ["a", "b"]
    assert {op.version for op in onnx.load(str(out / "model.onnx")).opset_import if op.domain == ""} == {17}
    assert "different crop" not in r.stderr and meta["crop_levels"] is None

    # calibrated members keep their crop levels (the crops they were calibrated on)
    for m in (a, b):
        (m / "model.json").write_text(json.dumps({**json.loads((m / "model.json").read_text()), "crop_levels": [1, 99]}))
    r = batchmask("ensemble", a, b, "--out", tmp_path / "levels")
    assert r.returncode == 0 and "crop levels 1-99 %" in r.stderr, r.stderr
    assert MaskClassifier(tmp_path / "levels").levels == (1.0, 99.0)

    # members calibrated differently are merged with a warning; an ensemble member brings its members' curves
    c = tiny_classifier(tmp_path / "c", np.eye(3), opset=17)
    meta_c = json.loads((c / "model.json").read_text())
    (c / "model.json").write_text(json.dumps({**meta_c, "crop_margin": 1.1}))
    (out / "training_curves_1.png").write_bytes(b"png")
    r = batchmask("ensemble", out, c, "--out", tmp_path / "three")
    assert r.returncode == 0 and "different crop margins" in r.stderr, r.stderr
    assert (tmp_path / "three" / "training_curves_1.1.png").is_file()
    r = batchmask("ensemble", out, c, "--out", out)
    assert r.returncode == 2 and "is one of the models to combine" in r.stderr


def test_the_ensemble_refuses_mismatched_or_broken_members(tmp_path):
    a = tiny_classifier(tmp_path / "a", np.eye(3), opset=17)
    b = tiny_classifier(tmp_path / "b", 2 * np.eye(3), opset=17)
    meta = json.loads((b / "model.json").read_text())
    (b / "model.json").write_text(json.dumps({**meta, "input_size": 128}))
    r = batchmask("ensemble", a, b, "--out", tmp_path / "x")
    assert r.returncode == 2 and "input size 128 differs" in r.stderr
    shutil.copytree(a, tmp_path / "a-copy")
    r = batchmask("ensemble", a, tmp_path / "a-copy", "--out", tmp_path / "x")
    assert r.returncode == 2 and "holds the same model as" in r.stderr.replace("\n", ""), r.stderr
    (b / "model.json").write_text(json.dumps(meta))
    (b / "model.onnx").write_bytes(b"garbage")
    r = batchmask("ensemble", a, b, "--out", tmp_path / "x")  # a corrupt member: exit 1, as `run` with a corrupt model
    assert r.returncode == 1 and "does not match model.json" in r.stderr
    assert not (tmp_path / "x" / "model.onnx").exists()
