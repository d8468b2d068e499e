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
        [sys.executable, "-m", "zk0cli", "simulate", "--preset", "tiny", "--rounds", "4",
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
    # The replacement worker trains again: the last round has both clients and no failure.
    # Under load, the round right after the kill may still find the actor restarting (at most
    # 2 of 4 rounds failed for that client: not above max_client_failure_rate = 0.5).
    assert rows[4]["num_failures"] == 0 and rows[4]["num_clients"] == 2, rows[4]
    if rows[2]["num_failures"]:
        reasons = [f["reason"] for f in read_json(rd.server_eval(2))["failures"]]
        assert all("restarting" in r for r in reasons), reasons
    run = read_json(rd.run_json)
    assert run["status"] == "completed"
    lines = run["client_failures"]  # listed for the summary, below the failure rate
    assert any("round 1:" in line and "of 4 round(s)" in line for line in lines), lines
