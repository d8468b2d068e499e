"""The checkpoint writer and the run recorder (run-directory files)."""

import json

import pytest

from zk0cli.core.checkpoint import manifest_problems, verify_checkpoint, write_checkpoint
from zk0cli.core.recorder import RunRecorder
from zk0cli.core.rundir import RunDir, read_json
from zk0cli.core.strategy import ClientReport, RoundOutcome
from zk0cli.errors import CheckpointError


def fake_policy(directory):
    (directory / "config.json").write_text('{"type": "smolvla"}', encoding="utf-8")
    (directory / "model.safetensors").write_bytes(b"\x00" * 64)


def test_checkpoint_is_complete_and_latest_moves(tmp_path):
    rd = RunDir.create(tmp_path)
    c1 = write_checkpoint(rd, 1, save_policy=fake_policy, metrics={"round": 1})
    assert rd.latest_checkpoint() == c1
    assert manifest_problems(c1) == []
    manifest = read_json(c1 / "manifest.json")
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "metrics.json"}
    assert manifest["files"]["model.safetensors"]["size"] == 64
    c2 = write_checkpoint(rd, 2, save_policy=fake_policy, metrics={"round": 2})
    assert rd.latest_checkpoint() == c2 and c1.is_dir()


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    rd = RunDir.create(tmp_path)
    c1 = write_checkpoint(rd, 1, save_policy=fake_policy, metrics={})

    def crash(directory):
        fake_policy(directory)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_checkpoint(rd, 2, save_policy=crash, metrics={})
    assert rd.latest_checkpoint() == c1
    assert not rd.checkpoint(2).exists()
    assert [p.name for p in rd.models_dir.iterdir() if p.name.startswith(".")] == []


def test_free_space_is_checked_before_writing(tmp_path):
    rd = RunDir.create(tmp_path)
    with pytest.raises(OSError, match="previous checkpoint is kept"):
        write_checkpoint(rd, 1, save_policy=fake_policy, metrics={}, min_free_bytes=1 << 62)
    assert rd.latest_checkpoint() is None


def test_tampered_checkpoint_is_caught(tmp_path):
    rd = RunDir.create(tmp_path)
    c1 = write_checkpoint(rd, 1, save_policy=fake_policy, metrics={})
    (c1 / "model.safetensors").write_bytes(b"\x01" * 64)
    (c1 / "config.json").unlink()
    problems = manifest_problems(c1)
    assert any("SHA-256" in p for p in problems) and any("missing" in p for p in problems)
    with pytest.raises(CheckpointError):
        verify_checkpoint(c1)


def test_recorder_writes_round_files_and_histories(tmp_path):
    rd = RunDir.create(tmp_path)
    rec = RunRecorder(rd)
    rec.start(engine="simulation", command="simulate", seed=3, rounds=2)
    rec.record_round(0, outcome=None, server_eval={"datasets": {"a": 2.0}, "composite": 2.0},
                     seconds=1.0)
    outcome = RoundOutcome(1, [
        ClientReport("0", 11, True, {"loss": 1.5, "dataset_name": "lift", "num-examples": 8,
                                     "num_examples": 8}, weight=8),
        ClientReport("1", 12, False, {}, reason="RuntimeError: boom"),
    ], aggregated=True, note=None, proximal_mu=0.1, lr=1e-3)
    rec.record_round(1, outcome=outcome, server_eval=None, seconds=2.5)
    rec.finish("completed")
    r1 = read_json(rd.server_eval(1))
    assert r1["aggregated"] and r1["proximal_mu"] == 0.1 and r1["server_eval"] is None
    assert r1["client_aggregated_training_metrics"]["loss_avg"] == 1.5
    assert r1["failures"] == [{"client_id": "1", "node_id": 12, "reason": "RuntimeError: boom"}]
    assert [m["client_id"] for m in r1["individual_client_training_metrics"]] == ["0"]
    assert "num-examples" not in r1["individual_client_training_metrics"][0]
    assert read_json(rd.client_round("1", 1))["status"] == "failed"
    assert read_json(rd.client_round("0", 1))["dataset_name"] == "lift"
    assert read_json(rd.policy_loss_history) == {"0": 2.0}
    rows = read_json(rd.federated_metrics)
    assert [r["round"] for r in rows] == [0, 1] and rows[1]["num_failures"] == 1
    run = read_json(rd.run_json)
    assert run["status"] == "completed" and run["rounds_completed"] == 1
    assert run["versions"]["flwr"] == "1.42.0" and run["versions"]["lerobot"] == "0.6.1"


def test_non_finite_values_stay_strict_json(tmp_path):
    from zk0cli.core.rundir import write_json

    write_json(tmp_path / "x.json", {"a": float("nan"), "b": [float("inf")]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": "nan", "b": ["inf"]}


def test_run_dir_is_never_reused(tmp_path):
    a = RunDir.create(tmp_path, name="same")
    b = RunDir.create(tmp_path, name="same")
    assert a.root != b.root and b.root.name == "same-1"
