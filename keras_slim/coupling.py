"""Couple: which channels must be removed together, and which may go at all.

Every channel of every tensor carries an integer id. A layer that creates
channels (conv, dense, a channel selection) draws fresh ids; pass-through
layers keep them; element-wise merges and depthwise convs unite them
(union-find), Concatenate joins them end to end, Flatten tiles them over
spatial positions. A union-find class is one removable unit: removing it
removes that channel from every producer and every consumer at once.

Alongside the ids run two dataflow bits and a value per channel, all meaning
"once the class's BN scaling factors (gamma) are zero", with the model's
actual shifts (beta):

* `zero`: the channel is identically 0 (BN with beta = 0, then layers that
  keep 0 at 0; Add needs all inputs zero, Multiply any);
* `const`: the channel is a known per-channel constant, act(beta) and what
  follows from it; `value` holds that constant (computed here with each
  handler's `constant`, so the bit is never set without a value).

A class may be removed only if every layer that mixes channels (conv, dense,
an unknown layer) reads it while it is zero, or while it is constant and the
layer absorbs the constant exactly into a bias (`Handler.absorbs_constants`;
with `border_folds`, also readers that are exact only away from 'same'
borders). That is what makes the rebuilt model exact.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from keras_slim.graph import FlatCall, FlatGraph
from keras_slim.handlers.context import ChannelInfo, FlowContext, channels as _channels
from keras_slim.handlers.registry import get_handler
from keras_slim.handlers.shape import PassThroughHandler
from keras_slim.errors import PruneError

_TRAINING_ONLY = PassThroughHandler()



@dataclasses.dataclass
class Options:
    channel_selection: bool = True
    exclude: frozenset = frozenset()
    border_folds: bool = True  # fold constants where exact only away from 'same' borders
    # what a class is scored by: "bn" (gamma of the BN after it), "filters" (weights), or
    # "bn_readers" (gamma of every BN reading it, removed as zero filters + mean fill)
    scores: str = "bn"
    # under "filters": what a removed filter's channel carries ("zero": the filter is taken
    # as zero; "mean": its BN's moving mean, so the BN emits beta; plan's filter_removal)
    filter_removal: str = "zero"


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

    def __init__(self, graph: FlatGraph, options: Options, resolve=None):
        if resolve is None:
            resolve = get_handler
        self.graph = graph
        self.options = options
        self.uf = UnionFind()
        self.tensors: dict = {}
        self.frozen: set[int] = set()
        self.unsafe: set[int] = set()
        self.scored: list[tuple[str, np.ndarray, np.ndarray]] = []  # (BN name, ids, |gamma|)
        self.filters: list[tuple[str, np.ndarray, np.ndarray]] = []  # (layer, ids, rows)
        self.emitted: dict[tuple[int, int], np.ndarray] = {}  # (call, output) -> act(bias)
        self.requires: list[tuple[np.ndarray, np.ndarray]] = []
        self.produced: list[tuple[int, np.ndarray]] = []  # (call index, ids)
        self.marks: dict[int, set[str]] = {}
        self.barriers: list[tuple[str, str, np.ndarray]] = []  # (layer, reason, input ids)
        self.barrier_layers: set[int] = set()  # id(layer) of every barrier: rebuilt as it is
        self.border_readers: set[int] = set()  # calls folding constants exactly only inside
        self.border_tainted: set = set()  # tensors whose constants hold only inside (padding)
        self.mixers: set[int] = set()  # calls whose handler mixed channels (FlowContext.use)
        self.handlers = {}
        self.calls_of: dict[int, int] = {}  # id(layer) -> number of calls
        for call in graph.calls:
            self.calls_of[id(call.layer)] = self.calls_of.get(id(call.layer), 0) + 1
        for k in graph.inputs:
            n = _channels(graph.shapes[k])
            if n is not None:
                self.tensors[k] = ChannelInfo(self.new(n, frozen=True), np.zeros(n, bool),
                                              value=np.full(n, np.nan))
        self.constants_off: str | None = None  # why no constant is folded (see below)
        for call in graph.calls:
            if id(call.layer) in graph.training_only:
                handler = _TRAINING_ONLY  # identity at inference, kept for `fit`
            else:
                handler = resolve(call.layer)
            if options.scores in ("filters", "bn_readers"):
                handler = handler.under_filter_scores()
                if options.filter_removal == "mean" or options.scores == "bn_readers":
                    handler = handler.under_mean_fill()
            self.handlers[call.index] = handler
            if self.constants_off is None:  # shapes after it are not the inference ones
                self.constants_off = handler.misstates_shapes(
                    call.layer, [graph.shapes[k] for k in call.inputs],
                    [graph.shapes[k] for k in call.outputs])
                if self.constants_off:
                    warnings.warn(f"keras_slim: {self.constants_off}: constant channels are "
                                  "kept in this model (a fold may count positions); zero "
                                  "channels still go", stacklevel=4)
            ctx = FlowContext(self, call, handler)
            ins = [self.tensors.get(k) for k in call.inputs]
            outs = handler.flow(ctx, ins)
            if len(outs) != len(call.outputs):
                raise PruneError(
                    f"handler {type(handler).__name__} returned {len(outs)} outputs "
                    f"for layer {call.layer.name!r}, which has {len(call.outputs)}"
                )
            values = self._constants(call, handler, ins, outs)
            # a constant that passed a padded layer ('same' depthwise, ZeroPadding) is one
            # only away from the borders: so is every value made from it downstream
            tainted = (any(k in self.border_tainted for k in call.inputs)
                       or handler.border_effect(call.layer))
            if tainted:
                self.border_tainted.update(
                    k for k, v in zip(call.outputs, values)
                    if v is not None and np.isfinite(v).any())
            for i, (k, info) in enumerate(zip(call.outputs, outs)):
                if info is not None:
                    n = _channels(graph.shapes[k])
                    if n != len(info):
                        raise PruneError(
                            f"handler {type(handler).__name__} gave {len(info)} channels "
                            f"for an output of {call.layer.name!r} with {n}"
                        )
                    value = self.emitted.pop((call.index, i), values[i])  # filter_zeroed
                    self.tensors[k] = _with_value(info, value)
                    if getattr(call.layer, "activity_regularizer", None) is not None:
                        # its loss reads every output channel: a removed constant one
                        # would take its terms out of model.losses; zero ones add nothing
                        t = self.tensors[k]
                        self.unsafe.update(t.ids[~t.zero].tolist())
            if call.layer.name in options.exclude:
                for info in outs:
                    if info is not None:
                        self.freeze(info.ids)
        self._unite_shared()
        for k in graph.outputs:  # model outputs keep their width
            if k in self.tensors:
                self.freeze(self.tensors[k].ids)

    # ---------------------------------------------------------------- helpers
    def _constants(self, call: FlatCall, handler, ins: list, outs: list) -> list:
        """Each output's per-channel constant once the class gammas are 0 (NaN: not constant).

        Only `handler.constant` may claim a constant: a handler without one
        passes none on, so its readers keep constant channels (zero ones still go).
        """
        none = [None] * len(outs)
        if self.constants_off or not ins or any(x is None or x.value is None for x in ins):
            return none
        if not handler.emits_constants and not any(np.isfinite(x.value).any() for x in ins):
            return none
        if not self.options.border_folds and handler.border_effect(call.layer):
            return none  # padding makes a constant input vary near the borders
        shapes = self.graph.shapes
        out = handler.constant_of_call(call, [x.value for x in ins],
                                       [shapes[k] for k in call.inputs],
                                       [shapes[k] for k in call.outputs])
        return none if out is None else list(out) + none[len(out):]

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

    def set_scores(self, scored: list) -> None:
        """Per-channel scores a filter criterion computed from `filters` (same layout as `scored`)."""
        self.scored = list(scored)
        self._root_sets = None

    def members(self, roots=None) -> dict:
        """root -> [Member(layer, channel index, |gamma|)] (built on demand: it is slow)."""
        wanted = None if roots is None else set(roots)
        out: dict[int, list[Member]] = {}
        for name, ids, gammas in self.scored:
            for pos, (r, g) in enumerate(zip(self.root_of[ids].tolist(), gammas.tolist())):
                if wanted is None or r in wanted:
                    out.setdefault(r, []).append(Member(name, pos, g))
        return out


def _with_value(info: ChannelInfo, value) -> ChannelInfo:
    """`info` with its constants attached: const only where a value is known, zero is 0."""
    n = len(info)
    v = np.full(n, np.nan) if value is None else np.asarray(value, np.float64).reshape(-1)
    if len(v) != n:
        v = np.full(n, np.nan)
    v = np.where(info.zero, 0.0, v)
    known = np.isfinite(v)
    return ChannelInfo(info.ids, info.zero | (known & (v == 0)), info.const & known, v)
