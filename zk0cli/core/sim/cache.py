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
from pathlib import Path

from zk0cli.core.sim.recorder import check_task, generate_dataset
from zk0cli.core.sim.scene import cache_root
from zk0cli.log import logger

GENERATOR_VERSION = 2  # 2: robot_type "so_follower"
"""Version of what the generator writes; part of every cache key."""

_COMPLETE = ".zk0_complete"


def sim_repo_id(task: str, *, seed: int, episodes: int, height: int, width: int) -> str:
    """Repo id of a generated dataset, e.g. ``zk0/sim_lift_s0_e4_96x128``."""
    return f"zk0/sim_{task}_s{seed}_e{episodes}_{height}x{width}"


def _settings(task: str, episodes: int, seed: int, height: int, width: int,
              only_success: bool) -> dict[str, object]:
    return {"task": task, "episodes": episodes, "seed": seed, "height": height, "width": width,
            "only_success": only_success, "version": GENERATOR_VERSION}


def cached_dataset_path(
    task: str,
    *,
    episodes: int,
    seed: int,
    height: int = 96,
    width: int = 128,
    only_success: bool = True,
    cache_dir: Path | None = None,
) -> tuple[str, Path]:
    """Where :func:`ensure_sim_dataset` keeps a dataset (whether or not it exists yet).

    Returns:
        ``(repo_id, root)``; the root's name is the repo name plus a hash of the settings.
    """
    repo_id = sim_repo_id(task, seed=seed, episodes=episodes, height=height, width=width)
    settings = _settings(task, episodes, seed, height, width, only_success)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    base = Path(cache_dir) if cache_dir is not None else cache_root() / "sim"
    return repo_id, base / f"{repo_id.split('/')[-1]}-{key}"


def ensure_sim_dataset(
    task: str,
    *,
    episodes: int,
    seed: int,
    height: int = 96,
    width: int = 128,
    only_success: bool = True,
    cache_dir: Path | None = None,
) -> tuple[str, Path]:
    """Return a generated dataset from the cache, generating it on first use.

    Args:
        task: One of :data:`~zk0cli.core.sim.tasks.SIM_TASKS`.
        episodes: Episodes in the dataset.
        seed: Generator seed.
        height: Image height (pixels).
        width: Image width (pixels).
        only_success: Keep only solved episodes.
        cache_dir: Folder holding cached datasets; default ``<user cache>/sim`` where the
            user cache is ``$ZK0_CACHE_DIR`` or ``~/.cache/zk0``.

    Returns:
        ``(repo_id, root)`` for ``LeRobotDataset(repo_id, root=root)``.

    Raises:
        UsageError: Unknown task or invalid sizes.
        SimulatorError: Generation failed.
    """
    check_task(task)
    repo_id, root = cached_dataset_path(task, episodes=episodes, seed=seed, height=height,
                                        width=width, only_success=only_success,
                                        cache_dir=cache_dir)
    base = root.parent
    settings = _settings(task, episodes, seed, height, width, only_success)
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
            generate_dataset(task, root=tmp, repo_id=repo_id, episodes=episodes, seed=seed,
                             height=height, width=width, only_success=only_success,
                             native_log=base / f"{root.name}.log")
            (tmp / _COMPLETE).write_text(json.dumps(settings) + "\n")
            if root.exists():  # an incomplete leftover
                shutil.rmtree(root)
            tmp.rename(root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return repo_id, root
