"""Reorder channels so that every ChannelSelection reads a few long runs.

A pruned pre-activation ResNet keeps, per block, a `ChannelSelection` that
picks the channels its BN kept out of the shared residual stream. With the
stream in its original order those channels are scattered (20-60 runs), so
the selection is a GATHER, which XNNPACK does not run. The order of a
stream's channels is free, though: permuting the output channels of every
layer that writes the stream and the input channels of every layer that
reads it gives the same model. `order_channels` picks, per stream, the order
that makes its selections' runs few (channels grouped by which selections
keep them, groups chained so neighbours differ in few selections) and then
orders each selection's output the way it reads its input, so the selection
becomes a few slices and one concatenation.

Only streams whose every reader and writer is understood are reordered:
Conv2D (groups=1) and Dense write and read them, BatchNormalization on the
last axis, element-wise merges (Add, Multiply, ...), activations, dropout,
pooling and padding pass them through, ChannelSelection reads them, and a
Concatenate on the channel axis is its inputs side by side: DenseNet's
selections read concatenations of every earlier layer's output, so each
layer's output is ordered for the selections of every concatenation it is
in (their indices restricted to its channels), and each concatenation's
order is its inputs' orders side by side. Anything else (a model input or
output, Reshape, a depthwise conv, a custom layer, a layer called twice)
leaves that stream in its order (and a concatenation it writes or reads,
with all its inputs). The
result equals the input model up to float rounding (a conv adds its input
channels in another order).

About 400 lines, one concept: which streams may move, the order of each, and
applying it to every layer that shares the stream belong together.
"""
from __future__ import annotations

import dataclasses
import logging

import keras
import numpy as np

from keras_slim import _keras
from keras_slim.graph import FlatGraph
from keras_slim.layers import ChannelSelection, channel_runs

logger = logging.getLogger(__name__)

_MERGES = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply, keras.layers.Average,
           keras.layers.Maximum, keras.layers.Minimum)
_PASS = (keras.layers.ReLU, keras.layers.Activation, keras.layers.LeakyReLU, keras.layers.ELU,
         keras.layers.PReLU, keras.layers.Dropout, keras.layers.SpatialDropout2D,
         keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D,
         keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, keras.layers.ZeroPadding2D,
         keras.layers.Identity)


@dataclasses.dataclass
class OrderReport:
    """What `order_channels` did: streams reordered, selection runs before -> after."""

    streams: int = 0
    runs_before: int = 0
    runs_after: int = 0
    selections: int = 0
    sliced: int = 0  # selections that are slices + concatenation after reordering
    note: str = ""

    def __str__(self) -> str:
        if not self.selections:
            return "no ChannelSelection"
        return (f"{self.streams} stream(s) reordered; {self.selections} selection(s): "
                f"{self.runs_before} -> {self.runs_after} runs, {self.sliced} as slices, "
                f"{self.selections - self.sliced} as GATHER" + (f" ({self.note})" if self.note else ""))


class _Streams:
    """Union-find over tensor keys: tensors that must share one channel order."""

    def __init__(self):
        self.parent: dict = {}

    def find(self, k):
        self.parent.setdefault(k, k)
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def union(self, a, b) -> None:
        self.parent[self.find(a)] = self.find(b)


def order_channels(model) -> tuple[object, OrderReport]:
    """A copy of `model` whose shared channels are ordered for cheap selections.

    Returns `(model, report)`; the model itself when it has no ChannelSelection
    or cannot be copied (a custom layer without `get_config`: logged).
    """
    if _keras.is_tf_keras(model) or not any(
            isinstance(layer, ChannelSelection) for layer in _keras.walk_layers(model)):
        return model, OrderReport()
    try:
        copy = model.__class__.from_config(model.get_config())
        copy.set_weights(model.get_weights())
        for layer in _keras.walk_layers(copy):
            _keras.finalize_adapted(layer)
    except Exception as err:  # unregistered custom layer, subclassed model
        logger.warning("Not reordering channels of '%s' (it cannot be copied: %s).", model.name, err)
        return model, _runs_only(model, f"not reordered: {type(err).__name__}")
    report = _reorder(copy)
    return copy, report


