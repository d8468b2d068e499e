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


def pytest_collection_modifyitems(config, items):
    """Run the end-to-end federations (marked ``slow``) first, in file order.

    The suite runs on two pytest-xdist workers (``-n auto --maxprocesses 4`` in
    pyproject.toml): started first, the few minute-long federations spread over the
    workers and the short tests fill the gaps, instead of one federation starting last
    and keeping a single worker busy while the other sits idle. The order is a stable
    sort, so every worker collects the same list (xdist requires it).
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)

RAY_STARTUP_TIMEOUT = "node timed out during startup"
"""Ray's hard-coded 30 s node start-up wait (ray/_private/node.py), which two federations
starting at once on 2 cores can miss; pyproject.toml reruns a test once for it."""


def _ray_startup_timeout_in(root: Path) -> Path | None:
    """A run file under ``root`` (server.log, run.json, logs) naming Ray's start-up timeout."""
    for path in [*root.rglob("*.log"), *root.rglob("run.json")]:
        try:
            if path.stat().st_size < 20_000_000 and RAY_STARTUP_TIMEOUT in path.read_text(
                    encoding="utf-8", errors="replace"):
                return path
        except OSError:
            continue
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Name Ray's start-up timeout in the failure of an end-to-end test that hit it.

    The test's own assertion shows the run's error truncated, so the rerun filter
    (``--only-rerun``, matched against the exception text) would not see it; this raises
    an error that says it, chained to the original failure, when the test's run files do.
    """
    outcome = yield
    excinfo = outcome.excinfo
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if excinfo is None or tmp is None or item.get_closest_marker("slow") is None:
        return
    found = _ray_startup_timeout_in(Path(tmp))
    if found is not None:
        err = RuntimeError(f"Ray's {RAY_STARTUP_TIMEOUT} (named in {found}); the test failed "
                           f"with {excinfo[0].__name__}: {str(excinfo[1])[:2000]}")
        err.__cause__ = excinfo[1]
        outcome.force_exception(err)


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


def corrupt_episodes(root: Path, *, drift=(), nan=()) -> Path:
    """Corrupt a real LeRobotDataset's parquet files in place (its metadata stays as is).

    Args:
        root: The dataset folder.
        drift: Episode ids whose timestamps run 1 % fast (a camera clock drifting: the
            steps miss ``1 / fps`` by far more than LeRobot's 1e-4 s tolerance).
        nan: Episode ids that get one NaN action value (their 3rd frame, joint 2).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in sorted((root / "data").glob("*/*.parquet")):
        t = pq.read_table(path)
        ep = t.column("episode_index").to_numpy()
        ts = t.column("timestamp").to_numpy().copy()
        act = np.stack(t.column("action").to_numpy(zero_copy_only=False)).copy()
        for e in drift:
            ts[ep == e] *= 1.01
        for e in nan:
            rows = np.flatnonzero(ep == e)
            if rows.size:
                act[rows[min(2, rows.size - 1)], 2] = np.nan
        t = t.set_column(t.schema.get_field_index("timestamp"), "timestamp",
                         pa.array(ts, type=t.schema.field("timestamp").type))
        t = t.set_column(t.schema.get_field_index("action"), "action",
                         pa.array(list(act), type=t.schema.field("action").type))
        pq.write_table(t, path)
    return root


@pytest.fixture(scope="session")
def dataset_corrupter():
    """The :func:`corrupt_episodes` function."""
    return corrupt_episodes
