"""The round policy: evaluation and checkpoint cadence, giving up on failing runs."""

from __future__ import annotations

import pytest

from zk0cli.core.config import load_config
from zk0cli.core.rounds import RoundPolicy, checkpoint_space_needed
from zk0cli.errors import FederationError


def _policy(**sets: object) -> RoundPolicy:
    cfg = load_config(preset="tiny", overrides=[f"{k}={v}" for k, v in sets.items()])
    return RoundPolicy(cfg)


def test_cadence_of_evaluation_and_checkpoints():
    p = _policy(**{"federation.rounds": 5, "eval.frequency": 2, "checkpoint.interval": 3})
    assert [r for r in range(6) if p.should_evaluate(r)] == [0, 2, 4, 5]
    assert not p.should_checkpoint(3)  # nothing aggregated yet
    p.observe(3, aggregated=True)
    assert p.should_checkpoint(3) and not p.should_checkpoint(4)
    p.checkpointed()
    assert not p.should_checkpoint(5)  # the model did not change since
    p.observe(5, aggregated=True)
    assert p.should_checkpoint(5)  # the last round


def test_failed_streak_ends_the_run():
    p = _policy(**{"federation.rounds": 10, "federation.max_failed_rounds": 2})
    p.observe(1, aggregated=True)
    p.observe(2, aggregated=False)
    p.check_failures(2)
    p.observe(3, aggregated=False)
    with pytest.raises(FederationError, match="2 consecutive rounds"):
        p.check_failures(3)


def test_a_run_where_nothing_aggregated_fails_at_its_last_round():
    p = _policy(**{"federation.rounds": 2, "federation.max_failed_rounds": 5})
    for r in (1, 2):
        p.observe(r, aggregated=False)
    with pytest.raises(FederationError, match="no round aggregated"):
        p.check_failures(2)


def test_a_resumed_run_skips_round_0_and_counts_its_checkpoint():
    cfg = load_config(preset="tiny", overrides=["federation.rounds=4"])
    p = RoundPolicy(cfg, round_offset=2)
    assert p.run_round(0) is None and p.run_round(1) == 3
    p.observe(3, aggregated=False)
    p.observe(4, aggregated=False)
    p.failed_streak = 0
    p.check_failures(4)  # the checkpoint's round aggregated


def test_checkpoint_space_is_the_previous_checkpoint_size(tmp_path):
    assert checkpoint_space_needed(None) == 0
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 5)
    assert checkpoint_space_needed(tmp_path) == 15


def test_server_hook_records_and_checkpoints_through_the_contract(tmp_path, monkeypatch):
    """The ServerApp's evaluate_fn writes typed records and a verified checkpoint."""
    from zk0cli.core import contract as C
    from zk0cli.core import policy
    from zk0cli.core.checkpoint import verify_checkpoint
    from zk0cli.core.recorder import RunRecorder
    from zk0cli.core.rundir import RunDir, read_json
    from zk0cli.core.strategy import ClientReport, RoundOutcome
    from zk0cli.core.transport import to_array_record
    from zk0cli.flower.server_app import RoundHook

    cfg = load_config(preset="tiny", overrides=["federation.rounds=2", "eval.frequency=1",
                                                "checkpoint.interval=1"])
    rd = RunDir.create(tmp_path, name="run")
    rd.config_json.write_text(cfg.model_dump_json(), encoding="utf-8")
    monkeypatch.setattr(policy, "save_bundle",
                        lambda bundle, d: (d / C.WEIGHTS_FILE).write_bytes(b"w"))

    class Evaluator:
        bundle = None
        seen = 0

        def set_global(self, state):
            self.seen += 1

        def evaluate(self):
            return C.ServerEval(datasets={"lift": 0.5}, composite=0.5)

    class Strategy:
        round_offset = 0
        outcomes = {1: RoundOutcome(1, [ClientReport("0", 7, True, {"policy_loss": 0.4},
                                                     weight=4)], True, None, 0.1, 1e-4),
                    2: RoundOutcome(2, [ClientReport("0", 7, False, {}, reason="boom")],
                                    False, "no valid replies", 0.1, 1e-4)}

    import torch

    arrays = to_array_record({"w": torch.zeros(2)}, transport_dtype="float32")
    hook = RoundHook(cfg, rd, Evaluator(), Strategy(), RunRecorder(rd))
    assert hook(0, arrays) is not None and hook(1, arrays) is not None
    assert hook(2, arrays) is not None
    r1 = C.ServerRoundRecord.model_validate(read_json(rd.server_eval(1)))
    assert r1.aggregated and r1.individual_client_training_metrics[0].policy_loss == 0.4
    r2 = C.ServerRoundRecord.model_validate(read_json(rd.server_eval(2)))
    assert not r2.aggregated and r2.failures[0].reason == "boom"
    assert rd.latest_checkpoint() == rd.checkpoint(1)  # round 2 changed nothing
    verify_checkpoint(rd.checkpoint(1))
    metrics = C.CheckpointMetrics.model_validate(
        read_json(rd.checkpoint(1) / C.METRICS_JSON))
    assert metrics.round == 1 and metrics.server_eval.composite == 0.5
    assert rd.run_record().rounds_completed == 2


