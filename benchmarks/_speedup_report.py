"""speedup.py's markdown: the per-case table, the goal summary and the checks on the data."""
from __future__ import annotations

import statistics

import numpy as np

import _speedup_runtimes as runtimes_


def markdown(result: dict) -> str:
    """The whole results page of one speedup.py run (older JSON renders too)."""
    meta = result["meta"]
    threads = meta["threads"]
    lines = [
        "# Pruned vs original: MACs, size and measured LiteRT latency", "",
        f"Command: `{meta['command']}`", "",
        f"Machine: {meta['machine']} (shared with other jobs; load average "
        f"{meta['load_before']} before, {meta['load_after']} after). "
        f"TensorFlow {meta['tensorflow']}, Keras {meta['keras']}, ai-edge-litert "
        f"{meta['litert']}. Batch 1, float32 .tflite, XNNPACK on; {meta['rounds']} interleaved "
        f"rounds x {meta['runs']} runs (after {meta['warmup']} warm-up) per model and thread "
        f"count; {meta['elapsed_min']:.1f} min in all.", "",
        "Ratios are pruned / original. Speed-up = t(original) / t(pruned) (median over rounds "
        "of same-round ratios); efficiency = speed-up / (MACs original / MACs pruned): 1.0 is "
        "latency falling exactly as much as the arithmetic, the goal is >= 0.9 (bold). IQR: "
        "inter-quartile range of the per-round speed-ups (of the efficiencies, in the "
        "efficiency column). \"convs not x8/x16/x32\": conv layers whose output width is not "
        "a multiple of 8, 16, 32. round_to \"16 =MACs\": planned with target_macs= the MACs of "
        "the round_to=1 plan at that ratio (aligned widths, same compression); a plain round_to "
        "rounds every layer up from the ratio's cut and keeps more MACs.", "",
    ]
    lines += goal_lines(result)
    head = ["model", "round_to", "channel selection", "prune ratio", "MACs", "params",
            "file size"]
    for t in threads:
        head += [f"{t}T ms (orig -> pruned)", f"{t}T speed-up (IQR)", f"{t}T efficiency (IQR)",
                 f"{t}T eff. (fastest rounds)"]
    head += ["convs not x8/x16/x32", "XNNPACK partitions"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for e in result["models"]:
        for c in e["cases"]:
            selection = _selection_text(c)
            row = [e["arch"], round_to_text(c), selection, f"{c['ratio']:.1f}",
                   f"{c['macs'] / e['macs']:.3f}", f"{c['params'] / e['params']:.3f}",
                   f"{c['size_bytes'] / e['size_bytes']:.3f}"]
            for t in map(str, threads):
                eff = c["efficiency"][t]
                low, high = c["speedup_iqr"][t]
                best = _fastest_efficiency(e, c, t)
                red = e["macs"] / c["macs"]
                row += [f"{e['latency_ms'][t]:.2f} -> {c['latency_ms'][t]:.2f}",
                        f"{c['speedup'][t]:.2f}x ({low:.2f}-{high:.2f})",
                        _bold(eff) + f" ({low / red:.2f}-{high / red:.2f})", _bold(best)]
            row.append(_not_multiple(c))
            row.append(str(c.get("xnnpack_partitions", "?")))
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Originals: " + "; ".join(
        f"{e['arch']}: {e['macs'] / 1e6:.1f} M MACs, {e['params'] / 1e6:.2f} M params, "
        f"{e['size_bytes'] / 2 ** 20:.2f} MiB, depthwise share of MACs "
        f"{100 * e['depthwise_macs_share']:.0f}%" for e in result["models"]) + "."]
    notes = observations(result)
    if notes:
        lines += ["", "Checks on this run's data:", ""] + [f"* {n}" for n in notes]
    lines += runtimes_.markdown_lines(result, round_to_text, _selection_text)
    return "\n".join(lines) + "\n"


def _bold(eff: float) -> str:
    return f"**{eff:.2f}**" if eff >= 0.9 else f"{eff:.2f}"


