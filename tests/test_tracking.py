"""Experiment trackers: TensorBoard events and W&B offline runs hold the round files' values."""

import json
import math
import socket
import sys

import pytest
from typer.testing import CliRunner

from zk0cli import constants as K
from zk0cli.cli.app import app
from zk0cli.core import contract as C
from zk0cli.core.card import build_model_card
from zk0cli.core.config import load_config
from zk0cli.core.recorder import RunRecorder
from zk0cli.core.rundir import RunDir, read_json
from zk0cli.core.strategy import ClientReport, RoundOutcome
from zk0cli.core.tracking import build_trackers, round_scalars
from zk0cli.core.tracking.tensorboard import TensorBoardTracker
from zk0cli.core.tracking.wandb import WandbTracker, effective_mode

SECRET = "wandb-secret-key-0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def _isolated_wandb(tmp_path, monkeypatch):
    """W&B's own config, cache and data folders inside the test's tmp dir; no real account."""
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def report(cid, node, loss, ok=True):
    metrics = {K.LOSS: loss, K.POLICY_LOSS: loss - 0.01, K.FEDPROX_LOSS: 0.01,
               K.GRAD_NORM: 2.0 * loss, K.PARAM_UPDATE_NORM: 0.1, K.NUM_STEPS: 2,
               K.NUM_EXAMPLES: 16, K.DATASET_NAME: f"ds{cid}", K.PARAM_HASH: "ab" * 32}
    return ClientReport(cid, node, ok, metrics if ok else {}, None if ok else "boom",
                        16.0 if ok else 0.0)


def run_rounds(rundir, trackers, rounds=(0, 1, 2), resume_from=None):
    """Record real round files through the recorder; returns the recorder."""
    rec = RunRecorder(rundir, trackers=trackers)
    rec.start(engine="simulation", command="simulate", seed=0, rounds=max(rounds))
    for r in rounds:
        outcome = None if r == 0 else RoundOutcome(
            r, [report("0", 10, 1.0 / r), report("1", 11, 0.5 / r), report("2", 12, 0, ok=False)],
            True, None, 0.01 * r, 1e-4 / r)
        server_eval = {"datasets": {"so101_lift": 0.9 / (r + 1), "so101_push": 0.7 / (r + 1)},
                       "composite": 0.8 / (r + 1)}
        rec.record_round(r, outcome=outcome, server_eval=server_eval, seconds=1.5 + r)
    rec.finish("completed")
    return rec


def expected_scalars(rundir, r):
    """The scalars of round ``r`` as read back from its files on disk."""
    round_file = read_json(rundir.server_eval(r))
    clients = [read_json(p) for p in sorted(rundir.clients_dir.glob(f"*/round_{r}.json"))]
    return round_scalars(round_file, clients), round_file


def new_rundir(tmp_path, name="run"):
    rundir = RunDir.create(tmp_path / "outputs", name=name)
    rundir.update_run(status="running")
    return rundir


def test_round_scalars_names_and_skips_non_numbers():
    round_file = {"server_eval": {"datasets": {"a": 0.5}, "composite": 0.5},
                  "client_aggregated_training_metrics": {"loss_avg": 1.0,
                                                         "grad_norm_avg": math.nan},
                  "lr": 1e-4, "proximal_mu": 0.01, "seconds": 2.0, "aggregated": True}
    clients = [{K.CLIENT_ID: "7", "round": 1, "node_id": 3, K.LOSS: 0.25, "status": "ok",
                K.DATASET_NAME: "x"}]
    assert round_scalars(round_file, clients) == {
        "server/eval_loss/a": 0.5, "server/eval_loss/composite": 0.5, "clients/loss_avg": 1.0,
        "round/lr": 1e-4, "round/proximal_mu": 0.01, "round/seconds": 2.0,
        "client/7/loss": 0.25}


