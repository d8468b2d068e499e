"""Federated normalisation statistics: exact merge equals statistics of the union."""

import numpy as np
import pytest

from zk0cli.core.stats import (
    FeatureSums,
    compute_sums,
    merge_sums,
    sample_frame_indices,
    stats_digest,
    sums_from_json,
    sums_to_json,
    to_lerobot_stats,
)


@pytest.fixture(scope="module")
def two_refs(tmp_path_factory, dataset_writer):
    from zk0cli.core.data import DatasetRef

    refs = []
    for i, (eps, frames) in enumerate(((4, 12), (3, 9))):
        repo = f"zk0test/stats{i}"
        root = dataset_writer(tmp_path_factory.mktemp(f"stats{i}") / "ds", repo_id=repo,
                              episodes=eps, frames=frames, size=16, seed=10 + i)
        refs.append(DatasetRef(name=repo, repo_id=repo, root=root))
    return refs


def _union(refs_eps):
    """Every frame of every (ref, episodes), read through LeRobot: the reference."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    cols = {}
    for ref, eps in refs_eps:
        ds = LeRobotDataset(ref.repo_id, root=ref.root, episodes=eps, video_backend="pyav")
        for i in range(len(ds)):
            item = ds[i]
            for k in ("observation.state", "action", "observation.images.top"):
                cols.setdefault(k, []).append(item[k].numpy().astype(np.float64))
    return {k: np.stack(v) for k, v in cols.items()}


def test_merged_equals_union(two_refs):
    a, b = two_refs
    parts = [compute_sums(a, [0, 1, 3], rename_map={}, image_frames=10_000),
             compute_sums(b, [1, 2], rename_map={}, image_frames=10_000)]
    # the wire format is exact
    parts = [sums_from_json(sums_to_json(p)) for p in parts]
    merged = to_lerobot_stats(merge_sums(parts))
    union = _union([(a, [0, 1, 3]), (b, [1, 2])])
    assert merged["action"]["count"][0] == 3 * 12 + 2 * 9
    for key in ("observation.state", "action"):
        x = union[key]
        assert merged[key]["mean"].shape == (6,)
        np.testing.assert_allclose(merged[key]["mean"], x.mean(0), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(merged[key]["std"], x.std(0), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(merged[key]["min"], x.min(0), rtol=1e-6)
        np.testing.assert_allclose(merged[key]["max"], x.max(0), rtol=1e-6)
    img = union["observation.images.top"]  # (N, C, H, W)
    top = merged["observation.images.top"]
    assert top["mean"].shape == (3, 1, 1)
    np.testing.assert_allclose(top["mean"].ravel(), img.mean((0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(top["std"].ravel(), img.std((0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(top["max"].ravel(), img.max((0, 2, 3)), atol=1e-7)


def test_merge_matches_lerobot_aggregate(two_refs):
    """Same numbers as LeRobot's own parallel-variance aggregation of per-client stats."""
    from lerobot.datasets.compute_stats import aggregate_feature_stats

    a, b = two_refs
    parts = [compute_sums(a, [0, 1], rename_map={}, image_frames=0),
             compute_sums(b, [0, 1, 2], rename_map={}, image_frames=0)]
    ours = to_lerobot_stats(merge_sums(parts))["action"]
    theirs = aggregate_feature_stats(
        [{**to_lerobot_stats(p)["action"]} for p in parts])
    for n in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(ours[n], theirs[n], rtol=1e-5, atol=1e-5)


def test_rename_and_image_bound(two_refs):
    a, _ = two_refs
    sums = compute_sums(a, [0], rename_map={"observation.images.top": "observation.images.cam1"},
                        image_frames=5)
    assert "observation.images.cam1" in sums and "observation.images.top" not in sums
    assert sums["observation.images.cam1"].count == 5 * 16 * 16
    assert set(compute_sums(a, [0], rename_map={}, image_frames=0)) == {
        "observation.state", "action"}


def test_feature_sums_algebra():
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    s = FeatureSums.of(x[:2], "vector") + FeatureSums.of(x[2:], "vector")
    st = to_lerobot_stats({"f": s})["f"]
    np.testing.assert_allclose(st["mean"], x.mean(0))
    np.testing.assert_allclose(st["std"], x.std(0), rtol=1e-6)
    with pytest.raises(ValueError, match="cannot merge"):
        _ = s + FeatureSums.of(np.zeros((2, 3)), "vector")
    assert sample_frame_indices(10, 4) == [0, 3, 6, 9]
    assert sample_frame_indices(3, 64) == [0, 1, 2]
    assert sample_frame_indices(0, 4) == []
    # features not reported by every client are dropped
    merged = merge_sums([{"f": s, "g": s}, {"f": s}])
    assert set(merged) == {"f"} and merged["f"].count == 12
    text = sums_to_json(merged)
    assert stats_digest(text) == stats_digest(sums_to_json(sums_from_json(text)))
    with pytest.raises(ValueError, match="malformed"):
        sums_from_json("{not json")
