"""plan(): score channels, cut globally, apply per-layer constraints.

The result types are in plan_data.py, the counting of what a plan saves in
accounting.py, budgets in targets.py, the latency-aware order in allocation.py.
Over 400 lines because `plan()` is the library's one entry point for every way
of choosing channels: a third of the file is its argument documentation.
"""
from __future__ import annotations

import logging
import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from keras_slim import _keras, accounting, criteria, latency, plan_checks, targets, taylor
from keras_slim import allocation as allocation_mod
from keras_slim.coupling import Coupling, Options
from keras_slim.graph import FlatGraph, resolve_input_shapes
from keras_slim.handlers.registry import HandlerResolver
from keras_slim.plan_data import LayerPlan, Plan  # noqa: F401  (re-exported)
from keras_slim.state import PruneState
from keras_slim.errors import ArgumentError, ArgumentTypeError, ModelError

logger = logging.getLogger(__name__)


def plan(
    model,
    ratio: float | None = None,
    *,
    threshold: float | None = None,
    min_channels: int = 1,
    max_layer_ratio: float | None = None,
    round_to: int | str = 1,
    exclude: Iterable[str] = (),
    channel_selection: bool = True,
    group_reduction: str = "mean",
    kept: dict | None = None,
    border_folds: bool = True,
    custom_handlers: Mapping | None = None,
    trace: bool = True,
    input_shape: Sequence | None = None,
    criterion: str = "bn_scale",
    normalize: str | None = "auto",
    filter_removal: str = "zero",
    target_macs: float | None = None,
    target_params: float | None = None,
    target_latency_ms: float | str | None = None,
    latency_model=None,
    data=None,
    loss=None,
    group_ratios: Mapping[str, float] | None = None,
    sensitivity=None,
    max_metric_drop: float | None = None,
    allocation: str = "score",
) -> Plan:
    """Work out what pruning `model` would remove, without building anything.

    Channels are ranked globally by the |gamma| of their BatchNormalization
    scaling factors, or by `criterion` (combined over coupled layers by
    `group_reduction`) and
    exactly `round(ratio * prunable)` of the lowest are cut, before the
    per-layer constraints give some back.

    Args:
        model: a built Functional or Sequential Keras model (nested models,
            several inputs/outputs and shared layers are fine).
        ratio: fraction of prunable channels to remove, in [0, 1).
        threshold: instead of `ratio`, remove every channel scoring below it.
        min_channels: fewest channels any layer keeps (>= 1).
        max_layer_ratio: most any one layer may lose, e.g. 0.5 (the paper's
            multi-pass setting); None for no cap.
        round_to: keep channel counts at multiples of this (8 suits ARM SIMD);
            a layer narrower than it is left alone. It rounds each layer up
            from the cut, so the plan keeps more MACs than `ratio` alone; for
            aligned widths within a budget give `target_macs` (or
            `target_latency_ms`) with it: on x86 AVX512 LiteRT/XNNPACK,
            `round_to=32` at the MACs of the ratio's cut ran 1.1-1.6x faster
            than the unrounded plan (benchmarks/results/speedup_efficiency.md).
            "auto" takes the multiple from `latency_model`'s
            `preferred_multiple()` (required then; see keras_slim.latency):
            `keras_slim.export.LatencyModel` reads it off this machine's
            measured width curves (32 on that Xeon, 1 where cost grows
            linearly). `plan.options["round_to"]` is the multiple used and
            `plan.options["round_to_auto"]` says which model chose it.
        exclude: names of layers whose output channels must all stay.
        channel_selection: let a BN whose input is shared (after Add or
            Concatenate) prune its own copy through a gather.
        group_reduction: how the scores of coupled layers combine: "mean",
            "max" or "sum" (see keras_slim.criteria).
        criterion: what ranks channels: "bn_scale" (|gamma|, the paper),
            "bn_scale_readers" (|gamma| of every BN reading the channel, as
            Torch-Pruning groups them: also cuts residual streams and
            concatenations read raw elsewhere, under the zero-filter
            hypothesis, so not exact there; see keras_slim.criteria),
            "l1" / "l2" (norm of the filter that creates the channel) or
            "fpgm" (distance to the layer's other filters), "taylor" (the
            first-order estimate of the loss change when a filter goes,
            from `data` and `loss`; see keras_slim.taylor), or a name given to
            `keras_slim.criteria.register_criterion`. Filter criteria need no
            BN: models without BN, or with scale=False BN, are prunable.
        data, loss: for criterion="taylor" only: an iterable of (x, y)
            batches (a tf.data.Dataset, a list, a generator; at most 32 are
            read) or one (x, y) pair of arrays (cut into batches of 32); a
            keras loss, its name, or fn(y_true, y_pred) (default: the loss
            the model was compiled with).
        target_macs, target_params: instead of ratio/threshold, a budget: a
            fraction of the model's own count (0.5 keeps at most half the
            MACs) or an absolute number. The plan cuts the fewest channels of
            the ranking that meet every target given (after the per-layer
            constraints); `plan.target` says what was asked and reached.
        target_latency_ms, latency_model: a latency budget, in ms (1.5) or
            as a share of the unpruned model's estimate ("60%"), met by the
            estimate of `latency_model` (required with a latency target or
            round_to="auto"; see
            keras_slim.latency): e.g. `keras_slim.export.LatencyModel.measure(
            model, threads=1)`, LiteRT on this machine (cached), or a function
            layers -> ms. `keras_slim.export.check_latency(plan, lm)` measures
            the exported result.
        allocation: the order a latency target cuts channels in: "score"
            (default: the global ranking, least important first) or
            "latency" (score per millisecond the latency model estimates a
            channel's group saves, HALP's greedy knapsack; see
            keras_slim.allocation): the target is met with the channels that
            buy the most time per unit of importance, e.g. none from a layer
            whose cut the runtime rounds back up. Needs target_latency_ms;
            `plan.target["prices"]` lists each group's ms per channel.
        group_ratios: instead of one global cut, a ratio per coupled group,
            `{layer name: ratio}`: the group whose channels that layer
            produces loses that fraction of its lowest-scored channels; groups
            not named lose none.
        sensitivity, max_metric_drop: a `keras_slim.sensitivity` result and
            the largest metric drop any one group may cause: each group gets
            the largest ratio it tolerated (`SensitivityResult.group_ratios`).
        normalize: how scores are made comparable across layers before the
            global ranking: "mean" (each layer's scores over their mean),
            "max", None (raw), or "auto" (None for the bn_scale criteria, "mean" for
            filter criteria, taylor included). With "bn_scale", "mean" and
            "max" divide each BN's |gamma| by that BN's mean / max, as
            Torch-Pruning's BNScaleImportance; `threshold=` then compares
            the normalised scores.
        filter_removal: under a filter criterion, what a removed channel is
            taken to carry. "zero" (default): its filter is taken as zero, so
            after a BN it carries act(BN(0)); exact where the removed filters
            are zero. "mean": its BN's moving mean, so the BN emits beta and
            the channel carries act(beta), as under "bn_scale"; exact where
            those BN gammas are 0, and for non-zero filters a closer
            approximation before fine-tuning (measured in
            benchmarks/results/criteria.md). Layers without a BN after them
            keep "zero" (act(bias)). Not for the bn_scale criteria.
        kept: instead of ratio/threshold, reproduce a saved plan: the kept
            output channels per layer (`Plan.kept`, e.g. from `Plan.from_json`).
        border_folds: a removed channel with gamma = 0 but beta != 0 emits a
            constant, folded into the bias of the layer that reads it. For a
            'same'-padded conv (or after ZeroPadding) that fold is exact only
            away from the borders. True (default) folds there too and says so
            in the plan (`plan.border_folds`); False keeps those channels, so
            that every fold is exact.
        custom_handlers: handlers for this call only, `{LayerClass or layer
            name: Handler()}`; they win over `register_handler` registrations,
            which win over the built-in handlers.
        trace: read custom layers that have no handler (and subclassed
            models) as the graph of stock layers and `keras.ops` their
            `call` builds (see keras_slim.tracing); a layer whose trace fails
            or differs stays a barrier, and the plan says why. False makes
            every handler-less layer a barrier.
        input_shape: the input size MACs are counted at (and, for a
            subclassed model that was never built, the size it is traced at), without the batch
            axis, e.g. (224, 224, 3); a list of them for several inputs. It
            fills the model's None axes (known axes must agree, else
            ValueError). Default: the model's own shape, each None spatial axis
            being 224 (keras-hub / ImageNet convention). Only MACs depend on
            it; the channels removed do not.

    Returns:
        A `Plan`: kept channel indices per layer, coupled groups, barriers,
        params and MACs before/after; `print(plan)` shows the table.
    """
    _keras.check_model(model, "keras_slim.plan")
    round_to, round_to_auto = plan_checks.round_to_option(round_to, latency_model)
    if round_to_auto is not None:
        logger.info("keras_slim: round_to='auto' is %s (%s)", round_to, round_to_auto)
    budget = targets.check_targets(target_macs, target_params, target_latency_ms,
                                   latency_model, round_to_auto=round_to_auto is not None)
    allocation_mod.check_allocation(allocation, budget)
    group_ratios = plan_checks.group_ratios_option(group_ratios, sensitivity, max_metric_drop)
    ways = [ratio is not None or threshold is not None, kept is not None, bool(budget),
            group_ratios is not None]
    if sum(ways) > 1:
        raise ArgumentError("give one of ratio/threshold, kept= (a saved plan), "
                            "target_macs/target_params/target_latency_ms, or "
                            "group_ratios/sensitivity, not several")
    if kept is not None or budget or group_ratios is not None:
        if ratio is not None or threshold is not None:
            raise ArgumentError("give kept= (a saved plan) or ratio/threshold, not both")
        ratio_check = 0.0
    else:
        ratio_check = ratio
    ratio, threshold = plan_checks.check_args(ratio_check, threshold, min_channels, max_layer_ratio,
                                   round_to, group_reduction)
    min_channels = int(min_channels)  # numpy scalars accepted; the plan's JSON has Python ones
    max_layer_ratio = None if max_layer_ratio is None else float(max_layer_ratio)
    scores_by, normalize = criteria.check_criterion(criterion, normalize)
    criteria.check_filter_removal(criterion, filter_removal)
    taylor.check_arguments(criterion, data, loss, replay=kept is not None)
    if kept is not None or budget or group_ratios is not None:
        ratio = None
    if exclude is None:
        exclude = ()
    if not isinstance(exclude, (str, Iterable)):
        raise ArgumentTypeError(f"exclude must be a layer name or a list of them, got "
                                f"{type(exclude).__name__}: {exclude!r}")
    exclude = frozenset(exclude if not isinstance(exclude, str) else [exclude])
    known = {layer.name for layer in _keras.walk_layers(model)}
    missing = sorted(exclude - known)
    if missing:
        raise ArgumentError(f"exclude names layers that are not in model {model.name!r}: {missing}")

    if not isinstance(border_folds, bool):
        raise ArgumentTypeError(f"border_folds must be True or False, got {border_folds!r}")
    resolver = HandlerResolver(custom_handlers)
    unknown = sorted(set(resolver.by_name) - known)
    if unknown:
        raise ArgumentError(f"custom_handlers names layers that are not in model {model.name!r}: "
                         f"{unknown}")

    if not isinstance(trace, bool):
        raise ArgumentTypeError(f"trace must be True or False, got {trace!r}")
    # traces are checked at the user's input size when given (224 per None axis otherwise)
    graph = FlatGraph(_graph_model(model, input_shape, trace), resolver if trace else None,
                      input_shapes=input_shape)
    mac_shapes, input_shapes, dynamic_input = _mac_input(graph, input_shape)
    coupling = Coupling(graph, Options(channel_selection=channel_selection, exclude=exclude,
                                       border_folds=border_folds, scores=scores_by,
                                       filter_removal=filter_removal), resolver)
    if scores_by == "filters":
        filters = coupling.filters
        if criteria.uses_data(criterion):
            filters = taylor.filter_terms(model, coupling, data, loss)
        coupling.set_scores(criteria.filter_scores(filters, criterion, normalize))
    elif normalize is not None:
        coupling.set_scores(criteria.bn_scores(coupling.scored, normalize))
    frozen, unsafe, scored = coupling.root_sets()
    if not scored:
        raise ModelError(plan_checks.no_scaling_factor_message(model, graph, criterion))
    prunable = sorted(r for r in scored if r not in frozen and r not in unsafe)
    plan_checks.warn_barriers(coupling, scored)
    scores = criteria.scores(prunable, *coupling.scale_factors(), group_reduction)
    for r, s in scores.items():
        if not math.isfinite(s):
            bad = sorted({m.layer for m in coupling.members([r])[r]})
            raise ModelError(
                f"non-finite {criterion + ' score' if scores_by == 'filters' else 'BatchNormalization scaling factor (gamma)'} in {bad}; "
                "the model's weights are broken (diverged training?). Fix or retrain first."
            )
        scores[r] = s
    if not prunable:
        logger.warning("keras_slim: model %r has no removable channel (all are kept by "
                       "outputs, barriers or excluded layers); the plan removes nothing.", model.name)

    order = sorted(prunable, key=lambda r: (scores[r], r))
    digest = _keras.weights_digest(model)  # prune checks the weights are still these

    def decide(removed: set):
        removed = _apply_constraints(coupling, removed, scores, min_channels, max_layer_ratio,
                                     round_to)
        state = PruneState(model, graph, coupling, _keep_positions(coupling, removed),
                           mac_shapes=mac_shapes, weights_digest=digest,
                           custom_handlers=custom_handlers)
        return removed, state, accounting.report(state)

    target = None
    if kept is not None:
        removed = _removed_from_kept(coupling, kept, set(prunable))
    elif threshold is not None:
        removed = {r for r in order if scores[r] < threshold}
    elif budget:
        prices = None
        if allocation == "latency":
            order, prices = allocation_mod.latency_order(
                order, scores, coupling, decide, latency.estimator(model, latency_model,
                                                                   input_shape))
        k, target = targets.meet(order, decide, budget, model, latency_model, input_shape)
        if prices is not None:  # a record, not an option: a replay reads kept=
            target.update(allocation=allocation, prices=prices)
        removed = set(order[:k])
    elif group_ratios is not None:
        removed = _removed_by_group(coupling, scores, group_ratios, model.name)
    else:
        removed = set(order[: int(round(ratio * len(order)))])
    cut = max((scores[r] for r in removed), default=0.0)

    removed, state, (layers, kept_now, params, macs) = decide(removed)
    if kept is not None and {k: list(v) for k, v in kept.items()} != kept_now:
        differ = sorted(set(kept) ^ set(kept_now) | {k for k in kept if kept[k] != kept_now.get(k)})
        raise ModelError(f"the saved plan does not fit model {model.name!r}: layers {differ[:5]} "
                         "would keep other channels (was the plan made from another model, or "
                         "with other options?)")
    if kept is None:
        plan_checks.warn_bottlenecks(layers, cut)
    options = dict(min_channels=min_channels, max_layer_ratio=max_layer_ratio,
                   round_to=round_to, exclude=sorted(exclude),
                   channel_selection=channel_selection, group_reduction=group_reduction,
                   criterion=criterion, normalize=normalize, border_folds=border_folds,
                   filter_removal=filter_removal,
                   input_shape=None if input_shape is None else [list(s) for s in input_shapes])
    if round_to_auto is not None:  # a record, not an option: prune() drops it on replay
        options["round_to_auto"] = round_to_auto
    return Plan(
        ratio_requested=ratio,
        threshold=float(cut if threshold is None else threshold),
        prunable_channels=len(prunable),
        removed_channels=len(removed),
        params_before=params[0],
        params_after=params[1],
        macs_before=macs[0],
        macs_after=macs[1],
        layers=layers,
        kept=kept_now,
        groups=accounting.groups(coupling, removed, scores),
        barriers=[(name, reason) for name, reason, _ in coupling.barriers],
        options=options,
        border_folds=accounting.border_folds(state),
        input_shapes=input_shapes,
        dynamic_input=dynamic_input,
        macs_uncounted=state.macs_uncounted,
        target=target,
        _state=state,
    )


