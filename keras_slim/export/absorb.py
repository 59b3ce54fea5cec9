"""Absorb a ChannelSelection into the layers after it, where that is cheaper on the CPU.

`ChannelSelection -> BatchNormalization -> (activation with act(0) = 0) ->
Conv2D/Dense readers` computes the same as the BN on every channel of the
selection's input, with gamma = beta = 0 (and mean 0, variance 1) on the
channels the selection drops, followed by readers whose kernels have zero rows
there: a dropped channel leaves the BN as exactly 0, the activation keeps it at
0, and its zero weights add exact zeros. The selection's copy disappears; the
price is the BN and the readers working on the dropped channels too.

`absorb_selections` does it where a cost model (LiteRT XNNPACK, measured at
1 and 2 threads: benchmarks/results/selection_cutoff*.md, speedup.md,
latency_terms*.md) says the copy costs more than that extra work: typically at
large spatial sizes with most channels kept (the first stages of a
pre-activation ResNet), while deep, small feature maps keep their slices. At
2 threads the convs run about twice as fast and the slices do not, so more
selections are absorbed: `threads=` says which the file is laid out for (more
than 2 use the 2-thread costs). Only a top-level Functional model is
rewritten; anything else is returned as is.
"""
from __future__ import annotations

import dataclasses
import logging

import keras
import numpy as np

from keras_slim import _keras
from keras_slim.errors import ArgumentError
from keras_slim.export.order import order_channels
from keras_slim.layers import ChannelSelection, channel_runs, uses_slices

logger = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class Costs:
    """The cost model at one thread count, ns (LiteRT 2.3 XNNPACK, x86)."""

    slice_ns_per_run: float  # one strided slice op, whatever its size
    slice_ns_per_pixel_run: float  # and per pixel, with its concatenation share
    gather_ns_per_element: float  # LiteRT's GATHER kernel, outside XNNPACK
    mac_ns: float  # an fp32 conv/dense multiply-add
    element_ns: float  # one more channel-pixel through BN's MUL + ADD


# Slices and GATHER: benchmarks/results/selection_cutoff_1thread_quiet.md and
# selection_cutoff_2threads.md (the same chains, a quiet machine), fitted as
# runs * (a + b * pixels) over the three stream shapes. MACs: the conv/dense estimates
# of PreAct-ResNet-56 in latency_terms*.md (87 M MACs in 1.24 ms at 1 thread, 0.66 ms at
# 2). A slice at 2 threads costs ~2 us more whatever its size (a hand-off the convs do
# not pay), so at 2 threads more selections are absorbed.
COSTS = {
    1: Costs(100.0, 8.2, 1.85, 0.0143, 0.3),
    2: Costs(2050.0, 9.2, 2.3, 0.0075, 0.23),
}


def costs_for(threads: int) -> Costs:
    """The cost model for a file run at `threads` (more than 2: the 2-thread one)."""
    return COSTS[1 if threads <= 1 else 2]

_ZERO_KEEPING = {"relu", "relu6", "linear", "tanh", "elu", "selu", "gelu", "swish", "silu",
                 "leaky_relu", "hard_swish", "hard_silu", "mish"}


