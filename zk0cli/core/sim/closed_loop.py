"""Closed-loop rollouts with per-episode detail: success, steps, final distance, videos.

:func:`evaluate_closed_loop` is what ``eval.closed_loop`` (during a federation) and
``zk0 eval`` (any checkpoint) run. Episode ``i`` of every task starts from the layout of
:func:`~zk0cli.core.sim.recorder.episode_seed` ``(seed + EVAL_SEED_OFFSET, i)``: a seed
stream no generated training dataset uses (those draw ``episode_seed(spec.seed, i)``), so
the evaluation layouts are ones no client trained on. Before each episode torch's global
generator is seeded from the episode seed (SmolVLA samples flow-matching noise from it),
so two evaluations of the same policy with the same seed are identical.

The success interval is Wilson's score interval (E. B. Wilson, 1927, "Probable inference,
the law of succession, and statistical inference", JASA 22:209–212), the interval
``statsmodels.stats.proportion.proportion_confint(method="wilson")`` computes.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zk0cli.core.sim.recorder import MAX_EPISODE_STEPS, check_task

EVAL_SEED_OFFSET = 1_000_003
"""Evaluation episodes use seeds disjoint from generated training data of the same seed."""
WILSON_Z = 1.959963984540054
"""Standard normal quantile of a two-sided 95 % interval."""
VIDEO_NAME = "eval_episode_{index}.mp4"
"""LeRobot's eval-video file name (``lerobot-eval``: ``videos/<task>/eval_episode_<i>.mp4``)."""


