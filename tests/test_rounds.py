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
