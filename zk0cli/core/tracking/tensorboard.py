"""TensorBoard event files under ``outputs/<run>/tensorboard/`` (step = server round)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zk0cli.core.tracking.base import require_module, round_scalars

TENSORBOARD_FIELD = "tracking.tensorboard"


class TensorBoardTracker:
    """Writes each round's scalars (:func:`~zk0cli.core.tracking.base.round_scalars`).

    Uses ``torch.utils.tensorboard.SummaryWriter`` (it needs the ``tensorboard``
    package). On a resume the writer purges the events of rounds after the checkpoint,
    so the rounds that run again replace them in TensorBoard.

    Args:
        log_dir: The event-file folder (``outputs/<run>/tensorboard``).

    Raises:
        MissingDependencyError: ``tensorboard`` is not installed.
    """

    name = "tensorboard"

    def __init__(self, log_dir: Path) -> None:
        require_module("tensorboard", tracker="TensorBoard", field=TENSORBOARD_FIELD)
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    def start(self, run_record: Mapping[str, Any]) -> Mapping[str, Any]:
        """Open the event writer; returns ``{"log_dir": ...}`` for ``run.json``."""
        from torch.utils.tensorboard import SummaryWriter

        resume = run_record.get("resume") or {}
        purge = int(resume["from_round"]) + 1 if resume.get("from_round") is not None else None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge)
        return {"log_dir": str(self.log_dir)}

    def log_round(self, server_round: int, round_record: Mapping[str, Any],
                  client_records: Sequence[Mapping[str, Any]]) -> None:
        """Add every scalar of the round at step ``server_round`` and flush."""
        if self._writer is None:
            return
        for tag, value in round_scalars(round_record, client_records).items():
            self._writer.add_scalar(tag, value, global_step=server_round)
        self._writer.flush()

    def finish(self, status: str) -> Mapping[str, Any]:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return {}
