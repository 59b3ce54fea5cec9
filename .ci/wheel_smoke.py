"""Build the wheel, install it into a fresh venv and use it from outside the source tree.

The editable install that the test suite runs against hides packaging bugs: a
folder missing from the wheel (e.g. one without ``__init__.py``, which
``find_packages`` skips) still imports from the source tree. This script checks
what users get from ``pip install keras-slim``:

1. every ``keras_slim/**.py`` of the source tree and ``py.typed`` are in the wheel;
2. in a ``--system-site-packages`` venv (dependencies reused, nothing
   downloaded) the wheel imports from the venv's site-packages, prunes a small
   model and ``keras-slim --help`` runs.

Run by ``.ci/run``; ``tests/test_packaging.py`` reuses `build_wheel` and
`missing_from_wheel`. Exits non-zero with the reason on any failure.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "keras_slim"

# Runs inside the venv with `python -I` from a temp dir (so neither the cwd nor
# the script's folder puts the source tree on sys.path).
_INSIDE = r"""
import os, sys
site_dir, src = sys.argv[1], sys.argv[2]
inside = lambda path: (path + os.sep).startswith(src + os.sep)
assert not any(inside(os.path.realpath(p or os.getcwd())) for p in sys.path), sys.path

import keras
import keras_slim
from keras import layers

assert os.path.realpath(keras_slim.__file__).startswith(site_dir), keras_slim.__file__
for name, module in list(sys.modules.items()):
    if name == "keras_slim" or name.startswith("keras_slim."):
        where = getattr(module, "__file__", None) or list(getattr(module, "__path__", []))
        assert str(where).find(site_dir) >= 0, f"{name} imported from {where}, not the wheel"

model = keras.Sequential([
    keras.Input((16, 16, 3)),
    layers.Conv2D(8, 3, use_bias=False), layers.BatchNormalization(), layers.ReLU(),
    layers.GlobalAveragePooling2D(), layers.Dense(2),
])
keras_slim.testing.randomize_batchnorm(model, seed=0)
small = keras_slim.prune(model, 0.5)
assert small.count_params() < model.count_params(), (small.count_params(), model.count_params())
print(f"wheel import ok: {keras_slim.__file__}; params {model.count_params()} -> "
      f"{small.count_params()}")
"""

# The venv sees the system site-packages, and with them the editable install:
# either a meta-path finder (new-style editable) or a .pth line naming the
# checkout (setup.py develop, easy-install.pth). Both resolve any keras_slim
# subpackage missing from the wheel to the source tree: exactly the bug to
# catch. sitecustomize runs after all .pth files, so it takes both out for
# every process of the venv.
_SITECUSTOMIZE = """\
import os, sys
_src = os.path.realpath({src!r})
sys.meta_path[:] = [f for f in sys.meta_path
                    if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path_hooks[:] = [h for h in sys.path_hooks
                     if not getattr(h, "__module__", "").startswith("__editable__")]
sys.path[:] = [p for p in sys.path
               if not (os.path.realpath(p or os.curdir) + os.sep).startswith(_src + os.sep)]
"""


class SmokeError(Exception):
    """A packaging check failed; the message says which and why."""


def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        shown = " ".join("<code>" if "\n" in str(c) else str(c) for c in cmd)
        raise SmokeError(f"{what} failed (exit {result.returncode}): {shown}\n"
                         f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n"
                         f"{result.stderr[-4000:]}")
    return result


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # a PYTHONPATH naming the checkout would shadow the wheel
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def source_modules(root: Path = ROOT) -> set[str]:
    """Every ``keras_slim/**.py`` under `root`, as wheel-style relative paths."""
    return {p.relative_to(root).as_posix() for p in (root / PACKAGE).rglob("*.py")
            if "__pycache__" not in p.parts}


def build_wheel(out_dir: Path, root: Path = ROOT) -> Path:
    """Build the wheel from a copy of the sources into `out_dir`; returns its path.

    A copy, because setuptools reuses ``build/lib`` of an earlier build: stale
    files there end up in the wheel and would hide a missing package (and
    building in the checkout would write build/ and egg-info into it).
    """
    src = out_dir / "src"
    src.mkdir(parents=True)
    for item in root.iterdir():  # setup.py, README.md (long_description), LICENSE, ...
        if item.is_file():
            shutil.copy2(item, src / item.name)
    shutil.copytree(root / PACKAGE, src / PACKAGE,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = out_dir / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)],
         "pip wheel", env=_env())
    wheels = list(dist.glob("*.whl"))
    if len(wheels) != 1:
        raise SmokeError(f"expected one wheel in {dist}, found {wheels}")
    return wheels[0]


def missing_from_wheel(wheel: Path, root: Path = ROOT) -> list[str]:
    """Source modules and ``py.typed`` that the wheel lacks (sorted; empty when complete)."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    expected = source_modules(root) | {f"{PACKAGE}/py.typed"}
    return sorted(expected - names)


def smoke(work: Path) -> list[str]:
    """All checks; returns what failed (empty when all passed).

    The install checks run even when the wheel is incomplete, so a failure
    shows both the missing files and what a user would see.
    """
    failures = []
    wheel = build_wheel(work)
    missing = missing_from_wheel(wheel)
    if missing:
        failures.append(f"{wheel.name} lacks {len(missing)} file(s) of the source tree (a "
                        f"folder without __init__.py? package_data?): {', '.join(missing)}")
    else:
        print(f"wheel contents ok: {wheel.name}")

    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], "venv",
         env=_env())
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    site_dir = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                    "venv site-packages", env=_env()).stdout.strip()
    (Path(site_dir) / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(src=str(ROOT)))
    # --force-reinstall: the system's editable keras-slim of the same version
    # would otherwise count as "already satisfied" and nothing would be installed.
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
          "--force-reinstall", str(wheel)], "pip install of the wheel", env=_env())

    outside = work / "outside"  # cwd with nothing importable in it
    outside.mkdir()
    try:
        out = _run([str(python), "-I", "-c", _INSIDE, os.path.realpath(site_dir), str(ROOT)],
                   "import and prune from the installed wheel", cwd=outside, env=_env())
        print(out.stdout.strip())
    except SmokeError as err:
        failures.append(str(err))
    try:
        out = _run([str(bindir / "keras-slim"), "--help"], "keras-slim --help from the venv",
                   cwd=outside, env=_env())
        if "inspect" not in out.stdout:
            raise SmokeError(f"keras-slim --help printed no command list:\n{out.stdout}")
        print("keras-slim --help ok")
    except SmokeError as err:
        failures.append(str(err))
    return failures


def main() -> int:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="keras_slim_wheel_") as tmp:
        try:
            failures = smoke(Path(tmp))
        except SmokeError as err:  # build, venv or install step
            failures = [str(err)]
    for failure in failures:
        print(f"wheel smoke check FAILED: {failure}\n", file=sys.stderr)
    if failures:
        return 1
    print(f"wheel smoke check passed in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
