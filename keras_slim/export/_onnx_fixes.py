"""Exact ONNX rewrites that pnnx (ONNX -> ncnn, 20261020) needs; the graph computes the same.

* A Gather with a constant index vector (channel selection, `ops.take` on
  channels) becomes a Crop with start -1 and end 0 in pnnx's output, a
  one-index select, and ncnn then fails to compute it (an extract error;
  with a temporary input array, a segfault). Slices of the runs of
  consecutive indices, joined by a Concat, are what ncnn's Crop and Concat do.
* A zero Pad (Keras ZeroPadding2D, e.g. MobileNetV2's before its stride-2
  depthwise convs) is left as an ONNX `Pad` pnnx marks "todo", a layer ncnn
  does not have. Where every reader of the padded tensor is a Conv, the pads
  move into the convs' own `pads` (zero padding either way: exact). A MaxPool
  reader takes them too where the padded tensor is a Relu's output (ResNet-50's
  `pool1_pad` before `pool1_pool`): MaxPool pads with -inf, and on values >= 0
  a window that keeps a real element (each pad smaller than the kernel) has the
  same maximum over zeros as over -inf.
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
    """Zero Pads on spatial axes whose readers are all Convs (or MaxPools of a Relu's
    output) -> the readers' own `pads`. Count."""
    from onnx import helper

    consts = _constants(proto)
    readers: dict[str, list] = {}
    producers = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
        for name in node.output:
            producers[name] = node
    outputs = {o.name for o in proto.graph.output}
    removed = []
    for node in proto.graph.node:
        pads = _zero_spatial_pads(node, consts)
        users = readers.get(node.output[0], []) if pads is not None else []
        if not users or node.output[0] in outputs:
            continue
        rank = len(pads) // 2
        begins, ends = pads[2:rank], pads[rank + 2:]
        nonnegative = _nonnegative(producers.get(node.input[0]), consts)
        if not all(_plain_conv_reads(u, node.output[0]) or (
                nonnegative and _max_pool_takes(u, node.output[0], begins + ends))
                for u in users):
            continue
        for reader in users:
            new = [a + b for a, b in zip(_pads(reader, rank), begins + ends)]
            kept = [a for a in reader.attribute if a.name != "pads"]
            del reader.attribute[:]
            reader.attribute.extend(kept + [helper.make_attribute("pads", new)])
            reader.input[0] = node.input[0]
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


def _pads(node, rank: int) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "pads"),
                [0] * (2 * (rank - 2)))


def _nonnegative(producer, consts) -> bool:
    """Whether a node's output is >= 0 everywhere: Relu, or Clip with a min >= 0 (ReLU6)."""
    if producer is None:
        return False
    if producer.op_type == "Relu":
        return True
    if producer.op_type == "Clip":
        low = consts.get(producer.input[1]) if len(producer.input) > 1 and producer.input[1] \
            else next((a.f for a in producer.attribute if a.name == "min"), None)
        return low is not None and float(np.min(low)) >= 0
    return False


def _max_pool_takes(node, name: str, extra: list[int]) -> bool:
    """A MaxPool reading `name` with explicit padding that stays smaller than its kernel
    (every window keeps a real element, and ONNX Runtime refuses larger pads)."""
    if node.op_type != "MaxPool" or node.input[0] != name:
        return False
    auto = next((a.s for a in node.attribute if a.name == "auto_pad"), b"NOTSET")
    kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), None)
    dilated = any(d != 1 for a in node.attribute if a.name == "dilations" for d in a.ints)
    # ceil_mode may add a last window that starts in the padding: it would see only pads
    ceil = any(a.i for a in node.attribute if a.name == "ceil_mode")
    if auto != b"NOTSET" or kernel is None or dilated or ceil:
        return False
    total = [a + b for a, b in zip(_pads(node, len(kernel) + 2), extra)]
    return all(p < k for p, k in zip(total, kernel + kernel))
