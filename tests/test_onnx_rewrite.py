"""The hard-swish / hard-sigmoid rewrite: fewer nodes, the same outputs, near-misses left alone."""

import collections

import numpy as np
import pytest

from batchmask.models import default_classifier_dir, verified_model

onnx = pytest.importorskip("onnx", reason="graph rewrites need the 'train' extra")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from batchmask.onnx_rewrite import fuse_hard_activations  # noqa: E402


def scalar(name, value):
    return helper.make_tensor(name, TensorProto.FLOAT, [], [value])


def keras_like_model(opset=17):
    """x -> hard-swish (Mul by 1/6) -> hard-swish (Div by 6, Add(3, x) order) -> SE gate times another tensor,
    plus a clip to 5 that is not a hard activation."""
    nodes = [
        # y1 = x * (clip(x + 3, 0, 6) * 1/6)
        helper.make_node("Add", ["x", "three"], ["a1"]),
        helper.make_node("Clip", ["a1", "zero", "six"], ["c1"]),
        helper.make_node("Mul", ["c1", "sixth"], ["g1"]),
        helper.make_node("Mul", ["x", "g1"], ["y1"]),
        # y2 = (clip(3 + y1, 0, 6) / 6) * y1
        helper.make_node("Add", ["three", "y1"], ["a2"]),
        helper.make_node("Clip", ["a2", "zero", "six"], ["c2"]),
        helper.make_node("Div", ["c2", "six"], ["g2"]),
        helper.make_node("Mul", ["g2", "y1"], ["y2"]),
        # squeeze-excite: the gate of one tensor scales another
        helper.make_node("ReduceMean", ["y2"], ["z"], axes=[1], keepdims=1) if opset < 18 else
        helper.make_node("ReduceMean", ["y2", "axis"], ["z"], keepdims=1),
        helper.make_node("Add", ["z", "three"], ["a3"]),
        helper.make_node("Clip", ["a3", "zero", "six"], ["c3"]),
        helper.make_node("Mul", ["sixth", "c3"], ["g3"]),
        helper.make_node("Mul", ["y2", "g3"], ["y3"]),
        # not a hard activation: clipped to 5
        helper.make_node("Add", ["y3", "three"], ["a4"]),
        helper.make_node("Clip", ["a4", "zero", "five"], ["c4"]),
        helper.make_node("Mul", ["c4", "sixth"], ["out"]),
    ]
    inits = [scalar("three", 3.0), scalar("zero", 0.0), scalar("six", 6.0), scalar("five", 5.0), scalar("sixth", 1 / 6),
             helper.make_tensor("axis", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(nodes, "keras_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("opset", [13, 17])
def test_hard_activations_become_single_nodes_with_the_same_outputs(opset):
    model = keras_like_model(opset)
    x = np.random.default_rng(0).uniform(-8, 8, (64, 8)).astype(np.float32)
    want = run(model, x)
    made = fuse_hard_activations(model)
    onnx.checker.check_model(model)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    if opset >= 14:
        assert made == {"HardSwish": 2, "HardSigmoid": 1}
        assert ops["HardSwish"] == 2 and ops["HardSigmoid"] == 1
    else:  # HardSwish is an opset-14 op: older graphs get HardSigmoid and keep their Mul
        assert made == {"HardSwish": 0, "HardSigmoid": 3}
    assert ops["Clip"] == 1 and ops["Div"] == 0  # the clip to 5 stays
    assert {t.name for t in model.graph.initializer} >= {"three", "zero", "five", "sixth"} and "six" not in {t.name for t in model.graph.initializer}
    np.testing.assert_allclose(run(model, x), want, atol=1e-6)
    assert fuse_hard_activations(model) == {"HardSwish": 0, "HardSigmoid": 0}


def test_a_chain_whose_parts_are_used_elsewhere_is_left_alone():
    model = keras_like_model()
    model.graph.output.append(helper.make_tensor_value_info("c1", TensorProto.FLOAT, ["n", 8]))
    fuse_hard_activations(model)
    names = {o for n in model.graph.node for o in n.output}
    assert "c1" in names  # still computed: the graph returns it


def test_the_shipped_classifier_has_no_unfused_hard_activations():
    path, _ = verified_model(default_classifier_dir())
    model = onnx.load(str(path))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops["HardSwish"] > 0 and fuse_hard_activations(model) == {"HardSwish": 0, "HardSigmoid": 0}


def test_canonical_names_make_the_same_network_the_same_bytes():
    """Two exports of one network that differ only in tensor names, initializer order and symbolic
    dimension names (tf2onnx's counters) become identical files, with the same outputs."""
    from batchmask.onnx_rewrite import canonical_names

    a, b = keras_like_model(), keras_like_model()
    rename = {"a1": "Add__17:0", "g1": "new_shape__946", "three": "const_fold_opt__3", "sixth": "const_fold_opt__99"}
    for node in b.graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
        node.name = f"node_{id(node)}"
    for tensor in b.graph.initializer:
        tensor.name = rename.get(tensor.name, tensor.name)
    inits = list(b.graph.initializer)[::-1]
    del b.graph.initializer[:]
    b.graph.initializer.extend(inits)
    for model, first in ((a, 10), (b, 950)):  # the batch dimensions' symbols, numbered by the counter too
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = f"unk__{first}"
        model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = f"unk__{first + 1}"
    x = np.random.default_rng(1).uniform(-8, 8, (16, 8)).astype(np.float32)
    want = run(a, x)
    assert a.SerializeToString() != b.SerializeToString()
    for model in (a, b):
        canonical_names(model)
        onnx.checker.check_model(model)
    assert a.SerializeToString() == b.SerializeToString()
    assert [v.name for v in a.graph.input] == ["x"] and [v.name for v in a.graph.output] == ["out"]
    np.testing.assert_allclose(run(a, x), want, atol=0)


def test_canonical_names_never_take_an_input_name_and_leave_subgraphs_alone():
    from batchmask.onnx_rewrite import canonical_names

    model = keras_like_model()
    model.graph.input[0].name = "t0_0"  # the name the first node's output would get
    for node in model.graph.node:
        node.input[:] = ["t0_0" if n == "x" else n for n in node.input]
    canonical_names(model)
    onnx.checker.check_model(model)
    assert [n.output[0] for n in model.graph.node][0] != "t0_0"

    then = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "then", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["z"])], "else", [], [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), helper.make_node("Greater", ["s", "zero"], ["c"]),
         helper.make_node("If", ["c"], ["out"], then_branch=then, else_branch=other)],
        "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
        [scalar("zero", 0.0)])
    branchy = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    before = branchy.SerializeToString()
    canonical_names(branchy)
    assert branchy.SerializeToString() == before
