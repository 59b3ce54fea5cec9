"""Plan and LayerPlan: what a plan decided, as plain data (print, JSON, compare).

The model-facing part of a plan (`_state`, a PruneState) is attached by
`keras_slim.plan` and never serialized; a plan read back from JSON is
re-checked on the model by `prune(model, plan)`.
"""
from __future__ import annotations

import dataclasses
import json
import os

from keras_slim import _jsonio
from keras_slim.errors import ArgumentError, ArgumentTypeError
from keras_slim.state import PruneState


@dataclasses.dataclass
class LayerPlan:
    """One row of the plan's table (one layer call)."""

    name: str
    class_name: str
    channels_before: int | None
    channels_after: int | None
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


@dataclasses.dataclass
class Plan:
    """What pruning `model` at a ratio would remove, and what it saves.

    `kept` maps each layer whose output narrows to the indices of the output
    channels that stay. Parameters are those of `prune(model, plan)`'s model,
    biases added by folding constants included (`fold_constants=False` gives a
    model without them). MACs count multiply-accumulates of conv/dense layers;
    FLOPs = 2 x MACs as the paper counts them. They are counted at
    `input_shapes` (one shape per model input, without the batch axis);
    `dynamic_input` says those fill None axes of the model's inputs (a
    reference size, by default 224 per spatial axis), and `macs_uncounted`
    names layers counted as 0: their output shape Keras could not compute, or
    they multiply by a weight matrix with no MAC rule (EinsumDense, attention).
    """

    ratio_requested: float | None
    threshold: float
    prunable_channels: int
    removed_channels: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    layers: list
    kept: dict
    groups: list
    barriers: list
    options: dict
    # [layer, removed constant channels] where the fold is exact only away from 'same' borders
    border_folds: list = dataclasses.field(default_factory=list)
    # MAC input size; the defaults keep plans saved before these fields existed loadable.
    input_shapes: list | None = None
    dynamic_input: bool = False
    macs_uncounted: list = dataclasses.field(default_factory=list)
    # plan(target_macs=/target_params=/target_latency_ms=): what was asked, the absolute
    # goals, what was reached (and for latency, the estimate before and by what model)
    target: dict | None = None
    _state: PruneState | None = dataclasses.field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------ derived
    @property
    def ratio(self) -> float:
        """Achieved fraction of prunable channels removed."""
        return self.removed_channels / self.prunable_channels if self.prunable_channels else 0.0

    @property
    def flops_before(self) -> int:
        return 2 * self.macs_before

    @property
    def flops_after(self) -> int:
        return 2 * self.macs_after

    # ------------------------------------------------------------ output
    def to_dict(self) -> dict:
        d = dataclasses.asdict(dataclasses.replace(self, _state=None))
        d.pop("_state", None)
        d.update(ratio=self.ratio, flops_before=self.flops_before, flops_after=self.flops_after)
        return d

    def to_json(self, path: str | None = None, indent: int = 1) -> str:
        return _jsonio.to_json(self.to_dict(), path, indent)

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        """A plan read back from `to_dict`; `prune(model, plan)` re-checks it on the model."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"_state"}
        optional = {f.name for f in dataclasses.fields(cls)
                    if f.default is not dataclasses.MISSING
                    or f.default_factory is not dataclasses.MISSING}
        missing = sorted(fields - optional - set(d))
        if missing:
            raise ArgumentError(f"not a keras_slim plan: missing {missing}")
        data = {k: d[k] for k in fields if k in d}
        data["layers"] = [LayerPlan(**row) for row in d["layers"]]
        if data.get("input_shapes") is not None:  # JSON made the shape tuples lists
            data["input_shapes"] = [tuple(s) for s in data["input_shapes"]]
        return cls(**data)

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> "Plan":
        """Read a plan written by `to_json` (a JSON string, or a file path: str or Path)."""
        if isinstance(text_or_path, os.PathLike):
            text_or_path = os.fspath(text_or_path)
        if not isinstance(text_or_path, str):
            raise ArgumentTypeError(f"Plan.from_json takes a JSON string or a file path, got "
                                    f"{type(text_or_path).__name__}")
        text = text_or_path
        if not text.lstrip().startswith("{"):
            with open(text) as f:
                text = f.read()
        return cls.from_dict(json.loads(text))

    def summary(self) -> str:
        def pct(a, b):
            return f"{100.0 * (1 - a / b):.1f}%" if b else "n/a"

        return (
            f"channels: {self.removed_channels}/{self.prunable_channels} prunable removed "
            f"({100 * self.ratio:.1f}%, threshold {self._score_name()} score {self.threshold:.4g})\n"
            f"params:   {self.params_before:,} -> {self.params_after:,} (-{pct(self.params_after, self.params_before)})\n"
            f"MACs:     {self.macs_before:,} -> {self.macs_after:,} (-{pct(self.macs_after, self.macs_before)}); "
            f"FLOPs = 2 x MACs"
        ) + self._target_line() + self._round_to_line() + self._mac_input_line()

    def _round_to_line(self) -> str:
        """Which multiple round_to="auto" chose, and from which latency model."""
        source = self.options.get("round_to_auto")
        return f"\nround_to: {self.options['round_to']} (auto: {source})" if source else ""

    def _score_name(self) -> str:
        criterion = self.options.get("criterion", "bn_scale")
        return {"bn_scale": "|gamma|", "bn_scale_readers": "|gamma| of readers"}.get(
            criterion, criterion)

    def _target_line(self) -> str:
        if not self.target:
            return ""
        line = f"\ntarget:   {self.target['text']}: met"
        reached = self.target.get("reached", {})
        if "latency_ms" in reached:  # a latency target: by what estimate
            line += (f" (estimated {reached['latency_ms']:.3g} ms by "
                     f"{self.target.get('estimate', 'a latency model')}; "
                     "keras_slim.export.check_latency measures it)")
        if self.target.get("allocation") == "latency":
            line += "\nallocation: score per estimated ms saved (HALP, first order)"
        return line

    def _mac_input_line(self) -> str:
        """Where the MACs were counted (nothing for plans saved without it)."""
        if self.input_shapes is None:
            return ""
        shapes = ", ".join(str(tuple(s)) for s in self.input_shapes)
        text = f"\nMACs at input{'s' if len(self.input_shapes) > 1 else ''} {shapes}"
        if self.dynamic_input:
            text += " (reference size for dynamic axes)"
        if self.macs_uncounted:
            text += (f"\nMACs not counted (no MAC rule for the layer, or its output shape "
                     f"is unknown; counted as 0): "
                     f"{', '.join(self.macs_uncounted[:8])}"
                     + (f" and {len(self.macs_uncounted) - 8} more"
                        if len(self.macs_uncounted) > 8 else ""))
        return text

    def table(self, only_changed: bool = False) -> str:
        rows = [("layer", "type", "channels", "params", "MACs")]
        for r in self.layers:
            if only_changed and r.channels_before == r.channels_after and r.params_before == r.params_after:
                continue
            ch = "-" if r.channels_before is None else f"{r.channels_before} -> {r.channels_after}"
            rows.append((r.name, r.class_name, ch, f"{r.params_before:,} -> {r.params_after:,}",
                         f"{r.macs_before:,} -> {r.macs_after:,}"))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        text = self.table() + "\n\n" + self.summary()
        if self.border_folds:
            n = sum(c for _, c in self.border_folds)
            text += (f"\nconstants folded where padding ('same' convs, ZeroPadding) makes "
                     f"the fold exact away from the borders only: {n} channels at "
                     f"{len(self.border_folds)} layers; "
                     "plan(..., border_folds=False) keeps them instead")
        if self.barriers:
            text += "\nbarriers (channels kept): " + ", ".join(n for n, _ in self.barriers)
        return text


# ---------------------------------------------------------------- making plans
