"""The round policy of a federation: when to evaluate, checkpoint, and give up.

The ServerApp's ``evaluate_fn`` (:class:`zk0cli.flower.server_app.RoundHook`) asks a
:class:`RoundPolicy` after every round; the rules live here, without Flower:

- evaluate every ``eval.frequency`` rounds and after the last one;
- checkpoint every ``checkpoint.interval`` rounds and after the last one, only when a
  round aggregated since the previous checkpoint;
- fail the run after ``federation.max_failed_rounds`` consecutive rounds without an
  aggregated update, or when the last round is reached and no round ever aggregated;
- before a checkpoint, require as many free bytes as the previous checkpoint takes;
- with ``federation.early_stop``, stop after ``patience`` evaluated rounds without a new
  best composite server loss (:class:`EarlyStopper`), checkpointing each new best and
  the round it stops at.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from zk0cli.core.config import RunConfig
from zk0cli.core.contract import REL_ROUND_FILES, ROUND
from zk0cli.core.strategy import RoundOutcome
from zk0cli.errors import FederationError

_FAILURES_HINT = f"See the {ROUND.failures} in {REL_ROUND_FILES}."


@dataclass
class RoundPolicy:
    """Per-run state of the round rules (one instance per ServerApp process).

    Attributes:
        config: The run configuration.
        round_offset: Rounds done before this process started (a resume); Flower counts
            from 1 again.
        failed_streak: Consecutive rounds without an aggregated update.
        aggregated_rounds: Rounds that aggregated (a resumed run starts at 1: its
            checkpoint did).
        changed_since_checkpoint: Whether the global model changed since the last
            checkpoint.
    """

    config: RunConfig
    round_offset: int = 0
    failed_streak: int = 0
    aggregated_rounds: int = 0
    changed_since_checkpoint: bool = False
    failure_causes: list[str] = field(default_factory=list)  # "round N: why", per failed round

    def __post_init__(self) -> None:
        if self.round_offset:
            self.aggregated_rounds = max(self.aggregated_rounds, 1)

    def run_round(self, flower_round: int) -> int | None:
        """The run's round for Flower's ``flower_round``; ``None`` when nothing is to do.

        Round 0 (the initial model) of a resumed run is already recorded.
        """
        if flower_round == 0 and self.round_offset > 0:
            return None
        return flower_round + self.round_offset

    def is_last(self, server_round: int) -> bool:
        """Whether ``server_round`` is the run's last round."""
        return server_round == self.config.federation.rounds

    def observe(self, server_round: int, *, aggregated: bool,
                outcome: RoundOutcome | None = None) -> None:
        """Record whether ``server_round`` aggregated a client update, and why not."""
        if aggregated:
            self.changed_since_checkpoint = True
            self.aggregated_rounds += 1
            self.failed_streak = 0
        elif server_round > 0:
            self.failed_streak += 1
            cause = no_aggregation_cause(outcome, self.config.federation.min_clients)
            self.failure_causes.append(f"round {server_round}: {cause}")

    def should_evaluate(self, server_round: int) -> bool:
        """Every ``eval.frequency`` rounds and after the last one."""
        return server_round % self.config.eval.frequency == 0 or self.is_last(server_round)

    def should_roll_out(self, server_round: int) -> bool:
        """``eval.closed_loop``: every ``every``-th evaluated round (0 included) and the last."""
        ev = self.config.eval
        if not ev.closed_loop.tasks:
            return False
        return server_round % (ev.frequency * ev.closed_loop.every) == 0 or \
            self.is_last(server_round)

    def should_checkpoint(self, server_round: int) -> bool:
        """Every ``checkpoint.interval`` rounds and after the last, if the model changed."""
        return server_round > 0 and self.changed_since_checkpoint and (
            server_round % self.config.checkpoint.interval == 0 or self.is_last(server_round))

    def checkpointed(self) -> None:
        """Record that the current global model is saved."""
        self.changed_since_checkpoint = False

    def check_failures(self, server_round: int, outcome: RoundOutcome | None = None) -> None:
        """Give up on a run that keeps failing.

        Args:
            server_round: The run's round just recorded.
            outcome: That round's outcome (names the cause in the error).

        Raises:
            FederationError: ``federation.max_failed_rounds`` consecutive failed rounds,
                or the last round passed and no round ever aggregated.
        """
        fed = self.config.federation
        if self.failed_streak >= fed.max_failed_rounds:
            causes = "; ".join(self.failure_causes[-self.failed_streak:])
            raise FederationError(
                f"{self.failed_streak} consecutive rounds without a new global model "
                f"(federation.max_failed_rounds = {fed.max_failed_rounds}): {causes}. The last "
                f"global model is kept. {_FAILURES_HINT}"
            )
        if self.is_last(server_round) and self.aggregated_rounds == 0:
            raise FederationError(
                f"no round aggregated a client update in {fed.rounds} round(s): "
                f"{no_aggregation_cause(outcome, fed.min_clients)}. {_FAILURES_HINT}"
            )


