"""One owner per run: the run-directory lock and the owner watchdog (real processes)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from zk0cli import constants as K
from zk0cli.analysis.load import load_run
from zk0cli.core.owner import claim, owner_alive, read_owner, release
from zk0cli.core.rundir import RunDir
from zk0cli.engine.flwr_proc import PROCESS_TOKEN_ENV
from zk0cli.errors import RunOwnedError

# A stand-in for `zk0 simulate`: claims the run, starts the watchdog and two "Flower"
# processes carrying its token (one in its own session, as flwr-simulation and Ray are),
# prints their pids and waits to be killed.
OWNER = textwrap.dedent("""
    import signal, subprocess, sys, time
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # a nohup'd parent passes SIGHUP ignored
    from pathlib import Path
    from zk0cli.core.owner import claim
    from zk0cli.engine.flwr_proc import flower_env
    from zk0cli.engine.watchdog import start_watchdog
    from zk0cli.engine.flwr_proc import PROCESS_TOKEN
    root = Path(sys.argv[1])
    scratch = Path(sys.argv[2])
    scratch.mkdir()
    (scratch / "ca.key").write_text("secret")
    claim(root)
    dog = start_watchdog(PROCESS_TOKEN, cleanup=[scratch])
    kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             env=flower_env(), start_new_session=s) for s in (True, False)]
    print(dog.pid, *[k.pid for k in kids], flush=True)
    time.sleep(600)
""")


def _start_owner(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", OWNER, str(root), str(tmp_path / "scratch")],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    pids = [int(x) for x in proc.stdout.readline().split()]
    return root, proc, pids


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP])
def test_processes_of_a_dead_owner_are_killed_and_the_run_can_be_taken_over(tmp_path, sig):
    root, proc, (dog, *kids) = _start_owner(tmp_path)
    try:
        assert owner_alive(root) is True
        assert read_owner(root).pid == proc.pid
        with pytest.raises(RunOwnedError, match=f"pid {proc.pid}"):
            claim(root)  # a second writer is refused while the owner lives
        for k in kids:
            assert psutil.Process(k).environ()[PROCESS_TOKEN_ENV].startswith(f"{proc.pid}-")
        os.kill(proc.pid, sig)  # only the owner: its children are left to the watchdog
        proc.wait(timeout=60)  # SIGHUP runs the owner's handler: slow on a loaded machine
        t0 = time.monotonic()
        while time.monotonic() - t0 < K.OWNER_GONE_BOUND_S and \
                any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                    for p in [dog, *kids]):
            time.sleep(0.2)
        gone_after = time.monotonic() - t0
        assert gone_after < 10, f"run processes outlived their owner by {gone_after:.1f} s"
        assert not (tmp_path / "scratch").exists()  # the private key folder went too
        assert owner_alive(root) is False
        c = claim(root)  # taken over once the owner is verified gone
        try:
            assert c.previous is not None and c.previous.pid == proc.pid
            assert read_owner(root).pid == os.getpid()
        finally:
            release(root)
    finally:
        for p in [proc.pid, dog, *kids]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_analysis_reads_a_running_run_without_owner_as_interrupted(tmp_path):
    rd = RunDir.create(tmp_path, name="run")
    rd.update_run(status="running", rounds_completed=1)
    assert owner_alive(rd.root) is None  # never claimed (an older zk0): left as it is
    assert load_run(rd.root).status == "running"
    claim(rd.root)
    assert load_run(rd.root).status == "running"  # owned by this live process
    release(rd.root)
    assert owner_alive(rd.root) is False
    run = load_run(rd.root)
    assert run.status == "interrupted"
    assert any("owned the run" in n for n in run.notes)
