"""Resume: kill a whole run with SIGKILL, continue it, get the uninterrupted result."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.core.checkpoint import write_checkpoint
from zk0cli.core.config import load_config
from zk0cli.core.resume import config_differences, prepare_resume
from zk0cli.core.rundir import RunDir, read_json, write_json
from zk0cli.errors import RunDirError, UsageError

ARGS = ["--preset", "tiny", "--rounds", "4", "--clients", "2",
        "--set", "training.steps_per_round=2", "--set", "eval.batches=1",
        "--set", "checkpoint.interval=1"]
MARK = "ZK0_RESUME_MARK"


def marked_processes(mark):
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get(MARK) == mark:
                out.append(p)
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
    return out


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    res = CliRunner().invoke(app, ["simulate", *ARGS, "--out", str(full)])
    assert res.exit_code == 0, res.output

    cut = tmp_path / "cut"
    mark = f"resume-{os.getpid()}"
    env = {**os.environ, MARK: mark}
    proc = subprocess.Popen([sys.executable, "-m", "zk0cli", "simulate", *ARGS, "--out", str(cut)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    latest = cut / "models" / "latest"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if latest.is_file() and latest.read_text().strip() == "checkpoint_round_2":
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    for p in marked_processes(mark):  # SIGKILL the whole run: CLI, SuperLink, Ray, apps
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)
    time.sleep(1)
    assert read_json(cut / "run.json")["status"] == "running"  # killed: nobody wrote more

    res = CliRunner().invoke(app, ["simulate", "--resume", str(cut)])
    assert res.exit_code == 0, res.output
    assert "resuming" in res.output and "(checkpoint_round_2)" in res.output

    a, b = RunDir(full), RunDir(cut)
    ta = load_file(a.checkpoint(4) / "model.safetensors")
    tb = load_file(b.checkpoint(4) / "model.safetensors")
    assert set(ta) == set(tb)
    for name in ta:  # bitwise: every draw is seeded by (seed, round, client)
        assert (ta[name] == tb[name]).all(), name
    ea, eb = read_json(a.server_eval(4)), read_json(b.server_eval(4))
    assert ea["server_eval"] == eb["server_eval"]
    assert read_json(a.policy_loss_history) == read_json(b.policy_loss_history)
    run = read_json(b.run_json)
    assert run["status"] == "completed" and run["resumes"][0]["from_round"] == 2
    assert b.server_eval_rounds() == [0, 1, 2, 3, 4]
    assert marked_processes(mark) == []


def _fake_policy(directory):
    (directory / "config.json").write_text('{"type": "smolvla"}', encoding="utf-8")
    (directory / "model.safetensors").write_bytes(b"\0" * 8)


def _interrupted_run(tmp_path, rounds_written=3, checkpoint_round=2):
    cfg = load_config(preset="tiny")
    rd = RunDir.create(tmp_path, name="run")
    rd.config_json.write_text(cfg.model_dump_json(indent=2), encoding="utf-8")
    rd.update_run(status="interrupted", rounds_completed=rounds_written)
    for r in range(rounds_written + 1):
        write_json(rd.server_eval(r), {"round": r})
        write_json(rd.client_round("0", r), {"round": r})
    write_json(rd.policy_loss_history, {str(r): 1.0 / (r + 1) for r in range(rounds_written + 1)})
    write_json(rd.federated_metrics, [{"round": r} for r in range(rounds_written + 1)])
    write_checkpoint(rd, checkpoint_round, save_policy=_fake_policy, metrics={})
    return cfg, rd


def test_prepare_resume_moves_later_rounds_aside(tmp_path):
    cfg, rd = _interrupted_run(tmp_path)
    point = prepare_resume(rd, cfg)
    assert point.server_round == 2
    assert rd.server_eval_rounds() == [0, 1, 2]
    assert (rd.root / "superseded" / "resume-1" / "server" / "round_3_server_eval.json").is_file()
    assert (rd.root / "superseded" / "resume-1" / "clients" / "0" / "round_3.json").is_file()
    assert set(read_json(rd.policy_loss_history)) == {"0", "1", "2"}
    run = read_json(rd.run_json)
    assert run["status"] == "running" and run["resume"]["from_round"] == 2
    assert run["resumes"][0]["previous_status"] == "interrupted"


def test_breaking_config_change_is_refused_with_the_differences(tmp_path):
    cfg, rd = _interrupted_run(tmp_path)
    changed = load_config(preset="tiny", overrides=["seed=7", "training.lr=0.01"])
    with pytest.raises(UsageError) as info:
        prepare_resume(rd, changed)
    assert "seed: 42 -> 7" in str(info.value)
    assert "training.lr" not in str(info.value)  # a safe change is not listed as breaking
    assert rd.server_eval_rounds() == [0, 1, 2, 3]  # nothing moved


def test_more_rounds_is_a_safe_change():
    old = load_config(preset="tiny").model_dump(mode="json")
    new = load_config(preset="tiny", flags={"federation.rounds": 9}).model_dump(mode="json")
    breaking, safe = config_differences(old, new)
    assert breaking == [] and safe == ["federation.rounds: 3 -> 9"]


def test_rounds_must_go_beyond_the_checkpoint(tmp_path):
    cfg, rd = _interrupted_run(tmp_path)
    with pytest.raises(UsageError, match="--rounds N with N > 2"):
        prepare_resume(rd, load_config(preset="tiny", flags={"federation.rounds": 2}))


def test_resume_without_checkpoint_exits_2(tmp_path):
    rd = RunDir.create(tmp_path, name="empty")
    rd.config_json.write_text(load_config(preset="tiny").model_dump_json(), encoding="utf-8")
    rd.update_run(status="interrupted")
    with pytest.raises(RunDirError, match="no complete checkpoint"):
        prepare_resume(rd, load_config(preset="tiny"))
    res = CliRunner().invoke(app, ["simulate", "--resume", str(rd.root)])
    assert res.exit_code == 2 and "no complete checkpoint" in res.output


def test_resume_of_a_non_run_directory_exits_2(tmp_path):
    res = CliRunner().invoke(app, ["simulate", "--resume", str(tmp_path)])
    assert res.exit_code == 2 and "not a zk0 run directory" in res.output


def test_corrupt_latest_falls_back_to_the_newest_intact_checkpoint(tmp_path):
    cfg, rd = _interrupted_run(tmp_path, rounds_written=3, checkpoint_round=1)
    write_checkpoint(rd, 2, save_policy=_fake_policy, metrics={})
    (rd.checkpoint(2) / "model.safetensors").write_bytes(b"\1" * 8)  # damaged after the write
    point = prepare_resume(rd, cfg)
    assert point.checkpoint == rd.checkpoint(1) and point.server_round == 1
    assert "checkpoint_round_2" in point.fallback and "model.safetensors" in point.fallback
    assert read_json(rd.run_json)["resumes"][0]["fallback"] == point.fallback


def test_no_intact_checkpoint_lists_each_problem(tmp_path):
    cfg, rd = _interrupted_run(tmp_path, rounds_written=2, checkpoint_round=1)
    (rd.checkpoint(1) / "model.safetensors").write_bytes(b"\1" * 8)
    with pytest.raises(RunDirError, match="no complete checkpoint") as info:
        prepare_resume(rd, cfg)
    assert "checkpoint_round_1" in str(info.value)
    assert rd.server_eval_rounds() == [0, 1, 2]  # nothing moved
