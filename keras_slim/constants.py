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

from keras_slim.planning import _State


def propagate_constants(state: _State) -> dict:
    """Per tensor, the value each channel would have if its BN gamma were 0 (NaN: unknown)."""
    graph, coupling = state.graph, state.coupling
    consts = {k: np.full(len(info), np.nan) for k, info in coupling.tensors.items()}
    for call in graph.calls:
        if not call.outputs or not all(k in consts for k in call.inputs) or not call.inputs:
            continue
        handler = coupling.handlers[call.index]
        ins = [consts[k] for k in call.inputs]
        if not handler.emits_constants and all(np.isnan(c).all() for c in ins):
            continue
        out = handler.constant(call.layer, ins, [graph.shapes[k] for k in call.inputs],
                               [graph.shapes[k] for k in call.outputs])
        if out is None:
            continue
        for k, c in zip(call.outputs, out):
            if c is not None and k in consts and len(c) == len(consts[k]):
                consts[k] = np.asarray(c, dtype=np.float64)
    return consts


def folds(state: _State) -> dict:
    """call index -> function(config, weights) folding removed constants into that layer."""
    consts = propagate_constants(state)
    graph, coupling = state.graph, state.coupling
    result = {}
    for call in graph.calls:
        if not call.inputs or call.inputs[0] not in consts:
            continue
        in_keep = state.keep.get(call.inputs[0])
        out_keep = state.keep.get(call.outputs[0]) if call.outputs else None
        c = consts[call.inputs[0]]
        if in_keep is None or out_keep is None or len(in_keep) == len(c):
            continue
        removed = np.setdiff1d(np.arange(len(c)), in_keep)
        if not np.isfinite(c[removed]).any():
            continue
        handler = coupling.handlers[call.index]
        result[call.index] = _bind(handler, call.layer, c, in_keep, out_keep)
    return result


def _bind(handler, layer, const, in_keep, out_keep):
    def fold(config, weights):
        return handler.fold(layer, const, in_keep, out_keep, config, weights)
    return fold
