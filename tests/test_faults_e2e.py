"""Faults with real processes: bad replies, a hanging client, Ctrl-C, and a full disk."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from typer.testing import CliRunner

from zk0cli import constants as K
from zk0cli.cli.app import app
from zk0cli.core.rundir import RunDir, read_json
from zk0cli.engine import flwr_proc
from zk0cli.testing_faults import COMPONENT as FAULTY_CLIENTAPP
from zk0cli.testing_faults import FAULT_ENV

MARK = "ZK0_FAULT_MARK"


def marked(mark):
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get(MARK) == mark and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
    return out


@pytest.mark.slow
def test_bad_replies_a_raising_and_a_hanging_client_are_excluded(tmp_path, monkeypatch):
    """One run, five clients: 0 trains (with mu = 0: its proximal loss is exactly 0), 1 sends
    NaN, 2 a wrong shape, 3 hangs past the round timeout, 4 raises."""
    faults = {"1": "nan", "2": "shape", "3": "hang", "4": "raise"}
    monkeypatch.setenv(FAULT_ENV, json.dumps(faults))
    monkeypatch.setattr(flwr_proc, "CLIENTAPP", FAULTY_CLIENTAPP)  # a test ClientApp
    out = tmp_path / "run"
    t0 = time.monotonic()
    res = CliRunner().invoke(app, [
        "simulate", "--preset", "tiny", "--rounds", "1", "--clients", "5", "--out", str(out),
        "--set", "federation.min_clients=1", "--set", "federation.round_timeout_s=45",
        "--set", "federation.proximal_mu=0", "--set", "data.partition=episodes",
        "--set", "data.sim.episodes=6", "--set", "data.heldout_episodes=0",
        "--set", "training.steps_per_round=2", "--set", "eval.batches=1"])
    # Four of five clients failed in 1 of 1 rounds (100 % > max_client_failure_rate 0.5):
    # the run ends failed, naming each client and its reason.
    assert res.exit_code == 1, res.output
    assert time.monotonic() - t0 < 400  # the hanging client was cut at the round timeout
    rd = RunDir(out)
    run = read_json(rd.run_json)
    assert run["status"] == "failed" and "max_client_failure_rate = 0.5" in run["error"]
    for cid in ("1", "2", "4"):
        assert f"client {cid} failed in 1 of 1 round(s)" in run["error"]
    assert "injected client failure" in run["error"]
    r1 = read_json(rd.server_eval(1))
    assert r1["aggregated"]
    [ok] = r1["individual_client_training_metrics"]
    assert ok["client_id"] == "0" and ok["fedprox_loss"] == 0.0  # mu = 0: exactly zero
    reasons = {f["client_id"]: f["reason"] for f in r1["failures"]}
    assert "non-finite" in reasons["1"]
    assert "wrong shape" in reasons["2"]
    assert "RuntimeError: injected client failure" in reasons["4"]
    assert read_json(rd.client_round("4", 1))["status"] == "failed"
    # The hanging client never reported its id, so it is known by its Flower node id.
    [timeout] = [f for f in r1["failures"] if f["client_id"] not in {"0", "1", "2", "4"}]
    assert timeout["reason"] == "no reply before the round timeout"
    assert timeout["client_id"] == str(timeout["node_id"])


def _start(tmp_path, mark, *extra):
    env = {**os.environ, MARK: mark}
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zk0cli", "simulate", "--preset", "tiny", "--rounds", "20",
         "--clients", "2", "--out", str(out), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if _messages_out(out):
            return proc, RunDir(out)
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        time.sleep(0.3)
    raise AssertionError("the run did not start in time")


def _messages_out(out):
    """The ServerApp has sent its first messages: the SuperLink, the simulation runtime and
    its Ray workers are all alive, and the clients are busy (the statistics query)."""
    from zk0cli.flower.progress import read_progress

    return int(read_progress(out / "server").get(K.PROGRESS_SENT) or 0) > 0


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_a_second_one_at_once(tmp_path):
    mark = f"sigint-{os.getpid()}"
    proc, rd = _start(tmp_path / "one", mark)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    run = read_json(rd.run_json)
    assert run["status"] == "interrupted"
    time.sleep(2)
    assert marked(mark) == []

    mark2 = f"sigterm2-{os.getpid()}"
    proc, rd = _start(tmp_path / "two", mark2)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    time.sleep(3)
    assert marked(mark2) == []


def test_disk_full_while_checkpointing_keeps_the_previous_one(tmp_path, monkeypatch):
    """ENOSPC in the checkpoint writer: previous checkpoint and models/latest stay intact
    and the error says how to continue."""
    from zk0cli.core import policy
    from zk0cli.core.checkpoint import write_checkpoint
    from zk0cli.core.config import load_config
    from zk0cli.core.recorder import RunRecorder
    from zk0cli.errors import FederationError
    from zk0cli.flower.server_app import RoundHook

    cfg = load_config(preset="tiny")
    rd = RunDir.create(tmp_path, name="run")
    rd.config_json.write_text(cfg.model_dump_json(), encoding="utf-8")
    first = write_checkpoint(rd, 1, save_policy=lambda d: (d / "x").write_bytes(b"1"),
                             metrics={})

    def disk_full(bundle, directory):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(policy, "save_bundle", disk_full)

    class Evaluator:
        bundle = None

    hook = RoundHook(cfg, rd, Evaluator(), strategy=object(), recorder=RunRecorder(rd))
    with pytest.raises(FederationError) as info:
        hook._checkpoint(2, {"round": 2, "server_eval": None,
                             "client_aggregated_training_metrics": None})
    assert "No space left" in str(info.value) and "--resume" in str(info.value)
    assert rd.latest_checkpoint() == first
    assert not rd.checkpoint(2).exists()
