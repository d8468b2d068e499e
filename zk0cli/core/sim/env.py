"""A small simulation environment: reset to a seeded task layout, step with joint targets.

Actions and states use LeRobot's SO-100/SO-101 follower conventions: six values
``shoulder_pan.pos ... gripper.pos``, the first five in degrees, the gripper in 0–100
(0 = the joint's lower limit, closed; 100 = its upper limit, wide open). Each
:meth:`SimEnv.step` holds the action as position-servo targets for 1/30 s.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from zk0cli.core.sim import scene
from zk0cli.core.sim.tasks import TASK_INSTRUCTIONS, Layout, sample_layout, task_success
from zk0cli.errors import SimulatorError

MOTOR_NAMES: tuple[str, ...] = tuple(f"{j}.pos" for j in scene.JOINT_NAMES)
"""Feature names of ``observation.state`` and ``action``."""

HOME_DEG = np.array([0.0, -60.0, 60.0, 75.0, 0.0, 30.0], dtype=np.float32)
"""Rest pose the episodes start from (degrees; gripper 0–100)."""

_RENDERER: dict[str, Any] = {}


def _renderer(model: Any, height: int, width: int) -> Any:
    """The process's single ``mujoco.Renderer`` (re-created only when the size changes)."""
    import mujoco

    current = _RENDERER.get("r")
    if current is not None and (current.height, current.width) == (height, width):
        return current
    if current is not None:
        close_renderer()
    try:
        renderer = mujoco.Renderer(model, height=height, width=width)
    except Exception as err:  # mujoco raises plain errors from the GL layer
        backend = os.environ.get("MUJOCO_GL", "(unset)")
        raise SimulatorError(
            f"MuJoCo could not start offscreen rendering (MUJOCO_GL={backend}): {err}. "
            "Install an offscreen GL library — Debian/Ubuntu: apt-get install libegl1 libgl1 "
            "(MUJOCO_GL=egl) or libosmesa6 (MUJOCO_GL=osmesa) — and set MUJOCO_GL accordingly."
        ) from err
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
    _RENDERER["r"] = renderer
    if not _RENDERER.get("atexit"):
        import atexit

        atexit.register(close_renderer)  # closing at interpreter teardown raises EGL errors
        _RENDERER["atexit"] = True
    return renderer


def close_renderer() -> None:
    """Release the process's renderer and its GL context (safe to call twice)."""
    renderer = _RENDERER.pop("r", None)
    if renderer is not None:
        renderer.close()


def deg_to_ctrl(model: Any, action: np.ndarray) -> np.ndarray:
    """Convert a 6-dim action (degrees, gripper 0–100) to actuator targets (radians).

    Args:
        model: The compiled scene.
        action: Shape (6,), any float dtype.

    Returns:
        Shape (6,) float64, clipped to the actuators' control ranges.
    """
    action = np.asarray(action, dtype=np.float64).reshape(6)
    lo, hi = model.actuator_ctrlrange[:6, 0], model.actuator_ctrlrange[:6, 1]
    ctrl = np.deg2rad(action)
    ctrl[5] = lo[5] + (hi[5] - lo[5]) * action[5] / 100.0
    return np.clip(ctrl, lo, hi)


def qpos_to_deg(model: Any, qpos: np.ndarray) -> np.ndarray:
    """Convert the arm's 6 joint angles (radians) to LeRobot units; shape (6,) float32."""
    out = np.rad2deg(np.asarray(qpos, dtype=np.float64)[:6])
    lo, hi = model.jnt_range[5]
    out[5] = 100.0 * (qpos[5] - lo) / (hi - lo)
    return out.astype(np.float32)


