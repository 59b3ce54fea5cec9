"""Fold the constant output of removed channels into the next layer.

A removed channel whose gamma is ~0 but whose beta is not still emits the
constant act(beta) (through whatever element-wise layers follow). Dropping
it would shift every layer that reads it; instead its contribution
`constant x sum(kernel taps)` is added to that layer's bias. This is exact
for Dense (also after Flatten or global pooling), 1x1 and 'valid' convs,
and exact away from the borders for 'same'-padded convs, where the zero
padding would have multiplied some taps by 0 instead of the constant.
"""
from __future__ import annotations

import numpy as np

from keras_slim import _keras
from keras_slim.state import PruneState
from keras_slim.errors import PruneError


def propagate_constants(state: PruneState) -> dict:
    """Per tensor, the value each channel has once its class's gammas are 0 (NaN: unknown).

    Computed during coupling (`ChannelInfo.value`), where it also decides
    which constant channels may be removed at all.
    """
    return {k: info.value for k, info in state.coupling.tensors.items() if info.value is not None}


def folds(state: PruneState) -> dict:
    """call index -> function(config, weights) -> (config, weights) applying the folds.

    The constant goes into the reading layer's bias if it has one; a bias-free
    conv/dense whose only reader is a BatchNormalization shifts that BN's
    moving mean instead (no new parameters); otherwise the layer gets a bias.
    """
    result: dict = {}
    for call, names, reader, delta in _fold_sites(state):
        if "bias" not in names and reader is not None:
            _chain(result, reader.index, _shift_moving_mean(reader.layer, delta))
        else:
            _chain(result, call.index, _add_bias(names, delta))
    return result


def new_biases(state: PruneState) -> dict:
    """call index -> size of the bias `folds` gives a bias-free layer (for the plan's
    parameter count, which is otherwise read off the weights' shapes)."""
    return {call.index: int(np.size(delta)) for call, names, reader, delta in
            _fold_sites(state, only_new_biases=True)}


def _fold_sites(state: PruneState, only_new_biases: bool = False):
    """(call, its weight names, its sole BN reader or None, bias change) per fold.

    `only_new_biases`: only the folds that give a bias-free layer a bias, found
    before any kernel is summed (planning counts them at every step of a target
    search); the check that no constant is lost is then left to `folds`.
    """
    consts = propagate_constants(state)
    graph, coupling = state.graph, state.coupling
    for call in graph.calls:
        if len(call.inputs) != 1 or call.inputs[0] not in consts or len(call.outputs) != 1:
            continue
        in_keep, out_keep = state.keep.get(call.inputs[0]), state.keep.get(call.outputs[0])
        c = consts[call.inputs[0]]
        if in_keep is None or out_keep is None or len(in_keep) == len(c):
            continue
        # names only, no values read; an op (keras.ops.add, ...) has no weights
        names = [_keras.weight_name(w) for w in getattr(call.layer, "weights", ())]
        reader = _sole_batchnorm_reader(graph, call)
        if only_new_biases and ("bias" in names or reader is not None):
            continue
        handler = coupling.handlers[call.index]
        delta = handler.fold_delta(call.layer, c, in_keep, out_keep)
        if delta is None:
            if not only_new_biases and call.index in coupling.mixers:
                _check_nothing_lost(call, handler, c, in_keep)
            continue
        yield call, names, reader, delta


def _check_nothing_lost(call, handler, const, in_keep) -> None:
    """A mixing reader that drops a non-zero constant without folding it is a bug."""
    if not handler.absorbs(call.layer):
        return  # it never let a constant channel go (FlowContext.use)
    removed = np.setdiff1d(np.arange(len(const)), in_keep)
    live = np.isfinite(const[removed]) & (const[removed] != 0)
    if live.any():
        raise PruneError(
            f"keras_slim: {type(handler).__name__} for layer {call.layer.name!r} claims "
            f"absorbs_constants but its fold_delta returned None for {int(live.sum())} removed "
            "constant channels; the pruned model would differ. Return the bias change from "
            "fold_delta, or set absorbs_constants = False so those channels are kept.")


def _sole_batchnorm_reader(graph, call):
    """The BN call whose moving mean may absorb `call`'s bias change, or None.

    Only when shifting the mean is the same as adding a bias: `call`'s layer
    has no activation of its own (tanh(Wx + d) is not tanh(Wx) + d), the BN
    is the only reader and is called only here (a shared BN's other calls
    never saw the constant), and it normalizes the channel axis.
    """
    readers = graph.consumers.get(call.outputs[0], [])
    if len(readers) != 1 or readers[0] < 0 or not _linear(call.layer):
        return None
    reader = graph.calls[readers[0]]
    if not _keras.is_batch_norm(reader.layer):
        return None
    rank = len(graph.shapes.get(call.outputs[0]) or ())
    axis = getattr(reader.layer, "axis", -1)
    if not rank or axis not in (-1, rank - 1):
        return None
    if sum(1 for c in graph.calls if c.layer is reader.layer) != 1:
        return None
    return reader


def _linear(layer) -> bool:
    """The layer's output is its affine map itself (no built-in activation)."""
    fn = getattr(layer, "activation", None)
    return fn is None or getattr(fn, "__name__", None) == "linear"


def _add_bias(names, delta):
    def apply(config, weights):
        weights = list(weights)
        if "bias" in names:
            i = names.index("bias")
            weights[i] = (weights[i] + delta).astype(weights[i].dtype)
        else:  # Keras creates the bias right after the (pointwise) kernel
            k = names.index("pointwise_kernel" if "pointwise_kernel" in names else "kernel")
            config = dict(config, use_bias=True)
            weights.insert(k + 1, delta.astype(weights[k].dtype))
        return config, weights
    return apply


def _shift_moving_mean(bn, delta):
    names = [n for n, _ in _keras.get_weights(bn)]

    def apply(config, weights):
        # BN(x + delta) with mean m equals BN(x) with mean m - delta.
        weights = list(weights)
        i = names.index("moving_mean")
        weights[i] = (weights[i] - delta).astype(weights[i].dtype)
        return config, weights
    return apply


def _chain(result: dict, index: int, fn) -> None:
    previous = result.get(index)
    if previous is None:
        result[index] = fn
    else:
        result[index] = lambda config, weights: fn(*previous(config, weights))
