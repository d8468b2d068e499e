"""Datasets: validation, partitions, action chunks, loaders, stats."""

import json
import shutil

import pytest
import torch

from zk0cli.errors import DatasetError


def _local_cfg(root, *, n_specs=1, partition="dataset", num_clients=None, heldout=1):
    from zk0cli.core.config import validate_config

    return validate_config({
        "model": {"kind": "tiny", "path": None, "device": "cpu"},
        "data": {
            "clients": [{"source": "local", "name": f"ds{i}", "root": str(root)}
                        for i in range(n_specs)],
            "partition": partition,
            "heldout_episodes": heldout,
        },
        "federation": {"num_clients": num_clients},
    })


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_resolve_hub_and_local(tmp_path):
    from zk0cli.core.config import DatasetSpec, SimConfig
    from zk0cli.core.data import DatasetRef, resolve_dataset

    assert resolve_dataset(DatasetSpec(name="lerobot/x"), SimConfig()) == DatasetRef(
        "lerobot/x", "lerobot/x", None)
    ref = resolve_dataset(DatasetSpec(source="local", name="me/y", root=tmp_path), SimConfig())
    assert ref == DatasetRef("me/y", "me/y", tmp_path)


def test_load_metadata_of_a_written_dataset(so101_meta):
    assert so101_meta.total_episodes == 4
    assert so101_meta.total_frames == 80
    assert so101_meta.fps == 10


def test_missing_root(tmp_path):
    from zk0cli.core.data import DatasetRef, load_metadata

    with pytest.raises(DatasetError, match="does not exist"):
        load_metadata(DatasetRef("x", "x/y", tmp_path / "nope"))


def test_unreachable_hub_dataset_offline():
    from zk0cli.core.data import DatasetRef, load_metadata

    with pytest.raises(DatasetError, match='source = "local"'):
        load_metadata(DatasetRef("nobody/nothing", "nobody/nothing", None))


def test_v21_dataset_names_the_converter(so101_root, tmp_path):
    from zk0cli.core.data import DatasetRef, load_metadata

    root = _copy(so101_root, tmp_path / "old")
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = "v2.1"
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError) as err:
        load_metadata(DatasetRef("old", "me/old", root))
    assert "v2.1" in str(err.value)
    assert "python -m lerobot.scripts.convert_dataset_v21_to_v30 --repo-id=me/old" in str(err.value)


def test_frame_count_mismatch(so101_root, tmp_path):
    from zk0cli.core.data import DatasetRef, load_metadata

    root = _copy(so101_root, tmp_path / "bad")
    info = json.loads((root / "meta/info.json").read_text())
    info["total_frames"] = 81
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match="sum to 80, info.json says 81"):
        load_metadata(DatasetRef("bad", "me/bad", root))


def test_partition_by_dataset(so101_root):
    from zk0cli.core.data import client_partitions

    parts = client_partitions(_local_cfg(so101_root, n_specs=2))
    assert [p.client_id for p in parts] == ["0", "1"]
    assert [p.name for p in parts] == ["ds0", "ds1"]
    assert all(p.train_episodes == [0, 1, 2] and p.heldout_episodes == [3] for p in parts)
    with pytest.raises(DatasetError, match="holding out the last data.heldout_episodes = 4"):
        client_partitions(_local_cfg(so101_root, heldout=4))


def test_partition_by_episodes_never_empty(so101_root):
    from zk0cli.core.data import client_partitions

    parts = client_partitions(_local_cfg(so101_root, partition="episodes", num_clients=2,
                                         heldout=0))
    assert [p.train_episodes for p in parts] == [[0, 1], [2, 3]]
    parts = client_partitions(_local_cfg(so101_root, partition="episodes", num_clients=3))
    assert [p.train_episodes for p in parts] == [[0], [1], [2]]
    assert all(p.heldout_episodes == [3] for p in parts)
    with pytest.raises(DatasetError, match="8 clients but only 3 episodes"):
        client_partitions(_local_cfg(so101_root, partition="episodes", num_clients=8))


def test_open_dataset_action_chunks(so101_ref):
    from zk0cli.core.data import open_dataset

    ds = open_dataset(so101_ref, episodes=[1], chunk_size=5, video_backend="pyav")
    assert len(ds) == 20
    first, last = ds[0], ds[19]
    assert first["action"].shape == (5, 6)
    assert first["observation.images.top"].shape == (3, 32, 32)
    assert 0.0 <= float(first["observation.images.top"].min()) <= 1.0
    assert not first["action_is_pad"].any()
    assert last["action_is_pad"].tolist() == [False, True, True, True, True]
    # action[t+1] of the chunk is the next frame's action
    torch.testing.assert_close(first["action"][1], ds[1]["action"][0])


def test_open_dataset_rejects_bad_episode_ids(so101_ref):
    from zk0cli.core.data import open_dataset

    with pytest.raises(DatasetError, match=r"\[4, 9\] are out of range; it has 4 episodes"):
        open_dataset(so101_ref, episodes=[0, 4, 9], chunk_size=5, video_backend="pyav")
    with pytest.raises(DatasetError, match="empty"):
        open_dataset(so101_ref, episodes=[], chunk_size=5, video_backend="pyav")


def test_video_dataset_opens_with_pyav(dataset_writer, tmp_path):
    from zk0cli.core.data import DatasetRef, open_dataset

    root = dataset_writer(tmp_path / "vid", repo_id="me/vid", episodes=1, frames=8,
                          cameras=("top",), use_videos=True)
    ds = open_dataset(DatasetRef("vid", "me/vid", root), episodes=None, chunk_size=3,
                      video_backend="pyav")
    assert ds[0]["observation.images.top"].shape == (3, 32, 32)
    assert ds[7]["action_is_pad"].tolist() == [False, True, True]


def test_loader_order_depends_only_on_seed(train_dataset):
    from zk0cli.core.data import make_loader

    def order(seed):
        loader = make_loader(train_dataset, batch_size=8, shuffle=True, seed=seed)
        return torch.cat([b["index"] for b in loader]).tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == list(range(60))


def test_dataset_stats_are_renamed(so101_meta):
    from zk0cli.core.data import dataset_stats

    stats = dataset_stats(so101_meta, {"observation.images.top": "observation.images.camera1"})
    assert "observation.images.camera1" in stats and "observation.images.top" not in stats
    assert set(stats["observation.state"]) >= {"mean", "std"}


def test_heldout_sets_are_scored_once_each_under_their_own_name(tmp_path):
    """Two sites on the same simulator task (other seeds) keep two held-out sets; clients
    sharing one dataset's held-out episodes (partition = episodes) are one set."""
    from pathlib import Path

    from zk0cli.core.data import ClientPartition, DatasetRef
    from zk0cli.core.evaluation import heldout_set_names

    def part(cid, name, root, held):
        return ClientPartition(cid, name, DatasetRef(name, name, Path(root)), [0], held)

    parts = [part("0", "reach", "/sim/reach-s0", [3]), part("1", "reach", "/sim/reach-s1", [3]),
             part("2", "lift", "/sim/lift", [3]), part("3", "lift", "/sim/lift", [3]),
             part("4", "stack", "/sim/stack", [])]
    named = [(p.client_id, label) for p, label in heldout_set_names(parts)]
    assert named == [("0", "heldout/reach#0"), ("1", "heldout/reach#1"), ("2", "heldout/lift")]
