"""The owner watchdog: no process of a run outlives the zk0 process that owns it.

Every process zk0 starts for a run (SuperLink, ``flwr-simulation``, the Ray cluster,
SuperNodes of a local trial, the ServerApp) carries the owner's process token
(:data:`zk0cli.engine.flwr_proc.PROCESS_TOKEN_ENV`) in its environment. PR_SET_PDEATHSIG
only reaches direct children, so the supervisor also starts this watchdog, in its own
session and without the token: it polls the owner (pid and start time) every
:data:`~zk0cli.constants.OWNER_WATCH_INTERVAL_S` seconds and, once the owner is gone
however it went (SIGKILL, the OOM killer, SIGHUP of its terminal), SIGKILLs every process
carrying the token until none is left, then exits. Bound: the run's processes are gone
within a few seconds of the owner, always within :data:`~zk0cli.constants.OWNER_GONE_BOUND_S`.

On a Ray cluster zk0 did not start (``federation.ray_address``) only ``flwr-simulation``,
the run's Ray driver, carries the token: the cluster's GCS, raylets and worker processes
were started by ``ray start`` with the environment of whoever ran it, so they are never
found here; Ray itself removes the driver's client actors once the driver is gone.

Run as ``python -m zk0cli.engine.watchdog PID CREATE_TIME TOKEN [FOLDER...]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zk0cli import constants as K


def token_processes(token: str) -> list[Any]:
    """Live (non-zombie) processes whose environment carries ``token``, except this one."""
    import psutil

    from zk0cli.engine.flwr_proc import PROCESS_TOKEN_ENV

    found = []
    for p in psutil.process_iter(["pid"]):
        if p.info["pid"] == os.getpid():
            continue
        try:
            if p.environ().get(PROCESS_TOKEN_ENV) == token and \
                    p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def kill_token_processes(token: str, *, bound_s: float = K.OWNER_GONE_BOUND_S) -> int:
    """SIGKILL every process carrying ``token`` until two scans in a row find none.

    Returns:
        How many processes were killed.
    """
    import psutil

    deadline = time.monotonic() + bound_s
    killed = 0
    quiet = 0
    while time.monotonic() < deadline and quiet < 2:
        procs = token_processes(token)
        quiet = quiet + 1 if not procs else 0
        for p in procs:
            try:
                p.kill()
                killed += 1
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.2)
    return killed


def watch(owner_pid: int, create_time: float, token: str, *, cleanup: Sequence[Path] = (),
          interval_s: float = K.OWNER_WATCH_INTERVAL_S) -> int:
    """Wait for the owner to go, kill the run's processes, remove ``cleanup`` folders.

    Returns:
        How many processes were killed.
    """
    from zk0cli.core.owner import is_process

    while is_process(owner_pid, create_time):
        time.sleep(interval_s)
    killed = kill_token_processes(token)
    for folder in cleanup:
        shutil.rmtree(folder, ignore_errors=True)
    return killed


def start_watchdog(token: str, *, cleanup: Sequence[Path] = ()) -> subprocess.Popen[bytes]:
    """Start the watchdog for this process and ``token`` (own session, no token in its env).

    Args:
        token: The process token of this run's processes.
        cleanup: Folders to remove once the owner is gone (private scratch space).

    The caller terminates it when the run ends cleanly (:func:`stop_watchdog`).
    """
    from zk0cli.core.owner import process_start_time
    from zk0cli.engine.flwr_proc import PROCESS_TOKEN_ENV

    env = {k: v for k, v in os.environ.items() if k != PROCESS_TOKEN_ENV}
    me = os.getpid()
    return subprocess.Popen(
        [sys.executable, "-m", "zk0cli.engine.watchdog", str(me),
         repr(process_start_time(me) or 0.0), token, *map(str, cleanup)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)


def stop_watchdog(proc: subprocess.Popen[bytes]) -> None:
    """Stop the watchdog of a run that ended cleanly."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str]) -> int:
    """Entry point: ``PID CREATE_TIME TOKEN [FOLDER...]``."""
    import signal

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a dropped terminal must not stop it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pid, create_time, token = int(argv[0]), float(argv[1]), argv[2]
    watch(pid, create_time, token, cleanup=[Path(f) for f in argv[3:]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