def _runs_only(model, note: str) -> OrderReport:
    sels = [layer for layer in _keras.walk_layers(model) if isinstance(layer, ChannelSelection)]
    runs = sum(len(s.runs) for s in sels)
    return OrderReport(0, runs, runs, len(sels), sum(s.as_slices for s in sels), note)


def _reorder(model) -> OrderReport:
    graph = FlatGraph(model)
    streams = _Streams()
    frozen: set = set(graph.inputs) | set(graph.outputs)
    roles: list[tuple[object, str, object]] = []  # (layer, role, tensor key)
    concats: list[tuple[tuple, object]] = []  # (input keys, output key) on the channel axis
    calls_of: dict[int, int] = {}
    for call in graph.calls:
        calls_of[id(call.layer)] = calls_of.get(id(call.layer), 0) + 1
    for call in graph.calls:
        layer, ins, outs = call.layer, call.inputs, call.outputs
        for k in ins + outs:
            streams.find(k)
        if _keras.is_graph_model(layer):
            continue  # inlined: its calls are in the graph
        role_pairs = _roles(layer, ins, outs, graph)
        if role_pairs is None or (calls_of[id(layer)] > 1 and layer.weights):
            frozen.update(ins + outs)
            continue
        for kind, k in role_pairs:
            if kind == "unite":
                streams.union(k[0], k[1])
            elif kind == "concat":
                concats.append(k)
            else:
                roles.append((layer, kind, k))
    frozen_roots = {streams.find(k) for k in frozen}
    by_root: dict = {}
    for layer, kind, k in roles:
        by_root.setdefault(streams.find(k), []).append((layer, kind))
    sels = [layer for layer in _keras.walk_layers(model) if isinstance(layer, ChannelSelection)]
    report = OrderReport(selections=len(sels), runs_before=sum(len(s.runs) for s in sels))
    orders: dict = {}
    sel_in = {id(layer): streams.find(k) for layer, kind, k in roles if kind == "sel_in"}
    sel_out = {id(layer): streams.find(k) for layer, kind, k in roles if kind == "sel_out"}
    sel_out_roots = set(sel_out.values())
    width = lambda root: _width(graph, root, streams)  # noqa: E731
    segments = _concat_segments(concats, streams, by_root, sel_out_roots, frozen_roots, width)
    readers: dict = {}  # base stream -> the index lists selections read from it
    for s in sels:
        root = sel_in.get(id(s))
        if root is None:
            continue
        for base, offset, w in segments(root):
            part = [i - offset for i in s.indices if offset <= i < offset + w]
            if part:
                readers.setdefault(base, []).append(part)
    for root, parts in readers.items():  # the streams selections read, directly or in a concat
        if root not in frozen_roots and root not in sel_out_roots:
            orders[root] = _chain_order(width(root), parts)
    _orient(orders, sels, sel_in, sel_out, frozen_roots, segments)
    for root in segments.composites:  # a concatenation: its inputs' orders, side by side
        if root not in frozen_roots and any(b in orders for b, _, _ in segments(root)):
            orders[root] = np.concatenate([offset + orders.get(b, np.arange(w))
                                           for b, offset, w in segments(root)])
    for s in sels:  # then each selection's output in the order it reads
        out = sel_out.get(id(s))
        if out is None or out in frozen_roots or out in orders:
            continue
        inv = _inverse(orders.get(sel_in.get(id(s))), _width(graph, sel_in.get(id(s)), streams))
        orders[out] = np.argsort(inv[np.asarray(s.indices)], kind="stable")
    for root, order in orders.items():
        if np.array_equal(order, np.arange(len(order))):
            continue
        report.streams += 1
        for layer, kind in by_root.get(root, ()):
            _apply(layer, kind, order)
    for s in sels:  # indices last: they read both orders
        src, dst = orders.get(sel_in.get(id(s))), orders.get(sel_out.get(id(s)))
        idx = np.asarray(s.indices)
        if dst is not None:
            idx = idx[dst]
        if src is not None:
            idx = _inverse(src, len(src))[idx]
        s.indices = [int(i) for i in idx]
    report.runs_after = sum(len(s.runs) for s in sels)
    report.sliced = sum(s.as_slices for s in sels)
    return report