def no_aggregation_cause(outcome: RoundOutcome | None, min_clients: int) -> str:
    """Why a round produced no new global model, in words, from its :class:`RoundOutcome`.

    Distinguishes clients that failed (each one's reason) from ``federation.min_clients``
    not being met (too few nodes connected, or too few valid replies).

    Args:
        outcome: The round's outcome, or ``None`` when no message was sent.
        min_clients: ``federation.min_clients``.
    """
    if outcome is None:
        return (f"no client was asked to train (fewer than federation.min_clients = "
                f"{min_clients} nodes connected)")
    failures = list(outcome.failures)
    ok = len(outcome.ok_reports)
    if failures and ok == 0:
        reasons = "; ".join(f"client {r.client_id}: {r.reason}" for r in failures[:3])
        more = f" (+{len(failures) - 3} more)" if len(failures) > 3 else ""
        return f"every client failed ({reasons}{more})"
    if not outcome.reports:
        note = outcome.note or "no replies"
        return (f"federation.min_clients = {min_clients} was not met ({note}); no client "
                "failed")
    return outcome.note or f"only {ok} valid replies (federation.min_clients = {min_clients})"


def checkpoint_space_needed(previous: Path | None) -> int:
    """Free bytes to require before writing a checkpoint: the size of the previous one.

    Args:
        previous: The newest complete checkpoint directory, or ``None``.

    Returns:
        Bytes (0 without a previous checkpoint).
    """
    if previous is None:
        return 0
    return sum(p.stat().st_size for p in previous.rglob("*") if p.is_file())


@dataclass
class EarlyStopper:
    """Patience on the composite server loss (``federation.early_stop``).

    Every evaluated round (round 0, the initial model, included) is observed in round
    order. A loss counts as a new best when it is finite and below the best so far by more
    than ``min_delta``; after ``patience`` evaluated rounds in a row without one, the run
    stops. Rounds without a composite loss (nothing evaluated) are not counted.

    Attributes:
        patience: Evaluated rounds without improvement before stopping (>= 1).
        min_delta: Improvement (absolute, loss units) that counts as a new best (>= 0).
        best_round: Round of the best loss so far (``None`` before any evaluation).
        best_loss: The best loss so far (``inf`` before any).
        stale: Evaluated rounds since the best one.
    """

    patience: int
    min_delta: float = 0.0
    best_round: int | None = None
    best_loss: float = math.inf
    stale: int = 0

    @classmethod
    def replay(cls, patience: int, min_delta: float,
               history: Iterable[tuple[int, float | None]]) -> EarlyStopper:
        """A stopper that has observed ``history`` (round, composite loss), e.g. on resume."""
        stopper = cls(patience, min_delta)
        for server_round, loss in sorted(history, key=lambda rl: rl[0]):
            stopper.observe(server_round, loss)
        return stopper

    def observe(self, server_round: int, loss: float | None) -> bool:
        """Take round ``server_round``'s composite loss; return whether it is a new best."""
        if loss is None:
            return False
        if math.isfinite(loss) and (self.best_round is None
                                    or loss < self.best_loss - self.min_delta):
            self.best_round, self.best_loss, self.stale = server_round, float(loss), 0
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` evaluated rounds passed without a new best."""
        return self.stale >= self.patience

    def reason(self, server_round: int) -> str:
        """Why the run stopped at ``server_round``, in words (for run.json)."""
        return (f"early stop at round {server_round}: the composite server loss did not "
                f"improve by more than federation.early_stop.min_delta = {self.min_delta:g} "
                f"for {self.stale} evaluated round(s) (patience {self.patience}); best "
                f"{self.best_loss:.4f} at round {self.best_round}")
