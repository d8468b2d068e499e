"""One owner per run directory: an OS file lock held for the run's whole life.

The process that starts (or resumes) a federation *claims* the run directory: it takes an
exclusive ``fcntl.flock`` on ``<run dir>/.owner.lock`` and records its pid and process start
time in ``<run dir>/.owner.json``. The lock is released by the kernel when the owner exits,
however it exits (SIGKILL, the OOM killer, SIGHUP), so:

* a second writer (a resume, another ``zk0 simulate --out`` on the same folder) is refused
  while the owner lives (:class:`~zk0cli.errors.RunOwnedError`, exit 2), and takes the run
  over once the lock is free, saying so (:attr:`Claim.previous`);
* a reader tells a live run from one whose owner died (:func:`owner_alive`): ``run.json``
  still says ``running`` but nobody holds the lock.

Claims are per process and idempotent: claiming the same folder twice in one process
returns the first claim (the CLI claims before a resume moves files, the engine again
before it starts processes).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from zk0cli.core import contract as C
from zk0cli.errors import RunOwnedError


@dataclass(frozen=True)
class OwnerRecord:
    """Who owns (or owned) a run directory.

    Attributes:
        pid: Process id of the owner.
        create_time: The owner's process start time (seconds since the epoch, as psutil
            reports it); with ``pid`` it identifies the process even if the pid is reused.
        host: Host name of the owner.
        claimed_at: When the claim was taken (seconds since the epoch).
    """

    pid: int
    create_time: float
    host: str
    claimed_at: float

    def describe(self) -> str:
        """``pid 123 on host (claimed 2026-12-01 21:00:00 UTC)``."""
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.claimed_at))
        return f"pid {self.pid} on {self.host} (claimed {when})"


@dataclass
class Claim:
    """A held claim on a run directory.

    Attributes:
        root: The run directory.
        record: This process's owner record.
        previous: The record of an earlier owner that died without releasing the run
            (``None`` for a new run or a run that ended cleanly).
    """

    root: Path
    record: OwnerRecord
    previous: OwnerRecord | None
    _fh: IO[str]


_HELD: dict[Path, Claim] = {}


def process_start_time(pid: int) -> float | None:
    """Start time of process ``pid`` (seconds since the epoch), or ``None`` if it is gone."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def is_process(pid: int, create_time: float) -> bool:
    """Whether process ``pid`` is alive and is the one that started at ``create_time``."""
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(p.create_time() - create_time) < 0.05
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def read_owner(root: Path) -> OwnerRecord | None:
    """The owner record of a run directory (``None`` if there is none or it is unreadable)."""
    try:
        raw: Any = json.loads((Path(root) / C.OWNER_FILE).read_text(encoding="utf-8"))
        return OwnerRecord(int(raw["pid"]), float(raw["create_time"]), str(raw["host"]),
                           float(raw["claimed_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def owner_alive(root: Path) -> bool | None:
    """Whether a process holds the run directory's lock right now.

    Returns:
        ``True`` (a live owner holds it), ``False`` (the run was claimed but its owner is
        gone) or ``None`` (never claimed: a run from an older zk0, or another format).
    """
    lock = Path(root) / C.OWNER_LOCK_FILE
    root = Path(root).resolve()
    if root in _HELD:
        return True
    if not lock.is_file():
        return None
    try:
        with lock.open("a", encoding="utf-8") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError:
        return None
    return False


def claim(root: Path) -> Claim:
    """Become the owner of a run directory (idempotent within one process).

    Args:
        root: The run directory (must exist).

    Returns:
        The held claim; :attr:`Claim.previous` names an owner that died without releasing.

    Raises:
        RunOwnedError: Another live process owns the run (its pid, host and claim time
            are in the message).
    """
    root = Path(root).resolve()
    if root in _HELD:
        return _HELD[root]
    fh = (root / C.OWNER_LOCK_FILE).open("a", encoding="utf-8")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        owner = read_owner(root)
        who = owner.describe() if owner else "another process"
        raise RunOwnedError(
            f"{root} is in use: {who} is running it and holds its lock "
            f"({root / C.OWNER_LOCK_FILE}). Wait for it to end or stop it (Ctrl-C in its "
            "terminal, or SIGTERM to that pid); a resume takes the run over once that "
            "process is gone.") from None
    previous = read_owner(root)
    if previous is not None and previous.pid == os.getpid():
        previous = None
    me = OwnerRecord(os.getpid(), process_start_time(os.getpid()) or time.time(),
                     socket.gethostname(), time.time())
    tmp = root / (C.OWNER_FILE + ".tmp")
    tmp.write_text(json.dumps(me.__dict__) + "\n", encoding="utf-8")
    os.replace(tmp, root / C.OWNER_FILE)
    c = Claim(root, me, previous, fh)
    _HELD[root] = c
    return c


def release(root: Path) -> None:
    """Give up this process's claim on ``root`` (no-op without one)."""
    c = _HELD.pop(Path(root).resolve(), None)
    if c is not None:
        try:
            (c.root / C.OWNER_FILE).unlink(missing_ok=True)
        finally:
            fcntl.flock(c._fh, fcntl.LOCK_UN)
            c._fh.close()
