"""Resume: kill the owner of a run, continue it, get the uninterrupted result."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from zk0cli.analysis.load import load_run
from zk0cli.cli.app import app
from zk0cli.constants import OWNER_GONE_BOUND_S
from zk0cli.core.checkpoint import write_checkpoint
from zk0cli.core.config import load_config
from zk0cli.core.contract import ADAPTER_DIR, ADAPTER_WEIGHTS_FILE, PRIVACY_STATE_FILE
from zk0cli.core.privacy import RunAccountant
from zk0cli.core.resume import config_differences, prepare_resume
from zk0cli.core.rundir import RunDir, read_json, write_json
from zk0cli.errors import RunDirError, UsageError

# 6 rounds: a stop asked for after round 2 (SIGHUP) may land a few rounds later on a loaded
# machine (`flwr stop` is a CLI process); the last resume must still have rounds to train.
ARGS = ["--preset", "tiny", "--rounds", "6", "--clients", "2",
        "--set", "training.steps_per_round=2", "--set", "eval.batches=1",
        "--set", "checkpoint.interval=1",
        # central DP: the accountant's epsilon and the noise stream must resume bitwise too
        "--set", "privacy.mode=central", "--set", "privacy.noise_multiplier=0.7",
        "--set", "privacy.clipping_norm=0.5", "--set", "data.stats=local",
        # LoRA: the adapter (not the merged policy file) is what resumes
        "--set", "model.peft.rank=4"]
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


def _start_marked(args, mark):
    env = {**os.environ, MARK: mark}
    return subprocess.Popen([sys.executable, "-m", "zk0cli", "simulate", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _wait_for_latest(proc, run, name):
    latest = run / "models" / "latest"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if latest.is_file() and latest.read_text().strip() == name:
            return
        time.sleep(0.2)
    raise AssertionError(f"the run ended (exit {proc.poll()}) before {name} was written")


def _seconds_until_gone(mark):
    t0 = time.monotonic()
    while marked_processes(mark) and time.monotonic() - t0 < 60:
        time.sleep(0.2)
    return time.monotonic() - t0


def _snapshot(run):
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_owner_killed_or_hung_up_then_resume_equals_uninterrupted_run(tmp_path):
    """SIGKILL of only the zk0 process, then SIGHUP of the resume: nothing outlives the
    owner, nothing writes the run afterwards, a live owner refuses a second writer, and the
    twice-interrupted run ends bitwise equal to an uninterrupted one."""
    full = tmp_path / "full"  # the uninterrupted reference, beside the interrupted run
    reference = subprocess.Popen([sys.executable, "-m", "zk0cli", "simulate", *ARGS, "--out",
                                  str(full)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        _interrupt_and_resume(tmp_path / "cut")
        out, _ = reference.communicate(timeout=900)
        assert reference.returncode == 0, out.decode()[-3000:]
    finally:
        if reference.poll() is None:
            reference.kill()
    _assert_equal_runs(full, tmp_path / "cut")


def _interrupt_and_resume(cut):
    """SIGKILL the owner after round 1, resume, SIGHUP it after round 2, resume to the end."""
    mark = f"resume-{os.getpid()}"
    proc = _start_marked([*ARGS, "--out", str(cut)], mark)
    _wait_for_latest(proc, cut, "checkpoint_round_1")
    res = CliRunner().invoke(app, ["simulate", "--resume", str(cut)])
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "is in use" in said, res.output  # the owner lives
    assert f"pid {proc.pid}" in said
    os.kill(proc.pid, signal.SIGKILL)  # only zk0: SuperLink, flwr-simulation, Ray survive it
    proc.wait(timeout=30)
    gone = _seconds_until_gone(mark)
    assert gone < OWNER_GONE_BOUND_S, f"processes outlived the killed owner by {gone:.0f} s"
    before = _snapshot(cut)
    time.sleep(3)
    assert _snapshot(cut) == before  # nobody writes the run directory any more
    assert read_json(cut / "run.json")["status"] == "running"
    assert load_run(cut).status == "interrupted"  # the owner is gone: not "still running"

    mark2 = mark + "-hup"
    proc = _start_marked(["--resume", str(cut)], mark2)
    _wait_for_latest(proc, cut, "checkpoint_round_2")
    os.kill(proc.pid, signal.SIGHUP)  # the terminal went away: a clean stop
    assert proc.wait(timeout=120) == 130
    assert _seconds_until_gone(mark2) < OWNER_GONE_BOUND_S
    run = read_json(cut / "run.json")
    assert run["status"] == "interrupted" and "SIGHUP" in run["error"]
    assert run["resumes"][0]["previous_owner"] is not None  # taken over from the dead one

    res = CliRunner().invoke(app, ["simulate", "--resume", str(cut)])
    assert res.exit_code == 0, res.output
    assert "resuming" in res.output
    assert marked_processes(mark) == [] and marked_processes(mark2) == []


def _assert_equal_runs(full, cut):
    """The twice-interrupted run ends bitwise equal to the uninterrupted one."""
    a, b = RunDir(full), RunDir(cut)
    ta = load_file(a.checkpoint(6) / "model.safetensors")
    tb = load_file(b.checkpoint(6) / "model.safetensors")
    assert set(ta) == set(tb)
    for name in ta:  # bitwise: every draw is seeded by (seed, round, client)
        assert (ta[name] == tb[name]).all(), name
    adapter = f"{ADAPTER_DIR}/{ADAPTER_WEIGHTS_FILE}"
    aa, ab = load_file(a.checkpoint(6) / adapter), load_file(b.checkpoint(6) / adapter)
    assert set(aa) == set(ab) and any(".lora_B." in n for n in aa)
    assert all((aa[n] == ab[n]).all() for n in aa)
    ea, eb = read_json(a.server_eval(6)), read_json(b.server_eval(6))
    assert ea["server_eval"] == eb["server_eval"]
    # the same privacy budget: epsilon of 6 noised rounds of 2 of 2 clients, in every record
    assert ea["privacy"] == eb["privacy"] and ea["privacy"]["clients"] == 2
    assert ea["privacy"]["noise_std"] == pytest.approx(0.7 * 0.5 / 2)
    acc = RunAccountant(delta=1e-5, population=2, noise_multiplier=0.7)
    for _ in range(6):
        acc.charge(2)
    assert eb["privacy"]["epsilon"] == pytest.approx(acc.epsilon, rel=1e-12)
    assert read_json(b.run_json)["privacy"]["epsilon"] == eb["privacy"]["epsilon"]
    assert read_json(b.run_json)["privacy"]["rounds_charged"] == 6
    assert (b.checkpoint(6) / PRIVACY_STATE_FILE).is_file()
    card = (b.checkpoint(6) / "README.md").read_text()
    assert f"ε = {acc.epsilon:.3g} at δ = 1e-05" in card
    assert read_json(a.policy_loss_history) == read_json(b.policy_loss_history)
    run = read_json(b.run_json)
    assert run["status"] == "completed" and run["resumes"][0]["from_round"] == 1
    assert len(run["resumes"]) == 2 and run["resumes"][1]["from_round"] >= 2
    assert b.server_eval_rounds() == [0, 1, 2, 3, 4, 5, 6]


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


def test_an_early_stopped_run_is_not_trained_further(tmp_path):
    cfg, rd = _interrupted_run(tmp_path)
    reason = "early stop at round 2: ... best 0.5000 at round 1"
    rd.update_run(status="completed", stop_reason=reason, best_round=1,
                  best_checkpoint="models/checkpoint_round_1")
    with pytest.raises(UsageError, match="completed early") as info:
        prepare_resume(rd, load_config(preset="tiny", flags={"federation.rounds": 9}))
    assert reason in str(info.value) and "models/checkpoint_round_1" in str(info.value)
    assert rd.server_eval_rounds() == [0, 1, 2, 3]  # nothing moved
    assert read_json(rd.run_json)["status"] == "completed"
