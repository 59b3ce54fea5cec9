"""plan(..., round_to="auto", latency_model=lm): the channel multiple from the latency model.

Planning tests use a fake latency model (any object with estimate, description and
preferred_multiple); the LatencyModel tests feed it synthetic width curves, so nothing
here times LiteRT except one small real measurement (5 invokes per probe, about a second).
"""
import io
import json
from contextlib import redirect_stdout

import keras
import numpy as np
import pytest

import keras_slim
from keras_slim import testing

from _models import conv_bn_relu_chain

MULTIPLE = 8


def _model(name="round_net"):
    return conv_bn_relu_chain((24, 40, 64), seed=5, name=name)


class _FakeLatency:
    """MACs as milliseconds, and a fixed preferred multiple."""

    def __init__(self, multiple=MULTIPLE):
        self.multiple = multiple
        self.description = f"fake runtime (step {multiple})"

    def estimate(self, layers):
        return 0.01 + sum(r.macs_after for r in layers) / 1e6

    def preferred_multiple(self):
        return self.multiple


def _aligned(p, multiple):
    """Every pruned layer's width is a multiple (or the layer's full width)."""
    for row in p.layers:
        if row.channels_before is not None and row.macs_before > 0:
            assert (row.channels_after % multiple == 0
                    or row.channels_after == row.channels_before), row


@pytest.mark.backend_agnostic
def test_auto_takes_the_latency_models_multiple():
    m, lm = _model(), _FakeLatency()
    p = keras_slim.plan(m, 0.5, round_to="auto", latency_model=lm)
    assert p.options["round_to"] == MULTIPLE
    assert p.options["round_to_auto"] == "preferred multiple of fake runtime (step 8)"
    assert "round_to: 8 (auto: preferred multiple of fake runtime (step 8))" in p.summary()
    assert "round_to:" not in keras_slim.plan(m, 0.5, round_to=MULTIPLE).summary()
    assert p.kept == keras_slim.plan(m, 0.5, round_to=MULTIPLE).kept
    _aligned(p, MULTIPLE)
    assert any(r.channels_after < r.channels_before for r in p.layers if r.macs_before)
    # with a budget, and with the same model for a latency target and the multiple
    budget = keras_slim.plan(m, 0.5).macs_after
    p = keras_slim.plan(m, target_macs=budget, round_to="AUTO", latency_model=lm)
    assert p.macs_after <= budget and p.options["round_to"] == MULTIPLE
    _aligned(p, MULTIPLE)
    fast = keras_slim.plan(m, target_latency_ms="60%", round_to="auto", latency_model=lm)
    assert fast.target["estimate"] == lm.description
    _aligned(fast, MULTIPLE)
    # 1 (no preference) is a plain plan
    one = keras_slim.plan(m, 0.5, round_to="auto", latency_model=_FakeLatency(1))
    assert one.kept == keras_slim.plan(m, 0.5).kept and one.options["round_to"] == 1


@pytest.mark.backend_agnostic
def test_auto_plan_survives_json_and_prune_accepts_auto():
    m, lm = _model(), _FakeLatency()
    p = keras_slim.plan(m, 0.5, round_to="auto", latency_model=lm)
    back = keras_slim.Plan.from_json(p.to_json())
    assert back.options == p.options
    x = testing.random_inputs(m)
    small = keras_slim.prune(m, 0.5, round_to="auto", latency_model=lm)
    # replaying the JSON plan needs no latency model: it keeps the multiple it used
    assert testing.max_difference(small, keras_slim.prune(m, back), x) == 0.0
    for layer in small.layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert layer.filters % MULTIPLE == 0, layer.name


