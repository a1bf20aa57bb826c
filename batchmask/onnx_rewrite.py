"""Graph rewrites that make exported classifiers cheaper to run, with the same outputs.

Keras writes MobileNetV3's hard-swish as `x * (clip(x + 3, 0, 6) / 6)` and its
squeeze-excite gate as `clip(z + 3, 0, 6) / 6`; tf2onnx keeps each as four or three
element-wise nodes, and ONNX Runtime fuses none of them, so a quarter of the
classifier's time went to those passes over memory. They become ONNX's own
`HardSwish` and `HardSigmoid` (one node each; the same function up to float
rounding, about 1e-7). Needs the `onnx` package (the `train` extra); the runtime
only ever loads the rewritten file.
"""

from __future__ import annotations

from collections import defaultdict


def fuse_hard_activations(model) -> dict[str, int]:
    """Rewrite `model` (an onnx.ModelProto) in place; returns how many of each op were made."""
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == node.attribute[0].TENSOR:
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)

    def scalar(name: str) -> float | None:
        value = constants.get(name)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    def near(name: str, want: float) -> bool:
        value = scalar(name)
        return value is not None and abs(value - want) <= 1e-6 * max(1.0, abs(want))

    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    outputs = {o.name for o in graph.output}

    def only_use(name: str):
        users = consumers[name]
        return users[0] if len(users) == 1 and name not in outputs else None

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    removed: set[int] = set()
    placed: dict[int, object] = {}  # id(last node of a pattern) -> the node that replaces the pattern
    made = {"HardSwish": 0, "HardSigmoid": 0}
    for clip in graph.node:
        if clip.op_type != "Clip" or len(clip.input) != 3 or not near(clip.input[1], 0.0) or not near(clip.input[2], 6.0):
            continue
        add = producer.get(clip.input[0])
        if add is None or add.op_type != "Add" or only_use(add.output[0]) is not clip:
            continue
        rest = [name for name in add.input if not near(name, 3.0)]
        if len(rest) != 1:
            continue
        x = rest[0]
        scale = only_use(clip.output[0])
        if scale is None or not (
            (scale.op_type == "Mul" and any(near(n, 1 / 6) for n in scale.input if n != clip.output[0]))
            or (scale.op_type == "Div" and scale.input[0] == clip.output[0] and near(scale.input[1], 6.0))
        ):
            continue
        gate = scale.output[0]
        outer = only_use(gate)
        removed |= {id(add), id(clip), id(scale)}
        if opset >= 14 and outer is not None and outer.op_type == "Mul" and sorted(outer.input) == sorted([x, gate]):
            removed.add(id(outer))
            placed[id(outer)] = helper.make_node("HardSwish", [x], list(outer.output), name=f"{outer.output[0]}_hardswish")
            made["HardSwish"] += 1
        else:
            placed[id(scale)] = helper.make_node("HardSigmoid", [x], [gate], name=f"{gate}_hardsigmoid", alpha=1 / 6, beta=0.5)
            made["HardSigmoid"] += 1
    if not removed:
        return made
    # each replacement takes the place of its pattern's last node, so the order stays topological
    nodes = [placed.get(id(n), n) for n in graph.node if id(n) not in removed or id(n) in placed]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input} | outputs
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(node)
    unused = [t for t in graph.initializer if t.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    return made


def canonical_names(model) -> None:
    """Rename `model`'s nodes, initializers and inner tensors by their place in the graph, in place.

    tf2onnx numbers the tensors it makes from a counter whose order varies from process to
    process, so the same network exported twice gave two files (two checksums); after this,
    the same graph gives the same bytes. Graph inputs and outputs keep their names.
    """
    from onnx import AttributeProto

    graph = model.graph
    if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for node in graph.node for a in node.attribute):
        return  # If / Loop / Scan bodies refer to outer names: left as exported
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {""}
    initializers = {t.name for t in graph.initializer}
    names: dict[str, str] = {}

    def fresh(candidate: str) -> str:  # never a name a graph input or output already has
        while candidate in keep:
            candidate += "_"
        return candidate

    for i, node in enumerate(graph.node):
        for name in node.input:
            if name not in keep and name not in names and name in initializers:
                names[name] = fresh(f"w{len(names)}")
        for k, name in enumerate(node.output):
            if name not in keep and name not in names:
                names[name] = fresh(f"t{i}_{k}")
        node.name = f"n{i}_{node.op_type}"
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    for tensor in graph.initializer:
        tensor.name = names.get(tensor.name, tensor.name)
    order = {new: i for i, new in enumerate(names.values())}
    ordered = sorted(graph.initializer, key=lambda t: (order.get(t.name, len(order)), t.name))  # unused ones last, by name
    del graph.initializer[:]
    graph.initializer.extend(ordered)
    for info in list(graph.value_info):
        info.name = names.get(info.name, info.name)
    symbols: dict[str, str] = {}  # tf2onnx's "unk__950"-style dimension names, from the same counter
    for info in [*graph.input, *graph.output, *graph.value_info]:
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = symbols.setdefault(dim.dim_param, "n" if not symbols else f"d{len(symbols)}")
