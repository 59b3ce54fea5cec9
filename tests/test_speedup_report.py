"""benchmarks/_speedup_report.py's floor arithmetic on synthetic timings (no model, no LiteRT)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import _speedup_report as _report  # noqa: E402  (benchmarks/ is not a package)


def _result(case_ms: float, floor_ms: float = 0.1, macs: float = 0.5) -> dict:
    """One model: original 1.0 ms in each of 3 rounds, a case at `macs` MACs, and the floor."""
    rounds = {"1": [1.0, 1.0, 1.0]}
    case = dict(ratio=0.5, round_to=1, channel_selection=True, criterion="bn_scale",
                budget="ratio", macs=macs * 1000, params=500, size_bytes=500, gathers=0,
                selections=0, conv_widths=[7, 16], xnnpack_partitions=1,
                latency_ms={"1": case_ms}, latency_rounds_ms={"1": [case_ms] * 3},
                speedup={"1": 1.0 / case_ms}, speedup_iqr={"1": [1.0 / case_ms] * 2},
                efficiency={"1": macs / case_ms})
    floor = dict(macs=1.0, params=10, latency_ms={"1": floor_ms},
                 latency_rounds_ms={"1": [floor_ms] * 3})
    entry = dict(arch="toy", macs=1000, params=1000, size_bytes=1000, depthwise_macs_share=0.0,
                 latency_ms={"1": 1.0}, latency_rounds_ms=rounds, cases=[case], floor=floor)
    meta = dict(command="speedup.py --floor", machine="test", load_before=[0], load_after=[0],
                tensorflow="-", keras="-", litert="-", rounds=3, runs=1, warmup=0,
                elapsed_min=0.0, threads=[1])
    return dict(meta=meta, models=[entry])


def test_time_above_the_floor_falling_with_the_macs_is_efficiency_one_and_the_ceiling():
    # t = floor + m (t0 - floor): all the width-dependent time scaled with the MACs
    result = _result(case_ms=0.1 + 0.5 * 0.9)
    entry = result["models"][0]
    case = entry["cases"][0]
    assert _report._floor_share(entry, "1") == pytest.approx(0.1)
    above, ceiling = _report._above_floor(entry, case, "1").replace("(", "").replace(
        ")", "").split()
    assert float(above) == pytest.approx(1.0)
    # the ceiling is that plan's efficiency: m / (f + m (1 - f))
    assert float(ceiling) == pytest.approx(case["efficiency"]["1"], abs=0.005)
    assert float(ceiling) == pytest.approx(0.5 / (0.1 + 0.5 * 0.9), abs=0.005)


def test_time_that_does_not_fall_with_the_macs_shows_below_one():
    entry = _result(case_ms=0.8)["models"][0]  # m (t0 - tf) / (t - tf) = 0.5 * 0.9 / 0.7
    above = _report._above_floor(entry, entry["cases"][0], "1").split()[0]
    assert float(above) == pytest.approx(0.45 / 0.7, abs=0.005)


def test_the_goal_table_gets_the_floor_row_and_columns():
    text = _report.markdown(_result(case_ms=0.55))
    assert "| toy |  | floor | every layer at its minimum | 0.0010 |" in text
    assert "0.100 of the original" in text
    assert "1T above floor (ceiling)" in text
    assert "1.00 (0.91)" in text
    # a run without --floor keeps its old columns
    plain = _result(case_ms=0.55)
    plain["models"][0]["floor"] = None
    assert "above floor" not in _report.markdown(plain)
