"""Packaging: the wheel ships every module of the source tree and py.typed.

The suite itself runs against an editable install, which imports from the
checkout and so cannot notice a file missing from the wheel. The full check
(a fresh venv, import and prune from outside the checkout, `keras-slim
--help`) is .ci/wheel_smoke.py, run by .ci/run; these are its fast parts.
"""
import importlib.util
import zipfile
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent


def _wheel_smoke():
    spec = importlib.util.spec_from_file_location("wheel_smoke", ROOT / ".ci" / "wheel_smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_folder_with_modules_is_a_package():
    # find_packages only finds folders with an __init__.py; one without is
    # silently left out of the wheel (keras_slim/handlers once was).
    folders = {p.parent.relative_to(ROOT).as_posix().replace("/", ".")
               for p in (ROOT / "keras_slim").rglob("*.py") if "__pycache__" not in p.parts}
    assert folders == set(find_packages(str(ROOT), include=["keras_slim", "keras_slim.*"]))
    assert (ROOT / "keras_slim" / "py.typed").is_file()


def test_missing_from_wheel_names_what_is_left_out(tmp_path):
    smoke = _wheel_smoke()
    wheel = tmp_path / "partial.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("keras_slim/__init__.py", "")
    missing = smoke.missing_from_wheel(wheel)
    assert "keras_slim/py.typed" in missing and "keras_slim/handlers/base.py" in missing
    assert "keras_slim/__init__.py" not in missing


def test_wheel_ships_every_module_and_py_typed(tmp_path):
    smoke = _wheel_smoke()
    wheel = smoke.build_wheel(tmp_path)
    assert smoke.missing_from_wheel(wheel) == []