def _roles(layer, ins: list, outs: list, graph: FlatGraph):
    """[(role, key)] of a call, ("unite", (a, b)) for pass-through; None: not understood."""
    def channels(k):
        shape = graph.shapes.get(k)
        return shape[-1] if shape else None

    if isinstance(layer, keras.layers.Concatenate) and len(outs) == 1 and \
            all(graph.shapes.get(k) for k in ins + outs) and \
            _last_axis(layer.axis, outs[0], graph):
        return [("concat", (tuple(ins), outs[0]))]
    if isinstance(layer, ChannelSelection) and len(ins) == 1:
        return [("sel_in", ins[0]), ("sel_out", outs[0])]
    if isinstance(layer, keras.layers.BatchNormalization) and _last_axis(layer.axis, ins[0], graph):
        return [("bn", ins[0]), ("unite", (ins[0], outs[0]))]
    if type(layer) is keras.layers.Conv2D and layer.groups == 1 and \
            layer.data_format == "channels_last":
        return [("conv_in", ins[0]), ("conv_out", outs[0])]
    if type(layer) is keras.layers.Dense:
        return [("dense_in", ins[0]), ("dense_out", outs[0])]
    if isinstance(layer, _MERGES) and len(outs) == 1:
        width = channels(outs[0])
        if any(channels(k) != width for k in ins):
            return None  # broadcasting over the channel axis
        return [("unite", (k, outs[0])) for k in ins]
    if isinstance(layer, _PASS) and len(ins) == 1 and len(outs) == 1:
        if isinstance(layer, keras.layers.PReLU) or channels(ins[0]) != channels(outs[0]):
            return None  # PReLU's alpha would need reordering too
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            return None
        return [("unite", (ins[0], outs[0]))]
    return None


class _Segments:
    """Concatenation outputs as side-by-side runs of their inputs' channels.

    `segments(root)` is `[(base stream, offset, width)]`: the streams (not
    themselves concatenations) whose channels make up `root`, in order; a
    stream that is not a concatenation is one segment of itself.
    """

    def __init__(self, parts: dict, width):
        self.composites = parts  # root -> [input roots]
        self._width = width

    def __call__(self, root) -> list:
        if root not in self.composites:
            return [(root, 0, self._width(root))]
        out, offset = [], 0
        for part in self.composites[root]:
            out.extend((b, offset + o, w) for b, o, w in self(part))
            offset += self._width(part)
        return out


def _concat_segments(concats: list, streams: _Streams, by_root: dict, sel_outs: set,
                     frozen_roots: set, width) -> _Segments:
    """The concatenations whose order can follow their inputs'; `frozen_roots` grows.

    A concatenation's order is its inputs' orders side by side, so it is
    frozen (and so are its inputs) when something else also fixes it: a
    second writer (a conv, a selection, another concatenation joined to it
    by an Add) or an input that is a selection's output (whose order follows
    the selection); and a frozen one keeps its inputs in their order.
    """
    parts: dict = {}
    for ins, out in concats:
        root = streams.find(out)
        if root in parts:
            frozen_roots.add(root)
        parts[root] = [streams.find(k) for k in ins]
    for root, inputs in parts.items():
        writes = {kind for _, kind in by_root.get(root, ())} & {"conv_out", "dense_out",
                                                                "sel_out"}
        if writes or any(r in sel_outs for r in inputs):
            frozen_roots.add(root)
    changed = True
    while changed:  # nested concatenations: freeze downwards to a fixed point
        changed = False
        for root, inputs in parts.items():
            if root in frozen_roots:
                for r in inputs:
                    if r not in frozen_roots:
                        frozen_roots.add(r)
                        changed = True
    return _Segments(parts, width)


def _last_axis(axis, key, graph: FlatGraph) -> bool:
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    rank = len(graph.shapes[key])
    return len(axes) == 1 and int(axes[0]) % rank == rank - 1


def _width(graph: FlatGraph, root, streams: _Streams) -> int:
    for k, shape in graph.shapes.items():
        if streams.find(k) == root and shape:
            return int(shape[-1])
    raise KeyError(root)


def _inverse(order, width: int) -> np.ndarray:
    if order is None:
        return np.arange(width)
    inv = np.empty(len(order), np.int64)
    inv[order] = np.arange(len(order))
    return inv