def _mac_input(graph: FlatGraph, input_shape) -> tuple[dict | None, list, bool]:
    """(tensor shapes for the MAC count or None for the graph's own, input shapes, dynamic)."""
    model_shapes = [graph.shapes[k] for k in graph.inputs]
    shapes, dynamic = resolve_input_shapes(model_shapes, graph.input_names(), input_shape,
                                           graph.model.name)
    if not graph.has_dynamic_axes():  # static model: its own shapes, no extra work
        return None, shapes, dynamic
    full = [(m[0],) + tuple(s) for m, s in zip(model_shapes, shapes)]
    concrete, failed = graph.concrete_shapes(full)
    if failed:
        logger.info("keras_slim: output shapes of %s could not be computed at input %s",
                    [call.layer.name for call in failed], shapes)
    return concrete, shapes, dynamic


def _graph_model(model, input_shape, trace: bool):
    """`model` itself, or for a subclassed model the Functional model its call traces into."""
    if _keras.is_graph_model(model) or not trace:
        _keras.check_graph_model(model, "keras_slim.plan")
        return model
    from keras_slim import tracing

    shape = None
    if input_shape is not None:
        shape = tuple(input_shape) if _keras.is_single_shape(input_shape) else None
        if shape is None:
            raise ModelError("keras_slim.plan: a subclassed model is traced at one input "
                             f"shape; got input_shape={input_shape!r}")
    try:
        return tracing.trace_model(model, shape)
    except tracing.TraceError as e:
        raise ArgumentTypeError(f"keras_slim.plan: subclassed model {model.name!r} "
                        f"({type(model).__name__}) cannot be read as a graph: {e}. Express it "
                        "as a Functional model, or fix what stops the trace.") from e


