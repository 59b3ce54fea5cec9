"""JSON text of a result, optionally written to a file (Plan, SensitivityResult)."""
from __future__ import annotations

import json


def to_json(data: dict, path: str | None = None, indent: int = 1) -> str:
    """`data` as JSON text; also written to `path` when one is given."""
    text = json.dumps(data, indent=indent)
    if path is not None:
        with open(path, "w") as f:
            f.write(text)
    return text
