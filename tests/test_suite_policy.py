"""The suite's own rules: in CI a missing extra fails instead of skipping."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_pytest(tmp_path, env_extra):
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "conftest.py").write_text(open(os.path.join(ROOT, "tests", "conftest.py")).read())
    (tests / "test_needs_extra.py").write_text(textwrap.dedent("""
        import pytest
        missing = pytest.importorskip("keras_slim_no_such_extra_xyz")

        def test_uses_it():
            assert missing
    """))
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "KERAS_SLIM_STRICT_EXTRAS")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tests)], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_missing_extra_fails_in_ci(tmp_path):
    result = _run_pytest(tmp_path, {"CI": "true"})
    assert result.returncode != 0, result.stdout
    assert "CI must test it" in result.stdout


def test_missing_extra_skips_locally(tmp_path):
    result = _run_pytest(tmp_path, {})
    assert result.returncode in (0, 5), result.stdout  # 5: no test ran (all skipped)
    assert "1 skipped" in result.stdout