def _removed_from_kept(coupling, kept: dict, prunable: set) -> set:
    """Class roots a saved plan removes: each named layer's channels not listed as kept."""
    graph = coupling.graph
    outputs = {}
    for call in graph.calls:
        outputs.setdefault(accounting.qualified_name(graph, call), call.outputs[0] if call.outputs else None)
    removed = set()
    for name, keep in kept.items():
        key = outputs.get(name)
        if key is None or key not in coupling.tensors:
            raise ModelError(f"the saved plan names layer {name!r}, which model "
                             f"{graph.model.name!r} does not have (or it has no channel axis)"
                             + _renamed_hint(name, outputs))
        roots = coupling.root_of[coupling.tensors[key].ids]
        gone = np.ones(len(roots), bool)
        gone[np.asarray(keep, dtype=np.int64)] = False
        for r in set(roots[gone].tolist()):
            if r not in prunable:
                raise ModelError(f"the saved plan removes channels of {name!r} that cannot be "
                                 "removed in this model (outputs, barriers or live channels)")
            removed.add(r)
    return removed


def _renamed_hint(name: str, names) -> str:
    """Advice when the model's layers carry the plan's auto-generated names with a suffix."""
    import re

    base = re.sub(r"_\d+$", "", name.split("/")[-1])
    similar = sorted(n for n in names if re.fullmatch(re.escape(base) + r"(_\d+)?", n.split("/")[-1]))
    if not similar:
        return ""
    return (f"; it has {similar[:3]}. Keras numbers auto-generated names per Python session, "
            "so a model built again in another order (or twice) has other names: apply the plan "
            "to the model loaded from the file it was made on, or name your layers "
            "(layers.Conv2D(..., name='stem_conv'))")