class SimEnv:
    """One SO-101 scene for one task.

    Args:
        task: One of :data:`~zk0cli.core.sim.tasks.SIM_TASKS`.
        height: Camera image height (pixels).
        width: Camera image width (pixels).
        render: Whether :meth:`observation` renders the cameras (off for state-only use).
    """

    def __init__(self, task: str, *, height: int = 96, width: int = 128, render: bool = True):
        self.model = scene.build_model()  # imports mujoco, or says what is missing
        import mujoco

        self.task = task
        self.instruction = TASK_INSTRUCTIONS[task]
        self.height, self.width, self.render = height, width, render
        self.data = mujoco.MjData(self.model)
        self.layout: Layout | None = None
        self.steps = 0

    # --- state -----------------------------------------------------------------------------

    def body_pos(self, name: str) -> np.ndarray:
        """World position (m) of a body's origin, shape (3,)."""
        return self.data.body(name).xpos.copy()

    def body_yaw(self, name: str) -> float:
        """Rotation of a body about the vertical axis (radians)."""
        mat = self.data.body(name).xmat.reshape(3, 3)
        return float(np.arctan2(mat[1, 0], mat[0, 0]))

    def joint_deg(self) -> np.ndarray:
        """The arm's joint state in LeRobot units, shape (6,) float32."""
        return qpos_to_deg(self.model, self.data.qpos[:6])

    def contacts(self, geom_a: str, geom_b: str) -> bool:
        """Whether two named geoms touch now."""
        a, b = self.model.geom(geom_a).id, self.model.geom(geom_b).id
        for c in self.data.contact[: self.data.ncon]:
            if {c.geom1, c.geom2} == {a, b}:
                return True
        return False

    def success(self) -> bool:
        """Whether the task is solved in the current simulator state."""
        return task_success(self)

    # --- episode ---------------------------------------------------------------------------

    def reset(self, seed: int) -> dict[str, Any]:
        """Start an episode with object positions drawn from ``seed``.

        Args:
            seed: Episode seed; the same seed gives the same layout and trajectory.

        Returns:
            The first observation (see :meth:`observation`).
        """
        import mujoco

        mujoco.mj_resetData(self.model, self.data)
        self.layout = sample_layout(self.task, np.random.default_rng(seed))
        home = deg_to_ctrl(self.model, HOME_DEG)
        self.data.qpos[:6] = home
        self.data.ctrl[:6] = home
        for name in ("cube_a", "cube_b"):
            pos, yaw = self.layout.cubes.get(name, (scene.PARK + [0.2 * (name == "cube_b"), 0, 0],
                                                    0.0))
            adr = self.model.jnt_qposadr[self.model.joint(name).id]
            z = scene.CUBE_HALF + (0.0 if name in self.layout.cubes else scene.PARK[2])
            self.data.qpos[adr: adr + 3] = [pos[0], pos[1], z]
            self.data.qpos[adr + 3: adr + 7] = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        for name in ("plate", "target"):
            pos = self.layout.markers.get(name, scene.PARK + [0.4 * (name == "target"), 0, 0])
            mocap = self.model.body_mocapid[self.model.body(name).id]
            z = 0.0 if name in self.layout.markers else -1.0  # unused: under the floor
            self.data.mocap_pos[mocap] = [pos[0], pos[1], z]
        mujoco.mj_forward(self.model, self.data)
        self.steps = 0
        return self.observation()

    def step(self, action: np.ndarray) -> dict[str, Any]:
        """Hold ``action`` as joint targets for one control period (1/30 s).

        Args:
            action: Shape (6,): degrees, gripper 0–100. Non-finite entries (a diverged
                policy) hold the joint where it is.

        Returns:
            The next observation.
        """
        import mujoco

        action = np.asarray(action, dtype=np.float64).reshape(6)
        if not np.isfinite(action).all():
            action = np.where(np.isfinite(action), action, self.joint_deg())
        self.data.ctrl[:6] = deg_to_ctrl(self.model, action)
        mujoco.mj_step(self.model, self.data, nstep=scene.SUBSTEPS)
        self.steps += 1
        return self.observation()

    def observation(self) -> dict[str, Any]:
        """The observation LeRobot datasets and policies use.

        Returns:
            ``observation.state`` (6,) float32; ``observation.images.top`` and
            ``observation.images.wrist`` (H, W, 3) uint8 when rendering is on; ``task``.
        """
        obs: dict[str, Any] = {"observation.state": self.joint_deg(), "task": self.instruction}
        if self.render:
            for cam in scene.CAMERAS:
                obs[f"observation.images.{cam}"] = self.render_camera(cam)
        return obs

    def render_camera(self, camera: str) -> np.ndarray:
        """Render one camera; shape (H, W, 3) uint8."""
        renderer = _renderer(self.model, self.height, self.width)
        renderer.update_scene(self.data, camera=camera)
        return renderer.render().copy()
