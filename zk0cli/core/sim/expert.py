"""The scripted expert: top-down grasps, Cartesian waypoints, re-planning after the grasp.

It reads the true object poses from the simulator. Each task is a list of segments. A
segment computes its waypoint from the simulator state when it starts (so the place pose
accounts for where the cube actually sits in the gripper), or on every step (the
closed-loop push). The tool point moves to the waypoint in a straight line at a capped
speed; inverse kinematics turns it into joint targets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from zk0cli.core.sim import scene
from zk0cli.core.sim.env import SimEnv
from zk0cli.core.sim.ik import TopDownIK
from zk0cli.core.sim.scene import FPS

GRIP_OPEN = 50.0
"""Gripper command (0–100) that opens the jaws ~5 cm: clear of a 3 cm cube."""
GRIP_CLOSED = 0.0
"""Gripper command (0–100) that squeezes (the servo saturates against the cube)."""
HOVER_Z = 0.09
"""Height (m) of the tool point when moving above objects."""
_YAW_RATE = 3.0  # rad/s
_GRIP_RATE = 180.0  # percent/s
_BIAS_GAIN = 0.15
_BIAS_MAX = 0.015  # m
_PUSHER_HALF = 0.008  # half extent of the closed pads along the push direction (m)


@dataclass
class Waypoint:
    """A tool-point target.

    Attributes:
        pos: Tool point (between the jaw pads) in world coordinates, (3,), metres.
        yaw: Jaw-opening direction in the table plane (radians).
        grip: Gripper command, 0–100.
        speed: Maximum tool-point speed on the way (m/s).
        settle: Control steps to wait once reached.
    """

    pos: np.ndarray
    yaw: float
    grip: float
    speed: float = 0.3
    settle: int = 2


@dataclass
class Segment:
    """One step of a plan.

    Attributes:
        target: Computes the waypoint from the environment.
        track: Re-compute the waypoint on every control step (closed loop) when True.
        done: For tracking segments: finished when this returns True.
        max_steps: For tracking segments: give up after this many control steps.
        skip: Skip the segment when this returns True as it starts.
    """

    target: Callable[[SimEnv], Waypoint]
    track: bool = False
    done: Callable[[SimEnv], bool] | None = None
    max_steps: int = 150
    skip: Callable[[SimEnv], bool] | None = None


def grasp_yaw(cube_yaw: float, xy: np.ndarray) -> float:
    """Jaw direction aligned with a cube face, closest to the arm's radial direction.

    The jaws close along a face normal; of the four face normals, the one nearest the
    direction from the base to the cube keeps the wrist roll within ±45°.
    """
    radial = float(np.arctan2(xy[1], xy[0]))
    candidates = cube_yaw + np.pi / 2 * np.arange(-4, 5)
    return float(candidates[np.argmin(np.abs(candidates - radial))])


def _held_offset(env: SimEnv) -> np.ndarray:
    return env.body_pos("cube_a") - env.data.site("tcp").xpos


def _pick(env: SimEnv) -> list[Segment]:
    cube = env.body_pos("cube_a")
    yaw = grasp_yaw(env.body_yaw("cube_a"), cube)
    over = np.array([cube[0], cube[1], HOVER_Z])
    at = np.array([cube[0], cube[1], scene.CUBE_HALF])
    return [
        Segment(lambda e: Waypoint(over, yaw, GRIP_OPEN, speed=0.35)),
        Segment(lambda e: Waypoint(at, yaw, GRIP_OPEN, speed=0.15, settle=2)),
        Segment(lambda e: Waypoint(at, yaw, GRIP_CLOSED, settle=8)),
        Segment(lambda e: Waypoint(over, yaw, GRIP_CLOSED, speed=0.15, settle=2)),
    ]


def _place_on(goal: Callable[[SimEnv], np.ndarray]) -> list[Segment]:
    """Carry the held cube so that its centre ends at ``goal(env)``, let go, back off."""

    def carry(e: SimEnv) -> Waypoint:
        dest = goal(e) - _held_offset(e)
        return Waypoint(np.array([dest[0], dest[1], HOVER_Z]), _yaw_now(e), GRIP_CLOSED)

    def lower(e: SimEnv) -> Waypoint:
        return Waypoint(goal(e) - _held_offset(e), _yaw_now(e), GRIP_CLOSED, speed=0.1, settle=3)

    def release(e: SimEnv) -> Waypoint:
        return Waypoint(e.data.site("tcp").xpos.copy(), _yaw_now(e), GRIP_OPEN, settle=4)

    def retreat(e: SimEnv) -> Waypoint:
        up = e.data.site("tcp").xpos.copy()
        up[2] = HOVER_Z
        return Waypoint(up, _yaw_now(e), GRIP_OPEN, speed=0.2, settle=2)

    return [Segment(carry), Segment(lower), Segment(release), Segment(retreat)]


def _yaw_now(env: SimEnv) -> float:
    z = env.data.site("tcp").xmat.reshape(3, 3)[:, 2]
    return float(np.arctan2(z[1], z[0]))


def _push(env: SimEnv) -> list[Segment]:
    target = env.body_pos("target")[:2]
    h = scene.CUBE_HALF
    contact = h + _PUSHER_HALF
    push_z = 0.022  # pads at the cube's mid-height, clear of the table

    def direction(e: SimEnv) -> tuple[np.ndarray, float]:
        c = e.body_pos("cube_a")[:2]
        gap = target - c
        dist = float(np.linalg.norm(gap))
        return (gap / dist if dist > 1e-6 else np.array([1.0, 0.0])), dist

    def push_yaw(e: SimEnv) -> float:
        d, _ = direction(e)
        c = e.body_pos("cube_a")[:2]
        radial = float(np.arctan2(c[1], c[0]))
        perp = np.arctan2(d[1], d[0]) + np.pi / 2 + np.pi * np.arange(-2, 3)
        return float(perp[np.argmin(np.abs(perp - radial))])

    def pad_offset(e: SimEnv) -> np.ndarray:
        mid = (e.data.geom("fixed_jaw_pad").xpos + e.data.geom("moving_jaw_pad").xpos) / 2
        return mid - e.data.site("tcp").xpos

    def arrived(e: SimEnv) -> bool:
        return direction(e)[1] < 0.006

    def misaligned(e: SimEnv) -> bool:
        d, _ = direction(e)
        rel = e.body_pos("cube_a")[:2] - (e.data.geom("fixed_jaw_pad").xpos[:2]
                                           + e.data.geom("moving_jaw_pad").xpos[:2]) / 2
        return abs(float(d[0] * rel[1] - d[1] * rel[0])) > 0.009

    def behind(z: float, speed: float) -> Callable[[SimEnv], Waypoint]:
        def wp(e: SimEnv) -> Waypoint:
            d, _ = direction(e)
            xy = e.body_pos("cube_a")[:2] - d * (contact + 0.02) - pad_offset(e)[:2]
            return Waypoint(np.array([xy[0], xy[1], z]), push_yaw(e), GRIP_CLOSED, speed=speed)
        return wp

    def follow(e: SimEnv) -> Waypoint:
        d, dist = direction(e)
        xy = e.body_pos("cube_a")[:2] - d * contact + d * min(0.01, dist) - pad_offset(e)[:2]
        return Waypoint(np.array([xy[0], xy[1], push_z]), _yaw_now(e), GRIP_CLOSED, speed=0.06)

    def lift(e: SimEnv) -> Waypoint:
        up = e.data.site("tcp").xpos.copy()
        up[2] = 0.07
        return Waypoint(up, _yaw_now(e), GRIP_CLOSED, speed=0.2)

    plan = []
    for attempt in range(3):  # re-approach from behind when the cube slides off the line
        plan += [
            Segment(lift, skip=arrived) if attempt else Segment(behind(0.07, 0.35)),
            Segment(behind(0.07, 0.35), skip=arrived),
            Segment(behind(push_z, 0.15), skip=arrived),
            Segment(follow, track=True, done=lambda e: arrived(e) or misaligned(e),
                    max_steps=90, skip=arrived),
        ]
    return [*plan, Segment(lift)]


def _reach(env: SimEnv) -> list[Segment]:
    """Over the target at hover height, straight down to 3 cm above it, then hold 0.5 s."""
    target = env.body_pos("target")
    yaw = float(np.arctan2(target[1], target[0]))
    over = np.array([target[0], target[1], HOVER_Z])
    down = np.array([target[0], target[1], 0.03])
    return [
        Segment(lambda e: Waypoint(over, yaw, GRIP_CLOSED, speed=0.35)),
        Segment(lambda e: Waypoint(down, yaw, GRIP_CLOSED, speed=0.15, settle=15)),
    ]


def make_plan(env: SimEnv) -> list[Segment]:
    """The expert's segments for ``env``'s task, from its current (reset) state."""
    if env.task == "lift":
        return _pick(env)
    if env.task == "pick_place":
        plate_top = 2 * scene.PLATE_HALF_HEIGHT + scene.CUBE_HALF + 0.003
        return _pick(env) + _place_on(lambda e: e.body_pos("plate") + [0, 0, plate_top])
    if env.task == "stack":
        return _pick(env) + _place_on(
            lambda e: e.body_pos("cube_b") + [0, 0, 2 * scene.CUBE_HALF + 0.003])
    if env.task == "push":
        return _push(env)
    if env.task == "reach":
        return _reach(env)
    raise ValueError(f"unknown task {env.task!r}")


class ScriptedExpert:
    """Policy function that solves the tasks from the true simulator state.

    Call :meth:`start_episode` after each ``env.reset``; then call the expert with each
    observation. It reads the object poses from the environment, not from the images, so
    it sets ``uses_images = False`` (the evaluator can then skip rendering).
    """

    uses_images = False

    def __init__(self) -> None:
        self.env: SimEnv | None = None
        self._ik: dict[int, TopDownIK] = {}
        self.done = True

    def start_episode(self, env: SimEnv) -> None:
        """Plan a new episode in ``env`` (already reset)."""
        self.env = env
        ik = self._ik.setdefault(id(env.model), TopDownIK(env.model))
        self.ik = ik
        self.plan = make_plan(env)
        self.index, self.settled, self.seg_steps = 0, 0, 0
        self.waypoint: Waypoint | None = None
        self.cmd_pos = env.data.site("tcp").xpos.copy()
        self.cmd_yaw = _yaw_now(env)
        self.q = env.data.qpos[:5].copy()
        self.grip = float(env.joint_deg()[5])
        self.bias = np.zeros(3)
        self.done = False

    def __call__(self, observation: dict[str, Any]) -> np.ndarray:
        """Next action (6,) float32: degrees, gripper 0–100."""
        env = self.env
        if env is None:
            raise RuntimeError("call start_episode(env) before using the expert")
        if not self.done:
            self._advance(env)
        # Integral correction of the servos' steady-state sag (gravity, weak position gains).
        self.bias = np.clip(self.bias + _BIAS_GAIN * (self.cmd_pos - env.data.site("tcp").xpos),
                            -_BIAS_MAX, _BIAS_MAX)
        self.q = self.ik.solve(self.cmd_pos + self.bias, self.cmd_yaw, self.q)
        return np.concatenate([np.rad2deg(self.q), [self.grip]]).astype(np.float32)

    def _advance(self, env: SimEnv) -> None:
        seg = self.plan[self.index]
        while self.waypoint is None and seg.skip is not None and seg.skip(env):
            self.index += 1
            if self.index >= len(self.plan):
                self.done = True
                return
            seg = self.plan[self.index]
        if self.waypoint is None or seg.track:
            self.waypoint = seg.target(env)
        wp = self.waypoint
        step = wp.pos - self.cmd_pos
        dist = float(np.linalg.norm(step))
        max_move = wp.speed / FPS
        self.cmd_pos = wp.pos.copy() if dist <= max_move else self.cmd_pos + step * max_move / dist
        self.cmd_yaw += float(np.clip(wp.yaw - self.cmd_yaw, -_YAW_RATE / FPS, _YAW_RATE / FPS))
        self.grip += float(np.clip(wp.grip - self.grip, -_GRIP_RATE / FPS, _GRIP_RATE / FPS))
        self.seg_steps += 1
        if seg.track:
            finished = (seg.done is not None and seg.done(env)) or self.seg_steps >= seg.max_steps
        else:
            reached = (dist <= max_move and abs(wp.yaw - self.cmd_yaw) < 1e-9
                       and abs(wp.grip - self.grip) < 1e-9)
            self.settled += reached
            finished = self.settled > wp.settle
        if finished:
            self.index += 1
            self.settled, self.seg_steps, self.waypoint = 0, 0, None
            self.done = self.index >= len(self.plan)


def run_expert_episode(env: SimEnv, seed: int, *, max_steps: int = 400,
                       expert: ScriptedExpert | None = None) -> tuple[list[dict[str, Any]],
                                                                       list[np.ndarray], bool]:
    """Roll out the expert for one episode.

    Args:
        env: The environment (rendering on or off).
        seed: Episode seed.
        max_steps: Safety cap on control steps.
        expert: An expert to reuse (one is made otherwise).

    Returns:
        The observations before each action, the actions ((6,) float32 each), and
        whether the task was solved when the plan ended.
    """
    expert = expert or ScriptedExpert()
    obs = env.reset(seed)
    expert.start_episode(env)
    observations: list[dict[str, Any]] = []
    actions: list[np.ndarray] = []
    while not expert.done and len(actions) < max_steps:
        action = expert(obs)
        observations.append(obs)
        actions.append(action)
        obs = env.step(action)
    # Let the scene come to rest before judging (objects settle, the arm stops).
    for _ in range(5):
        env.step(actions[-1])
    return observations, actions, env.success()
