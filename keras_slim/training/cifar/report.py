"""The results table of a CIFAR-10 run (markdown), as written to results.md."""
from __future__ import annotations

__all__ = ["results_markdown"]


def results_markdown(results: dict) -> str:
    """The results table (markdown) with the reference numbers quoted below it."""
    rows = results["rows"]
    base = rows[0]
    data = results["data"]
    val = data.get("val_images", 0)
    held = (f"{val:,} validation (held out of the training images; multi-pass stopping and "
            f"the sweep below are measured on them, the test set once per model) / "
            if val else "")
    lines = [
        f"# CIFAR-10 {results['arch']} ({results['scale']} scale)",
        "",
        f"Data: {data['train_images']:,} training / {held}{data['test_images']:,} "
        f"test images from {data['source']}. Total time "
        f"{results['total_seconds'] / 60:.1f} min."
        + _criterion_note(results.get("config", {}).get("criterion", "bn_scale")),
        "",
        "| model | test acc. | error | params | MACs | params vs baseline | FLOPs vs baseline "
        "| TFLite | latency (1 thread) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        size = f"{r['tflite_bytes'] / 1024:,.0f} KiB" if "tflite_bytes" in r else "-"
        lat = f"{r['latency_ms']:.2f} ms" if "latency_ms" in r else "-"
        lines.append(
            f"| {r['name']} | {r['accuracy']:.2%} | {1 - r['accuracy']:.2%} | {r['params']:,} "
            f"| {r['macs']:,} | {_delta(r['params'], base['params'])} "
            f"| {_delta(r['macs'], base['macs'])} | {size} | {lat} |")
    mp = results.get("multipass")
    if mp:
        on = data.get("choices_on", "test")
        lines += ["", f"Multi-pass: stopped because {mp['stop_reason']}; per pass ({on} "
                  "accuracy):", "",
                  "| pass | pruned (pass) | pruned (total) | params | MACs | acc. pruned "
                  "| acc. fine-tuned | kept |", "|---:|---:|---:|---:|---:|---:|---:|:---:|"]
        for p in mp["passes"]:
            lines.append(f"| {p['index']} | {p['ratio']:.1%} | {p['cumulative_ratio']:.1%} "
                         f"| {p['params_after']:,} | {p['macs_after']:,} "
                         f"| {_pct(p['accuracy_pruned'])} | {_pct(p['accuracy_fine_tuned'])} "
                         f"| {'yes' if p['accepted'] else 'no'} |")
    sw = results.get("sweep")
    if sw and sw["ratios"]:
        lines += ["", f"Accuracy right after pruning (no fine-tuning; {sw.get('on', 'test')} "
                  "images):", "",
                  "| ratio | " + " | ".join(f"{r:.0%}" for r in sw["ratios"]) + " |",
                  "|---|" + "---:|" * len(sw["ratios"]),
                  "| sparsity-trained | " + " | ".join(_pct(a) for a in sw["sparse"]) + " |",
                  "| baseline (no sparsity) | "
                  + " | ".join(_pct(a) for a in sw["baseline"]) + " |"]
    secs = results.get("seconds", {})
    if secs:
        lines += ["", "Stage times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in secs.items())]
    lines += ["", f"Reference: {results['reference']}",
              "MACs count conv/dense multiply-accumulates; FLOPs = 2 x MACs, so the FLOPs "
              "reduction equals the MACs reduction.", ""]
    return "\n".join(lines)


def _delta(after: int, before: int) -> str:
    return "-" if not before or after == before else f"{after / before - 1:+.1%}"


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2%}"


def _criterion_note(criterion: str) -> str:
    """Said only when the channels were not ranked by the paper's criterion."""
    if criterion == "bn_scale":
        return ""
    return (f" Channels ranked by criterion={criterion!r} (every BN reading a channel scores "
            "it; shared streams are cut, not exactly: the fine-tuning repairs them).")

