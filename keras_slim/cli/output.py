"""What the command line writes: exit codes, one-line errors, tables, JSON, and
keras_slim's log records and warnings on stderr for the duration of a command."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import traceback
import warnings
from typing import Any, Iterator, Sequence

import numpy as np

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNSUPPORTED = 3
EXIT_EXPORT = 4
EXIT_INTERRUPTED = 130

logger = logging.getLogger("keras_slim.cli")


def fail(args: argparse.Namespace, err: BaseException, code: int,
         unexpected: bool = False) -> int:
    """Print `err` as one line on stderr (with the traceback under --debug); return `code`."""
    if args.debug:
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    text = one_line(str(err)) or type(err).__name__
    if unexpected:
        text = (f"unexpected {type(err).__name__}: {text}" +
                ("" if args.debug else " (rerun with --debug for the traceback)"))
    print(f"keras-slim {args.command}: error: {text}", file=sys.stderr)
    return code


def one_line(text: str, limit: int = 1500) -> str:
    """`text` joined into one line (' | ' between lines), cut to `limit` characters."""
    line = " | ".join(part.strip() for part in text.strip().splitlines() if part.strip())
    return line if len(line) <= limit else line[:limit - 3] + "..."


@contextlib.contextmanager
def logging_to_stderr(verbose: int, quiet: bool) -> Iterator[None]:
    """Send keras_slim's log records to stderr for the duration of one command.

    The CLI's own progress shows at INFO; the library's records show from
    WARNING, INFO with -v and DEBUG with -vv. Levels, handlers and propagation
    are restored afterwards, so `main` can be called repeatedly in one process.
    """
    package = logging.getLogger("keras_slim")
    saved = (package.level, package.propagate, logger.level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if verbose < 2
                                           else "%(levelname)s %(name)s: %(message)s"))
    package.addHandler(handler)
    package.propagate = False
    if quiet:
        package.setLevel(logging.WARNING)
        logger.setLevel(logging.WARNING)
    else:
        package.setLevel(logging.DEBUG if verbose >= 2 else
                         logging.INFO if verbose == 1 else logging.WARNING)
        logger.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(saved[0])
        package.propagate = saved[1]
        logger.setLevel(saved[2])


@contextlib.contextmanager
def warnings_to_log() -> Iterator[None]:
    """Show keras_slim's warnings once each as log lines; others only with -vv."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = one_line(str(message))
        if text in seen:
            return
        seen.add(text)
        ours = f"{os.sep}keras_slim{os.sep}" in filename
        logger.log(logging.WARNING if ours else logging.DEBUG,
                   "warning: %s", text if ours else f"{category.__name__}: {text}")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """A plain-text table: columns padded to their widest cell, `right` ones right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def fmt(row):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths)]
                     + [fmt(r) for r in cells[1:]])


def write_json(path: str, data: Any) -> None:
    """Write `data` as indented JSON (numpy numbers and arrays become plain values)."""
    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=_json_default)
        f.write("\n")
    logger.info("Wrote %s", path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)
