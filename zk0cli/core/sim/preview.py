"""A contact sheet: frames from both cameras of one expert episode per task, in a PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    cols = [f"{cam} t={int(i)}" for i in picks for cam in ("top", "wrist")]
    image = label_sheet(sheet, rows=list(tasks), columns=cols, row_height=height + 4,
                        column_width=width)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


LABEL_MARGIN_LEFT = 84  # pixels for the task names
LABEL_MARGIN_TOP = 14  # pixels for the camera names


def label_sheet(sheet: np.ndarray, *, rows: Sequence[str], columns: Sequence[str],
                row_height: int, column_width: int) -> Any:
    """Add task names on the left and camera names (with the frame index) on top.

    Args:
        sheet: ``(H, W, 3)`` uint8 grid of camera tiles.
        rows: One label per row of tiles (the task).
        columns: One label per tile column (``"top t=0"``, ``"wrist t=0"``, ...).
        row_height: Pixels from one row's top to the next (tile height plus gap).
        column_width: Pixels per tile column; a 4-pixel separator follows every
            ``top``/``wrist`` pair.

    Returns:
        The labelled ``PIL.Image.Image``.
    """
    from PIL import Image, ImageDraw

    h, w = sheet.shape[:2]
    canvas = Image.new("RGB", (w + LABEL_MARGIN_LEFT, h + LABEL_MARGIN_TOP), "white")
    canvas.paste(Image.fromarray(sheet), (LABEL_MARGIN_LEFT, LABEL_MARGIN_TOP))
    draw = ImageDraw.Draw(canvas)
    for r, text in enumerate(rows):
        draw.text((4, LABEL_MARGIN_TOP + r * row_height + row_height // 2 - 6), text,
                  fill="black")
    for c, text in enumerate(columns):
        x = LABEL_MARGIN_LEFT + c * column_width + (c // 2) * 4 + 2
        draw.text((x, 1), text, fill="black")
    return canvas
