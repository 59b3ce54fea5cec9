import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


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
