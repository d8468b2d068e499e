"""Synthetic SO-101-like LeRobotDatasets for tests and benchmarks (no simulator, no Hub).

Smooth joint trajectories (degrees), two cameras whose brightness follows the arm, and
action = next state, so that a policy can actually learn something from a few frames.
Written with LeRobot's own writer as format v3.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

JOINTS: tuple[str, ...] = ("shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos",
                           "wrist_flex.pos", "wrist_roll.pos", "gripper.pos")
TASK = "pick up the red cube"


def write_synthetic_dataset(
    root: Path,
    *,
    repo_id: str = "zk0test/so101",
    episodes: int = 4,
    frames: int = 20,
    size: int = 32,
    cameras: Sequence[str] = ("top", "wrist"),
    use_videos: bool = False,
    fps: int = 10,
    seed: int = 0,
    robot_type: str = "so101_follower",
) -> Path:
    """Write a LeRobotDataset at ``root`` (which must not exist) and return ``root``.

    Args:
        root: Dataset folder.
        repo_id: LeRobot repo id recorded in the metadata.
        episodes: Episodes to write.
        frames: Frames per episode.
        size: Square image size (pixels) of each camera, ``(size, size, 3)`` uint8.
        cameras: Camera names (``observation.images.<name>``).
        use_videos: Encode cameras as videos (PyAV) instead of images.
        fps: Frames per second.
        seed: Seed of the trajectories' phases.
        robot_type: ``robot_type`` recorded in ``meta/info.json`` (LeRobot 0.6.1's
            ``lerobot-record`` writes ``so_follower`` for SO-100/SO-101 followers).
    """
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    kind = "video" if use_videos else "image"
    features = {
        "observation.state": {"dtype": "float32", "shape": (6,), "names": list(JOINTS)},
        "action": {"dtype": "float32", "shape": (6,), "names": list(JOINTS)},
    }
    for cam in cameras:
        features[f"observation.images.{cam}"] = {
            "dtype": kind, "shape": (size, size, 3), "names": ["height", "width", "channels"]}
    ds = LeRobotDataset.create(repo_id, fps=fps, features=features, root=root,
                               robot_type=robot_type, use_videos=use_videos)
    rng = np.random.default_rng(seed)
    for _ in range(episodes):
        phase = rng.uniform(0, 2 * np.pi, size=6)
        t = np.arange(frames + 1) / frames
        traj = (30 * np.sin(2 * np.pi * t[:, None] + phase[None, :])).astype(np.float32)
        for i in range(frames):
            frame = {"observation.state": traj[i], "action": traj[i + 1], "task": TASK}
            level = np.uint8(int(128 + 3 * traj[i, 0]))
            for c, cam in enumerate(cameras):
                img = np.full((size, size, 3), level, dtype=np.uint8)
                img[: size // 2, :, c % 3] = np.uint8(255 - level)
                frame[f"observation.images.{cam}"] = img
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()
    return root
