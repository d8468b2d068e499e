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
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds") / "so101", episodes=6,
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


def _cfg(root, *, skip, partition="dataset", num_clients=1, heldout=1, eval_root=None):
    from zk0cli.core.config import validate_config

    spec = {"source": "local", "name": "lab/so101", "root": str(root)}
    return validate_config({
        "model": {"kind": "tiny", "path": None, "device": "cpu"},
        "data": {"clients": [spec] * (num_clients if partition == "dataset" else 1),
                 "eval": [{**spec, "name": "lab/eval", "root": str(eval_root)}]
                 if eval_root else [],
                 "partition": partition, "heldout_episodes": heldout,
                 "skip_bad_episodes": skip},
        "federation": {"num_clients": num_clients, "min_clients": 1},
    })


@pytest.fixture()
def bad_root(dataset, tmp_path, dataset_corrupter):
    """6 episodes; 1 drifts, 3 has a NaN action."""
    return dataset_corrupter(_copy(dataset, tmp_path), drift=(1,), nan=(3,))


def test_without_skip_bad_episodes_the_run_is_refused_naming_them(bad_root):
    from zk0cli.engine.prepare import prepare_datasets

    with pytest.raises(DatasetError) as err:
        prepare_datasets(_cfg(bad_root, skip=False))
    text = str(err.value)
    assert "dataset lab/so101: 2 bad episode(s) [1, 3]" in text
    assert "episode 1: timestamps drift at frame 1" in text and "episode 3: action" in text
    assert "data.skip_bad_episodes = true" in text


def test_skip_bad_episodes_drops_them_before_the_split(bad_root):
    from zk0cli.core.data import client_partition, client_partitions
    from zk0cli.engine.prepare import prepare_datasets

    cfg = _cfg(bad_root, skip=True)
    prepared = prepare_datasets(cfg)
    [rec] = prepared.skipped
    assert rec.dataset == "lab/so101" and rec.episodes == [1, 3]
    assert rec.problems[0].startswith("episode 1: timestamps drift")
    assert prepared.describe_skipped() == ("data.skip_bad_episodes: dataset lab/so101: "
                                           "skipping 2 bad episode(s) [1, 3]")
    part = client_partition(cfg, 0)  # held out: the last good episode
    assert (part.train_episodes, part.heldout_episodes) == ([0, 2, 4], [5])
    assert [p.episode for p in part.skipped] == [1, 3]
    parts = client_partitions(_cfg(bad_root, skip=True, partition="episodes", num_clients=2))
    assert [p.train_episodes for p in parts] == [[0, 2], [4]]
    assert parts[0].heldout_episodes == [5]


def test_skip_bad_episodes_still_needs_an_episode_to_train_on(bad_root, dataset_corrupter):
    from zk0cli.engine.prepare import prepare_datasets

    with pytest.raises(DatasetError, match=r"4 episode\(s\) after data.skip_bad_episodes "
                       r"dropped 2 bad episode\(s\) \[1, 3\]; holding out the last "
                       r"data.heldout_episodes = 4"):
        prepare_datasets(_cfg(bad_root, skip=True, heldout=4))
    dataset_corrupter(bad_root, drift=(0, 2, 4, 5))
    with pytest.raises(DatasetError, match=r"every episode is bad.*6 bad episode\(s\)"):
        prepare_datasets(_cfg(bad_root, skip=True))


def test_skipped_episodes_are_recorded_in_run_json_and_printed(bad_root, dataset, tmp_path):
    from contextlib import nullcontext

    from zk0cli.core.rundir import RunDir
    from zk0cli.engine.lifecycle import RunRequest, simulate

    class UI:
        lines: list = []

        def status(self, text):
            return nullcontext(lambda _text: None)

        def info(self, text):
            self.lines.append(text)

        def follow(self, config, rundir, runner):  # the federation itself is not run here
            return "interrupted"

    out = tmp_path / "run"
    cfg = _cfg(bad_root, skip=True, eval_root=dataset)
    ui = UI()
    simulate(RunRequest(command="simulate", out=out), ui, config=cfg)
    record = RunDir(out).run_record()
    assert [(s.dataset, s.episodes) for s in record.skipped_episodes] == [("lab/so101", [1, 3])]
    assert ("data.skip_bad_episodes: dataset lab/so101: skipping 2 bad episode(s) [1, 3]"
            in ui.lines)


def test_usable_episodes_are_all_but_the_bad_ones_only_with_skip(bad_root):
    from zk0cli.core.data import DatasetRef, load_metadata, usable_episodes

    ref = DatasetRef(name="lab/so101", repo_id="lab/so101", root=bad_root)
    meta = load_metadata(ref)
    assert usable_episodes(ref, meta, skip_bad=False) == ([0, 1, 2, 3, 4, 5], ())
    kept, skipped = usable_episodes(ref, meta, skip_bad=True)
    assert kept == [0, 2, 4, 5] and {p.kind for p in skipped} == {"timestamps", "non_finite"}


def test_stats_recorded_over_a_dropped_nan_episode_are_recomputed(bad_root):
    """LeRobot's meta/stats.json of a dataset with a NaN episode is NaN itself: with the
    bad episodes dropped, a client's own statistics come from the episodes it uses."""
    import json

    from zk0cli.core.data import DatasetRef, dataset_stats, load_metadata
    from zk0cli.core.stats import vector_stats

    path = bad_root / "meta" / "stats.json"
    stats = json.loads(path.read_text())
    stats["action"]["mean"][2] = float("nan")  # as LeRobot records it over episode 3
    path.write_text(json.dumps(stats))
    meta = load_metadata(DatasetRef(name="lab/so101", repo_id="lab/so101", root=bad_root))
    assert np.isnan(dataset_stats(meta, {})["action"]["mean"][2])
    used = dataset_stats(meta, {"action": "action"}, episodes=[0, 2, 4])
    fresh = vector_stats(bad_root, ["action"], [0, 2, 4])["action"]
    assert np.isfinite(used["action"]["mean"]).all() and int(used["action"]["count"][0]) == 36
    np.testing.assert_allclose(used["action"]["mean"], fresh["mean"])
    np.testing.assert_allclose(used["observation.state"]["mean"],
                               np.asarray(stats["observation.state"]["mean"]), rtol=1e-6)


def test_a_simulated_client_drops_the_bad_episodes_from_the_instruction(bad_root, make_bundle):
    """In simulation the data plan (with data.skip_bad_episodes) travels in the
    instruction; each client's partition leaves the bad episodes out."""
    from flwr.app import Context, RecordDict

    from zk0cli import constants as K
    from zk0cli.core.contract.instruction import features_of, run_instruction
    from zk0cli.flower.client_app import plan_of

    feats = features_of(make_bundle(seed=0).policy.config)
    ctx = Context(run_id=1, node_id=3, node_config={K.PARTITION_ID_KEY: 1,
                                                     "num-partitions": 2},
                  state=RecordDict(), run_config={})
    cfg = _cfg(bad_root, skip=True, partition="episodes", num_clients=2)
    plan = plan_of(run_instruction(cfg, input_features=feats, stats=None, simulation=True), ctx)
    assert plan.simulated and plan.partition.train_episodes == [4]
    assert plan.partition.heldout_episodes == [5]
    off = _cfg(bad_root, skip=False, partition="episodes", num_clients=2)
    plan = plan_of(run_instruction(off, input_features=feats, stats=None, simulation=True), ctx)
    assert plan.partition.train_episodes == [3, 4]  # 0-2 go to client 0