def round_to_text(case: dict) -> str:
    """'16', or '16 =MACs' for a case planned at the round_to=1 plan's MACs."""
    return f"{case['round_to']}{' =MACs' if case.get('budget') == 'equal_macs' else ''}"


def _not_multiple(case: dict) -> str:
    widths = case.get("conv_widths")
    if widths is None:  # older JSON
        return f"{case['conv_widths_not_multiple_of_8']}/{case['conv_layers']}"
    counts = [sum(w % b != 0 for w in widths) for b in (8, 16, 32)]
    return "/".join(map(str, counts)) + f" of {len(widths)}"


def goal_lines(result: dict) -> list[str]:
    """Efficiency (IQR) per model, ratio and round_to at every thread count: the goal check."""
    threads = [str(t) for t in result["meta"]["threads"]]
    head = ["model", "prune ratio", "round_to", "channel selection", "MACs"] + [
        f"{t}T efficiency (IQR)" for t in threads]
    floors = any(e.get("floor") for e in result["models"])
    if floors:
        head += [f"{t}T above floor (ceiling)" for t in threads]
    head += [f"{t}T ms" for t in threads] + [f"{t}T vs round_to 1" for t in threads]
    lines = ["## Goal: efficiency >= 0.9", "",
             "Paired median over rounds (IQR of the per-round efficiencies); bold meets the "
             "goal. ms: median pruned latency, the original's in the model's first row. \"vs "
             "round_to 1\": t(round_to 1 plan at that ratio, same channel selection) / t(this "
             "plan), same-round median (> 1: this plan runs faster)."
             + (FLOOR_TEXT if floors else ""), "",
             "| " + " | ".join(head) + " |", "|---|---:|---|---|" + "---:|" * (len(head) - 4)]
    for e in result["models"]:
        cases = [c for c in e["cases"] if c.get("order_channels", True) and not c["gathers"]]
        cases.sort(key=lambda c: (c["ratio"], c.get("budget") == "equal_macs", c["round_to"]))
        floor = e.get("floor")
        if floor:  # the floor's own row: its MACs and its latency as a share of the original's
            lines.append("| " + " | ".join(
                [e["arch"], "", "floor", "every layer at its minimum",
                 f"{floor['macs'] / e['macs']:.4f}"] + [""] * len(threads)
                + [f"{_floor_share(e, t):.3f} of the original" for t in threads]
                + [f"{floor['latency_ms'][t]:.2f}" for t in threads]
                + [""] * len(threads)) + " |")
        lines.append("| " + " | ".join([e["arch"] if not floor else "", "", "original", "",
                                        "1.000"]
                                       + [""] * len(threads) * (2 if floors else 1)
                                       + [f"{e['latency_ms'][t]:.2f}" for t in threads]
                                       + [""] * len(threads)) + " |")
        for c in cases:
            red = e["macs"] / c["macs"]
            cells = []
            for t in threads:
                low, high = c["speedup_iqr"][t]
                cells.append(_bold(c["efficiency"][t]) + f" ({low / red:.2f}-{high / red:.2f})")
            plain = next((o for o in cases if o["ratio"] == c["ratio"] and o["round_to"] == 1
                          and o.get("budget", "ratio") == "ratio"
                          and _variant(o) == _variant(c)), None)
            versus = [_same_round(plain, c, t) if plain is not None and plain is not c else ""
                      for t in threads]
            if floors:
                cells += [_above_floor(e, c, t) if floor else "" for t in threads]
            lines.append("| " + " | ".join(["", f"{c['ratio']:.1f}", round_to_text(c),
                                           _selection_text(c),
                                           f"{c['macs'] / e['macs']:.3f}"] + cells
                                          + [f"{c['latency_ms'][t]:.2f}" for t in threads]
                                          + versus) + " |")
    loads = ["; ".join(f"{k}T {v[0][0]}->{v[1][0]}" for k, v in e["load"].items())
             for e in result["models"] if e.get("load")]
    if loads:
        lines += ["", "1-minute load average before -> after each timing phase (runtime, "
                  "threads): " + " | ".join(f"{e['arch']}: {text}" for e, text in
                                            zip(result["models"], loads)) + "."]
    return lines + [""]