def _apply_constraints(coupling, removed, scores, min_channels, max_layer_ratio, round_to):
    """Give channels back until every layer and every selection is satisfied."""
    root_of = coupling.root_of
    units = []  # unique roots of each produced tensor, in order
    for _, ids in coupling.produced:
        roots = root_of[ids]
        _, first = np.unique(roots, return_index=True)
        units.append(roots[np.sort(first)].tolist())
    pairs = set()
    for dep, need in coupling.requires:
        pairs.update(zip(root_of[dep].tolist(), root_of[need].tolist()))
    pairs = [(a, b) for a, b in pairs if a != b]
    removed = set(removed)

    def give_back(candidates, count):
        for r in sorted(candidates, key=lambda r: (-scores[r], r))[:count]:
            removed.discard(r)

    changed = True
    while changed:
        changed = False
        for roots in units:
            n = len(roots)
            gone = [r for r in roots if r in removed]
            kept = n - len(gone)
            need = min(n, min_channels)
            if max_layer_ratio is not None:
                need = max(need, n - int(math.floor(max_layer_ratio * n)))
            if round_to > 1:
                need = min(n, int(math.ceil(max(need, kept) / round_to)) * round_to)
            if kept < need:
                give_back(gone, need - kept)
                changed = True
        for a, b in pairs:
            if b in removed and a not in removed:
                removed.discard(b)
                changed = True
    return removed


def _removed_by_group(coupling, scores, group_ratios: dict, model_name: str) -> set:
    """The lowest-scored round(r * n) classes of each named group."""
    groups = accounting.group_members(coupling, scores)
    removed: set = set()
    for name, r in group_ratios.items():
        group = accounting.find_group(groups, name, "group_ratios", model_name)
        ordered = sorted(group["roots"], key=lambda root: (scores[root], root))
        removed.update(ordered[: int(round(r * len(ordered)))])
    return removed


def _keep_positions(coupling, removed) -> dict:
    n = len(coupling.uf.parent)
    root_of = coupling.root_of
    gone_root = np.zeros(n, bool)
    if removed:
        gone_root[list(removed)] = True
    gone = gone_root[root_of]
    return {k: np.nonzero(~gone[info.ids])[0] for k, info in coupling.tensors.items()}

