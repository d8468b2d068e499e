"""Inverse kinematics for top-down tool poses of the 5-joint SO-101 arm.

Damped least squares on the ``tcp`` site (the point between the jaw pads): the tool's
approach axis points straight down and its jaw-opening axis is horizontal at a given yaw.
With five arm joints such poses are reachable in a band about 12–27 cm in front of the
base.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ARM_DOF = 5
"""Arm joints used by the IK (the sixth joint, the gripper, is not)."""


def top_down_rotation(yaw: float) -> np.ndarray:
    """Rotation matrix (3, 3) of the tcp site for a top-down grasp.

    Args:
        yaw: Direction of the jaw-opening axis in the table plane (radians from +x).

    Returns:
        Columns: approach axis (0, 0, -1), lateral axis, jaw-opening axis.
    """
    x = np.array([0.0, 0.0, -1.0])
    z = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    return np.stack([x, np.cross(z, x), z], axis=1)


class TopDownIK:
    """Solve joint angles placing the tcp site at a position with a top-down orientation.

    Args:
        model: The compiled scene (its tcp site and first five joints are used).
    """

    def __init__(self, model: Any) -> None:
        import mujoco

        self.model = model
        self.data = mujoco.MjData(model)
        self.site = model.site("tcp").id
        self.lo = model.jnt_range[:ARM_DOF, 0]
        self.hi = model.jnt_range[:ARM_DOF, 1]
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def tcp_pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward kinematics: tcp position (3,) in m and rotation (3, 3) for arm angles ``q``."""
        import mujoco

        self.data.qpos[:ARM_DOF] = q[:ARM_DOF]
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3)

    def solve(self, pos: np.ndarray, yaw: float, q0: np.ndarray, iters: int = 30) -> np.ndarray:
        """Damped least-squares IK, warm-started from ``q0``.

        Args:
            pos: Target tcp position (3,), metres.
            yaw: Target jaw-opening direction (radians), see :func:`top_down_rotation`.
            q0: Starting arm angles (>= 5,), radians.
            iters: Iterations.

        Returns:
            Arm angles (5,) in radians, inside the joint limits (the closest reachable pose
            when the target is out of reach).
        """
        import mujoco

        target_rot = top_down_rotation(yaw)
        q = np.array(q0[:ARM_DOF], dtype=np.float64)
        damping = 1e-4
        for _ in range(iters):
            cur_pos, cur_rot = self.tcp_pose(q)
            err_p = pos - cur_pos
            err_r = 0.5 * sum(np.cross(cur_rot[:, i], target_rot[:, i]) for i in range(3))
            err = np.concatenate([err_p, 0.1 * err_r])
            if np.linalg.norm(err) < 1e-5:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site)
            jac = np.concatenate([self._jacp[:, :ARM_DOF], 0.1 * self._jacr[:, :ARM_DOF]])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + damping * np.eye(6), err)
            q = np.clip(q + dq, self.lo, self.hi)
        return q
