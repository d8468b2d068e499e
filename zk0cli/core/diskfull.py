"""A full disk is a run failure with a message, never a traceback and a ``running`` run.

When the disk holding a run directory fills up (ENOSPC, or EDQUOT for a quota), the
writer that hit it — the ServerApp writing round files, logs or a checkpoint, or the
engine — turns the ``OSError`` into :class:`~zk0cli.errors.DiskFullError` and records
``run.json`` ``failed`` with the reason through :func:`record_failure`. So that this last
write fits even on a full disk, every run directory keeps a small reserve file
(:func:`reserve`) that is deleted just before it.
"""

from __future__ import annotations

import errno
import time
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
