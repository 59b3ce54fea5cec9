"""Where every benchmark leaves its numbers: STEM.json and STEM.md side by side."""
from __future__ import annotations

import json
import os
from typing import Any, Callable


def save_results(out_dir: str, stem: str, data: Any, markdown: str,
                 default: Callable[[Any], Any] | None = None) -> str:
    """Write `data` to OUT_DIR/STEM.json and `markdown` to OUT_DIR/STEM.md, print the markdown.

    Returns the path stem (OUT_DIR/STEM) for messages.
    """
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, stem)
    with open(path + ".json", "w") as f:
        json.dump(data, f, indent=1, default=default)
    if not markdown.endswith("\n"):
        markdown += "\n"
    with open(path + ".md", "w") as f:
        f.write(markdown)
    print(markdown)
    return path


def table(head: list, rows: list, align: str = "---") -> list:
    """Markdown table lines: a header, its rule and one line per row (cells as given)."""
    return (["| " + " | ".join(head) + " |", "|" + f"{align}|" * len(head)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])
