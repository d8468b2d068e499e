"""Small local SO-101-like LeRobotDatasets for the CPU benchmarks (no simulator, no Hub).

Smooth joint trajectories, two cameras whose brightness follows the arm, action = next
state (the same structure as the test suite's fixture datasets).
"""

from __future__ import annotations

from pathlib import Path

JOINTS = ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos", "wrist_flex.pos",
          "wrist_roll.pos", "gripper.pos"]
TASK = "pick up the red cube"


def write_dataset(root: Path, *, repo_id: str, episodes: int = 4, frames: int = 30,
                  size: int = 64, seed: int = 0, fps: int = 10) -> Path:
    """Write an image (not video) LeRobotDataset v3.0 at ``root``; return ``root``."""
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    cameras = ("top", "wrist")
    features = {
        "observation.state": {"dtype": "float32", "shape": (6,), "names": JOINTS},
        "action": {"dtype": "float32", "shape": (6,), "names": JOINTS},
    }
    for cam in cameras:
        features[f"observation.images.{cam}"] = {
            "dtype": "image", "shape": (size, size, 3), "names": ["height", "width", "channels"]}
    ds = LeRobotDataset.create(repo_id, fps=fps, features=features, root=root,
                               robot_type="so101_follower", use_videos=False)
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
