"""The five simulated tasks: instructions, seeded object layouts and success tests.

Objects are placed inside the band the 5-joint arm reaches with a top-down grasp (about
12–27 cm in front of the base), with random yaw. Success is judged from simulator state.
``reach`` (move the gripper over a green target, no contact) is the benchmark a tiny
policy can learn in minutes on a CPU (docs/results.md, closed loop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from zk0cli.core.config import SIM_TASKS
from zk0cli.core.sim import scene

if TYPE_CHECKING:
    from zk0cli.core.sim.env import SimEnv

__all__ = ["SIM_TASKS", "TASK_INSTRUCTIONS", "Layout", "sample_layout", "task_distance",
           "task_success"]

TASK_INSTRUCTIONS: dict[str, str] = {
    "lift": "Pick up the red cube and lift it.",
    "pick_place": "Pick up the red cube and place it on the plate.",
    "stack": "Stack the red cube on top of the blue cube.",
    "push": "Push the red cube onto the green target.",
    "reach": "Move the gripper down to the green target.",
}
"""One natural-language instruction per task (LeRobot's ``task`` string)."""

PAD_GEOMS = ("fixed_jaw_pad", "moving_jaw_pad")
LIFT_HEIGHT = 0.04
"""Lift succeeds when the cube's bottom is this far above the table (m)."""
REACH_HEIGHT = 0.05
"""Reach succeeds when the tool point is below this height (m) over the target..."""
REACH_STILL = 0.1
"""...and the arm has come to rest there: every joint slower than this (rad/s)."""


@dataclass
class Layout:
    """Initial object placement of one episode.

    Attributes:
        cubes: Cube name -> (xy position in m, shape (2,); yaw in radians).
        markers: ``plate``/``target`` -> xy position (m), shape (2,).
    """

    cubes: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)
    markers: dict[str, np.ndarray] = field(default_factory=dict)


def _polar(rng: np.random.Generator, r: tuple[float, float], a: float) -> np.ndarray:
    radius = rng.uniform(*r)
    angle = rng.uniform(-a, a)
    return np.array([radius * np.cos(angle), radius * np.sin(angle)])


def _in_band(xy: np.ndarray, lo: float = 0.12, hi: float = 0.26, a: float = 0.75) -> bool:
    return lo <= np.hypot(*xy) <= hi and abs(np.arctan2(xy[1], xy[0])) <= a


def sample_layout(task: str, rng: np.random.Generator) -> Layout:
    """Draw an object layout for ``task``.

    Args:
        task: One of :data:`SIM_TASKS`.
        rng: Source of randomness (the episode seed).

    Returns:
        The layout; only the objects the task uses are listed.
    """
    layout = Layout()
    if task == "reach":  # no cube: the target alone, anywhere in the top-down band
        layout.markers["target"] = _polar(rng, (0.14, 0.25), 0.6)
        return layout
    yaw = float(rng.uniform(-np.pi / 4, np.pi / 4))
    cube = _polar(rng, (0.15, 0.23), 0.55)
    layout.cubes["cube_a"] = (cube, yaw)
    if task == "pick_place":
        while True:
            plate = _polar(rng, (0.15, 0.23), 0.6)
            if np.linalg.norm(plate - cube) > scene.PLATE_RADIUS + 0.05:
                break
        layout.markers["plate"] = plate
    elif task == "stack":
        while True:
            other = _polar(rng, (0.15, 0.23), 0.55)
            if np.linalg.norm(other - cube) > 0.07:
                break
        layout.cubes["cube_b"] = (other, float(rng.uniform(-np.pi / 4, np.pi / 4)))
    elif task == "push":
        while True:
            cube = _polar(rng, (0.16, 0.22), 0.45)
            angle = rng.uniform(-np.pi, np.pi)
            direction = np.array([np.cos(angle), np.sin(angle)])
            target = cube + rng.uniform(0.07, 0.09) * direction
            start = cube - 0.05 * direction
            if _in_band(target, 0.14, 0.25, 0.6) and _in_band(start, 0.12, 0.27, 0.7):
                break
        layout.cubes["cube_a"] = (cube, yaw)
        layout.markers["target"] = target
    return layout


def task_success(env: SimEnv) -> bool:
    """Whether ``env``'s task is solved in its current state.

    - lift: the red cube's bottom is 4 cm above the table;
    - pick_place: the red cube rests on the plate and the gripper has let go;
    - stack: the red cube rests on the blue cube and the gripper has let go;
    - push: the red cube's centre is inside the green target;
    - reach: the tool point (between the jaw pads) is over the green target (within its
      2.5 cm radius), less than 5 cm above the table, and the arm has stopped there (a
      policy sweeping across the target does not count).

    Args:
        env: The environment (after :meth:`~zk0cli.core.sim.env.SimEnv.reset`).

    Returns:
        True when solved.
    """
    if env.task == "reach":
        tcp, target = env.data.site("tcp").xpos, env.body_pos("target")
        still = float(np.abs(env.data.qvel[:5]).max()) < REACH_STILL
        return bool(np.linalg.norm(tcp[:2] - target[:2]) < scene.TARGET_RADIUS
                    and tcp[2] < REACH_HEIGHT and still)
    a = env.body_pos("cube_a")
    h = scene.CUBE_HALF
    released = not any(env.contacts(pad, "cube_a") for pad in PAD_GEOMS)
    if env.task == "lift":
        return bool(a[2] - h > LIFT_HEIGHT)
    if env.task == "pick_place":
        plate = env.body_pos("plate")
        top = 2 * scene.PLATE_HALF_HEIGHT
        on = np.linalg.norm(a[:2] - plate[:2]) < scene.PLATE_RADIUS - 0.008
        return bool(on and abs(a[2] - (top + h)) < 0.004 and released)
    if env.task == "stack":
        b = env.body_pos("cube_b")
        on = np.linalg.norm(a[:2] - b[:2]) < h and abs(a[2] - b[2] - 2 * h) < 0.004
        return bool(on and released)
    if env.task == "push":
        target = env.body_pos("target")
        return bool(np.linalg.norm(a[:2] - target[:2]) < scene.TARGET_RADIUS)
    raise ValueError(f"unknown task {env.task!r}")


def task_distance(env: SimEnv) -> float:
    """How far ``env``'s task is from solved in its current state (m).

    - lift: how much higher the red cube's bottom must go (0 once 4 cm up);
    - pick_place / push: horizontal distance from the red cube to the plate / target centre;
    - stack: distance from the red cube to its resting place on the blue cube;
    - reach: distance from the tool point to the success region (0 inside it).

    Args:
        env: The environment (after :meth:`~zk0cli.core.sim.env.SimEnv.reset`).

    Returns:
        Metres, >= 0.
    """
    if env.task == "reach":
        tcp, target = env.data.site("tcp").xpos, env.body_pos("target")
        across = max(0.0, float(np.linalg.norm(tcp[:2] - target[:2])) - scene.TARGET_RADIUS)
        return float(np.hypot(across, max(0.0, float(tcp[2]) - REACH_HEIGHT)))
    a = env.body_pos("cube_a")
    if env.task == "lift":
        return float(max(0.0, LIFT_HEIGHT - (a[2] - scene.CUBE_HALF)))
    if env.task in ("pick_place", "push"):
        goal = env.body_pos("plate" if env.task == "pick_place" else "target")
        return float(np.linalg.norm(a[:2] - goal[:2]))
    if env.task == "stack":
        b = env.body_pos("cube_b") + np.array([0.0, 0.0, 2 * scene.CUBE_HALF])
        return float(np.linalg.norm(a - b))
    raise ValueError(f"unknown task {env.task!r}")
