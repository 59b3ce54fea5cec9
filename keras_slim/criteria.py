"""Score: how important a removable channel class is.

Criteria (`plan(model, ..., criterion=...)`):

* "bn_scale" (default, the paper): |gamma| of the BatchNormalization scaling
  factors. Removal is exact where every factor of a class is 0.
* "bn_scale_readers": |gamma| of every BN that *reads* the channel, as
  Torch-Pruning's BNScalePruner groups them. Where each channel has its own
  BN after its producer this ranks as "bn_scale" does. It differs on
  channels several layers read: a pre-activation ResNet's residual stream
  (read by the next blocks' BNs and, raw, by the projection shortcut),
  DenseNet's concatenations. "bn_scale" never cuts those, since a zero
  gamma in a reader does not make them dead (it selects per reader instead);
  this criterion cuts them under the zero-filter hypothesis: the removed
  channel's producing filters are taken as zero, so it carries act(bias)
  into the raw readers, and each reading BN emits beta (as at gamma = 0).
  Exact only for channels whose every reader is a BN with gamma = 0;
  otherwise an approximation for fine-tuning to repair, like "l1". Opt-in:
  measured on a CIFAR pre-activation ResNet-20 in benchmarks/criteria.py.
* "l1", "l2": the norm of each output filter of the layer that creates the
  channel (Li et al., 2017), plus each depthwise filter coupled to it.
  Removal is exact where every such filter is 0 (the channel then carries
  act(bias), folded into its readers). Models without BN, or with
  `scale=False` BN, are prunable with these.
* "fpgm": distance of each filter to the other filters of its layer (the
  geometric-median criterion of He et al., 2019): filters close to the rest
  are redundant and go first. It ranks by redundancy, not magnitude, so a
  zero filter is not necessarily cut first.
* "taylor": first-order Taylor expansion of the loss (Molchanov et al.,
  2017/2019) on the user's data: per batch, |sum over the filter of
  w * dLoss/dw|, averaged over the batches (see keras_slim.taylor: what is
  computed and why). Needs `plan(..., data=..., loss=...)`.
* your own: `register_criterion(name, fn)` with `fn(rows) -> scores`, rows
  being one layer's filters as a (channels, fan_in) array.

Filter scores are compared across layers only after normalisation
(`normalize=`): "mean" (default for filter criteria: each layer's scores
divided by their mean, so a layer's fan-in does not decide its fate), "max",
or None (raw; the default for "bn_scale", whose |gamma| are already
comparable, as the paper ranks them). "bn_scale" takes "mean" and "max" as
well: each BN's |gamma| divided by that BN's mean (max) before the classes
are scored, as Torch-Pruning's BNScaleImportance does by default. After
short sparsity training the raw global threshold cuts some layers to a few
channels (CIFAR VGG at 30% of the MACs: 0.72 against 0.79 for
Torch-Pruning's mean-normalised ranking, benchmarks/results/torch_pruning.md);
normalised, a layer whose factors all went to ~0 together is no longer cut
first, which is why the paper's raw ranking stays the default. Zero stays
zero under every normalisation, so exactness is unaffected. "taylor" scores are estimated loss
changes, which Molchanov et al. 2019 rank raw; measured on CIFAR VGG
(benchmarks/results/criteria.md) raw taylor scores cut whole layers to one
channel at 30% of the MACs (fine-tuned accuracy 0.49 against 0.78 for l1),
so "auto" normalises them by the mean like the other filter criteria.

A class can hold several scaling factors: the BNs of every branch of an
Add (ResNet v1), a depthwise chain (BN before and after the depthwise), a
BN shared by two calls. Their |gamma| are combined by `group_reduction`:

* "mean" (default): comparable across classes with different member counts,
  so one global ranking stays fair (Torch-Pruning's default as well);
* "max": a channel is as important as its most important member (most
  conservative for residual stages);
* "sum": the paper's single-BN case generalised additively.

All three are 0 exactly when every member is 0, which is when removal is
exact. Other criteria plug in here through `register_criterion`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from keras_slim.coupling import Member
from keras_slim.errors import ArgumentError, ArgumentTypeError

_REDUCTIONS: dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda g: float(np.mean(g)),
    "max": lambda g: float(np.max(g)),
    "sum": lambda g: float(np.sum(g)),
}


def _fpgm(rows: np.ndarray) -> np.ndarray:
    """Sum of L2 distances from each filter to the others of its layer."""
    rows = np.asarray(rows, np.float64)
    sq = (rows * rows).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * rows @ rows.T, 0.0)  # no n x n x k array
    return np.sqrt(d2).sum(axis=1)


_FILTER_CRITERIA: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "l1": lambda rows: np.abs(rows).sum(axis=1),
    "l2": lambda rows: np.sqrt((np.asarray(rows, np.float64) ** 2).sum(axis=1)),
    "fpgm": _fpgm,
}
# Criteria that score from the user's data: `rows` are then one layer's per-batch
# first-order terms, (channels, batches) (keras_slim.taylor computes them).
_DATA_CRITERIA: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "taylor": lambda terms: np.abs(terms).mean(axis=1),
}
BN_SCALE = "bn_scale"
BN_READERS = "bn_scale_readers"
_BN_CRITERIA = (BN_SCALE, BN_READERS)
_NORMALIZE = {
    None: lambda s: s,
    "mean": lambda s: s / s.mean() if s.size and s.mean() > 0 else s,
    "max": lambda s: s / s.max() if s.size and s.max() > 0 else s,
}


def register_criterion(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    """Add a filter criterion: `fn(rows)` gets one layer's filters as a (channels,
    fan_in) array and returns one score >= 0 per channel (lower goes first).

    Then `plan(model, ratio, criterion=name)` uses it like "l1".
    """
    if not isinstance(name, str) or not name or name in _BN_CRITERIA or name in _DATA_CRITERIA:
        raise ArgumentError(f"register_criterion: name must be a non-empty string other than "
                            f"{[*_BN_CRITERIA, *sorted(_DATA_CRITERIA)]}, got {name!r}")
    if not callable(fn):
        raise ArgumentTypeError(f"register_criterion: fn must be callable (rows -> scores), "
                                f"got {type(fn).__name__}")
    _FILTER_CRITERIA[name] = fn


def criteria_names() -> list[str]:
    return list(_BN_CRITERIA) + sorted(set(_FILTER_CRITERIA) | set(_DATA_CRITERIA))


def scores_gammas(criterion: str) -> bool:
    """True for the criteria that rank BN scaling factors ("bn_scale", "bn_scale_readers")."""
    return criterion in _BN_CRITERIA


def uses_data(criterion: str) -> bool:
    """True for criteria that score from the user's data and loss ("taylor")."""
    return criterion in _DATA_CRITERIA


