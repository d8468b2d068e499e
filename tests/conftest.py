"""Shared fixtures: offline environment, small real LeRobotDatasets, the tiny SmolVLA."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MUJOCO_GL"] = "egl"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Keep tests away from the user's caches (set before lerobot reads them at import).
_CACHE = tempfile.mkdtemp(prefix="zk0-test-cache-")
os.environ.setdefault("ZK0_CACHE_DIR", os.path.join(_CACHE, "zk0"))
os.environ.setdefault("HF_LEROBOT_HOME", os.path.join(_CACHE, "lerobot"))

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SO101_REPO = "zk0test/so101"

JOINTS = ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos", "wrist_flex.pos",
          "wrist_roll.pos", "gripper.pos"]
TASK = "pick up the red cube"


def write_dataset(root: Path, *, repo_id: str = "zk0test/so101", episodes: int = 4,
                  frames: int = 20, size: int = 32, cameras=("top", "wrist"),
                  use_videos: bool = False, fps: int = 10, seed: int = 0) -> Path:
    """Write a structured SO-101-like dataset: smooth joint trajectories, images whose
    brightness follows the arm, action = next state. Returns ``root``."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    kind = "video" if use_videos else "image"
    features = {
        "observation.state": {"dtype": "float32", "shape": (6,), "names": JOINTS},
        "action": {"dtype": "float32", "shape": (6,), "names": JOINTS},
    }
    for cam in cameras:
        features[f"observation.images.{cam}"] = {
            "dtype": kind, "shape": (size, size, 3), "names": ["height", "width", "channels"]}
    ds = LeRobotDataset.create(repo_id, fps=fps, features=features, root=root,
                               robot_type="so101_follower", use_videos=use_videos)
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


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread: the tiny model's ops are small, and with two threads on shared
    cores a training step went from ~60 ms to ~0.5-1 s."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def so101_root(tmp_path_factory) -> Path:
    """A 4-episode × 20-frame image dataset, cameras top/wrist at 32×32, fps 10."""
    return write_dataset(tmp_path_factory.mktemp("data") / "so101", repo_id=SO101_REPO)


@pytest.fixture(scope="session")
def so101_ref(so101_root):
    from zk0cli.core.data import DatasetRef

    return DatasetRef(name=SO101_REPO, repo_id=SO101_REPO, root=so101_root)


@pytest.fixture(scope="session")
def so101_meta(so101_ref):
    from zk0cli.core.data import load_metadata

    return load_metadata(so101_ref)


@pytest.fixture(scope="session")
def make_bundle(so101_meta):
    """Factory: a fresh tiny SmolVLA bundle for the so101 dataset (``seed`` keyword)."""
    from zk0cli.core.config import ModelConfig
    from zk0cli.core.data import dataset_stats
    from zk0cli.core.policy import build_policy

    def make(seed: int = 0, rename_map=None):
        rename_map = rename_map or {}
        return build_policy(
            ModelConfig(kind="tiny", path=None, device="cpu"),
            meta=so101_meta,
            rename_map=rename_map,
            stats=dataset_stats(so101_meta, rename_map),
            seed=seed,
        )

    return make


@pytest.fixture(scope="session")
def train_dataset(so101_ref):
    from zk0cli.core.data import open_dataset
    from zk0cli.core.policy import TINY_CHUNK_SIZE

    return open_dataset(so101_ref, episodes=[0, 1, 2], chunk_size=TINY_CHUNK_SIZE,
                        video_backend="pyav")


@pytest.fixture(scope="session")
def heldout_dataset(so101_ref):
    from zk0cli.core.data import open_dataset
    from zk0cli.core.policy import TINY_CHUNK_SIZE

    return open_dataset(so101_ref, episodes=[3], chunk_size=TINY_CHUNK_SIZE, video_backend="pyav")


@pytest.fixture(scope="session")
def fixed_batch(train_dataset):
    """One raw batch of 4 frames (dataset order)."""
    import torch

    return next(iter(torch.utils.data.DataLoader(train_dataset, batch_size=4, shuffle=False)))


@pytest.fixture(scope="session")
def dataset_writer():
    """The :func:`write_dataset` function, for tests that need another dataset."""
    return write_dataset
