"""Small local SO-101-like LeRobotDatasets for the CPU benchmarks (no simulator, no Hub)."""

from __future__ import annotations

from pathlib import Path

from zk0cli.testing import write_synthetic_dataset


def write_dataset(root: Path, *, repo_id: str, episodes: int = 4, frames: int = 30,
                  size: int = 64, seed: int = 0, fps: int = 10) -> Path:
    """Write an image (not video) LeRobotDataset v3.0 at ``root``; return ``root``."""
    return write_synthetic_dataset(root, repo_id=repo_id, episodes=episodes, frames=frames,
                                   size=size, seed=seed, fps=fps)