def check_criterion(criterion, normalize) -> tuple[str, str | None]:
    """(what scores channels, the normalisation in effect).

    What scores: "bn" (gamma of the BN after the producer, exact), "bn_readers"
    (gamma of every reading BN, zero-filter hypothesis) or "filters".
    """
    if criterion not in criteria_names():
        raise ArgumentError(f"criterion={criterion!r} is not known; use one of "
                            f"{criteria_names()} or add one with "
                            "keras_slim.criteria.register_criterion(name, fn)")
    if normalize == "auto":
        normalize = None if criterion in _BN_CRITERIA else "mean"
    if normalize not in _NORMALIZE:
        raise ArgumentError(f"normalize={normalize!r} is not known; use 'auto', 'mean', 'max' "
                            "or None")
    scores_by = {BN_SCALE: "bn", BN_READERS: "bn_readers"}.get(criterion, "filters")
    return scores_by, normalize


FILTER_REMOVALS = ("zero", "mean")


def check_filter_removal(criterion: str, filter_removal) -> None:
    """`filter_removal` names a known hypothesis, and only a filter criterion has one."""
    if filter_removal not in FILTER_REMOVALS:
        raise ArgumentError(f"filter_removal={filter_removal!r} is not known; use 'zero' (a "
                            "removed filter is taken as zero: exact where it is) or 'mean' (its "
                            "channel carries its BN's mean, act(beta))")
    if filter_removal != "zero" and criterion in _BN_CRITERIA:
        raise ArgumentError(f"filter_removal={filter_removal!r} is for filter criteria ('l1', "
                            f"'l2', 'fpgm', 'taylor'); under {criterion!r} a removed channel "
                            "already carries act(beta) after its BN. Drop filter_removal, or "
                            "choose a filter criterion")


