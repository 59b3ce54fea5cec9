"""Rebuild: replay the model's graph with narrower layers and sliced weights.

Every layer is re-created from its (edited) config and called on the new
tensors; the original layers are never called, so the input model is left
exactly as it was. Nested models are rebuilt recursively (once each, even
when called twice) and keep their names.
"""
from __future__ import annotations

import logging

import numpy as np

from keras_slim import _keras
from keras_slim.handlers.base import Handler
from keras_slim.state import PruneState
from keras_slim.errors import PruneError

logger = logging.getLogger(__name__)

_AS_IT_IS = Handler()  # the base rebuild: the layer's own config and weights


class _Rebuilder:
    def __init__(self, state: PruneState, fold: dict | None = None):
        self.state = state
        self.graph = state.graph
        self.fold = fold or {}
        self.layers: dict[int, object] = {}  # id(old layer) -> new layer
        self.pending_weights: dict[int, list] = {}
        self.models: dict[int, object] = {}
        self.kind = _keras.flavour(state.model)

    def model(self, mg: _keras.ModelGraph, scope: tuple):
        if id(mg.model) in self.models:
            return self.models[id(mg.model)]
        keep = self.state.keep

        def new_input(t):
            k = self.graph.key(scope, t)
            width = len(keep[k]) if k in keep else None
            return _keras.new_input(t, width, name=_keras.input_name(t), kind=self.kind)

        def run(ci, call, args, kwargs):
            traced = self.graph.traced.get((scope, ci))
            if traced is not None or _keras.is_graph_model(call.layer):
                sub = traced if traced is not None else call.layer
                layer = self.model(self.graph.graph(sub), scope + (ci,))
                if traced is not None:  # a trace takes the call's tensors as one flat list
                    tensors = _keras.tensors_in((args, kwargs))
                    return layer, layer(tensors[0] if len(tensors) == 1 else tensors)
                return layer, layer(*args, **kwargs)
            flat = self.graph.by_site[(scope, ci)]
            layer, args = self._layer(flat, args)
            handler = self.state.coupling.handlers[flat.index]
            args, kwargs = handler.call_args(flat.call, args, kwargs,
                                             *self.state.keeps(flat))
            weights = self.pending_weights.pop(id(flat.layer), None)
            if weights is None:
                return layer, layer(*args, **kwargs)
            names = [_keras.weight_name(w) for w in flat.layer.weights]
            with _keras.initial_values(layer, names, weights) as created:
                outputs = layer(*args, **kwargs)  # builds it, with these weights
            try:
                self._set_weights(flat.layer, layer, names, weights, created)
            except PruneError as e:  # from_config built another layer (other weights)
                if not self._copyable(flat, handler):
                    raise
                layer = self.layers[id(flat.layer)] = self._copy(flat, handler, e)
                outputs = layer(*args, **kwargs)
            return layer, outputs

        inputs, outputs, new_layers = _keras.replay(mg, run, new_input)
        new = _keras.make_model(mg, inputs, outputs, new_layers)
        self.models[id(mg.model)] = new
        return new

    def _layer(self, flat, args):
        """The new layer for a call, and the call's args with a gather inserted if needed."""
        old = flat.layer
        in_keep, out_keep = self.state.keeps(flat)
        if "select" in self.state.coupling.marks.get(flat.index, ()):
            args = self._select(flat, args, in_keep[0], out_keep[0])
            in_keep = [out_keep[0]] + in_keep[1:]
        if id(old) in self.layers:
            return self.layers[id(old)], args
        handler = self.state.coupling.handlers[flat.index]
        if id(old) in self.state.coupling.barrier_layers:
            # A barrier keeps its config and weights whatever its handler's rebuild would
            # do with keep lists of the last axis (a channels_first conv's last axis is
            # not its channels): every channel reaching or leaving it is frozen.
            self._check_unchanged(flat)
            handler = _AS_IT_IS
        if not _keras.is_layer(old):  # a stateless keras.ops operation
            new = _keras.new_layer(old, handler.op_config(old, in_keep, out_keep))
        else:
            fold = self.fold.get(flat.index)
            try:
                config, weights = handler.rebuild(old, in_keep, out_keep)
                if fold is not None:
                    config, weights = fold(config, weights)
                new = _keras.new_layer(old, config)
                self.pending_weights[id(old)] = weights
            except Exception as e:  # a config that does not round-trip
                new = self._copy(flat, handler, e)
        self.layers[id(old)] = new
        return new, args

    def _check_unchanged(self, flat) -> None:
        in_keep, out_keep = self.state.keeps(flat)
        widths = [self.graph.shapes[k][-1] for k in flat.inputs + flat.outputs]
        if flat.index in self.fold or not all(
                kp is None or w is None or len(kp) == w
                for kp, w in zip(in_keep + out_keep, widths)):
            raise PruneError(
                f"keras_slim.prune: layer {flat.layer.name!r} is a barrier (its channels are "
                "kept), but channels of it were cut or folded: a handler broke the barrier "
                "rule. Please report this with the model.")

    def _copyable(self, flat, handler) -> bool:
        """The rebuild would not change the layer: its handler keeps config and weights
        (nothing folded), and its channels stay or it is a weightless stock layer."""
        old = flat.layer
        in_keep, out_keep = self.state.keeps(flat)
        widths = [self.graph.shapes[k][-1] for k in flat.inputs + flat.outputs]
        unchanged = all(kp is None or len(kp) == w for kp, w in zip(in_keep + out_keep, widths))
        stock = type(old).__module__.startswith("keras.") and not old.weights
        as_is = type(handler).rebuild is Handler.rebuild and flat.index not in self.fold
        return as_is and (unchanged or stock) and not _keras.is_tf_keras(old)

    def _copy(self, flat, handler, error: Exception):
        """A layer kept as it is that its config does not re-create: a copy with its own
        weights (never the input model's object). Anything else is a clear error."""
        old = flat.layer
        cls = f"{type(old).__module__}.{type(old).__name__}"
        why = f"{type(error).__name__}: {_first_line(error)}"
        if self._copyable(flat, handler):
            try:
                return _keras.copy_layer(old)
            except Exception as e:
                raise PruneError(
                    f"keras_slim.prune: layer {old.name!r} ({cls}) is kept as it is, but its "
                    f"config does not re-create it ({why}) and it cannot be copied either "
                    f"({type(e).__name__}: {_first_line(e)}). Give {type(old).__name__} a "
                    "get_config() returning its __init__ arguments (from_config for objects "
                    "among them).") from error
        if flat.index in self.fold:
            reason = "a constant of removed channels is folded into its bias"
        elif type(handler).rebuild is not Handler.rebuild:
            reason = f"{type(handler).__name__} rebuilds it with a new config"
        else:
            reason = "its channels change"
        raise PruneError(
            f"keras_slim.prune: layer {old.name!r} ({cls}) must be rebuilt ({reason}), but it "
            f"cannot be re-created from its config ({why}). Give {type(old).__name__} a "
            "get_config() returning its __init__ arguments (plain values; from_config for the "
            "rest), or keep its channels: plan(model, ..., exclude=[...]) naming the layers "
            "that feed it.") from error

    def _select(self, flat, args, in_keep, out_keep):
        positions = np.searchsorted(in_keep, out_keep)
        if len(positions) == len(in_keep):
            return args  # the BN keeps every channel of its input: no gather
        name = f"{flat.layer.name}_select"
        selection = _keras.channel_selection_class(self.kind)(positions.tolist(), name=name)
        x = args[0]
        return (selection(x),) + tuple(args[1:])

    def _set_weights(self, old, new, names: list, weights: list, created: list) -> None:
        if len(weights) != len(new.weights):
            raise PruneError(
                f"rebuilding {old.name!r} ({type(old).__name__}): the handler gave "
                f"{len(weights)} weights, the new layer has {len(new.weights)}"
            )
        for w, v in zip(new.weights, weights):
            if tuple(w.shape) != tuple(np.shape(v)):
                raise PruneError(
                    f"rebuilding {old.name!r}: weight {_keras.weight_name(w)!r} has shape "
                    f"{tuple(w.shape)} in the new layer but the handler sliced {np.shape(v)}"
                )
        if sorted(created) != sorted(names) or [_keras.weight_name(w) for w in new.weights] != names:
            _keras.set_weights(new, weights)  # not all were created from the values
        _keras.finalize_adapted(new)


def rebuild(state: PruneState, fold: dict | None = None):
    """Build the smaller model described by a plan's state."""
    rebuilder = _Rebuilder(state, fold)
    return rebuilder.model(state.graph.graph(state.graph.model), ())


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else ""
