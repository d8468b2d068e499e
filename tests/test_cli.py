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


def test_out_under_a_file_exits_2_before_any_work(tmp_path):
    blocker = tmp_path / "f.txt"
    blocker.write_text("x", encoding="utf-8")
    for args in (["simulate", "--preset", "tiny", "--out", str(blocker / "run")],
                 ["tiny-run", "--out", str(blocker / "run")],
                 ["train", "certs", "--out", str(blocker / "certs"), "--host", "localhost"]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert "f.txt" in res.output and "Traceback" not in res.output
    assert blocker.read_text(encoding="utf-8") == "x"


def test_existing_out_is_refused_before_datasets_are_prepared(tmp_path, monkeypatch):
    from zk0cli.engine import prepare

    def must_not_run(*a, **k):
        raise AssertionError("datasets were prepared before --out was checked")

    monkeypatch.setattr(prepare, "prepare_datasets", must_not_run)
    res = CliRunner().invoke(app, ["simulate", "--preset", "tiny", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "already exists" in res.output


def test_sim_overwrite_refuses_a_folder_that_is_not_a_dataset(tmp_path):
    from zk0cli.core.sim import generate_dataset
    from zk0cli.errors import UsageError

    root = tmp_path / "lift"
    root.mkdir()
    (root / "keep.txt").write_text("mine", encoding="utf-8")
    import pytest

    with pytest.raises(UsageError, match="not a LeRobotDataset"):
        generate_dataset("lift", root=root, repo_id="x/lift", episodes=1, seed=0,
                         overwrite=True)
    assert (root / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_run_files_are_readable_by_others(tmp_path):
    import stat

    from zk0cli.core.rundir import RunDir, write_json

    rd = RunDir.create(tmp_path)
    write_json(rd.run_json, {"status": "running"})
    mode = stat.S_IMODE(rd.run_json.stat().st_mode)
    assert mode & stat.S_IROTH, oct(mode)
