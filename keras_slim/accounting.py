"""What a decided plan removes: per-layer widths, parameters, MACs, groups.

Counted from the kept positions and the handlers' `params`/`macs`, plus the
bias that folding removed constants gives a bias-free layer (so a plan's
`params_after` is the pruned model's `count_params()`); nothing here slices a
weight or builds a layer (that is surgery's job).
"""
from __future__ import annotations

import numpy as np

from keras_slim import _keras
from keras_slim.errors import ArgumentError
from keras_slim.fold_constants import new_biases
from keras_slim.handlers.base import Handler
from keras_slim.plan_data import LayerPlan
from keras_slim.state import PruneState


def report(state: PruneState):
    graph, coupling = state.graph, state.coupling
    rows, kept = [], {}
    seen = set()
    params = [0, 0]
    macs = [0, 0]
    biases = new_biases(state)  # folded constants give some bias-free layers a bias
    for call in graph.calls:
        handler = coupling.handlers[call.index]
        in_keep, out_keep = state.keeps(call)
        in_before = [graph.shapes[k] for k in call.inputs]
        out_before = [graph.shapes[k] for k in call.outputs]
        p_before = p_after = 0
        if id(call.layer) not in seen and _keras.is_layer(call.layer) and call.layer.weights:
            seen.add(id(call.layer))
            p_before = sum(int(np.prod(w.shape)) for w in call.layer.weights)
            changed = any(kp is not None and len(kp) != _len(s) for kp, s in
                          zip(in_keep + out_keep, in_before + out_before))
            # Counted from shapes: planning decides, surgery slices the weights.
            p_after = handler.params(call.layer, in_keep, out_keep) if changed else p_before
            p_after += biases.get(call.index, 0)
        m_before, m_after = _macs(state, call, handler, in_keep, out_keep) if in_before else (0, 0)
        params[0] += p_before
        params[1] += p_after
        macs[0] += m_before
        macs[1] += m_after
        ch_before = _len(out_before[0]) if out_before else None
        ch_after = len(out_keep[0]) if out_keep and out_keep[0] is not None else ch_before
        name = qualified_name(graph, call)
        if ch_before is not None and ch_after != ch_before and name not in kept:
            kept[name] = out_keep[0].tolist()
        rows.append(LayerPlan(name, type(call.layer).__name__, ch_before, ch_after,
                              p_before, p_after, int(m_before), int(m_after)))
    return rows, kept, params, macs


def _macs(state: PruneState, call, handler, in_keep, out_keep) -> tuple[int, int]:
    """MACs of a call before/after pruning, at the plan's input size."""
    shapes = state.graph.shapes if state.mac_shapes is None else state.mac_shapes
    ins = [shapes[k] for k in call.inputs]
    outs = [shapes[k] for k in call.outputs]
    rule = type(handler).macs is not Handler.macs
    # no MAC rule but a kernel (EinsumDense, attention, recurrent layers), or a rule
    # without the shapes it needs: counted as 0, and named
    unknown = any(d is None for s in ins + outs for d in s[1:])
    if (rule and unknown) or (not rule and _has_matrix(call.layer)):
        state.macs_uncounted.append(qualified_name(state.graph, call))
    if unknown:
        return 0, 0
    return (handler.macs(call.layer, ins, outs),
            handler.macs(call.layer, [_narrow(s, kp) for s, kp in zip(ins, in_keep)],
                         [_narrow(s, kp) for s, kp in zip(outs, out_keep)]))


def border_folds(state: PruneState) -> list:
    """[layer, n] for readers whose fold of n removed constants is exact only inside."""
    graph, coupling = state.graph, state.coupling
    out = []
    for index in sorted(coupling.border_readers):
        call = graph.calls[index]
        key = call.inputs[0]
        info, keep = coupling.tensors[key], state.keep[key]
        gone = np.ones(len(info), bool)
        gone[keep] = False
        n = int((gone & info.const & ~info.zero).sum())
        if n:
            out.append([qualified_name(graph, call), n])
    return out


