"""Closed-loop evaluation: roll out a policy in the simulator and report success rates.

A policy function maps an observation dict (``observation.state`` (6,) float32 degrees,
``observation.images.top`` / ``observation.images.wrist`` (H, W, 3) uint8, ``task`` str)
to a 6-dim joint-position action (degrees; gripper 0–100). Optional hooks on the policy
object: ``start_episode(env)`` is called after each reset (LeRobot policies clear their
action queue there; the scripted expert plans), and ``uses_images = False`` lets the
evaluator skip rendering.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from zk0cli.core.sim.closed_loop import EVAL_SEED_OFFSET  # noqa: F401  (re-export)


def evaluate_policy(
    policy_fn: Callable[[dict[str, Any]], np.ndarray],
    *,
    tasks: Sequence[str],
    episodes: int,
    seed: int,
    height: int = 96,
    width: int = 128,
    max_steps: int | None = None,
) -> dict[str, float]:
    """Success rate of ``policy_fn`` per task over seeded episodes.

    The rates of :func:`~zk0cli.core.sim.closed_loop.evaluate_closed_loop` (which also
    gives intervals, steps and distances). An episode ends at the first step the task is
    solved (success) or after ``max_steps`` control steps (failure).

    Args:
        policy_fn: Observation dict -> action (6,) in degrees, gripper 0–100.
        tasks: Simulator tasks to evaluate.
        episodes: Episodes per task.
        seed: Evaluation seed (episode ``i`` of every task uses the same derived seed).
        height: Image height (pixels).
        width: Image width (pixels).
        max_steps: Control steps per episode; default per task (5–8 s at 30 fps).

    Returns:
        Task -> fraction of episodes solved, in [0, 1].

    Raises:
        UsageError: An unknown task.
    """
    from zk0cli.core.sim.closed_loop import evaluate_closed_loop

    results = evaluate_closed_loop(policy_fn, tasks=tasks, episodes=max(episodes, 1),
                                   seed=seed, height=height, width=width, max_steps=max_steps)
    return {task: r.success_rate if episodes else 0.0 for task, r in results.items()}


class LeRobotPolicyFn:
    """Wrap a LeRobot policy and its processors as a policy function.

    Args:
        policy: A LeRobot ``PreTrainedPolicy`` (e.g. ``SmolVLAPolicy``), in eval mode.
        preprocessor: Its pre-processor pipeline (normalisation, tokenisation, device).
        postprocessor: Its post-processor pipeline (un-normalisation, back to CPU).
        rename_map: Observation key renames applied first (e.g. ``observation.images.top``
            -> ``observation.images.camera1``).
    """

    uses_images = True

    def __init__(self, policy: Any, preprocessor: Any, postprocessor: Any,
                 rename_map: dict[str, str] | None = None) -> None:
        self.policy = policy
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.rename_map = dict(rename_map or {})

    def start_episode(self, env: Any) -> None:
        """Clear the policy's action queue before an episode."""
        self.policy.reset()

    def __call__(self, observation: dict[str, Any]) -> np.ndarray:
        """Observation dict -> action (6,) float32."""
        import torch

        batch: dict[str, Any] = {}
        for key, value in observation.items():
            key = self.rename_map.get(key, key)
            if key == "task":
                batch[key] = [value]
            elif key.startswith("observation.images."):
                image = torch.from_numpy(np.ascontiguousarray(value)).permute(2, 0, 1)
                batch[key] = (image.float() / 255.0).unsqueeze(0)
            else:
                batch[key] = torch.as_tensor(np.asarray(value), dtype=torch.float32).unsqueeze(0)
        with torch.inference_mode():
            batch = self.preprocessor(batch)
            action = self.policy.select_action(batch)
            action = self.postprocessor(action)
        return np.asarray(action.detach().cpu().float().numpy()).reshape(-1)[:6]


class RandomPolicy:
    """Uniformly random joint targets within the joints' ranges (a baseline)."""

    uses_images = False

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, observation: dict[str, Any]) -> np.ndarray:
        """A random action (6,) float32."""
        low = np.array([-110, -100, -97, -95, -157, 0], dtype=np.float32)
        high = np.array([110, 100, 97, 95, 163, 100], dtype=np.float32)
        return self.rng.uniform(low, high).astype(np.float32)
