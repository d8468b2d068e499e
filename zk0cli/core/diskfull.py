"""A full disk is a run failure with a message, never a traceback and a ``running`` run.

Every write of a run happens inside :func:`run_writes` — the one place that turns a full
disk (ENOSPC, or EDQUOT for a quota) into :class:`~zk0cli.errors.DiskFullError` (zk0's
message, naming what was being written and the way out) and records ``run.json``
``failed`` with that reason (:func:`record_failure`):

* the ServerApp runs the whole federation inside it (round files, ``federated_metrics``,
  checkpoints and ``models/latest``, ``server/progress.json``, trackers); round files
  and checkpoints open their own inner block to name themselves;
* the zk0 process (the run's owner) creates the run directory, prepares a resume and
  supervises the Flower processes inside it (:class:`~zk0cli.engine.supervisor.
  Supervisor`);
* log files (``server.log``, ``logs/zk0.log``) are written by :class:`RunLogHandler`,
  which drops records on a full disk instead of printing logging's own traceback; the
  next write of the run then fails through :func:`run_writes`.

So that the last ``run.json`` write fits even on a full disk, every run directory keeps a
small reserve file (:func:`reserve`) that is deleted just before it.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zk0cli.core import contract as C
from zk0cli.core.rundir import RunDir
from zk0cli.errors import DiskFullError

#: Errors that mean "no space left": ENOSPC, and EDQUOT (a disk quota).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: Bytes kept free for the final ``run.json`` update.
RESERVE_BYTES = 256 * 1024


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it was raised from) is a full disk."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return True
        if "No space left on device" in str(seen):  # e.g. safetensors' SafetensorError
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def disk_full_error(root: Path, err: BaseException, *, what: str = "the run") -> DiskFullError:
    """zk0's message for a full disk while writing ``what`` under ``root``."""
    return DiskFullError(
        f"the disk holding {root} is full: writing {what} failed ({err}). Free space there "
        f"(df -h {root}), then continue with `zk0 simulate --resume {root}` (or "
        "`zk0 train --resume ...`); the last complete checkpoint is intact.")


def reserve(rundir: RunDir) -> None:
    """Keep :data:`RESERVE_BYTES` for the final ``run.json`` write (best effort)."""
    try:
        (rundir.root / C.DISK_RESERVE_FILE).write_bytes(b"\0" * RESERVE_BYTES)
    except OSError:
        pass


def record_failure(rundir: RunDir, error: str) -> bool:
    """Mark the run ``failed`` with ``error``, using the reserve if the disk is full.

    Returns:
        Whether ``run.json`` could be written.
    """
    (rundir.root / C.DISK_RESERVE_FILE).unlink(missing_ok=True)
    try:
        rundir.update_run(status="failed", error=error, ended_at=time.time())
    except OSError:
        return False
    return True


@contextmanager
def run_writes(rundir: RunDir, *, what: str = "the run") -> Iterator[None]:
    """The one place a run's writes go through: a full disk fails the run with a message.

    Args:
        rundir: The run directory written inside the block.
        what: What the block writes, for the message (e.g. ``"checkpoint round 3"``).

    Raises:
        DiskFullError: The block hit a full disk (ENOSPC/EDQUOT, also when wrapped, e.g.
            safetensors' ``SafetensorError``); ``run.json`` is ``failed`` with this
            message. A ``DiskFullError`` from an inner block passes through unchanged.
    """
    try:
        yield
    except DiskFullError:
        raise
    except BaseException as err:
        if not is_disk_full(err):
            raise
        raise fail_disk_full(rundir, err, what=what) from None


def fail_disk_full(rundir: RunDir, err: BaseException, *, what: str = "the run"
                   ) -> DiskFullError:
    """Record ``run.json`` ``failed`` for a full disk and return the error to raise.

    Used by :func:`run_writes` and by the run's owner when a federation ends on a full
    disk. A :class:`DiskFullError` is returned as it is (its failure is recorded already).
    """
    if isinstance(err, DiskFullError):
        return err
    error = disk_full_error(rundir.root, err, what=what)
    record_failure(rundir, str(error))
    return error


class RunLogHandler(logging.FileHandler):
    """A log file of a run (``server.log``, ``logs/zk0.log``) that survives a full disk.

    Python's logging prints a traceback to stderr for every record it cannot write; on a
    full disk this handler instead drops the record, and once the disk has room again
    writes on (the run's next write fails through :func:`run_writes` meanwhile).

    Args:
        path: The log file (appended to, UTF-8).
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")
        self.dropped = 0  # records lost to a full disk

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """Drop ``record`` quietly when the disk is full; otherwise logging's default."""
        import sys

        err = sys.exc_info()[1]
        if err is not None and is_disk_full(err):
            self.dropped += 1
            return
        super().handleError(record)