def qualified_name(graph, call) -> str:
    names, scope = [], ()
    for ci in call.scope:
        sub = graph.graph_at(scope).calls[ci].layer
        names.append(sub.name)
        scope = scope + (ci,)
    return "/".join(names + [call.layer.name])


def group_members(coupling, scores) -> list:
    """Coupled groups: [{"layers": sorted names, "roots": class roots}] over the scored roots.

    A group is what one layer's output width ties together: the classes a
    layer produces (united through Add, depthwise, ...) and the layers that
    score them. Removing channels from a group shrinks all its layers.
    """
    root_of, graph = coupling.root_of, coupling.graph
    parent: dict[int, int] = {}

    def find(r):
        while parent.setdefault(r, r) != r:
            r = parent[r]
        return r

    layers_of: dict[int, set] = {}
    for index, ids in coupling.produced:
        roots = np.unique(root_of[ids]).tolist()
        seen = [r for r in roots if r in parent]  # most roots are new: no find() for them
        base = find(seen[0]) if seen else roots[0]
        parent.setdefault(base, base)
        for r in seen:
            rb = find(r)
            if rb != base:
                parent[rb] = base
        for r in roots:
            parent.setdefault(r, base)
        name = qualified_name(graph, graph.calls[index])
        layers_of.setdefault(base, set()).add(name)
    base_of = {r: find(r) for r in scores}
    for name, ids, _ in coupling.scored:
        for base in {base_of[r] for r in np.unique(root_of[ids]).tolist() if r in base_of}:
            layers_of.setdefault(base, set()).add(name)
    roots_of: dict[int, list] = {}
    for r in sorted(scores):
        roots_of.setdefault(base_of[r], []).append(r)
    names: dict[int, set] = {}
    for base, layer_names in layers_of.items():
        names.setdefault(find(base), set()).update(layer_names)
    return [dict(layers=sorted(names.get(b, ())), roots=roots) for b, roots in roots_of.items()]


def _has_matrix(layer) -> bool:
    """A layer with a kernel (a weight matrix it multiplies by), not a lookup table."""
    return (not _keras.is_embedding(layer) and any(
        "kernel" in _keras.weight_name(w) and len(w.shape) >= 2
        for w in getattr(layer, "weights", ())))


def group_name(groups: list, group: dict) -> str | None:
    """The first layer of `group` that is in no other group: a name for it alone.

    A BN after a Concatenate scores the channels of every producer, so it is
    in each of their groups and names none of them. None if no layer is
    the group's alone.
    """
    for name in group["layers"]:
        if not any(name in g["layers"] for g in groups if g is not group):
            return name
    return None


def find_group(groups: list, name: str, what: str, model_name: str) -> dict:
    """The one group `name` (a layer) belongs to; ArgumentError if none or several."""
    found = [g for g in groups if name in g["layers"]]
    if len(found) == 1:
        return found[0]
    named = [n for n in (group_name(groups, g) for g in groups) if n][:6]
    if not found:
        raise ArgumentError(
            f"{what} names {name!r}, which is in no prunable group of model {model_name!r}; "
            f"name a layer of a group, e.g. {named} (see plan(model, 0).groups)")
    raise ArgumentError(
        f"{what} names {name!r}, which is in {len(found)} groups of model {model_name!r} "
        f"(it reads the channels of several producers, as a BN after a Concatenate does); "
        f"name a layer of one group only: "
        f"{[group_name(groups, g) for g in found]}")


def groups(coupling, removed, scores) -> list:
    """The plan's group table: layers, channels and how many of them go."""
    return [dict(layers=g["layers"], channels=len(g["roots"]),
                 removed=sum(r in removed for r in g["roots"]))
            for g in group_members(coupling, scores)]


def _len(shape) -> int | None:
    return None if shape is None or len(shape) < 2 else shape[-1]


def _narrow(shape, keep):
    if keep is None or shape is None or len(shape) < 2:
        return shape
    return tuple(shape[:-1]) + (len(keep),)