def wilson_interval(successes: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with ``p = successes / n``.

    Args:
        successes: Episodes solved, ``0 <= successes <= n``.
        n: Episodes.
        z: Normal quantile (1.96 for 95 %).

    Returns:
        ``(low, high)`` in [0, 1]; ``(0, 1)`` when ``n == 0``.
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass
class EpisodeResult:
    """One rollout.

    Attributes:
        task: The task.
        index: Episode index within the task.
        seed: The episode seed (layout and policy noise).
        success: Whether the task was solved within the horizon.
        steps: Control steps taken (to success, else the horizon).
        final_distance: :func:`~zk0cli.core.sim.tasks.task_distance` at the end (m).
        video: Path of the episode's MP4, when videos were written.
    """

    task: str
    index: int
    seed: int
    success: bool
    steps: int
    final_distance: float
    video: str | None = None


@dataclass
class TaskResult:
    """Closed-loop result of one task.

    Attributes:
        episodes: Episodes rolled out.
        successes: Episodes solved.
        success_rate: ``successes / episodes``.
        ci_low: Lower end of the Wilson 95 % interval.
        ci_high: Upper end of the Wilson 95 % interval.
        mean_steps_to_success: Mean control steps of the solved episodes (1/30 s each);
            ``None`` when none was solved.
        mean_final_distance: Mean distance from solved at the end of each episode (m).
        max_steps: The horizon (control steps).
        seconds: Wall seconds of the task's rollouts.
        episode_results: Every episode.
    """

    episodes: int
    successes: int
    success_rate: float
    ci_low: float
    ci_high: float
    mean_steps_to_success: float | None
    mean_final_distance: float | None
    max_steps: int
    seconds: float
    episode_results: list[EpisodeResult] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The numbers without the episode list (what round files hold)."""
        out = asdict(self)
        out.pop("episode_results")
        return out

    def to_json(self) -> dict[str, Any]:
        """Everything, episodes included."""
        return asdict(self)


def _seed_torch(seed: int) -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed % 2**63)


def rollout(policy_fn: Callable[[dict[str, Any]], np.ndarray], env: Any, *, seed: int,
            horizon: int, frames: list[np.ndarray] | None = None) -> tuple[bool, int]:
    """Run one episode: reset to ``seed``, step until solved or ``horizon`` steps.

    Args:
        policy_fn: Observation -> action (6,) (degrees, gripper 0–100).
        env: A :class:`~zk0cli.core.sim.env.SimEnv`.
        seed: Episode seed.
        horizon: Maximum control steps.
        frames: When given, receives one video frame per observation: the cameras side
            by side, (H, n_cameras * W, 3) uint8 (the policy's own images when it uses them).

    Returns:
        ``(success, steps)``.
    """
    from zk0cli.core.sim import scene

    start = getattr(policy_fn, "start_episode", None)
    obs = env.reset(seed)
    _seed_torch(seed)
    if start is not None:
        start(env)

    def grab(o: dict[str, Any]) -> None:
        if frames is not None:
            keys = [f"observation.images.{c}" for c in scene.CAMERAS]
            frames.append(np.concatenate(
                [o[k] if k in o else env.render_camera(c) for k, c in zip(keys, scene.CAMERAS,
                                                                           strict=True)],
                axis=1))

    grab(obs)
    for step in range(1, horizon + 1):
        obs = env.step(np.asarray(policy_fn(obs), dtype=np.float32))
        grab(obs)
        if env.success():
            return True, step
    return False, horizon


def evaluate_closed_loop(
    policy_fn: Callable[[dict[str, Any]], np.ndarray],
    *,
    tasks: Sequence[str],
    episodes: int,
    seed: int,
    height: int = 96,
    width: int = 128,
    max_steps: int | None = None,
    video_dir: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, TaskResult]:
    """Roll ``policy_fn`` out in the simulator and summarise each task.

    Args:
        policy_fn: Observation dict -> action (6,) in degrees, gripper 0–100. Optional
            ``start_episode(env)`` and ``uses_images`` (see :mod:`.evaluate`).
        tasks: Simulator tasks.
        episodes: Episodes per task (>= 1).
        seed: Evaluation seed; episode ``i`` uses ``episode_seed(seed + EVAL_SEED_OFFSET, i)``.
        height: Camera image height (pixels); must match what the policy was trained on.
        width: Camera image width (pixels).
        max_steps: Control steps per episode; default per task
            (:data:`~zk0cli.core.sim.recorder.MAX_EPISODE_STEPS`).
        video_dir: When given, every episode is written to
            ``<video_dir>/<task>/eval_episode_<i>.mp4`` (30 fps, cameras side by side).
        progress: Called with (task, episodes done, episodes) after each episode.

    Returns:
        Task -> :class:`TaskResult`, in the order of ``tasks``.

    Raises:
        UsageError: An unknown task or ``episodes < 1``.
    """
    from zk0cli.core.sim.env import SimEnv
    from zk0cli.core.sim.recorder import episode_seed
    from zk0cli.core.sim.scene import FPS
    from zk0cli.core.sim.tasks import task_distance
    from zk0cli.errors import UsageError

    for task in tasks:
        check_task(task)
    if episodes < 1:
        raise UsageError(f"episodes = {episodes}: evaluate at least one episode per task.")
    render = bool(getattr(policy_fn, "uses_images", True)) or video_dir is not None
    out: dict[str, TaskResult] = {}
    for task in tasks:
        env = SimEnv(task, height=height, width=width, render=render)
        horizon = max_steps or MAX_EPISODE_STEPS[task]
        started = time.perf_counter()
        results: list[EpisodeResult] = []
        for i in range(episodes):
            ep_seed = episode_seed(seed + EVAL_SEED_OFFSET, i)
            frames: list[np.ndarray] | None = [] if video_dir is not None else None
            success, steps = rollout(policy_fn, env, seed=ep_seed, horizon=horizon,
                                     frames=frames)
            video = None
            if frames:
                video = str(_write_video(Path(video_dir or "."), task, i, frames, FPS))
            results.append(EpisodeResult(task, i, ep_seed, success, steps,
                                         task_distance(env), video))
            if progress is not None:
                progress(task, i + 1, episodes)
        solved = [r for r in results if r.success]
        low, high = wilson_interval(len(solved), len(results))
        out[task] = TaskResult(
            episodes=len(results), successes=len(solved),
            success_rate=len(solved) / len(results), ci_low=low, ci_high=high,
            mean_steps_to_success=statistics.fmean(r.steps for r in solved) if solved else None,
            mean_final_distance=statistics.fmean(r.final_distance for r in results),
            max_steps=horizon, seconds=time.perf_counter() - started, episode_results=results)
    return out


def _write_video(video_dir: Path, task: str, index: int, frames: list[np.ndarray],
                 fps: int) -> Path:
    """One episode's frames to MP4 with LeRobot's eval-video writer (PyAV, libx264)."""
    from lerobot.utils.io_utils import write_video

    folder = video_dir / task
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / VIDEO_NAME.format(index=index)
    write_video(str(path), frames, fps)
    return path
