"""The command line: help, version, stubs, and that --help stays light."""

import os
import subprocess
import sys

from typer.testing import CliRunner

from zk0cli import __version__
from zk0cli.cli.app import app

COMMANDS = ("train", "simulate", "tiny-run", "analyze-run", "push", "release", "data")


def test_help_lists_every_command():
    res = CliRunner().invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in COMMANDS:
        assert cmd in res.output


def test_version():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"zk0 {__version__}"


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from zk0cli.cli.app import app; "
            "import typer.testing as t; t.CliRunner().invoke(app, ['--help']); "
            "print(sorted(m for m in ('torch', 'lerobot', 'flwr', 'mujoco', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ}, check=True).stdout.strip()
    assert out == "[]"


def test_python_m_entry_point():
    res = subprocess.run([sys.executable, "-m", "zk0cli", "--version"], capture_output=True,
                         text=True, check=True)
    assert res.stdout.strip() == f"zk0 {__version__}"
