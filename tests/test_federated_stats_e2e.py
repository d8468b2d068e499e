"""Federated statistics and schedules end to end through `zk0 simulate` (Flower simulation)."""

import numpy as np
import pytest
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.core.rundir import RunDir, read_json

pytestmark = pytest.mark.slow


def _normaliser_stats(bundle):
    for step in bundle.preprocessor.steps:
        if hasattr(step, "_tensor_stats") and step._tensor_stats:
            return {k: {n: t.numpy() for n, t in v.items()} for k, v in step._tensor_stats.items()}
    raise AssertionError("no normaliser step with statistics")


def test_federated_stats_and_schedules_reach_clients_eval_and_checkpoint(tmp_path):
    """Also an early stop: 3 rounds planned, patience 2 with a min_delta no round can beat,
    so the run stops after round 2 (rounds 1 and 2 without a new best), completed."""
    out = tmp_path / "run"
    res = CliRunner().invoke(app, [
        "simulate", "--preset", "tiny", "--out", str(out), "--rounds", "3", "--clients", "2",
        "--set", "schedule.lr=\"cosine\"", "--set", "schedule.lr_min=0.0002",
        "--set", "schedule.mu=\"step\"", "--set", "schedule.mu_step_rounds=[2]",
        "--set", "schedule.mu_step_factor=0.5", "--set", "data.stats_image_frames=8",
        "--set", "federation.early_stop.enabled=true", "--set", "federation.early_stop.patience=2",
        "--set", "federation.early_stop.min_delta=100"])
    assert res.exit_code == 0, res.output
    rd = RunDir(out)
    run = rd.run_record()
    assert run.status == "completed" and run.rounds_completed == 2 and run.rounds_planned == 3
    assert run.stop_reason is not None and "early stop at round 2" in run.stop_reason
    assert run.best_round == 0 and run.best_checkpoint is None  # the initial model was best
    assert "stopped early" in " ".join(res.output.split())
    assert rd.server_eval_rounds() == [0, 1, 2] and rd.latest_checkpoint() == rd.checkpoint(2)
    r1, r2 = read_json(rd.server_eval(1)), read_json(rd.server_eval(2))
    # cosine over the 3 planned rounds: 1e-3, then halfway to 2e-4
    assert (r1["lr"], r2["lr"]) == pytest.approx((1e-3, 6e-4))
    assert (r1["proximal_mu"], r2["proximal_mu"]) == pytest.approx((0.01, 0.005))
    assert all(c["fedprox_loss"] > 0 for c in r2["individual_client_training_metrics"])
    assert "statistics: merged 2 of 2 clients" in (rd.root / "server.log").read_text()

    # The checkpoint's processors carry the exact merge of both clients' statistics.
    from zk0cli.core.config import validate_config
    from zk0cli.core.data import client_partitions
    from zk0cli.core.policy import load_bundle
    from zk0cli.core.stats import compute_sums, merge_sums, to_lerobot_stats

    cfg = validate_config(read_json(rd.config_json))
    parts = client_partitions(cfg)
    expected = to_lerobot_stats(merge_sums(
        compute_sums(p.ref, p.train_episodes, rename_map={}, image_frames=8) for p in parts))
    saved = _normaliser_stats(load_bundle(rd.latest_checkpoint()))
    for key in ("observation.state", "action"):
        for n in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(saved[key][n], expected[key][n], rtol=1e-6, atol=1e-6)
    # ... which are neither client's own dataset statistics
    from zk0cli.core.data import dataset_stats, load_metadata

    own = dataset_stats(load_metadata(parts[0].ref), {})["action"]["mean"]
    assert not np.allclose(saved["action"]["mean"], own, atol=1e-3)
