"""What `slim_multipass` returns: one `PassRecord` per pass and the `MultiPassResult`."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from keras_slim.training._json import json_default

STOP_REASONS = ("target_reached", "accuracy_drop", "nothing_to_prune", "max_passes")
"""Why `slim_multipass` stopped (`MultiPassResult.stop_reason`)."""

__all__ = ["MultiPassResult", "PassRecord", "STOP_REASONS"]


@dataclasses.dataclass
class PassRecord:
    """What one prune + fine-tune pass did.

    Ratios count prunable channels (those `keras_slim.plan` may remove):
    `ratio` of the model this pass started from, `cumulative_ratio` of the
    original model. Accuracies are whatever `evaluate` returned (None without
    one). `accepted` is False for a pass whose fine-tuned accuracy fell more
    than `max_accuracy_drop` below the original model's.
    """

    index: int
    requested_ratio: float
    ratio: float
    cumulative_ratio: float
    channels_before: int
    channels_after: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    accuracy_pruned: float | None
    accuracy_fine_tuned: float | None
    accepted: bool
    seconds: float
    plan: dict = dataclasses.field(repr=False)

    def to_dict(self, include_plan: bool = True) -> dict:
        d = dataclasses.asdict(self)
        if not include_plan:
            d.pop("plan")
        return d


@dataclasses.dataclass
class MultiPassResult:
    """The passes run by `slim_multipass` and the models they produced.

    Attributes:
        passes: one `PassRecord` per pass, in order.
        final_model: the model after the last pass that ran (possibly one
            rejected for its accuracy); the input model if no pass ran.
        best_model: the most-pruned model within the accuracy tolerance (the
            last accepted pass; the input model if none was accepted).
        baseline_accuracy: `evaluate(model)` on the input model (None
            without `evaluate`).
        stop_reason: one of "target_reached", "accuracy_drop",
            "nothing_to_prune", "max_passes".
        original_params, original_macs, original_channels: the input model's
            parameter count, MACs and prunable channels.
    """

    passes: list
    final_model: Any = dataclasses.field(repr=False)
    best_model: Any = dataclasses.field(repr=False)
    baseline_accuracy: float | None
    stop_reason: str
    original_params: int
    original_macs: int
    original_channels: int

    @property
    def model(self):
        """The model to use: `best_model`."""
        return self.best_model

    @property
    def best_pass(self) -> PassRecord | None:
        """The record of `best_model` (None when it is the input model)."""
        accepted = [p for p in self.passes if p.accepted]
        return accepted[-1] if accepted else None

    def _best(self, attr: str, original):
        best = self.best_pass
        return original if best is None else getattr(best, attr)

    @property
    def params(self) -> int:
        """Parameters of `best_model`."""
        return self._best("params_after", self.original_params)

    @property
    def macs(self) -> int:
        """MACs of `best_model` (FLOPs = 2 x MACs)."""
        return self._best("macs_after", self.original_macs)

    @property
    def cumulative_ratio(self) -> float:
        """Fraction of the original prunable channels `best_model` has removed."""
        return self._best("cumulative_ratio", 0.0)

    @property
    def accuracy(self) -> float | None:
        """Accuracy of `best_model`."""
        best = self.best_pass
        return self.baseline_accuracy if best is None else best.accuracy_fine_tuned

    def to_dict(self, include_plans: bool = True) -> dict:
        """JSON-serialisable summary (without the models)."""
        return {
            "stop_reason": self.stop_reason,
            "baseline_accuracy": self.baseline_accuracy,
            "original_params": self.original_params,
            "original_macs": self.original_macs,
            "original_channels": self.original_channels,
            "best": {"pass": None if self.best_pass is None else self.best_pass.index,
                     "cumulative_ratio": self.cumulative_ratio, "params": self.params,
                     "macs": self.macs, "accuracy": self.accuracy},
            "passes": [p.to_dict(include_plans) for p in self.passes],
        }

    def to_json(self, path: str | None = None, include_plans: bool = True, indent: int = 1) -> str:
        """`to_dict` as JSON text, also written to `path` when given."""
        text = json.dumps(self.to_dict(include_plans), indent=indent, default=json_default)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def table(self) -> str:
        """A markdown table with one row per pass."""
        def acc(v):
            return "-" if v is None else f"{v:.4f}"

        lines = [
            "| pass | pruned (this pass) | pruned (total) | params | MACs | acc. pruned "
            "| acc. fine-tuned | kept |",
            "|---:|---:|---:|---:|---:|---:|---:|:---:|",
            f"| 0 | - | - | {self.original_params:,} | {self.original_macs:,} | - "
            f"| {acc(self.baseline_accuracy)} | yes |",
        ]
        for p in self.passes:
            lines.append(
                f"| {p.index} | {p.ratio:.1%} | {p.cumulative_ratio:.1%} | {p.params_after:,} "
                f"| {p.macs_after:,} | {acc(p.accuracy_pruned)} | {acc(p.accuracy_fine_tuned)} "
                f"| {'yes' if p.accepted else 'no'} |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return (self.table() + f"\n\nstopped: {self.stop_reason}; best: "
                f"{self.cumulative_ratio:.1%} of channels removed, params "
                f"{self.original_params:,} -> {self.params:,}, MACs "
                f"{self.original_macs:,} -> {self.macs:,}")