@pytest.mark.backend_agnostic
def test_auto_needs_a_latency_model_that_knows_its_multiple():
    m = _model()
    with pytest.raises(keras_slim.ArgumentError,
                       match=r"round_to='auto' needs latency_model=.*LatencyModel\.measure"):
        keras_slim.plan(m, 0.5, round_to="auto")
    with pytest.raises(keras_slim.ArgumentError, match="round_to='auto' needs latency_model="):
        keras_slim.prune(m, 0.5, round_to="auto")
    with pytest.raises(keras_slim.ArgumentTypeError, match="preferred_multiple.*round_to=N"):
        keras_slim.plan(m, 0.5, round_to="auto", latency_model=lambda layers: 1.0)
    for bad in (0, "32", 2.5, True):
        with pytest.raises(keras_slim.ArgumentError,
                           match=r"preferred_multiple\(\) = .*integer >= 1"):
            keras_slim.plan(m, 0.5, round_to="auto", latency_model=_FakeLatency(bad))
    # a latency model is still refused where nothing uses it
    with pytest.raises(keras_slim.ArgumentError, match="only used with target_latency_ms= or "
                                                       "round_to='auto'"):
        keras_slim.plan(m, 0.5, round_to=8, latency_model=_FakeLatency())


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("bad", ["x", "", 0, -1, 2.5, True, None])
def test_bad_round_to_values(bad):
    with pytest.raises(keras_slim.ArgumentError, match="round_to must be an integer >= 1 .*'auto'"):
        keras_slim.plan(_model(), 0.5, round_to=bad)


# ---------------------------------------------------------------- the LatencyModel's multiple
_WIDTHS = list(range(1, 65)) + list(range(72, 513, 8))  # as _latency_probes.CURVE_WIDTHS


