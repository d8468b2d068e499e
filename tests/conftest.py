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

import pytest  # noqa: E402

SO101_REPO = "zk0test/so101"

def write_dataset(root: Path, **kwargs) -> Path:
    """A structured SO-101-like dataset (see :func:`zk0cli.testing.write_synthetic_dataset`)."""
    from zk0cli.testing import write_synthetic_dataset

    return write_synthetic_dataset(root, **kwargs)


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
