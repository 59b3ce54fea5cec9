"""The latency model's cache: measured points per machine, as JSON (see latency_model.py)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform

from keras_slim.export._atomic import atomic_file

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


def machine_info() -> dict:
    """What the timings depend on: OS, CPU, cores and the LiteRT version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        from importlib.metadata import version

        litert = version("ai-edge-litert")
    except Exception:  # not installed as a distribution: measuring will say so
        litert = "unknown"
    return dict(system=platform.system(), machine=platform.machine(), cpu=cpu,
                cores=os.cpu_count(), litert=litert)


def load_average() -> float | None:
    """The 1-minute load average now (None where the OS does not say)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # Windows has no getloadavg
        return None


def key(kind: str, spec: dict, cin: int, cout: int, threads: int, widths: list) -> str:
    """The cache key of one measurement: what was timed, at which widths and threads."""
    return json.dumps(dict(kind=kind, spec=spec, cin=cin, cout=cout, threads=threads,
                           widths=widths, version=CACHE_VERSION), sort_keys=True)


def cache_path(cache_dir, machine: dict) -> str | None:
    """`<dir>/latency-<machine hash>.json`; None when caching is off (cache_dir=False)."""
    if cache_dir is False:
        return None
    base = cache_dir or os.environ.get("KERAS_SLIM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "keras_slim")
    digest = hashlib.sha1(json.dumps(machine, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(os.fspath(base), f"latency-{digest}.json")


def load(path: str | None) -> dict:
    if path is None or not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
        return dict(data["entries"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("keras_slim: latency cache %s is unreadable (%s); measuring again",
                       path, err)
        return {}


def save(path: str, machine: dict, entries: dict) -> None:
    """Merge with what another process may have written meanwhile; write atomically."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    merged = {**load(path), **entries}
    with atomic_file(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(dict(machine=machine, entries=merged), f, indent=0, sort_keys=True)