FLOOR_TEXT = (
    " \"floor\": the model with every layer cut to its minimum width (speedup.py --floor), "
    "timed in the same rounds: the time no cut removes (one invoke per op, each kernel's "
    "minimum), as a share f of the original's. \"above floor\": m (t0 - tf) / (t - tf), "
    "m the MACs ratio, same-round median: 1.0 is the time above the floor falling exactly "
    "with the MACs. \"ceiling\": m / (f + m (1 - f)), the efficiency such a plan would "
    "have; an efficiency below its ceiling is lost to how the widths map onto the kernels, "
    "the rest of the gap to 1.0 is the floor.")


def _floor_share(entry: dict, t: str) -> float:
    """Same-round median of t(floor) / t(original)."""
    return statistics.median(f / b for f, b in zip(entry["floor"]["latency_rounds_ms"][t],
                                                    entry["latency_rounds_ms"][t]))


def _above_floor(entry: dict, case: dict, t: str) -> str:
    """'0.81 (0.86)': efficiency of the time above the floor, and the linear ceiling."""
    m = case["macs"] / entry["macs"]
    per_round = [m * (b - f) / (c - f) for b, c, f in zip(
        entry["latency_rounds_ms"][t], case["latency_rounds_ms"][t],
        entry["floor"]["latency_rounds_ms"][t]) if c > f]
    f = _floor_share(entry, t)
    ceiling = m / (f + m * (1 - f))
    above = f"{statistics.median(per_round):.2f}" if per_round else "n/a"
    return f"{above} ({ceiling:.2f})"


def _same_round(slow: dict, fast: dict, t: str) -> str:
    """Median over rounds of t(slow) / t(fast) from the same round."""
    ratios = [a / b for a, b in zip(slow["latency_rounds_ms"][t], fast["latency_rounds_ms"][t])]
    return f"{statistics.median(ratios):.2f}"


def _paired(on: dict, off: dict, t: str, key) -> str:
    ratios = [b / a for a, b in zip(on["latency_rounds_ms"][t], off["latency_rounds_ms"][t])]
    low, high = np.percentile(ratios, 25), np.percentile(ratios, 75)
    return (f"round_to {key[0]} ratio {key[1]}: {statistics.median(ratios):.2f} "
            f"(IQR {low:.2f}-{high:.2f}; efficiency {on['efficiency'][t]:.2f} vs "
            f"{off['efficiency'][t]:.2f})")


def _variant(case: dict) -> tuple:
    """What a case's plan did with shared channels: (selection allowed, criterion)."""
    return case["channel_selection"], case.get("criterion", "bn_scale")


def _selection_text(case: dict) -> str:
    """'on (18 sel.: 0 GATHER)'; older JSON counted selections as GATHERs."""
    if case.get("criterion", "bn_scale") != "bn_scale":
        return f"{case['criterion']} (streams cut)"
    if not case["channel_selection"]:
        return "off"
    if not case.get("order_channels", True):
        return f"on, not reordered ({case['gathers']} GATHER)"
    selections = case.get("selections", case["gathers"])
    if not selections:
        return "on (none needed)"
    return f"on ({selections} sel.: {case['gathers']} GATHER)"


def _fastest_efficiency(entry: dict, case: dict, t: str) -> float:
    """Efficiency from the fastest round of each model (recomputed for older JSON)."""
    speedup = min(entry["latency_rounds_ms"][t]) / min(case["latency_rounds_ms"][t])
    return speedup / (entry["macs"] / case["macs"])


