"""Experiment trackers: optional sinks of the run's records (``docs/tracking.md``).

The run directory's JSON stays the source of truth. Each tracker module implements
:class:`~zk0cli.core.tracking.base.Tracker`; :func:`build_trackers` makes the ones
``tracking`` asks for, :func:`require_trackers` checks before a run starts that their
libraries are installed (the ``zk0cli[tracking]`` extra). Adding a tracker (MLflow,
trackio) is one new module and one line in each of those functions.
"""

from __future__ import annotations

from pathlib import Path

from zk0cli.core import contract as C
from zk0cli.core.config import RunConfig, TrackingConfig
from zk0cli.core.tracking.base import Tracker, require_module, round_scalars

__all__ = ["Tracker", "build_trackers", "require_trackers", "round_scalars"]


def require_trackers(tracking: TrackingConfig) -> None:
    """Check that every tracker ``tracking`` asks for can be imported.

    Raises:
        MissingDependencyError: A tracker's package is missing; the message names the
            configuration field and the ``zk0cli[tracking]`` extra (the CLI exits 2).
    """
    from zk0cli.core.tracking.tensorboard import TENSORBOARD_FIELD
    from zk0cli.core.tracking.wandb import WANDB_FIELD

    if tracking.tensorboard:
        require_module("tensorboard", tracker="TensorBoard", field=TENSORBOARD_FIELD)
    if tracking.wandb.mode != "disabled":
        require_module("wandb", tracker="Weights & Biases", field=WANDB_FIELD)


def build_trackers(config: RunConfig, run_dir: Path) -> list[Tracker]:
    """The trackers ``config.tracking`` asks for, not yet started.

    Args:
        config: The run's configuration.
        run_dir: The run directory (event files and W&B files go below it).

    Raises:
        MissingDependencyError: A tracker's package is missing.
    """
    trackers: list[Tracker] = []
    tracking = config.tracking
    if tracking.tensorboard:
        from zk0cli.core.tracking.tensorboard import TensorBoardTracker

        trackers.append(TensorBoardTracker(Path(run_dir) / C.TENSORBOARD_DIR))
    if tracking.wandb.mode != "disabled":
        from zk0cli.core.tracking.wandb import WandbTracker

        w = tracking.wandb
        trackers.append(WandbTracker(Path(run_dir), mode=w.mode, project=w.project,
                                     entity=w.entity, tags=w.tags,
                                     config=config.model_dump(mode="json")))
    return trackers
