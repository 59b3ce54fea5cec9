"""Couple: which channels must be removed together, and which may go at all.

Every channel of every tensor carries an integer id. A layer that creates
channels (conv, dense, a channel selection) draws fresh ids; pass-through
layers keep them; element-wise merges and depthwise convs unite them
(union-find), Concatenate joins them end to end, Flatten tiles them over
spatial positions. A union-find class is one removable unit: removing it
removes that channel from every producer and every consumer at once.

Alongside the ids runs a dataflow bit per channel, `zero`: "this value is
identically zero once the class's BN scaling factors and shifts are zero".
A scoring BatchNormalization sets it, zero-preserving layers keep it,
Add needs it on all inputs, Multiply on any. A class may be removed only
if every layer that mixes channels (conv, dense, an unknown layer) reads it
while `zero` holds; that is what makes the rebuilt model exact.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from keras_slim.graph import FlatCall, FlatGraph



@dataclasses.dataclass
class ChannelInfo:
    """Channel ids of one tensor's last axis and two dataflow bits per channel.

    zero:  the value is identically 0 once the class's BN gamma and beta are 0
           (what makes removal exact);
    const: the value is a per-channel constant once the class's gammas are 0
           (what makes removal exact after folding act(beta) into the next bias).
    """

    ids: np.ndarray
    zero: np.ndarray
    const: np.ndarray | None = None

    def __post_init__(self):
        if self.const is None:
            self.const = self.zero.copy()

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, positions) -> "ChannelInfo":
        return ChannelInfo(self.ids[positions], self.zero[positions], self.const[positions])

    def not_zero(self) -> "ChannelInfo":
        """Same channels, no longer zero, still constant if they were (y = f(x))."""
        return ChannelInfo(self.ids, np.zeros(len(self.ids), bool), self.const)


@dataclasses.dataclass
class Options:
    channel_selection: bool = True
    exclude: frozenset = frozenset()


class UnionFind:
    def __init__(self):
        self.parent: list[int] = []

    def new(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def union(self, a, b) -> None:
        for x, y in zip(np.asarray(a).tolist(), np.asarray(b).tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                if rx < ry:
                    self.parent[ry] = rx
                else:
                    self.parent[rx] = ry

    def roots(self, ids) -> np.ndarray:
        return np.fromiter((self.find(i) for i in np.asarray(ids).tolist()),
                           dtype=np.int64, count=len(ids))


@dataclasses.dataclass
class Member:
    """A scaling factor (BN gamma) attached to a channel id."""

    layer: str
    index: int
    gamma: float


class Coupling:
    """Result of the couple step over a FlatGraph (see module docstring)."""

    def __init__(self, graph: FlatGraph, options: Options):
        from keras_slim.handlers.registry import get_handler

        self.graph = graph
        self.options = options
        self.uf = UnionFind()
        self.tensors: dict = {}
        self.frozen: set[int] = set()
        self.unsafe: set[int] = set()
        self.scored: list[tuple[str, np.ndarray, np.ndarray]] = []  # (BN name, ids, |gamma|)
        self.requires: list[tuple[np.ndarray, np.ndarray]] = []
        self.produced: list[tuple[int, np.ndarray]] = []  # (call index, ids)
        self.marks: dict[int, set[str]] = {}
        self.barriers: list[tuple[str, str, np.ndarray]] = []  # (layer, reason, input ids)
        self.handlers = {}
        for k in graph.inputs:
            n = _channels(graph.shapes[k])
            if n is not None:
                self.tensors[k] = ChannelInfo(self.new(n, frozen=True), np.zeros(n, bool))
        for call in graph.calls:
            handler = get_handler(call.layer)
            self.handlers[call.index] = handler
            ctx = FlowContext(self, call)
            ins = [self.tensors.get(k) for k in call.inputs]
            outs = handler.flow(ctx, ins)
            if len(outs) != len(call.outputs):
                raise RuntimeError(
                    f"handler {type(handler).__name__} returned {len(outs)} outputs "
                    f"for layer {call.layer.name!r}, which has {len(call.outputs)}"
                )
            for k, info in zip(call.outputs, outs):
                if info is not None:
                    n = _channels(graph.shapes[k])
                    if n != len(info):
                        raise RuntimeError(
                            f"handler {type(handler).__name__} gave {len(info)} channels "
                            f"for an output of {call.layer.name!r} with {n}"
                        )
                    self.tensors[k] = info
            if call.layer.name in options.exclude:
                for info in outs:
                    if info is not None:
                        self.freeze(info.ids)
        self._unite_shared()
        for k in graph.outputs:  # model outputs keep their width
            if k in self.tensors:
                self.freeze(self.tensors[k].ids)

    # ---------------------------------------------------------------- helpers
    def new(self, n: int, frozen: bool = False) -> np.ndarray:
        ids = self.uf.new(n)
        if frozen:
            self.frozen.update(ids.tolist())
        return ids

    def freeze(self, ids) -> None:
        self.frozen.update(np.asarray(ids).tolist())

    def _unite_shared(self) -> None:
        """One layer object, one set of weights: same channels at every call."""
        by_layer: dict[int, list[FlatCall]] = {}
        for call in self.graph.calls:
            if self.handlers[call.index].shares_channels:
                by_layer.setdefault(id(call.layer), []).append(call)
        groups = [
            [c.inputs + c.outputs for c in calls] for calls in by_layer.values() if len(calls) > 1
        ]
        for calls in self.graph.submodel_calls.values():
            if len(calls) > 1:
                groups.append([c.inputs + c.outputs for c in calls])
        for key_lists in groups:
            first = key_lists[0]
            for other in key_lists[1:]:
                for a, b in zip(first, other):
                    ia, ib = self.tensors.get(a), self.tensors.get(b)
                    if ia is not None and ib is not None and len(ia) == len(ib):
                        self.uf.union(ia.ids, ib.ids)

    # ---------------------------------------------------------------- results
    @property
    def root_of(self) -> np.ndarray:
        """Class root of every channel id (computed once, after coupling)."""
        if getattr(self, "_root_of", None) is None:
            self._root_of = self.uf.roots(np.arange(len(self.uf.parent)))
        return self._root_of

    def scale_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """(class root, |gamma|) of every BN scaling factor, as two flat arrays."""
        if not self.scored:
            return np.zeros(0, np.int64), np.zeros(0)
        ids = np.concatenate([ids for _, ids, _ in self.scored])
        gammas = np.concatenate([g for _, _, g in self.scored])
        return self.root_of[ids], gammas

    def root_sets(self):
        """(frozen roots, unsafe roots, roots that have a scaling factor). Call after coupling."""
        if getattr(self, "_root_sets", None) is None:
            root_of = self.root_of
            frozen = set(root_of[list(self.frozen)].tolist()) if self.frozen else set()
            unsafe = set(root_of[list(self.unsafe)].tolist()) if self.unsafe else set()
            scored = set(self.scale_factors()[0].tolist())
            self._root_sets = frozen, unsafe, scored
        return self._root_sets

    def members(self, roots=None) -> dict:
        """root -> [Member(layer, channel index, |gamma|)] (built on demand: it is slow)."""
        wanted = None if roots is None else set(roots)
        out: dict[int, list[Member]] = {}
        for name, ids, gammas in self.scored:
            for pos, (r, g) in enumerate(zip(self.root_of[ids].tolist(), gammas.tolist())):
                if wanted is None or r in wanted:
                    out.setdefault(r, []).append(Member(name, pos, g))
        return out


class FlowContext:
    """What a handler may do while describing one call (see Handler.flow)."""

    def __init__(self, coupling: Coupling, call: FlatCall):
        self._c = coupling
        self.call = call
        self.layer = call.layer
        self.options = coupling.options
        shapes = coupling.graph.shapes
        self.in_shapes = [shapes[k] for k in call.inputs]
        self.out_shapes = [shapes[k] for k in call.outputs]

    def out_channels(self, i: int = 0) -> int | None:
        return _channels(self.out_shapes[i])

    def new(self, n: int, frozen: bool = False) -> np.ndarray:
        return self._c.new(n, frozen)

    def fresh(self, i: int = 0, zero: bool = False, frozen: bool = False) -> ChannelInfo | None:
        """Fresh channel ids for output i: the layer creates these channels."""
        n = self.out_channels(i)
        if n is None:
            return None
        return ChannelInfo(self.new(n, frozen), np.full(n, zero))

    def union(self, a: ChannelInfo, b: ChannelInfo) -> None:
        self._c.uf.union(a.ids, b.ids)

    def freeze(self, info: ChannelInfo | None) -> None:
        if info is not None:
            self._c.freeze(info.ids)

    def score(self, info: ChannelInfo, gammas: np.ndarray) -> None:
        """Attach this layer's scaling factors to the channels of `info`."""
        self._c.scored.append((self.layer.name, info.ids, np.asarray(gammas, np.float64)))

    def use(self, info: ChannelInfo | None) -> None:
        """This layer mixes the channels of `info`: each must be zero to be removable."""
        if info is not None:
            self._c.unsafe.update(info.ids[~(info.zero | info.const)].tolist())

    def require(self, dependent: np.ndarray, needed: np.ndarray) -> None:
        """Keeping dependent[j] forces keeping needed[j] (channel selection)."""
        self._c.requires.append((np.asarray(dependent), np.asarray(needed)))

    def produce(self, info: ChannelInfo) -> None:
        """Mark `info` as this layer's own output width (per-layer constraints)."""
        self._c.produced.append((self.call.index, info.ids))

    def mark(self, tag: str) -> None:
        self._c.marks.setdefault(self.call.index, set()).add(tag)

    def input_fanout(self, i: int = 0) -> int:
        return self._c.graph.fanout(self.call.inputs[i])

    def input_producer(self, i: int = 0) -> Any:
        index = self._c.graph.producer.get(self.call.inputs[i])
        return None if index is None else self._c.graph.calls[index].layer

    def barrier(self, ins: list, reason: str) -> list:
        """Keep every channel reaching this layer and everything it emits."""
        for info in ins:
            self.freeze(info)
        ids = np.concatenate([i.ids for i in ins if i is not None] or [np.zeros(0, np.int64)])
        self._c.barriers.append((self.layer.name, reason, ids))
        return [self.fresh(i, frozen=True) for i in range(len(self.call.outputs))]


def _channels(shape) -> int | None:
    """Channel count of a channels-last tensor shape, None if it has none."""
    if shape is None or len(shape) < 2 or shape[-1] is None:
        return None
    return int(shape[-1])
