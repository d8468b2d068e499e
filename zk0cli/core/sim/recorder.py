"""Record scripted-expert episodes into a LeRobotDataset v3.0 with LeRobot's own writer.

Features (robot_type ``so_follower``, as LeRobot 0.6.1 records an SO-101 follower; 30 fps):
``observation.state`` and ``action`` float32[6] named ``shoulder_pan.pos ... gripper.pos``
(degrees; gripper 0–100), and the videos ``observation.images.top`` and
``observation.images.wrist`` (H, W, 3), encoded with the FFmpeg that PyAV bundles.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from zk0cli.core.rundir import create_dir
from zk0cli.core.sim import scene
from zk0cli.core.sim.tasks import SIM_TASKS
from zk0cli.errors import SimulatorError, UsageError
from zk0cli.log import logger, native_stderr_to

ROBOT_TYPE = "so_follower"
"""``robot.name`` of LeRobot 0.6.1's SO-100/SO-101 follower (``lerobot-record`` writes it);
LeRobot's dataset merge requires equal robot types."""
MAX_EPISODE_STEPS: dict[str, int] = {"lift": 150, "pick_place": 250, "stack": 250, "push": 250,
                                     "reach": 90}
"""Safety cap on control steps per episode (the evaluator's default horizon)."""


def check_task(task: str) -> None:
    """Raise :class:`UsageError` (exit 2) unless ``task`` is a simulator task."""
    if task not in SIM_TASKS:
        raise UsageError(
            f"Unknown simulator task {task!r}. Valid tasks: {', '.join(SIM_TASKS)}. "
            "Give one or more of them, comma-separated (e.g. lift,push)."
        )


def episode_seed(seed: int, index: int) -> int:
    """Seed of attempt ``index`` of a dataset generated with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def dataset_features(height: int, width: int) -> dict[str, dict[str, Any]]:
    """LeRobot feature spec of the generated datasets.

    Args:
        height: Image height (pixels).
        width: Image width (pixels).

    Returns:
        The ``features`` mapping for ``LeRobotDataset.create``.
    """
    from zk0cli.core.sim.env import MOTOR_NAMES

    vector = {"dtype": "float32", "shape": (6,), "names": list(MOTOR_NAMES)}
    feats: dict[str, dict[str, Any]] = {"observation.state": dict(vector), "action": dict(vector)}
    for cam in scene.CAMERAS:
        feats[f"observation.images.{cam}"] = {
            "dtype": "video", "shape": (height, width, 3), "names": ["height", "width", "channels"],
        }
    return feats


def generate_dataset(
    task: str,
    *,
    root: Path,
    repo_id: str,
    episodes: int,
    seed: int,
    height: int = 96,
    width: int = 128,
    only_success: bool = True,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    frame_progress: Callable[[int], None] | None = None,
    native_log: Path | None = None,
) -> Path:
    """Write one LeRobotDataset v3.0 of scripted-expert demonstrations of ``task``.

    Episode ``i`` is simulated from :func:`episode_seed` ``(seed, i)``, so the same seed
    gives identical state and action arrays. With ``only_success`` failed attempts are
    dropped and further attempts made (at most ``2 * episodes + 5`` in all).

    Args:
        task: One of :data:`SIM_TASKS`.
        root: Dataset folder to create.
        repo_id: Dataset repo id recorded in the metadata (e.g. ``zk0/sim_lift``).
        episodes: Episodes to write (>= 1).
        seed: Generator seed.
        height: Camera image height (pixels).
        width: Camera image width (pixels).
        only_success: Keep only the episodes the expert solved.
        overwrite: Replace an existing ``root``.
        progress: Called with (episodes written, episodes requested) after each episode.
        frame_progress: Called with the number of frames rendered after each frame.
        native_log: File receiving what the video encoder's C code writes to stderr
            (``Svt[info]``, ``[mp4 @ ...]``); ``None`` leaves stderr alone. ``zk0 -v``
            always shows it.

    Returns:
        ``root``.

    Raises:
        UsageError: Unknown task, bad size, or ``root`` exists and ``overwrite`` is False.
        SimulatorError: Rendering failed, or the expert solved no episode.
    """
    check_task(task)
    if episodes < 1 or height < 16 or width < 16:
        raise UsageError(
            f"episodes = {episodes}, height = {height}, width = {width}: episodes must be >= 1 "
            "and images at least 16x16 pixels."
        )
    root = Path(root)
    if root.exists():
        if not overwrite:
            raise UsageError(
                f"Dataset folder {root} already exists; nothing was written. Pass --overwrite "
                "(overwrite=True) to replace it, or choose another --out."
            )
        if not (root / "meta" / "info.json").is_file() and any(root.iterdir()):
            raise UsageError(
                f"{root} exists and is not a LeRobotDataset (no meta/info.json); --overwrite "
                "only replaces datasets. Nothing was deleted; choose another --out."
            )
        shutil.rmtree(root)
    create_dir(root.parent, purpose="the dataset folder")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from zk0cli.core.sim.env import SimEnv
    from zk0cli.core.sim.expert import ScriptedExpert

    env = SimEnv(task, height=height, width=width, render=True)
    expert = ScriptedExpert()
    dataset = LeRobotDataset.create(
        repo_id, fps=scene.FPS, features=dataset_features(height, width), root=root,
        robot_type=ROBOT_TYPE, use_videos=True, video_backend="pyav",
    )
    started = time.perf_counter()
    with native_stderr_to(native_log):
        kept, attempt, frames = _record(task, dataset, env, expert, episodes=episodes,
                                        seed=seed, only_success=only_success,
                                        progress=progress, frame_progress=frame_progress)
    if kept == 0:
        shutil.rmtree(root, ignore_errors=True)
        raise SimulatorError(f"The expert solved none of {attempt} {task} episodes; nothing kept.")
    if kept < episodes:
        logger.warning("%s: only %s of %s episodes succeeded", task, kept, episodes)
    logger.info("%s: %s episodes, %s frames simulated in %.1f s -> %s", task, kept, frames,
                time.perf_counter() - started, root)
    return root


def _record(task: str, dataset: Any, env: Any, expert: Any, *, episodes: int, seed: int,
            only_success: bool, progress: Callable[[int, int], None] | None,
            frame_progress: Callable[[int], None] | None) -> tuple[int, int, int]:
    """Simulate and save episodes; returns (episodes kept, attempts, frames rendered)."""
    from zk0cli.core.sim.expert import run_expert_episode

    kept, attempt, frames = 0, 0, 0
    try:
        while kept < episodes and attempt < 2 * episodes + 5:
            obs_list, actions, success = run_expert_episode(
                env, episode_seed(seed, attempt), max_steps=MAX_EPISODE_STEPS[task],
                expert=expert)
            attempt += 1
            frames += len(actions)
            if frame_progress is not None:
                frame_progress(frames)
            if only_success and not success:
                logger.info("%s: attempt %s failed; dropped", task, attempt - 1)
                continue
            for obs, action in zip(obs_list, actions, strict=True):
                dataset.add_frame({**obs, "action": action})
            dataset.save_episode()
            kept += 1
            if progress is not None:
                progress(kept, episodes)
    finally:
        dataset.finalize()
    return kept, attempt, frames
