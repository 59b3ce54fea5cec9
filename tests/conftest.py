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
    keras.backend.clear_session()


@pytest.fixture(autouse=True)
def _handler_registry():
    """Registrations a test makes (register_handler) do not leak into the next test."""
    from keras_slim.handlers import registry

    user = dict(registry._USER)
    yield
    registry._USER.clear()
    registry._USER.update(user)
