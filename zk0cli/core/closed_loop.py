"""Closed-loop evaluation of a SmolVLA policy in zk0's simulator.

Used by ``zk0 eval`` (any checkpoint) and by the server (``eval.closed_loop``).

Offline losses do not say whether the arm does the task; this rolls the policy out in the
MuJoCo SO-101 scene (:func:`zk0cli.core.sim.closed_loop.evaluate_closed_loop`) and
reports the success rate with its Wilson 95 % interval, the mean control steps to success
and the mean final distance from solved, per task.

A policy is checked against the simulator before any rollout: its state and action must be
6-dim (SO-101 joints) and its cameras, after its pre-processor's rename map, must be the
simulator's ``observation.images.top`` / ``observation.images.wrist``. The images are
rendered at the size the policy's features declare.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zk0cli.errors import CheckpointError, UsageError

if TYPE_CHECKING:
    from zk0cli.core.policy import PolicyBundle
    from zk0cli.core.sim.closed_loop import TaskResult

#: Keys of one task's summary in round files, ``federated_metrics.json`` and metrics.json.
SUCCESS_RATE = "success_rate"
CI_LOW = "ci_low"
CI_HIGH = "ci_high"
MEAN_STEPS = "mean_steps_to_success"
MEAN_DISTANCE = "mean_final_distance"




def sim_image_size(bundle: PolicyBundle, *, where: str = "the policy") -> tuple[int, int]:
    """Check a policy against the simulator; return the camera size it expects.

    Args:
        bundle: The policy and its processors.
        where: How to name the policy in messages (a checkpoint path).

    Returns:
        ``(height, width)`` in pixels, from the policy's image features.

    Raises:
        UsageError: State or action is not 6-dim, or the cameras (after the pre-processor's
            rename map) are not the simulator's ``top`` and ``wrist``.
    """
    from zk0cli.core.policy import rename_map_of
    from zk0cli.core.sim import scene

    cfg = bundle.policy.config
    rename = rename_map_of(bundle)
    sim_keys = {f"observation.images.{c}" for c in scene.CAMERAS}
    seen = {rename.get(k, k): k for k in sim_keys}
    wanted = {k: tuple(f.shape) for k, f in cfg.image_features.items()}
    problems = []
    state = cfg.robot_state_feature
    if state is None or tuple(state.shape) != (6,):
        problems.append(f"observation.state has shape {getattr(state, 'shape', None)}; the "
                        "SO-101 simulator gives 6 joint positions")
    action = cfg.action_feature
    if action is None or tuple(action.shape) != (6,):
        problems.append(f"action has shape {getattr(action, 'shape', None)}; the SO-101 "
                        "simulator takes 6 joint targets")
    missing = sorted(set(wanted) - set(seen))
    if missing or not wanted:
        problems.append(
            f"the policy's cameras {sorted(wanted) or '(none)'} do not match the simulator's "
            f"{sorted(seen)} (rename map {rename or '{}'}): {', '.join(missing) or 'no camera'} "
            "would have no image. Evaluate a policy trained on zk0's simulated data "
            "(observation.images.top / observation.images.wrist)")
    sizes = {shape[1:] for shape in wanted.values() if len(shape) == 3}
    if len(sizes) > 1:
        problems.append(f"the policy's cameras have different sizes {sorted(sizes)}; the "
                        "simulator renders both at one size")
    if problems:
        raise UsageError(f"{where} cannot be evaluated in the simulator: "
                         + "; ".join(problems) + ".")
    height, width = next(iter(sizes)) if sizes else (96, 128)
    return int(height), int(width)


def policy_function(bundle: PolicyBundle) -> Any:
    """The bundle as a simulator policy function (its pre-processor does the renaming)."""
    from zk0cli.core.sim import LeRobotPolicyFn

    bundle.policy.eval()
    return LeRobotPolicyFn(bundle.policy, bundle.preprocessor, bundle.postprocessor)


def checkpoint_dir(path: Path) -> Path:
    """The policy directory ``path`` names: a checkpoint, a run directory, or a LeRobot one.

    Accepted: a directory holding ``config.json`` (a zk0 checkpoint or a ``lerobot-train``
    ``pretrained_model/``); a zk0 run directory (its ``models/latest``); a
    ``lerobot-train`` checkpoint step folder holding ``pretrained_model/``, or its output
    directory (``checkpoints/last/pretrained_model``).

    Raises:
        CheckpointError: None of these (exit 2).
    """
    from zk0cli.core.contract import POLICY_CONFIG_FILE
    from zk0cli.core.rundir import RunDir

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(str(path), ["no such directory"])
    if (path / POLICY_CONFIG_FILE).is_file() and (path / "model.safetensors").is_file():
        return path
    latest = RunDir(path).latest_checkpoint()
    if latest is not None:
        return latest
    for candidate in (path / "pretrained_model", path / "last" / "pretrained_model",
                      path / "checkpoints" / "last" / "pretrained_model"):
        if (candidate / POLICY_CONFIG_FILE).is_file():
            return candidate
    raise CheckpointError(str(path), [
        "it is not a policy directory (no config.json + model.safetensors), not a zk0 run "
        "directory with models/latest, and holds no lerobot-train pretrained_model/"])


def summaries(results: dict[str, TaskResult]) -> dict[str, dict[str, Any]]:
    """Task -> the numbers of :class:`~zk0cli.core.sim.closed_loop.TaskResult` (no episodes)."""
    return {task: r.summary() for task, r in results.items()}


def evaluate_bundle(bundle: PolicyBundle, *, tasks: Sequence[str], episodes: int, seed: int,
                    max_steps: int | None = None, video_dir: Path | None = None,
                    where: str = "the policy",
                    progress: Callable[[str, int, int], None] | None = None,
                    ) -> dict[str, TaskResult]:
    """Roll a policy bundle out on ``tasks`` (checked first, see :func:`sim_image_size`).

    Args:
        bundle: The policy and its processors (not modified; put in eval mode).
        tasks: Simulator tasks.
        episodes: Episodes per task.
        seed: Evaluation seed (layouts no generated training dataset uses).
        max_steps: Control steps per episode; default per task.
        video_dir: Write ``<video_dir>/<task>/eval_episode_<i>.mp4`` when given.
        where: How to name the policy in messages.
        progress: Called with (task, done, episodes) after each episode.

    Returns:
        Task -> result.

    Raises:
        UsageError: Unknown task, or a policy the simulator cannot drive.
    """
    from zk0cli.core.sim.closed_loop import evaluate_closed_loop
    from zk0cli.core.sim.recorder import check_task

    for task in tasks:
        check_task(task)
    height, width = sim_image_size(bundle, where=where)
    was_training = bundle.policy.training
    try:
        return evaluate_closed_loop(policy_function(bundle), tasks=tasks, episodes=episodes,
                                    seed=seed, height=height, width=width,
                                    max_steps=max_steps, video_dir=video_dir,
                                    progress=progress)
    finally:
        bundle.policy.train(was_training)
        bundle.policy.reset()


def evaluate_expert(*, tasks: Sequence[str], episodes: int, seed: int,
                    max_steps: int | None = None, video_dir: Path | None = None,
                    progress: Callable[[str, int, int], None] | None = None,
                    ) -> dict[str, TaskResult]:
    """The scripted expert's closed-loop result on the same layouts (the reference rate)."""
    from zk0cli.core.sim import ScriptedExpert
    from zk0cli.core.sim.closed_loop import evaluate_closed_loop

    return evaluate_closed_loop(ScriptedExpert(), tasks=tasks, episodes=episodes, seed=seed,
                                max_steps=max_steps, video_dir=video_dir, progress=progress)