def _step(block, base=0.01, per_block=0.05):
    return [base + per_block * -(-w // block) for w in _WIDTHS]


def _xnnpack_avx512():
    """The shape measured on the AVX512 Xeon: flat to 16, dearer at 17-31 than at 32,
    then a step every 32 (benchmarks/results/speedup_efficiency_profile.md)."""
    return [0.044 if w <= 16 else 0.085 if w < 32 else 0.058 if w == 32
            else 0.056 * -(-w // 32) for w in _WIDTHS]


def test_preferred_multiple_reads_the_step_of_the_width_curve():
    from keras_slim.export._latency_probes import WidthCurve, preferred_multiple, rounding_cost

    for block in (2, 4, 8, 16, 32, 64):
        assert preferred_multiple({"conv": WidthCurve(_WIDTHS, _step(block))}) == block
    assert preferred_multiple({"conv": WidthCurve(_WIDTHS, _xnnpack_avx512())}) == 32
    linear = WidthCurve(_WIDTHS, [0.02 + 0.001 * w for w in _WIDTHS])
    assert preferred_multiple({"conv": linear}) == 1
    assert rounding_cost(linear, 16) == pytest.approx(1.0)
    flat = WidthCurve(_WIDTHS, [0.02] * len(_WIDTHS))  # no width dependence: nothing known
    assert preferred_multiple({"conv": flat}) == 1 and preferred_multiple({}) == 1
    # timing noise (a few % per width, as min-of-runs probes see) does not move the answer
    rng = np.random.default_rng(0)
    for _ in range(5):
        noisy = [t * (1 + 0.02 * rng.standard_normal()) for t in _xnnpack_avx512()]
        assert preferred_multiple({"conv": WidthCurve(_WIDTHS, noisy)}) == 32
    # several curves: averaged by the model's time in each, so the one it spends most in decides
    curves = {"conv": WidthCurve(_WIDTHS, _step(32)), "depthwise": WidthCurve(_WIDTHS, _step(8))}
    assert preferred_multiple(curves, {"conv": 0.9, "depthwise": 0.1}) == 32
    assert preferred_multiple(curves, {"conv": 0.1, "depthwise": 0.9}) == 8
    assert preferred_multiple(curves, {"conv": 1.0}) == 32  # a kind the model lacks: ignored


def test_measured_latency_model_prefers_the_step_and_the_cache_keeps_it(tmp_path, monkeypatch):
    """LatencyModel.measure with synthetic timings: the multiple comes from its width curve,
    and a model read back from the cache (nothing timed) gives the same answer."""
    pytest.importorskip("ai_edge_litert")  # the probes are LiteRT flatbuffers
    from keras_slim.export import _latency_probes as probes
    from keras_slim.export import latency_model as lat

    monkeypatch.setenv("KERAS_SLIM_CACHE", str(tmp_path))
    monkeypatch.setattr(lat, "time_file", lambda content, threads, runs, warmup: 0.05)
    monkeypatch.setattr(lat, "measure_curve", lambda kind, threads, runs, warmup:
                        probes.WidthCurve(list(probes.CURVE_WIDTHS), _xnnpack_avx512()))
    m = _model()
    lm = lat.LatencyModel.measure(m)
    assert lm.preferred_multiple() == 32 and set(lm.curves) == {"conv"}

    def no_timing(*args):
        raise AssertionError("timed again instead of reading the cache")

    monkeypatch.setattr(lat, "time_file", no_timing)
    monkeypatch.setattr(lat, "measure_curve", no_timing)
    cached = lat.LatencyModel.measure(m)
    assert cached.preferred_multiple() == 32
    p = keras_slim.plan(m, 0.5, round_to="auto", latency_model=cached)
    assert p.options["round_to"] == 32
    assert p.options["round_to_auto"] == f"preferred multiple of {cached.description}"
    _aligned(p, 32)


def test_real_latency_model_multiple(tmp_path, monkeypatch):
    """Measured with LiteRT on this machine (about a second): one of the steps, the same
    again from the cache."""
    pytest.importorskip("ai_edge_litert")
    from keras_slim.export import latency_model as lat
    from keras_slim.export._latency_probes import MULTIPLES

    monkeypatch.setenv("KERAS_SLIM_CACHE", str(tmp_path))
    x = inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="c0")(x)
    m = keras.Model(inp, keras.layers.BatchNormalization(name="bn0")(x))
    lm = lat.LatencyModel.measure(m, runs=5, warmup=2)
    assert lm.preferred_multiple() in MULTIPLES
    assert lat.LatencyModel.measure(m).preferred_multiple() == lm.preferred_multiple()


# ---------------------------------------------------------------- command line
@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "round.keras"
    _model().save(path)
    return path


def test_cli_round_to_auto(saved, tmp_path, monkeypatch, capsys):
    from keras_slim import cli
    from keras_slim.cli import prune as prune_cmd

    measured = []

    def fake_measure(model, threads, input_shape, refresh=False):
        measured.append(threads)
        return _FakeLatency()

    monkeypatch.setattr(prune_cmd, "latency_model", fake_measure)
    out, plan_json = tmp_path / "small.keras", tmp_path / "plan.json"
    text = io.StringIO()
    with redirect_stdout(text):
        code = cli.main(["prune", str(saved), "--target-macs", "0.5", "--round-to", "auto",
                         "--latency-threads", "2", "-o", str(out), "--plan-json",
                         str(plan_json), "-q"])
    assert code == 0 and measured == [2]
    assert "round_to: 8 (auto: preferred multiple of fake runtime (step 8))" in text.getvalue()
    options = json.loads(plan_json.read_text())["options"]
    assert options["round_to"] == MULTIPLE and "fake runtime" in options["round_to_auto"]
    for layer in keras.models.load_model(out).layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert layer.filters % MULTIPLE == 0, layer.name
    # a latency target and auto share one measured model
    measured.clear()
    assert cli.main(["prune", str(saved), "--target-latency-ms", "70%", "--round-to", "auto",
                     "-o", str(out), "-q"]) == 0
    assert measured == [1]
    capsys.readouterr()
    for bad in ("x", "0", "-1", "2.5"):
        assert cli.main(["prune", str(saved), "--ratio", "0.5", "--round-to", bad,
                         "-o", str(out)]) == 2
        assert "expected a whole number >= 1 or 'auto'" in capsys.readouterr().err
    assert cli.main(["inspect", str(saved), "--round-to", "auto"]) == 2
    assert "--round-to auto is for 'keras-slim prune'" in capsys.readouterr().err
