"""Benchmark zk0's simulator: two-camera render rate, generation rate, disk per 1000 frames.

Usage:
    MUJOCO_GL=egl python benchmarks/bench_sim.py [--task pick_place] [--episodes 3]
        [--height 96] [--width 128]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SVT_LOG", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pick_place")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args()

    from zk0cli.core.sim import generate_dataset
    from zk0cli.core.sim.env import SimEnv
    from zk0cli.core.sim.scene import CAMERAS

    env = SimEnv(args.task, height=args.height, width=args.width)
    env.reset(0)
    for cam in CAMERAS:  # warm up the renderer
        env.render_camera(cam)
    n = 100
    start = time.perf_counter()
    for _ in range(n):
        for cam in CAMERAS:
            env.render_camera(cam)
    render_fps = n / (time.perf_counter() - start)

    env.render = False
    start = time.perf_counter()
    env.reset(0)
    for _ in range(300):
        env.step(env.joint_deg())
    physics_fps = 300 / (time.perf_counter() - start)

    frames = [0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        start = time.perf_counter()
        generate_dataset(args.task, root=root, repo_id="zk0/bench", episodes=args.episodes,
                         seed=0, height=args.height, width=args.width,
                         frame_progress=lambda k: frames.__setitem__(0, k))
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        stored = LeRobotDataset("zk0/bench", root=root, video_backend="pyav").meta.total_frames

    print(f"task {args.task}, {args.height}x{args.width}, {args.episodes} episodes")
    print(f"render (two cameras):   {render_fps:7.1f} frames/s")
    print(f"physics + control only: {physics_fps:7.1f} frames/s")
    print(f"generation end to end:  {frames[0] / seconds:7.1f} frames/s "
          f"({frames[0]} frames simulated, {stored} stored, {seconds:.1f} s)")
    print(f"disk: {size / 1e6:.2f} MB, {size / 1e6 / stored * 1000:.2f} MB per 1000 frames")


if __name__ == "__main__":
    main()