def evaluate_checkpoint(path: Path | None, *, tasks: Sequence[str], episodes: int, seed: int,
                        max_steps: int | None = None, video_dir: Path | None = None,
                        device: str = "cpu", expert: bool = False,
                        progress: Callable[[str, int, int], None] | None = None,
                        ) -> dict[str, Any]:
    """``zk0 eval``: evaluate a checkpoint (or the expert) and return the JSON result.

    Args:
        path: A checkpoint, run directory or ``lerobot-train`` output (see
            :func:`checkpoint_dir`); ignored with ``expert``.
        tasks: Simulator tasks.
        episodes: Episodes per task (>= 1).
        seed: Evaluation seed.
        max_steps: Control steps per episode; default per task.
        video_dir: Folder for the episodes' MP4 files.
        device: Torch device of the policy.
        expert: Evaluate the scripted expert instead of a policy.
        progress: Called with (task, done, episodes) after each episode.

    Returns:
        ``{"policy", "checkpoint", "seed", "episodes", "max_steps", "seconds",
        "tasks": {task: summary + "episode_results"}}``.

    Raises:
        UsageError: Bad task or episode count, no checkpoint, or a policy the simulator
            cannot drive; CheckpointError when the folder is not a checkpoint.
    """
    from zk0cli.core.sim.recorder import check_task

    for task in tasks:
        check_task(task)
    if episodes < 1:
        raise UsageError(f"--episodes {episodes}: evaluate at least 1 episode per task.")
    started = time.perf_counter()
    if expert:
        results = evaluate_expert(tasks=tasks, episodes=episodes, seed=seed,
                                  max_steps=max_steps, video_dir=video_dir, progress=progress)
        ckpt = None
    else:
        if path is None:
            raise UsageError("Name a CHECKPOINT directory to evaluate, or pass --expert for "
                             "the scripted expert's reference rate.")
        from zk0cli.core.policy import load_bundle

        ckpt = checkpoint_dir(path)
        bundle = load_bundle(ckpt, device=device)
        results = evaluate_bundle(bundle, tasks=tasks, episodes=episodes, seed=seed,
                                  max_steps=max_steps, video_dir=video_dir,
                                  where=f"Checkpoint {ckpt}", progress=progress)
    return {
        "policy": "expert" if expert else "smolvla",
        "checkpoint": None if ckpt is None else str(ckpt),
        "seed": seed, "episodes": episodes, "max_steps": max_steps,
        "seconds": time.perf_counter() - started,
        "tasks": {task: r.to_json() for task, r in results.items()},
    }
