"""One supervisor for every federation zk0 runs: own, start, follow, interrupt, stop, reap.

Used by ``zk0 simulate``, ``zk0 tiny-run`` and ``zk0 train`` (local trial and remote
deployment). For the whole life of the run the supervisor:

1. claims the run directory (:func:`zk0cli.core.owner.claim`; a second writer is refused
   while this process lives, and takes over once it is gone);
2. starts the owner watchdog (:mod:`zk0cli.engine.watchdog`), so that nothing zk0 starts
   for the run outlives this process, even if it is SIGKILLed;
3. installs :class:`~zk0cli.engine.flwr_proc.InterruptGuard` (first Ctrl-C / SIGTERM /
   SIGHUP: clean stop; second: kill everything now);
4. starts the Flower processes (:meth:`Supervisor.start`) and follows the Flower run
   (:meth:`Supervisor.follow`); an interrupt (``KeyboardInterrupt`` leaving the block)
   stops the Flower run (``flwr stop``) and marks it ``interrupted``;
5. turns a full disk (ENOSPC) met on the way into zk0's message and ``run.json``
   ``failed`` (:mod:`zk0cli.core.diskfull`);
6. on the way out stops every process it started with its tree (newest first), reaps
   survivors found through the process token, stops the watchdog and releases the claim.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from zk0cli.core.config import RunConfig
from zk0cli.core.diskfull import fail_disk_full, is_disk_full
from zk0cli.core.owner import Claim, claim, release
from zk0cli.core.rundir import RunDir
from zk0cli.engine.flwr_proc import (
    PROCESS_TOKEN,
    FlowerHome,
    InterruptGuard,
    kill_tree_now,
    reap_survivors,
    start_process,
    stop_run,
    stop_tree,
)
from zk0cli.engine.runs import (
    ProgressFn,
    apply_client_failure_policy,
    follow_run,
    mark_interrupted,
)
from zk0cli.errors import DiskFullError
from zk0cli.log import logger


class Supervisor:
    """Owner of one run on this machine (a context manager).

    Args:
        rundir: The run directory (already created, or prepared for a resume).
        cleanup: Private scratch folders of the run (e.g. a local trial's certificates);
            removed by the watchdog if this process dies before removing them itself.

    Attributes:
        procs: Processes started through :meth:`start` (or :meth:`adopt`).
        claim: The held claim on the run directory (set on entry).
    """

    def __init__(self, rundir: RunDir, *, cleanup: Sequence[Path] = ()) -> None:
        self.rundir = rundir
        self.cleanup = list(cleanup)
        self.procs: list[subprocess.Popen[Any]] = []
        self.claim: Claim | None = None
        self.home: FlowerHome | None = None
        self.run_id: int | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._guard = InterruptGuard(self._kill_now)

    def __enter__(self) -> Supervisor:
        from zk0cli.engine.watchdog import start_watchdog

        self.claim = claim(self.rundir.root)
        if self.claim.previous is not None:
            logger.warning("taking over %s from its previous owner %s, which is gone",
                           self.rundir.root, self.claim.previous.describe())
        self._guard.__enter__()  # stays active during the clean-up: a 2nd Ctrl-C kills now
        self._watchdog = start_watchdog(PROCESS_TOKEN, cleanup=self.cleanup)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        from zk0cli.engine.watchdog import stop_watchdog

        disk_full: DiskFullError | None = None
        try:
            if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
                self._interrupted()
            if exc is not None and is_disk_full(exc):  # one path: core.diskfull
                disk_full = fail_disk_full(self.rundir, exc)
            for proc in reversed(self.procs):  # e.g. SuperNodes first, then the SuperLink
                stop_tree(proc)
            reap_survivors()
        finally:
            if self._watchdog is not None:
                stop_watchdog(self._watchdog)
            self._guard.__exit__(exc_type, exc, tb)
            release(self.rundir.root)
        if disk_full is not None and disk_full is not exc:  # zk0's message, no traceback
            raise disk_full from None

    def _kill_now(self) -> None:
        """Second Ctrl-C: SIGKILL every process of the run, then record the interrupt.

        Also those that left the SuperLink's tree (``flwr-simulation`` is reparented).
        """
        import psutil

        from zk0cli.engine.watchdog import token_processes

        kill_tree_now(self.procs)
        for p in token_processes(PROCESS_TOKEN):
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            mark_interrupted(self.rundir)
        except OSError:
            pass

    def start(self, cmd: Sequence[str], *, env: Mapping[str, str], log_path: Path,
              cwd: Path | None = None) -> subprocess.Popen[Any]:
        """Start a Flower process owned by this run (see :func:`start_process`)."""
        return self.adopt(start_process(cmd, env=env, log_path=log_path, cwd=cwd))

    def adopt(self, proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        """Make an already started process part of this run (stopped on exit)."""
        self.procs.append(proc)
        return proc

    def forget(self, proc: subprocess.Popen[Any]) -> None:
        """Drop a process that has exited (and was reaped) from :attr:`procs`.

        Its pid may be reused by an unrelated process; it must not be signalled on exit.
        """
        self.procs = [p for p in self.procs if p is not proc]

    def submitted(self, home: FlowerHome, run_id: int) -> None:
        """Record the Flower run this supervisor stops on an interrupt."""
        self.home, self.run_id = home, run_id

    def follow(self, config: RunConfig, *, on_progress: ProgressFn | None = None,
               is_alive: Callable[[], bool] | None = None) -> str:
        """Follow the submitted Flower run to its end; returns the final ``run.json`` status.

        A completed run whose clients failed in more than
        ``federation.max_client_failure_rate`` of the rounds ends ``failed``
        (:func:`~zk0cli.engine.runs.apply_client_failure_policy`).

        Raises:
            RuntimeError: Nothing was submitted (:meth:`submitted` not called).
            KeyboardInterrupt: Passed through; on exit the supervisor stops the run.
        """
        if self.home is None or self.run_id is None:
            raise RuntimeError("Supervisor.follow before Supervisor.submitted")
        status = follow_run(self.rundir, self.home, self.run_id, config,
                            on_progress=on_progress, is_alive=is_alive)
        return apply_client_failure_policy(self.rundir, config, status)

    def _interrupted(self) -> None:
        """Stop the Flower run (if submitted) and record the interrupt in ``run.json``."""
        if self.home is not None and self.run_id is not None:
            stop_run(self.home, self.run_id)
        mark_interrupted(self.rundir)
