"""The warm ClientApp process of one SuperNode: started, watched and restarted by zk0.

zk0 starts every SuperNode with ``--isolation process`` and, next to it, one
``python -m zk0cli.flower.warm_clientapp`` process (:mod:`zk0cli.flower.warm_clientapp`)
that runs all of the node's messages, so that the policy and the dataset are built once
per run instead of once per message. This module starts that process with the same
environment as its SuperNode (``FLWR_HOME``, the site's caches, zk0's process token),
restarts it when it exits while its SuperNode still runs, and stops it with its tree.

Bounds when something dies:

* zk0 dies (even SIGKILL): the kernel sends it SIGTERM (``PR_SET_PDEATHSIG``), and the
  owner watchdog kills it through the process token like every other run process;
* its SuperNode dies: Flower's parent monitor (polling every 0.2 s) stops it;
* it dies itself: :meth:`WarmClientApp.ensure` starts a new one (its task, if any, is
  failed by the SuperNode when the task's heartbeat stops).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from zk0cli.engine.flwr_proc import start_process, stop_tree
from zk0cli.errors import FederationError
from zk0cli.log import logger

#: Flower's default SuperNode Runtime API port (``flower-supernode --port``).
DEFAULT_RUNTIME_PORT = 9094
#: Restarts allowed within :data:`RESTART_WINDOW_S` before zk0 gives up on a site.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 300.0


def warm_clientapp_command(port: int, *, parent_pid: int) -> list[str]:
    """The command line of a SuperNode's warm ClientApp process.

    Args:
        port: The SuperNode's Runtime API port (its ``--port``).
        parent_pid: The SuperNode's pid (the process exits when it is gone).
    """
    return [sys.executable, "-m", "zk0cli.flower.warm_clientapp",
            "--runtime-api-address", f"127.0.0.1:{port}", "--parent-pid", str(parent_pid)]


class WarmClientApp:
    """One SuperNode's warm ClientApp process.

    Args:
        supernode: The SuperNode process (started with ``--isolation process``).
        port: Its Runtime API port.
        env: Environment (the SuperNode's: ``FLWR_HOME``, caches, process token).
        log_path: Log file (the SuperNode's log: one log per site, as with Flower's
            default isolation, where the ClientApp's output goes to the SuperNode's).
        cwd: Working directory.
        on_start: Called with every process started (e.g. ``Supervisor.adopt``).
        on_replace: Called with a dead process that a new one replaces.

    Attributes:
        proc: The current process.
        restarts: Start times (monotonic seconds) of the restarts so far.
    """

    def __init__(self, supernode: subprocess.Popen[Any], port: int, *, env: Mapping[str, str],
                 log_path: Path, cwd: Path | None = None,
                 on_start: Callable[[subprocess.Popen[Any]], Any] | None = None,
                 on_replace: Callable[[subprocess.Popen[Any]], Any] | None = None) -> None:
        self.supernode = supernode
        self.port = port
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.on_start = on_start
        self.on_replace = on_replace
        self.restarts: list[float] = []
        self.proc = self._start()

    @property
    def command(self) -> list[str]:
        """Its command line."""
        return warm_clientapp_command(self.port, parent_pid=self.supernode.pid)

    def _start(self) -> subprocess.Popen[Any]:
        proc = start_process(self.command, env=self.env, log_path=self.log_path, cwd=self.cwd)
        if self.on_start is not None:
            self.on_start(proc)
        return proc

    def ensure(self) -> bool:
        """Restart the process if it exited while the SuperNode runs; ``False``: gave up.

        Returns:
            ``True`` when a warm ClientApp runs (or the SuperNode itself is gone: nothing
            to serve); ``False`` after :data:`MAX_RESTARTS` restarts within
            :data:`RESTART_WINDOW_S` seconds.
        """
        if self.proc.poll() is None or self.supernode.poll() is not None:
            return True
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S]
        if len(self.restarts) >= MAX_RESTARTS:
            return False
        logger.warning("the warm ClientApp of the SuperNode on port %s exited with code %s; "
                       "starting a new one (see %s)", self.port, self.proc.returncode,
                       self.log_path)
        self.restarts.append(now)
        if self.on_replace is not None:
            self.on_replace(self.proc)
        self.proc = self._start()
        return True

    def failure(self) -> FederationError:
        """The error when :meth:`ensure` gave up."""
        return FederationError(
            f"the warm ClientApp of the SuperNode on port {self.port} exited "
            f"{len(self.restarts) + 1} times within {RESTART_WINDOW_S:.0f} s (last exit code "
            f"{self.proc.returncode}); see {self.log_path}.")

    def stop(self) -> None:
        """Stop it with its tree (SIGTERM, then SIGKILL)."""
        stop_tree(self.proc)
