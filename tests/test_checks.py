"""Dataset checks before round 1: drifting timestamps, non-finite values, statistics."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zk0cli.core.checks import check_dataset, non_finite_stats
from zk0cli.core.stats import FeatureSums
from zk0cli.engine.prepare import check_local_dataset
from zk0cli.errors import DatasetError
from zk0cli.testing import write_synthetic_dataset

FPS = 10


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds") / "so101", episodes=4,
                                   frames=12, size=16, cameras=("top",), fps=FPS)


def _edit(root, fn):
    """Rewrite the dataset's parquet files through ``fn(table) -> table``."""
    for path in sorted((root / "data").glob("*/*.parquet")):
        pq.write_table(fn(pq.read_table(path)), path)


def _copy(dataset, tmp_path):
    import shutil

    return shutil.copytree(dataset, tmp_path / "copy")


def test_a_clean_dataset_has_no_problems(dataset):
    assert check_dataset(dataset, FPS) == []
    check_local_dataset("so101", dataset, FPS)


def test_drifting_and_non_finite_episodes_are_named(dataset, tmp_path):
    root = _copy(dataset, tmp_path)

    def corrupt(t):
        ep = t.column("episode_index").to_numpy()
        ts = t.column("timestamp").to_numpy().copy()
        ts[ep == 1] *= 1.01  # a camera clock 1 % fast: drifts past 1e-4 s at once
        act = np.stack(t.column("action").to_numpy(zero_copy_only=False)).copy()
        act[np.flatnonzero(ep == 3)[5], 2] = np.nan
        t = t.set_column(t.schema.get_field_index("timestamp"), "timestamp",
                         pa.array(ts, type=t.schema.field("timestamp").type))
        return t.set_column(t.schema.get_field_index("action"), "action",
                            pa.array(list(act), type=t.schema.field("action").type))

    _edit(root, corrupt)
    problems = check_dataset(root, FPS)
    assert [(p.episode, p.kind) for p in problems] == [(1, "timestamps"), (3, "non_finite")]
    assert "expected 0.100000 s" in problems[0].detail
    assert "action: 1 frame(s)" in problems[1].detail
    with pytest.raises(DatasetError, match=r"2 bad episode\(s\) \[1, 3\]"):
        check_local_dataset("so101", root, FPS)


def test_timestamps_going_back_are_not_increasing(dataset, tmp_path):
    root = _copy(dataset, tmp_path)

    def swap(t):
        ts = t.column("timestamp").to_numpy().copy()
        ts[[2, 3]] = ts[[3, 2]]  # episode 0, frames 2 and 3
        return t.set_column(t.schema.get_field_index("timestamp"), "timestamp",
                            pa.array(ts, type=t.schema.field("timestamp").type))

    _edit(root, swap)
    [p] = check_dataset(root, FPS)
    assert p.episode == 0 and "not increasing at frame 3" in p.detail


def test_non_finite_statistics_are_named():
    ok = FeatureSums.of(np.ones((4, 3)), "vector")
    bad = FeatureSums.of(np.array([[1.0, np.nan, 2.0]] * 4), "vector")
    assert non_finite_stats({"action": ok}) == []
    assert non_finite_stats({"action": ok, "observation.state": bad})[0] == \
        "observation.state (sum)"
