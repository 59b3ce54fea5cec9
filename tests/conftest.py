import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import importlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# In CI (CI=true, or KERAS_SLIM_STRICT_EXTRAS=1) every optional dependency the
# test extra installs must be there: `pytest.importorskip` becomes a plain
# import, so a missing extra fails the run instead of silently skipping whole
# modules. Locally, without an extra, its tests are skipped (and say why).
STRICT_EXTRAS = (os.environ.get("CI", "").lower() in ("1", "true", "yes")
                 or os.environ.get("KERAS_SLIM_STRICT_EXTRAS") == "1")


def _required_import(modname, minversion=None, reason=None, **kwargs):
    try:
        return importlib.import_module(modname)
    except ImportError as err:
        raise ImportError(f"{modname} is missing, but CI must test it (STRICT_EXTRAS): "
                          f"install the test extra, pip install -e '.[test]' ({err})") from err


if STRICT_EXTRAS:
    pytest.importorskip = _required_import


def pytest_report_header(config):
    return ("extras: strict (a missing optional dependency fails)" if STRICT_EXTRAS
            else "extras: tests of missing optional dependencies are skipped")


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    np.random.seed(0)
    yield
    # free_memory=False: no gc.collect() per test. With TensorFlow's large heap one
    # full collection takes ~0.3 s, which was a third of the quick selection's time;
    # Python's own generational collector still frees cycles as the suite runs.
    keras.backend.clear_session(free_memory=False)


@pytest.fixture(autouse=True)
def _handler_registry():
    """Registrations a test makes (register_handler) do not leak into the next test."""
    from keras_slim.handlers import registry

    user = dict(registry._USER)
    yield
    registry._USER.clear()
    registry._USER.update(user)


# Heavy tests marked slow in one place, so that `python -m pytest -m "not slow"`
# stays a quick loop for core work; `.ci/run` still runs everything. They start
# a fresh Python that imports TensorFlow (console script, other backends,
# reloading without the user's classes), train (QAT, fit), or convert and run
# exported files (TFLite, ONNX).
_SLOW_MODULES = ("test_backends.py", "test_qat.py", "test_tf_keras.py", "test_export_tflite.py",
                 "test_export_onnx.py", "test_suite_policy.py", "test_export_ncnn_mnn.py",
                 "test_distributed.py", "test_latency_target.py")
_SLOW_TESTS = (
    "test_cli.py::test_console_script", "test_cli.py::test_installed_console_script",
    "test_cli.py::test_export", "test_cli.py::test_bench", "test_cli.py::test_calibration",
    "test_tracing.py::test_traced_model_saves_and_loads_without_the_user_classes",
    "test_registry.py::test_user_handler_for_builtin_class_wins_even_before_builtins_load",
    "test_saving.py::test_compile_config_is_copied_and_fine_tuning_runs",
    "test_sparsity.py::test_penalty_shrinks_gammas_during_fit",
    "test_dynamic_shapes.py::test_export",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        where = item.nodeid.split("tests/")[-1]
        if where.split("::")[0] in _SLOW_MODULES or where.startswith(_SLOW_TESTS):
            item.add_marker(pytest.mark.slow)