def test_tensorboard_events_hold_the_round_files_values(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rundir = new_rundir(tmp_path)
    run_rounds(rundir, [TensorBoardTracker(rundir.root / C.TENSORBOARD_DIR)])
    assert read_json(rundir.run_json)[K.RUN_TRACKING_KEY]["tensorboard"]["log_dir"] == \
        str(rundir.root / C.TENSORBOARD_DIR)
    acc = EventAccumulator(str(rundir.root / C.TENSORBOARD_DIR), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for r in (0, 1, 2):
        expected, round_file = expected_scalars(rundir, r)
        for tag, value in expected.items():
            events = {e.step: e.value for e in acc.Scalars(tag)}
            assert events[r] == pytest.approx(value, rel=1e-6), (tag, r)
    _, r1 = expected_scalars(rundir, 1)
    # the names docs/tracking.md promises, with the round file's values
    assert {e.step: e.value for e in acc.Scalars("server/eval_loss/composite")}[1] == \
        pytest.approx(r1["server_composite_eval_loss"])
    assert {e.step: e.value for e in acc.Scalars("server/eval_loss/so101_push")}[2] == \
        pytest.approx(0.7 / 3)
    assert {e.step: e.value for e in acc.Scalars("clients/loss_avg")}[2] == pytest.approx(0.375)
    assert {e.step: e.value for e in acc.Scalars("round/lr")}[2] == pytest.approx(5e-5)
    assert {e.step: e.value for e in acc.Scalars("round/proximal_mu")}[1] == pytest.approx(0.01)
    assert {e.step: e.value for e in acc.Scalars("round/seconds")}[2] == pytest.approx(3.5)
    assert {e.step: e.value for e in acc.Scalars("client/1/loss")}[1] == pytest.approx(0.5)
    assert {e.step: e.value for e in acc.Scalars("clients/num_failures")}[1] == 1
    assert "client/2/loss" not in tags  # the failed client reported no metrics


def read_offline_run(wandb_dir):
    """(run ids, {step: history row}) of every offline run under ``wandb_dir`` (wandb's reader)."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    ids, history = [], {}
    for path in sorted(wandb_dir.glob("offline-run-*/run-*.wandb")):
        ds = datastore.DataStore()
        ds.open_for_scan(str(path))
        while (data := ds.scan_data()) is not None:
            rec = pb.Record()
            rec.ParseFromString(data)
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                ids.append(rec.run.run_id)
            elif kind == "history":
                row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                       for i in rec.history.item}
                history[row["_step"]] = row
    return ids, history


def wandb_tracker(rundir, mode="offline"):
    cfg = load_config(preset="tiny", overrides=[f"tracking.wandb.mode={mode}",
                                                'tracking.wandb.tags=["ci"]'])
    trackers = build_trackers(cfg, rundir.root)
    assert [t.name for t in trackers] == ["wandb"]
    assert isinstance(trackers[0], WandbTracker)
    return trackers[0]


def test_wandb_offline_run_holds_the_metrics_and_resume_continues_its_id(tmp_path, capsys):
    rundir = new_rundir(tmp_path)
    run_rounds(rundir, [wandb_tracker(rundir)])
    info = read_json(rundir.run_json)[K.RUN_TRACKING_KEY]["wandb"]
    assert info[K.WANDB_MODE] == "offline" and K.WANDB_URL not in info
    assert info[K.WANDB_SYNC_COMMAND].startswith(f"wandb sync {rundir.root / C.WANDB_DIR}")
    ids, history = read_offline_run(rundir.root / C.WANDB_DIR)
    assert ids == [info[K.WANDB_ID]]
    for r in (0, 1, 2):
        expected, _ = expected_scalars(rundir, r)
        assert expected and {k: history[r][k] for k in expected} == pytest.approx(expected)

    # a resumed run (run.json keeps the id; resume.py sets "resume") writes to the same W&B run
    rundir.update_run(resume={"from_round": 1, "checkpoint": "x"})
    run_rounds(rundir, [wandb_tracker(rundir)], rounds=(2, 3))
    ids, _ = read_offline_run(rundir.root / C.WANDB_DIR)
    assert ids == [info[K.WANDB_ID], info[K.WANDB_ID]]
    assert read_json(rundir.run_json)[K.RUN_TRACKING_KEY]["wandb"][K.WANDB_ID] == info[K.WANDB_ID]


def test_wandb_online_without_credentials_or_network_goes_offline(monkeypatch):
    assert effective_mode("offline") == ("offline", None)
    mode, reason = effective_mode("online")
    assert mode == "offline" and "credentials" in reason
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    mode, reason = effective_mode("online")
    assert mode == "offline" and "cannot be reached" in reason and SECRET not in reason


def test_wandb_api_key_never_reaches_output_logs_or_files(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    rundir = new_rundir(tmp_path)
    with caplog.at_level("DEBUG"):
        run_rounds(rundir, [wandb_tracker(rundir, mode="online")])
    assert read_json(rundir.run_json)[K.RUN_TRACKING_KEY]["wandb"][K.WANDB_MODE] == "offline"
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err + caplog.text
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)
    leaked = [p for p in files if SECRET.encode() in p.read_bytes()]
    assert leaked == []


def test_model_card_links_the_wandb_run_only_when_online(tmp_path):
    rundir = new_rundir(tmp_path)
    url = "https://wandb.ai/team/zk0/runs/abc123"
    rundir.update_run(**{K.RUN_TRACKING_KEY: {"wandb": {K.WANDB_MODE: "online",
                                                        K.WANDB_URL: url}}})
    assert f"]({url})" in str(build_model_card(rundir.root, checkpoint_round=1))
    rundir.update_run(**{K.RUN_TRACKING_KEY: {"wandb": {K.WANDB_MODE: "offline"}}})
    assert "wandb.ai" not in str(build_model_card(rundir.root, checkpoint_round=1))


class _Broken:
    name = "broken"

    def start(self, run_record):
        return {}

    def log_round(self, server_round, round_record, client_records):
        raise RuntimeError("tracker down")

    def finish(self, status):
        raise AssertionError("a failed tracker is not called again")


def test_a_failing_tracker_is_dropped_and_the_files_are_still_written(tmp_path, caplog):
    rundir = new_rundir(tmp_path)
    rec = run_rounds(rundir, [_Broken()])
    assert rec.trackers == []
    assert "tracker broken failed in log_round" in caplog.text
    assert read_json(rundir.run_json)["status"] == "completed"
    assert read_json(rundir.server_eval(2))["server_composite_eval_loss"] == pytest.approx(0.8 / 3)


@pytest.mark.parametrize(("module", "setting"), [("tensorboard", "tracking.tensorboard=true"),
                                                 ("wandb", "tracking.wandb.mode=offline")])
def test_a_tracker_that_is_not_installed_exits_2_naming_the_extra(tmp_path, monkeypatch,
                                                                   module, setting):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["simulate", "--preset", "tiny", "--rounds", "1",
                                   "--set", setting, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "zk0cli[tracking]" in res.output and setting.split("=")[0] in res.output
    assert not out.exists()


def _normaliser_stats(bundle):
    for step in bundle.preprocessor.steps:
        if hasattr(step, "_tensor_stats") and step._tensor_stats:
            return {k: {n: t.numpy() for n, t in v.items()} for k, v in step._tensor_stats.items()}
    raise AssertionError("no normaliser step with statistics")


@pytest.mark.slow
def test_simulate_with_trackers_federated_stats_and_schedules(tmp_path):
    """One federation checks three things end to end through `zk0 simulate`: TensorBoard
    (the tracking issue's command) and W&B offline in the ServerApp hold the round files'
    values; the lr and mu schedules reach the clients; the federated statistics are the
    exact merge of the clients' sums and reach the checkpoint's processors. Also an early
    stop: 3 rounds planned, patience 2 with a min_delta no round can beat, so the run stops
    after round 2 (rounds 1 and 2 without a new best), completed."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    res = CliRunner().invoke(app, [
        "simulate", "--preset", "tiny", "--rounds", "3", "--clients", "2",
        "--set", "tracking.tensorboard=true", "--set", "tracking.wandb.mode=offline",
        "--set", "schedule.lr=\"cosine\"", "--set", "schedule.lr_min=0.0002",
        "--set", "schedule.mu=\"step\"", "--set", "schedule.mu_step_rounds=[2]",
        "--set", "schedule.mu_step_factor=0.5", "--set", "data.stats_image_frames=8",
        "--set", "federation.early_stop.enabled=true", "--set", "federation.early_stop.patience=2",
        "--set", "federation.early_stop.min_delta=100", "--out", str(out)])
    assert res.exit_code == 0, res.output

    # Early stop: completed after round 2 of 3, the initial model was the best.
    rd = RunDir(out)
    run = rd.run_record()
    assert run.status == "completed" and run.rounds_completed == 2 and run.rounds_planned == 3
    assert run.stop_reason is not None and "early stop at round 2" in run.stop_reason
    assert run.best_round == 0 and run.best_checkpoint is None
    assert "stopped early" in " ".join(res.output.split())
    assert rd.server_eval_rounds() == [0, 1, 2] and rd.latest_checkpoint() == rd.checkpoint(2)

    # Trackers: every scalar of every round file, at its round.
    printed = "".join(res.output.split())  # rich wraps long paths
    assert f"tensorboard--logdir{out / C.TENSORBOARD_DIR}" in printed
    wandb_info = read_json(out / "run.json")[K.RUN_TRACKING_KEY]["wandb"]
    assert "".join(wandb_info[K.WANDB_SYNC_COMMAND].split()) in printed
    ids, history = read_offline_run(out / C.WANDB_DIR)
    assert ids == [wandb_info[K.WANDB_ID]]
    rundir = RunDir.open(out)
    acc = EventAccumulator(str(out / C.TENSORBOARD_DIR), size_guidance={"scalars": 0})
    acc.Reload()
    for r in (0, 1, 2):
        expected, _ = expected_scalars(rundir, r)
        assert "server/eval_loss/composite" in expected
        for tag, value in expected.items():
            assert {e.step: e.value for e in acc.Scalars(tag)}[r] == pytest.approx(value), tag
        assert {k: history[r][k] for k in expected} == pytest.approx(expected)
    expected, _ = expected_scalars(rundir, 1)
    assert {f"client/{c}/loss" for c in ("0", "1")} <= set(expected)
    assert "clients/loss_avg" in expected and "round/lr" in expected

    # Schedules: cosine lr over the 3 planned rounds (1e-3, then halfway to 2e-4), mu
    # halved at round 2.
    r1, r2 = read_json(rundir.server_eval(1)), read_json(rundir.server_eval(2))
    assert (r1["lr"], r2["lr"]) == pytest.approx((1e-3, 6e-4))
    assert (r1["proximal_mu"], r2["proximal_mu"]) == pytest.approx((0.01, 0.005))
    assert all(c["fedprox_loss"] > 0 for c in r2["individual_client_training_metrics"])
    assert "statistics: merged 2 of 2 clients" in (rundir.root / "server.log").read_text()

    # Statistics: the checkpoint's processors carry the exact merge of both clients' sums.
    import numpy as np

    from zk0cli.core.config import validate_config
    from zk0cli.core.data import client_partitions, dataset_stats, load_metadata
    from zk0cli.core.policy import load_bundle
    from zk0cli.core.stats import compute_sums, merge_sums, to_lerobot_stats

    cfg = validate_config(read_json(rundir.config_json))
    parts = client_partitions(cfg)
    merged = to_lerobot_stats(merge_sums(
        compute_sums(p.ref, p.train_episodes, rename_map={}, image_frames=8) for p in parts))
    saved = _normaliser_stats(load_bundle(rundir.latest_checkpoint()))
    for key in ("observation.state", "action"):
        for n in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(saved[key][n], merged[key][n], rtol=1e-6, atol=1e-6)
    # ... which are neither client's own dataset statistics
    own = dataset_stats(load_metadata(parts[0].ref), {})["action"]["mean"]
    assert not np.allclose(saved["action"]["mean"], own, atol=1e-3)
