"""Exact ONNX rewrites that pnnx (ONNX -> ncnn, 20261020) needs; the graph computes the same.

* A Gather with a constant index vector (channel selection, `ops.take` on
  channels) becomes a Crop with start -1 and end 0 in pnnx's output, a
  one-index select, and ncnn then fails to compute it (an extract error;
  with a temporary input array, a segfault). Slices of the runs of
  consecutive indices, joined by a Concat, are what ncnn's Crop and Concat do.
* A zero Pad (Keras ZeroPadding2D, e.g. MobileNetV2's before its stride-2
  depthwise convs) is left as an ONNX `Pad` pnnx marks "todo", a layer ncnn
  does not have. Where every reader of the padded tensor is a Conv, the pads
  move into the convs' own `pads` (zero padding either way: exact).
"""
from __future__ import annotations

import numpy as np

from keras_slim.export import _deps


def for_pnnx(proto) -> dict[str, int]:
    """Apply every rewrite in place; {"gathers_split": n, "pads_folded": m}."""
    counts = {"gathers_split": split_gathers(proto), "pads_folded": fold_pads(proto)}
    if any(counts.values()):
        _deps.onnx().checker.check_model(proto)
    return counts


def _constants(proto) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return consts


def split_gathers(proto) -> int:
    """Each Gather with a constant 1-D index vector -> Slice per run + Concat. Returns the count."""
    from onnx import helper, numpy_helper

    consts = _constants(proto)
    nodes, added, count = [], [], 0
    for node in proto.graph.node:
        index = consts.get(node.input[1]) if node.op_type == "Gather" else None
        if index is None or index.ndim != 1 or len(index) < 2 or (index < 0).any():
            nodes.append(node)
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        runs: list[list[int]] = []
        for i in index.astype(np.int64).tolist():
            if runs and i == runs[-1][1]:
                runs[-1][1] += 1
            else:
                runs.append([i, i + 1])
        parts = []
        for k, (start, end) in enumerate(runs):
            base = f"{node.output[0]}__run{k}"
            for suffix, value in (("starts", start), ("ends", end), ("axes", axis)):
                added.append(numpy_helper.from_array(np.array([value], np.int64),
                                                     f"{base}_{suffix}"))
            nodes.append(helper.make_node("Slice", [node.input[0], f"{base}_starts",
                                                    f"{base}_ends", f"{base}_axes"], [base]))
            parts.append(base)
        nodes.append(helper.make_node("Concat", parts, [node.output[0]], axis=axis))
        count += 1
    if count:
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
        proto.graph.initializer.extend(added)
    return count


def fold_pads(proto) -> int:
    """Zero Pads on spatial axes whose readers are all Convs -> the convs' `pads`. Count."""
    from onnx import helper

    consts = _constants(proto)
    readers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in proto.graph.output}
    removed = []
    for node in proto.graph.node:
        pads = _zero_spatial_pads(node, consts)
        users = readers.get(node.output[0], []) if pads is not None else []
        if (not users or node.output[0] in outputs
                or not all(_plain_conv_reads(u, node.output[0]) for u in users)):
            continue
        rank = len(pads) // 2
        begins, ends = pads[2:rank], pads[rank + 2:]
        for conv in users:
            old = next((list(a.ints) for a in conv.attribute if a.name == "pads"),
                       [0] * (2 * (rank - 2)))
            new = [a + b for a, b in zip(old, begins + ends)]
            kept = [a for a in conv.attribute if a.name != "pads"]
            del conv.attribute[:]
            conv.attribute.extend(kept + [helper.make_attribute("pads", new)])
            conv.input[0] = node.input[0]
        removed.append(node)
    for node in removed:
        proto.graph.node.remove(node)
    return len(removed)


def _zero_spatial_pads(node, consts) -> list[int] | None:
    """The pads of a constant-zero Pad that leaves the batch and channel axes alone, else None."""
    if node.op_type != "Pad":
        return None
    mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
    if mode != b"constant" or len(node.input) > 3 or len(node.input) < 2:
        return None
    pads = consts.get(node.input[1])
    value = consts.get(node.input[2]) if len(node.input) == 3 and node.input[2] else 0.0
    if pads is None or value is None or np.any(np.asarray(value) != 0):
        return None
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    rank = len(pads) // 2
    if rank < 3 or any(p < 0 for p in pads) or pads[0] or pads[1] or pads[rank] \
            or pads[rank + 1]:
        return None
    return pads


def _plain_conv_reads(node, name: str) -> bool:
    """A Conv reading `name` as its data input, with explicit (not automatic) padding."""
    if node.op_type != "Conv" or node.input[0] != name or name in node.input[1:]:
        return False
    auto = next((a.s for a in node.attribute if a.name == "auto_pad"), b"NOTSET")
    return auto == b"NOTSET"