def bn_scores(scored: Sequence, normalize: str | None) -> list:
    """Each BN's |gamma| normalised within that BN: [(layer, ids, scores)], as `scored`."""
    if normalize is None:
        return list(scored)
    norm = _NORMALIZE[normalize]
    return [(name, ids, norm(np.asarray(g, np.float64))) for name, ids, g in scored]


def filter_scores(filters: Sequence, criterion: str, normalize: str | None) -> list:
    """Per-channel scores from each layer's filters: [(layer, ids, scores)], as `scored`.

    For a data criterion ("taylor") `filters` holds each layer's per-batch
    terms instead of its weights (`keras_slim.taylor.filter_terms`).
    """
    fn = _DATA_CRITERIA.get(criterion) or _FILTER_CRITERIA[criterion]
    norm = _NORMALIZE[normalize]
    out = []
    for name, ids, rows in filters:
        rows = np.asarray(rows, np.float64).reshape(len(ids), -1)
        s = np.asarray(fn(rows), np.float64).reshape(-1)
        if s.shape != (len(ids),):
            raise ArgumentError(f"criterion {criterion!r} returned {s.shape[0]} scores for "
                                f"the {len(ids)} filters of {name!r}; it must return one per row")
        out.append((name, ids, norm(np.abs(s))))
    return out


def register_reduction(name: str, fn: Callable[[np.ndarray], float]) -> None:
    """Add a way to combine the |gamma| of one class into a score."""
    _REDUCTIONS[name] = fn


def reductions() -> list[str]:
    return sorted(_REDUCTIONS)


def scores(roots: Sequence[int], owners: np.ndarray, gammas: np.ndarray,
           group_reduction: str = "mean") -> dict:
    """Score of each class in `roots` from all scaling factors (`owners[i]` owns `gammas[i]`)."""
    if group_reduction not in _REDUCTIONS:
        score([], group_reduction)  # raises the clear error
    roots_arr = np.asarray(sorted(roots), dtype=np.int64)
    if len(roots_arr) == 0:
        return {}
    mask = np.isin(owners, roots_arr)
    owner = np.searchsorted(roots_arr, owners[mask])
    gamma = np.asarray(gammas, np.float64)[mask]
    n = len(roots_arr)
    if group_reduction == "max":
        out = np.full(n, -np.inf)
        np.maximum.at(out, owner, gamma)
    elif group_reduction in ("sum", "mean"):
        out = np.bincount(owner, weights=gamma, minlength=n)
        if group_reduction == "mean":
            out = out / np.bincount(owner, minlength=n)
    else:  # a registered reduction: one call per class
        order = np.argsort(owner, kind="stable")
        splits = np.split(gamma[order], np.cumsum(np.bincount(owner, minlength=n))[:-1])
        out = np.array([_REDUCTIONS[group_reduction](g) for g in splits])
    return dict(zip(roots_arr.tolist(), out.tolist()))


def score(members: Sequence[Member], group_reduction: str = "mean") -> float:
    """Score of one channel class from its members' scaling factors (already |gamma|)."""
    try:
        reduce = _REDUCTIONS[group_reduction]
    except KeyError:
        raise ArgumentError(
            f"group_reduction={group_reduction!r} is not known; use one of {reductions()}"
        ) from None
    return reduce(np.asarray([m.gamma for m in members], dtype=np.float64))