def observations(result: dict) -> list[str]:
    """Data-driven caveats: contention at 2 threads, GATHER cases, goal misses."""
    notes = []
    for e in result["models"]:
        for u in e.get("unreachable", []):
            notes.append(f"{e['arch']}: the MACs of ratio {u['ratio']} are not reachable at "
                         f"round_to {u['round_to']} (channel selection "
                         f"{'on' if u['channel_selection'] else 'off'}): the layers are "
                         "already at that multiple; no case.")
    threads = [str(t) for t in result["meta"]["threads"]]
    if "1" in threads:
        for t in (t for t in threads if t != "1"):
            slower = [e["arch"] for e in result["models"]
                      if e["latency_ms"][t] >= e["latency_ms"]["1"]]
            if slower:
                notes.append(
                    f"At {t} threads the original is not faster than at 1 thread for "
                    f"{', '.join(slower)}: the other core(s) were busy with other work, so the "
                    f"{t}-thread columns measure contention more than the models (compare the "
                    "IQRs); trust the 1-thread columns.")
    gather = [c for e in result["models"] for c in e["cases"] if c["gathers"]]
    if gather:
        worst = min(gather, key=lambda c: c["efficiency"].get("1", 0.0))
        parts = sorted({c.get("xnnpack_partitions") for c in gather} - {None})
        split = (f" (here {parts[0]}-{parts[-1]} XNNPACK partitions instead of 1)"
                 if parts else "")
        notes.append(
            f"{len(gather)} case(s) contain ChannelSelection layers (TFLite GATHER), which the "
            "XNNPACK delegate does not take: each one splits the delegated graph" + split +
            " and runs on LiteRT's builtin kernel. Their 1-thread efficiency is "
            f"{min(c['efficiency']['1'] for c in gather):.2f} to "
            f"{max(c['efficiency']['1'] for c in gather):.2f}"
            f" (worst: ratio {worst['ratio']}, round_to {worst['round_to']}); the same cases "
            "with channel_selection=False are listed for comparison.")
    for e in result["models"]:
        on = {(c["round_to"], c["ratio"], c.get("budget")): c for c in e["cases"]
              if c.get("selections") and c.get("order_channels", True)}
        for label, other in (("without channel selection, t(off) / t(on)",
                              lambda c: not c["channel_selection"]),
                             ("not reordered (GATHER), t(not reordered) / t(on)",
                              lambda c: c["channel_selection"] and not c.get("order_channels", True)),
                             ("the streams cut (bn_scale_readers), t(readers) / t(on)",
                              lambda c: c.get("criterion", "bn_scale") != "bn_scale")):
            pairs = [(key, c, o) for o in e["cases"] if other(o)
                     for key, c in on.items()
                     if key == (o["round_to"], o["ratio"], o.get("budget"))]
            for t in threads:
                if pairs:
                    notes.append(f"{e['arch']}, {t} thread(s): selection (reordered) vs {label}, "
                                 "same-round latency ratio (> 1: the reordered selection is "
                                 "faster): " + "; ".join(_paired(c, o, t, key)
                                                        for key, c, o in pairs) + ".")
    if "1" in threads:
        noisy = sorted({e["arch"] for e in result["models"] for c in e["cases"]
                        if abs(c["efficiency"]["1"] - _fastest_efficiency(e, c, "1")) > 0.1})
        if noisy:
            notes.append("At 1 thread the paired-median and fastest-round efficiencies differ "
                         f"by more than 0.1 for {', '.join(noisy)}: some rounds were contended "
                         "(wide IQR); the fastest-round column is the better estimate there.")
    for t in threads:
        misses = [(e["arch"], c, min(c["efficiency"][t], _fastest_efficiency(e, c, t)))
                  for e in result["models"] for c in e["cases"] if not c["gathers"]]
        misses = [m for m in misses if m[2] < 0.9]
        if misses:
            notes.append(f"Below the 0.9 goal at {t} thread(s) by either estimate, without "
                         "GATHER: " + "; ".join(f"{a} ratio {c['ratio']} round_to "
                                                f"{round_to_text(c)}, selection "
                                                f"{_selection_text(c)} ({low:.3f})"
                                                for a, c, low in misses) + ".")
    return notes