def test_early_stopper_counts_evaluated_rounds_without_a_new_best():
    from zk0cli.core.rounds import EarlyStopper

    s = EarlyStopper(patience=2, min_delta=0.01)
    seen = [(0, 2.0), (1, 1.9), (2, None), (3, 1.895), (4, float("nan")), (5, 1.5)]
    assert [s.observe(r, v) for r, v in seen[:5]] == [True, True, False, False, False]
    # round 2 was not evaluated; 1.895 is within min_delta of 1.9, NaN is no best
    assert (s.best_round, s.best_loss, s.stale, s.should_stop) == (1, 1.9, 2, True)
    assert "round 4" in s.reason(4) and "best 1.9000 at round 1" in s.reason(4)
    again = EarlyStopper.replay(2, 0.01, reversed(seen[:5]))  # resume: same state
    assert (again.best_round, again.best_loss, again.stale) == (1, 1.9, 2)
    assert EarlyStopper(patience=1).observe(0, float("inf")) is False


def test_early_stop_is_validated():
    from zk0cli.errors import ConfigError

    cfg = load_config(preset="tiny", overrides=["federation.early_stop.enabled=true"])
    assert cfg.federation.early_stop.patience == 3 and cfg.federation.early_stop.min_delta == 0
    assert not load_config(preset="tiny").federation.early_stop.enabled  # off by default
    with pytest.raises(ConfigError, match="patience"):
        load_config(preset="tiny", overrides=["federation.early_stop.patience=0"])
    with pytest.raises(ConfigError, match="min_delta"):
        load_config(preset="tiny", overrides=["federation.early_stop.min_delta=-1"])
    with pytest.raises(ConfigError, match="needs a server loss"):
        load_config(preset="tiny", overrides=["federation.early_stop.enabled=true",
                                              "data.eval=[]", "data.heldout_episodes=0"])


def test_server_hook_stops_early_keeping_best_and_final_checkpoints(tmp_path, monkeypatch):
    """Patience 2: best at round 2 (checkpointed off the interval), stop after round 4."""
    import torch

    from zk0cli.core import contract as C
    from zk0cli.core import policy
    from zk0cli.core.recorder import RunRecorder
    from zk0cli.core.rundir import RunDir
    from zk0cli.core.strategy import ClientReport, RoundOutcome
    from zk0cli.core.transport import to_array_record
    from zk0cli.flower.server_app import EarlyStop, RoundHook

    cfg = load_config(preset="tiny", overrides=[
        "federation.rounds=8", "checkpoint.interval=5", "federation.early_stop.enabled=true",
        "federation.early_stop.patience=2", "federation.early_stop.min_delta=0.01"])
    rd = RunDir.create(tmp_path, name="run")
    rd.config_json.write_text(cfg.model_dump_json(), encoding="utf-8")
    monkeypatch.setattr(policy, "save_bundle",
                        lambda bundle, d: (d / C.WEIGHTS_FILE).write_bytes(b"w"))
    losses = iter([2.0, 1.8, 1.5, 1.495, 1.6])

    class Evaluator:
        bundle = None

        def set_global(self, state):
            pass

        def evaluate(self):
            loss = next(losses)
            return C.ServerEval(datasets={"lift": loss}, composite=loss)

    class Strategy:
        round_offset = 0
        outcomes = {r: RoundOutcome(r, [ClientReport("0", 7, True, {"policy_loss": 0.4},
                                                     weight=4)], True, None, 0.1, 1e-4)
                    for r in range(1, 9)}

    arrays = to_array_record({"w": torch.zeros(2)}, transport_dtype="float32")
    hook = RoundHook(cfg, rd, Evaluator(), Strategy(), RunRecorder(rd))
    for r in range(4):
        assert hook(r, arrays) is not None
    with pytest.raises(EarlyStop) as info:
        hook(4, arrays)
    assert info.value.server_round == 4
    run = rd.run_record()
    assert run.best_round == 2 and run.best_checkpoint == "models/checkpoint_round_2"
    assert run.stop_reason is not None and "round 4" in run.stop_reason
    assert "best 1.5000 at round 2" in run.stop_reason
    # round 1 and 2 were new bests, round 4 the last: each checkpointed; 3 was not
    assert rd.checkpoint_rounds() == [1, 2, 4] and rd.latest_checkpoint() == rd.checkpoint(4)
    assert run.rounds_completed == 4