def check_for_threads(threads) -> int:
    """`threads` if it is a valid `for_threads=` value, else ArgumentError naming it."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ArgumentError(f"for_threads must be an int >= 1 (the LiteRT thread count the "
                            f"file is laid out for), got {threads!r}")
    return threads


def selections_for_export(model, enabled: bool = True, threads: int = 1
                          ) -> tuple[object, str | None]:
    """The export step every exporter shares: order channels, then absorb selections.

    `threads`: the thread count the file is laid out for (the absorb cost model).

    Returns the model to convert and the line for `report.details["channel_order"]`
    (None when the model has no ChannelSelection or `enabled` is False).
    """
    check_for_threads(threads)
    if not enabled:
        return model, None
    model, order = order_channels(model)
    model, absorbed = absorb_selections(model, threads)
    if not order.selections:
        return model, None
    return model, str(order) + (f"; {absorbed} absorbed into the layers after them"
                                if absorbed else "")


def absorb_selections(model, threads: int = 1) -> tuple[object, int]:
    """(model with cheap-to-absorb selections absorbed, how many were), at `threads`."""
    if not _keras.is_graph_model(model) or _keras.is_sequential(model) or _keras.is_tf_keras(model):
        return model, 0
    graph = _keras.read_model(model)
    if any(_keras.is_model(c.layer) for c in graph.calls):
        return model, 0  # nested models: not rewritten here
    plans = _plans(graph, costs_for(threads))
    if not plans:
        return model, 0
    edits: dict[int, tuple] = {}  # call index -> ("bn"|"reader", selection indices, width)
    for sel_index, (bn_index, readers, indices, width) in plans.items():
        edits[sel_index] = ("drop", indices, width)
        edits[bn_index] = ("bn", indices, width)
        for r in readers:
            edits[r] = ("reader", indices, width)
    new_layers: list = []

    def run(index, call, args, kwargs):
        edit = edits.get(index)
        if edit is not None and edit[0] == "drop":
            return None  # its output is its input, every channel
        layer = _keras.new_layer(call.layer)  # every layer fresh: the input model stays as is
        outputs = layer(*args, **kwargs)
        new_layers.append((call.layer, layer, edit))
        return layer, outputs

    def new_input(t):
        return _keras.new_input(t, None, name=_keras.input_name(t) or t.name)

    try:
        inputs, outputs, _ = _keras.replay(graph, run, new_input)
        for old, new, edit in new_layers:
            if edit is not None:
                new.set_weights(_widened(old, edit[0], np.asarray(edit[1]), edit[2]))
            elif old.weights:
                new.set_weights(old.get_weights())
                _keras.finalize_adapted(new)
    except Exception as err:  # a custom layer whose config does not round-trip
        logger.warning("Not absorbing ChannelSelection layers of '%s': %s", model.name, err)
        return model, 0
    logger.info("absorbed %d ChannelSelection layer(s) into the layers after them", len(plans))
    return keras.Model(inputs=inputs, outputs=outputs, name=model.name), len(plans)


def _plans(graph, costs: Costs) -> dict:
    """{selection call: (BN call, reader calls, indices, input width)} worth absorbing."""
    readers_of: dict[int, list[int]] = {}
    for i, call in enumerate(graph.calls):
        for t in _keras.tensors_in((call.args, call.kwargs)):
            readers_of.setdefault(id(t), []).append(i)
    outputs = {id(t) for t in _keras.flatten(graph.outputs)}
    uses: dict[int, int] = {}
    for call in graph.calls:
        uses[id(call.layer)] = uses.get(id(call.layer), 0) + 1

    def only_reader(t):
        found = readers_of.get(id(t), [])
        return found[0] if len(found) == 1 and id(t) not in outputs else None

    plans = {}
    for i, call in enumerate(graph.calls):
        layer = call.layer
        if not isinstance(layer, ChannelSelection) or uses[id(layer)] != 1:
            continue
        indices = layer.indices
        if len(set(indices)) != len(indices) or len(call.outputs) != 1:
            continue
        bn_index = only_reader(call.outputs[0])
        if bn_index is None or not _is_bn(graph.calls[bn_index].layer, call.outputs[0]):
            continue
        after = graph.calls[bn_index].outputs[0]
        act = only_reader(after)
        if act is not None and _keeps_zero(graph.calls[act].layer) and \
                uses[id(graph.calls[act].layer)] == 1:
            after = graph.calls[act].outputs[0]
        readers = readers_of.get(id(after), [])
        if not readers or id(after) in outputs or not all(
                _is_reader(graph.calls[r].layer) and uses[id(graph.calls[r].layer)] == 1
                for r in readers):
            continue
        if uses[id(graph.calls[bn_index].layer)] != 1:
            continue
        x = _keras.tensors_in((call.args, call.kwargs))[0]
        width = int(x.shape[-1])
        readers_calls = [graph.calls[r] for r in readers]
        if _absorb_cost(x, indices, readers_calls, costs) < _select_cost(x, indices, costs):
            plans[i] = (bn_index, readers, indices, width)
    return plans


def _pixels(shape) -> int:
    return int(np.prod([d or 1 for d in shape[1:-1]])) if len(shape) > 2 else 1


def _select_cost(x, indices, costs: Costs) -> float:
    """ns of the selection as the layer computes it (slices or a gather)."""
    if uses_slices(indices):
        return len(channel_runs(indices)) * (costs.slice_ns_per_run
                                             + costs.slice_ns_per_pixel_run * _pixels(x.shape))
    return costs.gather_ns_per_element * _pixels(x.shape) * len(indices)


def _absorb_cost(x, indices, readers, costs: Costs) -> float:
    """ns of the dropped channels going through the BN and the readers."""
    extra = int(x.shape[-1]) - len(indices)
    macs_per_channel = 0
    for call in readers:
        layer, out = call.layer, call.outputs[0]
        taps = int(np.prod(layer.kernel_size)) if hasattr(layer, "kernel_size") else 1
        macs_per_channel += _pixels(out.shape) * int(out.shape[-1]) * taps
    return extra * (_pixels(x.shape) * costs.element_ns + macs_per_channel * costs.mac_ns)


def _is_bn(layer, x) -> bool:
    if type(layer) is not keras.layers.BatchNormalization or not layer.scale:
        return False  # without gamma a dropped channel would not be 0
    axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
    return int(axis) % len(x.shape) == len(x.shape) - 1


def _keeps_zero(layer) -> bool:
    if type(layer) is keras.layers.ReLU:
        return float(layer.threshold) == 0.0
    if type(layer) in (keras.layers.LeakyReLU, keras.layers.ELU):
        return True
    if type(layer) is keras.layers.Activation:
        name = keras.activations.serialize(layer.activation)
        name = name if isinstance(name, str) else name.get("config", {}).get("name", "")
        return name in _ZERO_KEEPING
    return False


def _is_reader(layer) -> bool:
    if type(layer) is keras.layers.Conv2D:
        return layer.groups == 1 and layer.data_format == "channels_last"
    return type(layer) is keras.layers.Dense


def _widened(old, kind: str, indices: np.ndarray, width: int) -> list:
    """`old`'s weights on all `width` input channels (dropped ones neutral / zero)."""
    if kind == "bn":
        out = []
        for w in old.weights:
            name = _keras.weight_name(w)
            fill = 1.0 if "variance" in name else 0.0
            full = np.full((width,), fill, dtype=np.asarray(w).dtype)
            full[indices] = np.asarray(w)
            out.append(full)
        return out
    kernel, rest = np.asarray(old.kernel), [np.asarray(w) for w in old.weights[1:]]
    axis = 2 if isinstance(old, keras.layers.Conv2D) else 0
    shape = list(kernel.shape)
    shape[axis] = width
    full = np.zeros(shape, kernel.dtype)
    where = [slice(None)] * len(shape)
    where[axis] = indices
    full[tuple(where)] = kernel
    return [full] + rest
