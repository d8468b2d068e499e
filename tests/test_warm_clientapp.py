"""The warm ClientApp process zk0 starts next to each SuperNode (real processes).

Its SuperNode here is a stand-in process (any pid): the warm ClientApp only needs the
pid to watch and an address to poll; the federation tests run it against real SuperNodes.
"""

import signal
import subprocess
import sys
import time

import psutil

from zk0cli.engine.flwr_proc import PROCESS_TOKEN, PROCESS_TOKEN_ENV, flower_env, free_port
from zk0cli.engine.warm import WarmClientApp, warm_clientapp_command


def _alive(proc):
    try:
        return psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait(pred, timeout_s):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s")


def test_command_names_the_supernodes_port_and_pid():
    cmd = warm_clientapp_command(9123, parent_pid=4242)
    assert cmd[:3] == [sys.executable, "-m", "zk0cli.flower.warm_clientapp"]
    assert cmd[3:] == ["--runtime-api-address", "127.0.0.1:9123", "--parent-pid", "4242"]


def test_restarted_when_it_dies_and_gone_when_its_supernode_dies(tmp_path):
    """Also when started with SIGINT ignored (a backgrounded shell job), which once kept it
    alive after its SuperNode died: Flower's parent monitor signals with SIGINT."""
    node = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the ClientApps
    started, replaced = [], []
    warm = WarmClientApp(node, free_port(), env=flower_env(), log_path=tmp_path / "node.log",
                         on_start=started.append, on_replace=replaced.append)
    try:
        first = warm.proc
        assert psutil.Process(first.pid).environ()[PROCESS_TOKEN_ENV] == PROCESS_TOKEN
        assert warm.ensure() is True and warm.proc is first  # running: nothing to do
        first.kill()
        first.wait(10)
        assert warm.ensure() is True  # exited while its SuperNode runs: a new one
        assert warm.proc is not first and replaced == [first] and started == [first, warm.proc]
        assert len(warm.restarts) == 1
        second = warm.proc
        _wait(lambda: "--parent-pid" in " ".join(psutil.Process(second.pid).cmdline()), 10)
        time.sleep(3)  # let it import and start watching its SuperNode
        node.kill()
        node.wait(10)
        # Flower's parent monitor polls every 0.2 s; the bound leaves room for a loaded
        # machine (two test workers beside other jobs took over 15 s once).
        _wait(lambda: not _alive(second), 60)
        assert warm.ensure() is True and warm.proc is second  # no SuperNode: no restart
    finally:
        signal.signal(signal.SIGINT, ignored)
        node.kill()
        warm.stop()
        node.wait(10)
    assert not _alive(warm.proc)
