"""What a handler sees while describing one call: channel ids (ChannelInfo) and FlowContext.

The coupling step (keras_slim.coupling) creates these and reads back what
handlers did with them; handlers import only this module, never the coupling.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # for annotations only: the coupling imports this module
    from keras_slim.coupling import Coupling
    from keras_slim.graph import FlatCall


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
    value: np.ndarray | None = None  # the constant (NaN: unknown); set by the coupling

    def __post_init__(self):
        if self.const is None:
            self.const = self.zero.copy()

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, positions) -> "ChannelInfo":
        value = None if self.value is None else self.value[positions]
        return ChannelInfo(self.ids[positions], self.zero[positions], self.const[positions], value)

    def not_zero(self) -> "ChannelInfo":
        """Same channels, no longer zero, still constant if they were (y = f(x))."""
        return ChannelInfo(self.ids, np.zeros(len(self.ids), bool), self.const)


class FlowContext:
    """What a handler may do while describing one call (see Handler.flow)."""

    def __init__(self, coupling: Coupling, call: FlatCall, handler=None):
        self._c = coupling
        self.handler = handler
        self.call = call
        self.layer = call.layer
        self.options = coupling.options
        shapes = coupling.graph.shapes
        self.in_shapes = [shapes[k] for k in call.inputs]
        self.out_shapes = [shapes[k] for k in call.outputs]

    @property
    def trace_failure(self) -> str | None:
        """Why this (custom) layer could not be traced, if it was tried."""
        return self._c.graph.trace_failures.get(id(self.layer))

    def out_channels(self, i: int = 0) -> int | None:
        return channels(self.out_shapes[i])

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

    @property
    def scores_filters(self) -> bool:
        """True when the plan's criterion scores filters (l1, l2, fpgm), not BN gammas.

        Then the removal hypothesis is "this class's filters are zero": a
        layer that creates channels scores them with `score_filters` and
        emits act(bias) (`filter_zeroed`); a BN only maps that affinely.
        """
        return self.options.scores in ("filters", "bn_readers")

    @property
    def scores_readers(self) -> bool:
        """True under "bn_scale_readers": every BN scores the channels it reads (its input's
        ids, not a selection), while producers are removed as zero filters."""
        return self.options.scores == "bn_readers"

    def score(self, info: ChannelInfo, gammas: np.ndarray) -> None:
        """Attach this layer's scaling factors to the channels of `info`."""
        self._c.scored.append((self.layer.name, info.ids, np.asarray(gammas, np.float64)))

    def score_filters(self, info: ChannelInfo, filters: np.ndarray) -> None:
        """Attach this layer's filters (one row per channel of `info`) for a filter criterion."""
        self._c.filters.append((self.layer.name, info.ids, np.asarray(filters)))

    def filter_zeroed(self, info: ChannelInfo, value: np.ndarray, i: int = 0) -> ChannelInfo:
        """Output i, `info`, once its filters are zero: the constant `value` (act(bias))."""
        self._c.emitted[(self.call.index, i)] = np.asarray(value, np.float64)
        return ChannelInfo(info.ids, np.zeros(len(info), bool), np.ones(len(info), bool))

    def use(self, info: ChannelInfo | None) -> None:
        """This layer mixes the channels of `info`: each must be zero to be removable.

        A constant channel may go too if the handler absorbs constants into a
        bias (`absorbs_constants`, `fold_delta`) and this call can: a layer
        object called more than once has one bias for all its calls, and a
        'same'-padded reader, or one whose constants came through a padded
        layer, is exact only away from the borders (allowed with the
        `border_folds` option, and recorded).
        """
        if info is None:
            return
        self._c.mixers.add(self.call.index)
        ok = info.zero
        if self._absorbs():
            ok = ok | info.const
            border = (self.handler.border_effect(self.layer)
                      or any(k in self._c.border_tainted for k in self.call.inputs))
            if border and (info.const & ~info.zero).any():
                self._c.border_readers.add(self.call.index)
        self._c.unsafe.update(info.ids[~ok].tolist())

    def _absorbs(self) -> bool:
        h = self.handler
        if h is None or not h.absorbs(self.layer) or self._c.calls_of.get(id(self.layer), 1) > 1:
            return False
        if len(self.call.inputs) != 1:  # folds go into single-input calls only (an RNN given
            return False                # initial_state= or mask= keeps its constants)
        return self.options.border_folds or not h.border_effect(self.layer)

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

    def output_readers(self, i: int = 0) -> list:
        """The layers (or ops) reading output i; None stands for a model output."""
        graph = self._c.graph
        return [None if j < 0 else graph.calls[j].layer
                for j in graph.consumers.get(self.call.outputs[i], ())]

    def barrier(self, ins: list, reason: str) -> list:
        """Keep every channel reaching this layer and everything it emits."""
        for info in ins:
            self.freeze(info)
        ids = np.concatenate([i.ids for i in ins if i is not None] or [np.zeros(0, np.int64)])
        self._c.barriers.append((self.layer.name, reason, ids))
        self._c.barrier_layers.add(id(self.layer))
        return [self.fresh(i, frozen=True) for i in range(len(self.call.outputs))]


def channels(shape) -> int | None:
    """Channel count of a channels-last tensor shape, None if it has none."""
    if shape is None or len(shape) < 2 or shape[-1] is None:
        return None
    return int(shape[-1])
