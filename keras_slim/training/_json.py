"""JSON for training records: numpy scalars and arrays become plain Python values."""
from __future__ import annotations

import numpy as np

from keras_slim.errors import ArgumentTypeError


def json_default(obj):
    """The ``default=`` of `json.dump` for results holding numpy values or sets."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise ArgumentTypeError(f"not JSON serialisable: {type(obj).__name__}")