def _orient(orders: dict, sels: list, sel_in: dict, sel_out: dict, frozen_roots: set,
            segments: _Segments) -> None:
    """Reverse streams' orders where that joins runs across concatenation boundaries.

    `_chain_order` orders each stream alone, so where a concatenation puts two
    streams side by side a selection's run ends at the boundary unless the
    channels on both sides are kept alike. Reversing a stream (a path of
    membership patterns read backwards is as short) changes which pattern
    meets its neighbours; each is reversed where that lowers the runs of the
    selections reading it (through a concatenation or directly: one whose
    output order is frozen reads a reversed stream as runs of one channel),
    for up to four passes over the streams.
    """
    users: dict = {}
    for s in sels:
        root = sel_in.get(id(s))
        if root is None:
            continue
        for base, _, _ in segments(root):
            if base in orders:
                users.setdefault(base, []).append(s)

    def runs(s) -> int:
        order = np.concatenate([offset + orders.get(b, np.arange(w))
                                for b, offset, w in segments(sel_in[id(s)])])
        pos = _inverse(order, len(order))[np.asarray(s.indices, np.int64)]
        out = sel_out.get(id(s))
        if out is not None and out not in frozen_roots:
            pos = np.sort(pos)  # its output takes the order it reads (see _reorder)
        return int(1 + np.count_nonzero(np.diff(pos) != 1)) if len(pos) else 0

    for _ in range(4):
        better = False
        for base, readers in users.items():
            before = sum(runs(s) for s in readers)
            orders[base] = orders[base][::-1].copy()
            if sum(runs(s) for s in readers) < before:
                better = True
            else:
                orders[base] = orders[base][::-1].copy()
        if not better:
            break


def _chain_order(width: int, selections: list) -> np.ndarray:
    """An order of `width` channels in which each selection is a few runs.

    Channels with the same membership pattern (which selections keep them)
    stay together; the patterns are chained greedily, each next one the
    nearest in Hamming distance (a selection starts or ends a run only where
    its bit flips), then improved by 2-opt moves.
    """
    member = np.zeros((width, len(selections)), bool)
    for j, idx in enumerate(selections):
        member[np.asarray(idx), j] = True
    patterns, which = np.unique(member, axis=0, return_inverse=True)
    which = np.asarray(which).reshape(-1)
    n = len(patterns)
    dist = (patterns[:, None, :] != patterns[None, :, :]).sum(-1)
    start = int(np.argmin(patterns.sum(1)))  # begin at the pattern fewest selections keep
    path, left = [start], set(range(n)) - {start}
    while left:
        last = path[-1]
        nxt = min(left, key=lambda p: (dist[last, p], p))
        path.append(nxt)
        left.remove(nxt)
    improved = True
    while improved and n > 3:
        improved = False
        for i in range(1, n - 1):
            for j in range(i + 1, n):
                after = path[j + 1] if j + 1 < n else None
                old = dist[path[i - 1], path[i]] + (dist[path[j], after] if after is not None else 0)
                new = dist[path[i - 1], path[j]] + (dist[path[i], after] if after is not None else 0)
                if new < old:
                    path[i:j + 1] = path[i:j + 1][::-1]
                    improved = True
    rank = np.empty(n, np.int64)
    rank[path] = np.arange(n)
    return np.argsort(rank[which], kind="stable")


def _apply(layer, kind: str, order: np.ndarray) -> None:
    """Permute `layer`'s weights along the channel axis `kind` names."""
    if kind in ("sel_in", "sel_out"):
        return  # indices are rewritten once both orders are known
    if kind == "bn":
        for w in (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance):
            if w is not None:
                w.assign(np.take(np.asarray(w), order, axis=0))
        return
    kernel = layer.kernel
    axis = {"conv_in": 2, "conv_out": 3, "dense_in": 0, "dense_out": 1}[kind]
    kernel.assign(np.take(np.asarray(kernel), order, axis=axis))
    if kind in ("conv_out", "dense_out") and layer.bias is not None:
        layer.bias.assign(np.take(np.asarray(layer.bias), order, axis=0))


def selection_runs(model) -> list[int]:
    """Runs per ChannelSelection of `model` (for reports and tests)."""
    return [len(channel_runs(layer.indices)) for layer in _keras.walk_layers(model)
            if isinstance(layer, ChannelSelection)]
