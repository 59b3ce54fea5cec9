"""The keras-slim command line: happy paths, exit codes and error messages.

Commands run in-process through `keras_slim.cli.main` (fast); one test runs
the installed `keras-slim` console script.
"""
import json
import os
import shutil
import subprocess

import keras
import numpy as np
import pytest

from keras_slim import cli, testing
from keras_slim.training.cifar import models

SMALL_GAMMA = [0, 1, 2]  # bn1 channels given |gamma| = 1e-4 (< 1e-3) in the saved model


def _err_lines(text):
    return [ln for ln in text.splitlines() if "error:" in ln]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A saved tiny VGG-11 with random BN, a calibration .npy, and its pruned copy."""
    d = tmp_path_factory.mktemp("cli")
    model = models.vgg(11, width=0.125)
    testing.randomize_batchnorm(model, seed=3)
    bn1 = model.get_layer("bn1")
    gamma = bn1.gamma.numpy()
    gamma[SMALL_GAMMA] = 1e-4
    bn1.gamma.assign(gamma)
    model.save(d / "vgg.keras")
    rng = np.random.default_rng(0)
    np.save(d / "calib.npy", rng.uniform(0, 1, (16, 32, 32, 3)).astype("float32"))
    return d


@pytest.fixture(scope="module")
def pruned(work):
    """`keras-slim prune` output: (exit code, stdout, small.keras, plan.json)."""
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(["prune", str(work / "vgg.keras"), "--ratio", "0.5", "--round-to", "4",
                         "-o", str(work / "small.keras"), "--plan-json",
                         str(work / "plan.json"), "-q"])
    return code, out.getvalue(), work / "small.keras", work / "plan.json"


@pytest.fixture(scope="module")
def exported(work, pruned):
    """fp32 .tflite + .onnx and int8 .tflite (int8 I/O, .npy calibration) of small.keras."""
    small = str(pruned[2])
    paths = {"fp32": work / "small.tflite", "onnx": work / "small.onnx",
             "int8": work / "small_int8.tflite"}
    codes = [
        cli.main(["export", small, "--tflite", str(paths["fp32"]), "--onnx", str(paths["onnx"]),
                  "--json", str(work / "export_fp32.json"), "-q"]),
        cli.main(["export", small, "--tflite", str(paths["int8"]), "--quantize", "int8",
                  "--calib", str(work / "calib.npy"), "--int8-io",
                  "--json", str(work / "export_int8.json"), "-q"]),
    ]
    return codes, paths


# ---------------------------------------------------------------- happy paths
def test_inspect_reports_gammas_groups_and_ratios(work, capsys):
    out_json = work / "inspect.json"
    code = cli.main(["inspect", str(work / "vgg.keras"), "--ratios", "0.3", "0.5",
                     "--json", str(out_json)])
    out = capsys.readouterr().out
    assert code == 0
    assert "BatchNormalization |gamma|" in out and "(all)" in out
    assert "Prunable channel groups (8;" in out
    assert "Barriers (channels reaching them are kept): none" in out

    data = json.loads(out_json.read_text())
    stats = {row["layer"]: row for row in data["batchnorm"]}
    assert set(stats) == {f"bn{i}" for i in range(1, 9)} | {"(all)"}
    assert stats["bn1"]["count"] == 8
    assert stats["bn1"]["below_1e_3"] == pytest.approx(len(SMALL_GAMMA) / 8)
    assert stats["bn1"]["min"] == pytest.approx(1e-4)
    assert stats["bn2"]["below_1e_2"] == 0.0
    assert stats["(all)"]["count"] == data["prunable_channels"] == 344
    assert sum(g["channels"] for g in data["groups"]) == 344
    assert [r["ratio"] for r in data["ratios"]] == [0.3, 0.5]
    for r in data["ratios"]:
        assert r["removed_channels"] == round(r["ratio"] * 344)
        assert r["params_after"] < r["params_before"] == data["params"]
        assert r["macs_after"] < r["macs_before"]
        assert f"{r['params_after']:,}" in out and f"{r['macs_after']:,}" in out
    # the three near-zero channels of bn1 are the first to go
    assert data["ratios"][0]["channels_after"]["bn1"] <= 8 - len(SMALL_GAMMA)


def test_prune_prints_plan_and_saves_smaller_model(pruned):
    code, out, small_path, plan_path = pruned
    assert code == 0
    plan = json.loads(plan_path.read_text())
    assert "prunable removed" in out and f"saved {small_path}" in out
    small = keras.models.load_model(small_path)
    assert plan["params_after"] == small.count_params() < plan["params_before"]
    assert plan["options"]["round_to"] == 4
    for layer in small.layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert layer.filters % 4 == 0 or layer.filters == 8, layer.name
    x = np.random.default_rng(1).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    assert small(x).shape == (2, 10)


def test_prune_threshold_and_plan_options(work, capsys):
    out = work / "thr.keras"
    code = cli.main(["prune", str(work / "vgg.keras"), "--threshold", "1e-3", "-o", str(out),
                     "--no-fold", "--min-channels", "2", "--exclude", "conv8", "-q"])
    text = capsys.readouterr().out
    assert code == 0
    assert f"{len(SMALL_GAMMA)}/{344 - 64} prunable removed" in text  # conv8 excluded
    small = keras.models.load_model(out)
    assert small.get_layer("conv1").filters == 8 - len(SMALL_GAMMA)
    assert small.get_layer("conv8").filters == 64


def test_export_tflite_fp32_and_onnx(work, exported, capsys):
    codes, paths = exported
    assert codes == [0, 0]
    assert paths["fp32"].is_file() and paths["onnx"].is_file()
    tfl, onnx_report = json.loads((work / "export_fp32.json").read_text())
    assert (tfl["format"], tfl["quantize"], onnx_report["format"]) == ("tflite", None, "onnx")
    for report in (tfl, onnx_report):
        assert report["verified"] and report["max_rel_error"] < 1e-4
        assert report["inputs"][0]["shape"] == [1, 32, 32, 3]
    assert "BATCH_NORM" not in " ".join(tfl["op_histogram"])


def test_export_int8_with_npy_calibration(work, exported):
    codes, paths = exported
    assert codes[1] == 0 and paths["int8"].is_file()
    (report,) = json.loads((work / "export_int8.json").read_text())
    assert report["quantize"] == "int8" and report["verified"]
    (inp,), (outp,) = report["inputs"], report["outputs"]
    assert inp["dtype"] == outp["dtype"] == "int8"
    assert inp["scale"] > 0 and inp["zero_point"] is not None
    assert report["size_bytes"] < os.path.getsize(paths["fp32"]) / 2


def test_bench_side_by_side(work, exported, capsys):
    _, paths = exported
    files = [str(paths["fp32"]), str(paths["int8"]), str(paths["onnx"])]
    code = cli.main(["bench", *files, "--threads", "1", "--runs", "3", "--warmup", "1",
                     "--json", str(work / "bench.json"), "-q"])
    out = capsys.readouterr().out
    assert code == 0
    table = out.splitlines()
    assert "1T median ms" in table[0]
    for f in files:
        assert any(line.startswith(f) for line in table)
    reports = json.loads((work / "bench.json").read_text())
    assert sorted(r["runtime"] for r in reports) == ["litert", "litert", "onnxruntime"]
    assert all(r["median_ms"] > 0 and r["threads"] == 1 for r in reports)


def test_calibration_from_image_directory(work):
    from PIL import Image

    from keras_slim.export import load_calibration

    d = work / "images" / "cats"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, size in enumerate([(40, 30), (32, 32), (64, 48)]):
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(d / f"{i}.png")
    (d / "notes.txt").write_text("not an image")
    model = keras.models.load_model(work / "vgg.keras")
    (x,) = load_calibration(str(work / "images"), model, count=2)
    assert x.shape == (2, 32, 32, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.array_equal(x[1] * 255.0, np.asarray(Image.open(d / "1.png"), np.float32))
    (unit,) = load_calibration(str(work / "images"), model, count=5)
    (y,) = load_calibration(str(work / "images"), model, count=5, scale="signed",
                            mean=[0.5], std=[2.0])
    assert y.shape == (3, 32, 32, 3)
    np.testing.assert_allclose(y, ((unit * 2.0 - 1.0) - 0.5) / 2.0, atol=1e-6)


# ---------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "junk.keras").write_text("this is not a model")
    (d / "model.txt").write_text("x")
    (d / "junk.tflite").write_bytes(b"\x00" * 64)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inp, keras.layers.Dense(2)(x)).save(d / "lambda.keras")
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inp)
    keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(x))).save(d / "nobn.keras")
    return d


@pytest.mark.parametrize("argv, code, message", [
    (["inspect", "{bad}/missing.keras"], 2, "no such file"),
    (["prune", "{work}/vgg.keras", "--ratio", "1.5", "-o", "{work}/x.keras"], 2,
     "ratio must be in [0, 1), got 1.5"),
    (["prune", "{work}/vgg.keras", "--ratio", "half", "-o", "{work}/x.keras"], 2,
     "ratio must be a number, got 'half'"),
    (["prune", "{work}/vgg.keras", "--ratio", "0.5"], 2, "-o/--output"),
    (["prune", "{work}/vgg.keras", "--ratio", "0.5", "-o", "{work}/x.txt"], 2,
     "must end in .keras"),
    (["prune", "{work}/vgg.keras", "--ratio", "0.5", "--exclude", "nope", "-o",
      "{work}/x.keras"], 2, "not in model 'vgg11': ['nope']"),
    (["inspect", "{bad}/junk.keras"], 2, "is not a Keras model file"),
    (["inspect", "{bad}/model.txt"], 2, "expected .keras or .h5 or .hdf5"),
    (["inspect", "{bad}/lambda.keras"], 2, "pass --unsafe"),
    (["inspect", "{bad}/nobn.keras"], 3, "no BatchNormalization"),
    (["export", "{work}/vgg.keras", "--tflite", "{work}/q.tflite", "--quantize", "int8"], 2,
     "--quantize int8 needs --calib"),
    (["export", "{work}/vgg.keras", "--tflite", "{work}/q.tflite", "--int8-io"], 2,
     "--int8-io needs --quantize int8"),
    (["export", "{work}/vgg.keras"], 2, "nothing to export"),
    (["export", "{work}/vgg.keras", "--tflite", "{work}/q.tflite", "--quantize", "int8",
      "--calib", "{bad}/model.txt"], 2, "expected .npy or .npz"),
    (["export", "{work}/vgg.keras", "--tflite", "{work}/q.tflite", "--calib",
      "{work}/calib.npy", "--calib-scale", "raw"], 2, "apply to image directories"),
    (["bench", "{bad}/junk.tflite", "--runs", "2"], 4, "cannot run"),
    (["bench", "{work}/vgg.keras"], 2, "expected .tflite or .onnx"),
])
def test_bad_input_exit_code_and_one_line_message(work, bad_files, capsys, argv, code, message):
    argv = [a.format(work=work, bad=bad_files) for a in argv]
    assert cli.main(argv) == code
    captured = capsys.readouterr()
    errors = _err_lines(captured.err)
    assert len(errors) == 1, captured.err
    assert errors[0].startswith("keras-slim") and message in errors[0]
    assert "Traceback" not in captured.err
    assert not os.path.exists(work / "x.keras") and not os.path.exists(work / "q.tflite")


def test_calibration_shape_mismatch_is_a_usage_error(work, tmp_path, capsys):
    np.save(tmp_path / "wrong.npy", np.zeros((4, 16, 16, 3), np.float32))
    code = cli.main(["export", str(work / "vgg.keras"), "--tflite", str(tmp_path / "w.tflite"),
                     "--quantize", "int8", "--calib", str(tmp_path / "wrong.npy")])
    err = capsys.readouterr().err
    assert code == 2
    assert "(4, 16, 16, 3), the model wants (N,) + (32, 32, 3)" in err
    assert not (tmp_path / "w.tflite").exists()


def test_lambda_model_loads_with_unsafe(bad_files, capsys):
    assert cli.main(["inspect", str(bad_files / "lambda.keras"), "--unsafe", "--ratios",
                     "0.5"]) == 0
    captured = capsys.readouterr()
    assert "double" in captured.out  # the Lambda is a barrier: its channels are kept
    assert "barrier" in captured.err  # keras_slim's warning, as one log line


def test_custom_layer_needs_import(tmp_path, monkeypatch, capsys):
    import importlib.util
    import sys

    name = "ks_cli_test_layers"
    (tmp_path / f"{name}.py").write_text(
        "import keras\n\n"
        "@keras.saving.register_keras_serializable(package='kscli')\n"
        "class Scale(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return x * 2.0\n")
    spec = importlib.util.spec_from_file_location(name, tmp_path / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inp))
    keras.Model(inp, module.Scale(name="scale")(x)).save(tmp_path / "custom.keras")
    registry = keras.saving.get_custom_objects()
    registry.pop("kscli>Scale")  # as in a fresh process that never imported the module
    try:
        assert cli.main(["inspect", str(tmp_path / "custom.keras")]) == 3
        errors = _err_lines(capsys.readouterr().err)
        assert len(errors) == 1
        assert f"class 'Scale' (saved from module '{name}')" in errors[0]
        assert "--import MODULE" in errors[0]

        monkeypatch.syspath_prepend(str(tmp_path))
        assert cli.main(["inspect", str(tmp_path / "custom.keras"), "--import", name,
                         "--ratios", "0.5"]) == 0
        out = capsys.readouterr().out
        # Scale is traced (x * 2.0); the model's output width is kept: nothing to prune
        assert "0 prunable channel(s)" in out and "no handler" not in out
        assert cli.main(["inspect", str(tmp_path / "custom.keras"), "--import",
                         "no_such_module_xyz"]) == 2
        assert "--import no_such_module_xyz: could not import it" in capsys.readouterr().err
    finally:
        registry.pop("kscli>Scale", None)
        sys.modules.pop(name, None)


def test_export_failure_exits_4(work, monkeypatch, tmp_path, capsys):
    from keras_slim import export

    def fail(*args, **kwargs):
        raise export.ExportError("Verification failed: the .tflite output differs\nby 0.5")

    monkeypatch.setattr(export, "export_tflite", fail)
    code = cli.main(["export", str(work / "vgg.keras"), "--tflite", str(tmp_path / "f.tflite")])
    errors = _err_lines(capsys.readouterr().err)
    assert code == 4
    assert errors == ["keras-slim export: error: Verification failed: the .tflite output "
                      "differs | by 0.5"]


def test_export_for_threads_reaches_the_exporters(work, monkeypatch, tmp_path, capsys):
    from keras_slim import export

    seen = {}

    def record(name):
        def fake(*args, **kwargs):
            seen[name] = kwargs.get("for_threads")
            raise export.ExportError("stop here")
        return fake

    monkeypatch.setattr(export, "export_tflite", record("tflite"))
    monkeypatch.setattr(export, "export_onnx", record("onnx"))
    assert cli.main(["export", str(work / "vgg.keras"), "--tflite", str(tmp_path / "f.tflite"),
                     "--for-threads", "2"]) == 4
    assert cli.main(["export", str(work / "vgg.keras"), "--onnx", str(tmp_path / "f.onnx"),
                     "--for-threads", "4"]) == 4
    assert seen == {"tflite": 2, "onnx": 4}
    assert cli.main(["export", str(work / "vgg.keras"), "--tflite", str(tmp_path / "x.tflite"),
                     "--for-threads", "0"]) == 2
    assert "--for-threads" in capsys.readouterr().err
    assert cli.main(["export", str(work / "vgg.keras"), "--mnn", str(tmp_path / "x.mnn"),
                     "--for-threads", "2"]) == 2
    assert "--for-threads applies to TFLite and ONNX" in capsys.readouterr().err


def test_debug_shows_traceback(bad_files, capsys):
    assert cli.main(["inspect", str(bad_files / "lambda.keras"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "pass --unsafe" in err


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "inspect" in capsys.readouterr().err


def test_installed_console_script_help():
    exe = shutil.which("keras-slim")
    if exe is None:
        pytest.skip("the keras-slim console script is not installed; run "
                    "`pip install -e . --no-deps`")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 0, result.stderr
    for command in ("inspect", "prune", "export", "bench"):
        assert command in result.stdout
    assert "exit codes" in result.stdout


# ---------------------------------------------------------------- TF start-up logs
TF_LOG_MARKERS = ("onednn", "cuda", "cpu_feature_guard", "cuinit", "absl")


@pytest.mark.parametrize("argv, wanted", [
    (["inspect", "m.keras"], False),
    (["inspect", "m.keras", "-q"], False),
    (["inspect", "m.keras", "-v"], True),
    (["inspect", "m.keras", "-vv"], True),
    (["inspect", "m.keras", "-qv"], True),
    (["inspect", "m.keras", "--verbose"], True),
    (["inspect", "m.keras", "--verb"], True),
    (["inspect", "m.keras", "--debug"], True),
    (["inspect", "--", "-v"], False),
])
def test_tf_logs_wanted_only_with_verbose_or_debug(argv, wanted):
    assert cli._tf_logs_wanted(argv) is wanted


def test_silence_tf_logs_defaults_the_level_but_never_forces_it(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    cli._silence_tf_logs(["inspect", "m.keras", "-v"])
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ  # -v: TF logs as the user configured
    cli._silence_tf_logs(["inspect", "m.keras"])
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    cli._silence_tf_logs(["inspect", "m.keras"])
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"  # the user's own setting wins


def _run_console_script(*args, tmp_path):
    exe = shutil.which("keras-slim")
    if exe is None:
        pytest.skip("the keras-slim console script is not installed; run "
                    "`pip install -e . --no-deps`")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path),
                                                      env.get("PYTHONPATH")]))
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)


def test_console_script_sets_tf_log_level_only_without_verbose(work, tmp_path):
    # --import runs in the CLI process after main() starts: it sees the env TF got.
    (tmp_path / "envprobe.py").write_text(
        "import os\nprint('PROBE', os.environ.get('TF_CPP_MIN_LOG_LEVEL'))\n")
    model = str(work / "vgg.keras")
    quiet = _run_console_script("inspect", model, "--import", "envprobe", tmp_path=tmp_path)
    loud = _run_console_script("inspect", model, "--import", "envprobe", "-v",
                               tmp_path=tmp_path)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    assert "PROBE 3" in quiet.stdout
    # keras-slim leaves it alone with -v (TF may still import JAX, whose import sets "1")
    assert "PROBE" in loud.stdout and "PROBE 3" not in loud.stdout


def test_console_script_hides_tf_startup_logs(tmp_path):
    result = _run_console_script("--help", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    noise = [m for m in TF_LOG_MARKERS if m in result.stderr.lower()]
    assert not noise, result.stderr


def test_prune_model_without_bn_with_filter_criterion(tmp_path, capsys):
    x = inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="c2")(x)
    out = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    path, small = str(tmp_path / "nobn.keras"), str(tmp_path / "small.keras")
    keras.Model(inp, out).save(path)
    assert cli.main(["prune", path, "--ratio", "0.5", "-o", small]) == 3  # no BN to rank
    assert "--criterion l1" in capsys.readouterr().err
    assert cli.main(["prune", path, "--ratio", "0.5", "--criterion", "l1", "-o", small]) == 0
    assert keras.models.load_model(small).count_params() < keras.models.load_model(path).count_params()


def test_prune_to_a_macs_target(work, tmp_path, capsys):
    out = str(tmp_path / "half.keras")
    assert cli.main(["prune", str(work / "vgg.keras"), "--target-macs", "0.5", "-o", out]) == 0
    text = capsys.readouterr().out
    assert "target:   MACs <=" in text and ": met" in text
    assert cli.main(["prune", str(work / "vgg.keras"), "--target-macs", "0", "-o", out]) == 2


def test_prune_to_a_latency_target(work, tmp_path, capsys, monkeypatch):
    pytest.importorskip("ai_edge_litert")
    monkeypatch.setenv("KERAS_SLIM_CACHE", str(tmp_path / "cache"))
    out = str(tmp_path / "fast.keras")
    assert cli.main(["prune", str(work / "vgg.keras"), "--target-latency-ms", "60%",
                     "-o", out, "-q"]) == 0
    text = capsys.readouterr().out
    assert "latency" in text and ": met" in text
    assert keras.models.load_model(out).count_params() < \
        keras.models.load_model(work / "vgg.keras").count_params()
    assert os.listdir(tmp_path / "cache")  # measured once, kept for next time
    assert cli.main(["prune", str(work / "vgg.keras"), "--target-latency-ms", "60%",
                     "--allocation", "latency", "-o", out, "-q"]) == 0
    assert "score per estimated ms saved" in capsys.readouterr().out
    from keras_slim.export import latency_model as lat

    seen, measure = [], lat.LatencyModel.measure.__func__
    monkeypatch.setattr(lat.LatencyModel, "measure", classmethod(
        lambda cls, *a, **kw: seen.append(kw["refresh"]) or measure(cls, *a, **kw)))
    assert cli.main(["prune", str(work / "vgg.keras"), "--target-latency-ms", "60%",
                     "--latency-refresh", "-o", out, "-q"]) == 0
    assert seen == [True]
    assert cli.main(["prune", str(work / "vgg.keras"), "--ratio", "0.5", "--allocation",
                     "latency", "-o", out]) == 2
    assert "--allocation latency needs a latency target" in capsys.readouterr().err
    for bad in ("0", "-1", "150%", "fast"):
        assert cli.main(["prune", str(work / "vgg.keras"), "--target-latency-ms", bad,
                         "-o", out]) == 2
    assert "milliseconds > 0" in capsys.readouterr().err


def test_export_ncnn_and_mnn(pruned, tmp_path):
    pytest.importorskip("ncnn")
    pytest.importorskip("MNN")
    from keras_slim import MissingDependencyError
    from keras_slim.export import _mobile

    try:
        _mobile.pnnx_executable()
    except MissingDependencyError:
        pytest.importorskip("pnnx", reason="pip install --no-deps pnnx")
    code = cli.main(["export", str(pruned[2]), "--ncnn", str(tmp_path / "ncnn"), "--mnn",
                     str(tmp_path / "small.mnn"), "--json", str(tmp_path / "r.json"), "-q"])
    assert code == 0
    assert sorted(os.listdir(tmp_path / "ncnn")) == ["small.ncnn.bin", "small.ncnn.param"]
    ncnn_report, mnn_report = json.loads((tmp_path / "r.json").read_text())
    assert (ncnn_report["format"], mnn_report["format"]) == ("ncnn", "mnn")
    for report in (ncnn_report, mnn_report):
        assert report["verified"] and report["max_rel_error"] < 1e-4
    assert ncnn_report["inputs"][0]["shape"] == [3, 32, 32]
    assert mnn_report["inputs"][0]["shape"] == [1, 3, 32, 32]

    # `keras-slim bench` times them in their own runtimes
    files = [str(tmp_path / "ncnn" / "small.ncnn.param"), str(tmp_path / "small.mnn")]
    code = cli.main(["bench", *files, "--threads", "1", "--runs", "3", "--warmup", "1",
                     "--json", str(tmp_path / "bench.json"), "-q"])
    assert code == 0
    timed = json.loads((tmp_path / "bench.json").read_text())
    assert [r["runtime"] for r in timed] == ["ncnn", "mnn"]
    assert all(0 < r["median_ms"] for r in timed)


@pytest.mark.parametrize("argv, message", [
    (["--ncnn", "{tmp}/d", "--quantize", "int8"], "--ncnn supports --quantize float16 only"),
    (["--ncnn", "{tmp}/f.txt"], "is a file; give a folder"),
    (["--ncnn", "{tmp}/no/such/d"], "does not exist"),
    (["--mnn", "{tmp}/m.txt"], "must end in .mnn"),
    (["--mnn", "{tmp}/m.mnn", "--quantize", "int8"], "--mnn supports --quantize float16 or "
                                                     "dynamic"),
    (["--onnx", "{tmp}/m.onnx", "--quantize", "float16"], "--quantize applies to TFLite, ncnn "
                                                          "and MNN"),
])
def test_ncnn_and_mnn_flag_errors_are_usage_errors(tmp_path, capsys, argv, message):
    (tmp_path / "f.txt").write_text("x")
    argv = [a.format(tmp=tmp_path) for a in argv]
    code = cli.main(["export", str(tmp_path / "m.keras")] + argv)
    errors = _err_lines(capsys.readouterr().err)
    assert code == 2 and len(errors) == 1 and message in errors[0]
    assert sorted(os.listdir(tmp_path)) == ["f.txt"]


def test_prune_bn_scale_normalised_by_mean(work, tmp_path):
    """`--normalize mean` reaches plan() with bn_scale: the same model as the Python API."""
    import keras_slim

    src, out = str(work / "vgg.keras"), str(tmp_path / "mean.keras")
    assert cli.main(["prune", src, "--ratio", "0.5", "--normalize", "mean", "-o", out]) == 0
    model = keras.models.load_model(src)
    expected = keras_slim.prune(model, 0.5, normalize="mean")
    assert keras.models.load_model(out).count_params() == expected.count_params()
    assert expected.count_params() != keras_slim.prune(model, 0.5).count_params()
