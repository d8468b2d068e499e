"""A simulated client whose Ray worker is killed once trains again in the next round."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from zk0cli.core.rundir import RunDir, read_json

MARK = "ZK0_ACTOR_MARK"


def _actors(mark):
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if "ClientAppActor" in " ".join(p.info["cmdline"] or []) and \
                    p.environ().get(MARK) == mark:
                found.append(p)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


@pytest.mark.slow
def test_a_killed_ray_worker_is_replaced_and_its_client_trains_next_round(tmp_path):
    out = tmp_path / "run"
    mark = f"actor-{os.getpid()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zk0cli", "simulate", "--preset", "tiny", "--rounds", "3",
         "--clients", "2", "--set", "training.steps_per_round=2", "--set", "eval.batches=1",
         "--out", str(out)], env={**os.environ, MARK: mark},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    rd = RunDir(out)
    killed = None
    deadline = time.monotonic() + 600
    try:  # kill one worker from outside the shipped code, while round 1 trains
        while time.monotonic() < deadline and proc.poll() is None and killed is None:
            busy = [p for p in _actors(mark) if ".run" in " ".join(p.cmdline())]
            if busy and rd.server_eval(0).is_file():
                killed = busy[0].pid
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.1)
        assert killed is not None, "no client actor was seen training"
        assert proc.wait(timeout=600) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = {r["round"]: r for r in read_json(rd.federated_metrics)}
    assert rows[1]["num_failures"] >= 1  # the killed worker's reply
    for r in (2, 3):  # the replacement worker trains: nobody fails after the kill
        assert rows[r]["num_failures"] == 0 and rows[r]["num_clients"] == 2, rows[r]
    run = read_json(rd.run_json)  # 1 of 3 rounds is below max_client_failure_rate = 0.5
    assert run["status"] == "completed"
    [line] = run["client_failures"]
    assert "failed in 1 of 3 round(s)" in line and "round 1:" in line
