"""A contact sheet: frames from both cameras of one expert episode per task, in a PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zk0cli.core.sim.recorder import MAX_EPISODE_STEPS, check_task, episode_seed


def contact_sheet(
    path: Path,
    *,
    tasks: Sequence[str],
    seed: int = 0,
    height: int = 96,
    width: int = 128,
    frames: int = 4,
) -> Path:
    """Write a PNG grid: one row per task, ``frames`` time steps, top and wrist side by side.

    Args:
        path: PNG file to write (its folder is created).
        tasks: Simulator tasks, one row each.
        seed: Episode seed (the first episode a dataset with this seed would hold).
        height: Image height (pixels).
        width: Image width (pixels).
        frames: Time steps per row, evenly spaced over the episode.

    Returns:
        ``path``.

    Raises:
        UsageError: An unknown task.
    """
    from PIL import Image

    from zk0cli.core.sim.env import SimEnv
    from zk0cli.core.sim.expert import run_expert_episode

    for task in tasks:
        check_task(task)
    rows = []
    for task in tasks:
        env = SimEnv(task, height=height, width=width, render=True)
        observations, _, _ = run_expert_episode(env, episode_seed(seed, 0),
                                                max_steps=MAX_EPISODE_STEPS[task])
        picks = np.linspace(0, len(observations) - 1, frames).round().astype(int)
        tiles = [np.concatenate([observations[i]["observation.images.top"],
                                 observations[i]["observation.images.wrist"]], axis=1)
                 for i in picks]
        sep = np.full((height, 4, 3), 255, dtype=np.uint8)
        rows.append(np.concatenate([x for t in tiles for x in (t, sep)][:-1], axis=1))
    gap = np.full((4, rows[0].shape[1], 3), 255, dtype=np.uint8)
    sheet = np.concatenate([x for r in rows for x in (r, gap)][:-1], axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path)
    return path
