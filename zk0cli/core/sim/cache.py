"""Cached simulator datasets: generate once per setting, reuse from the user cache directory.

The cache key covers every generator setting plus :data:`GENERATOR_VERSION` (bump it when
the scene, the expert or the recorder change what is written). Generation goes to a
temporary folder that is renamed into place, under an exclusive lock file, so two
processes asking for the same dataset at once generate it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zk0cli.core.cache import cache_root
from zk0cli.core.sim.recorder import check_task, generate_dataset
from zk0cli.log import logger

GENERATOR_VERSION = 2  # 2: robot_type "so_follower"
"""Version of what the generator writes; part of every cache key."""

_COMPLETE = ".zk0_complete"


def sim_repo_id(task: str, *, seed: int, episodes: int, height: int, width: int) -> str:
    """Repo id of a generated dataset, e.g. ``zk0/sim_lift_s0_e4_96x128``."""
    return f"zk0/sim_{task}_s{seed}_e{episodes}_{height}x{width}"


@dataclass(frozen=True)
class SimDatasetKey:
    """The settings that decide a generated dataset (and its place in the cache).

    Attributes:
        task: One of :data:`~zk0cli.core.sim.tasks.SIM_TASKS`.
        episodes: Episodes in the dataset.
        seed: Generator seed.
        height: Image height (pixels).
        width: Image width (pixels).
        only_success: Keep only solved episodes.
    """

    task: str
    episodes: int
    seed: int
    height: int = 96
    width: int = 128
    only_success: bool = True

    def settings(self) -> dict[str, object]:
        """The settings plus the generator version, as written next to the dataset."""
        return {**asdict(self), "version": GENERATOR_VERSION}

    def repo_id(self) -> str:
        """The dataset's repo id (:func:`sim_repo_id`)."""
        return sim_repo_id(self.task, seed=self.seed, episodes=self.episodes,
                           height=self.height, width=self.width)

    def path(self, cache_dir: Path | None = None) -> Path:
        """Where :func:`ensure_sim_dataset` keeps it: the repo name plus a hash of settings."""
        digest = hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode())
        base = Path(cache_dir) if cache_dir is not None else cache_root() / "sim"
        return base / f"{self.repo_id().split('/')[-1]}-{digest.hexdigest()[:12]}"


def cached_dataset_path(task: str, *, cache_dir: Path | None = None, **settings: Any
                        ) -> tuple[str, Path]:
    """Where :func:`ensure_sim_dataset` keeps a dataset (whether or not it exists yet).

    Args:
        task: The simulator task.
        cache_dir: Folder holding cached datasets (default ``<user cache>/sim``).
        **settings: The other :class:`SimDatasetKey` fields.

    Returns:
        ``(repo_id, root)``; the root's name is the repo name plus a hash of the settings.
    """
    key = SimDatasetKey(task, **settings)
    return key.repo_id(), key.path(cache_dir)


def ensure_sim_dataset(task: str | SimDatasetKey, *, cache_dir: Path | None = None,
                       **settings: Any) -> tuple[str, Path]:
    """Return a generated dataset from the cache, generating it on first use.

    Args:
        task: One of :data:`~zk0cli.core.sim.tasks.SIM_TASKS`, or a whole
            :class:`SimDatasetKey`.
        cache_dir: Folder holding cached datasets; default ``<user cache>/sim`` where the
            user cache is :func:`zk0cli.core.cache.cache_root`.
        **settings: With a task name, the other :class:`SimDatasetKey` fields:
            ``episodes`` and ``seed`` (required), ``height`` and ``width`` (pixels,
            default 96×128), ``only_success`` (default ``True``).

    Returns:
        ``(repo_id, root)`` for ``LeRobotDataset(repo_id, root=root)``.

    Raises:
        UsageError: Unknown task or invalid sizes.
        SimulatorError: Generation failed.
    """
    key = task if isinstance(task, SimDatasetKey) else SimDatasetKey(task, **settings)
    task = key.task
    check_task(task)
    repo_id, root = key.repo_id(), key.path(cache_dir)
    base = root.parent
    settings = key.settings()
    if (root / _COMPLETE).is_file():
        return repo_id, root
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (root / _COMPLETE).is_file():  # another process made it while we waited
            return repo_id, root
        tmp = base / f"{root.name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        logger.info("generating simulator dataset %s into the cache %s", repo_id, base)
        try:
            generate_dataset(task, root=tmp, repo_id=repo_id, episodes=key.episodes,
                             seed=key.seed, height=key.height, width=key.width,
                             only_success=key.only_success, native_log=base / f"{root.name}.log")
            (tmp / _COMPLETE).write_text(json.dumps(settings) + "\n")
            if root.exists():  # an incomplete leftover
                shutil.rmtree(root)
            tmp.rename(root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return repo_id, root
