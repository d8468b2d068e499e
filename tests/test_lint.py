"""ruff (style, pydocstyle in Google convention) and mypy stay clean."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean():
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "zk0cli", "tests", "benchmarks",
                          "scripts"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_mypy_is_clean():
    res = subprocess.run([sys.executable, "-m", "mypy", "zk0cli"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
