"""Per-round, server-side schedules of the learning rate and the FedProx coefficient mu.

The server computes each round's values before it samples clients and sends them in the
train config (``lr`` and Flower's ``proximal-mu``); both are recorded in every round file.
Rounds are 1-based. All schedules are pure functions of the round number and, for the
adaptive mu, of the recorded client losses of earlier rounds, so a resumed run computes
the same values.

Learning rate (``schedule.lr``), from the peak ``training.lr``:

* ``constant``: ``lr`` every round;
* ``cosine``: ``lr_min + ½(lr − lr_min)(1 + cos(π·(r−1)/(R−1)))`` — ``lr`` in round 1,
  ``lr_min`` in the last round ``R``;
* ``cosine_restarts``: SGDR (Loshchilov & Hutter, 2017), the values of PyTorch's
  ``CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)`` stepped once per round: cycles
  of ``T_0``, ``T_0·T_mult``, ... rounds, each from ``lr`` down towards ``lr_min``.

mu (``schedule.mu``), from ``federation.proximal_mu``:

* ``constant``: ``proximal_mu`` every round;
* ``step``: multiplied by ``mu_step_factor`` at each round listed in ``mu_step_rounds``
  (from that round on);
* ``adaptive``: after each round with at least two aggregated clients, multiplied by
  ``mu_adaptive_factor`` when the population std of the clients' policy losses exceeds
  ``mu_adaptive_threshold`` (clients drift apart: pull them to the global model) and
  divided by it otherwise, clipped to ``[mu_min, mu_max]``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zk0cli.core.config import RunConfig, ScheduleConfig

LossHistory = Mapping[int, Sequence[float]]
"""Round -> policy losses of the clients aggregated in that round."""


def constant_lr(lr: float) -> Callable[[int], float]:
    """``lr`` in every round."""
    return lambda server_round: float(lr)


def cosine_anneal(high: float, low: float, progress: float) -> float:
    """``low + ½(high − low)(1 + cos(π·progress))``: ``high`` at 0, ``low`` at 1.

    The cosine annealing of Loshchilov & Hutter, *SGDR* (ICLR 2017), eq. 5.

    Args:
        high: Value at ``progress`` = 0.
        low: Value at ``progress`` = 1.
        progress: Fraction of the annealing done, in [0, 1].
    """
    return low + 0.5 * (high - low) * (1 + math.cos(math.pi * progress))


def cosine_lr(lr: float, *, lr_min: float, rounds: int) -> Callable[[int], float]:
    """Cosine decay from ``lr`` (round 1) to ``lr_min`` (round ``rounds``).

    Args:
        lr: Peak learning rate.
        lr_min: Final learning rate.
        rounds: Total rounds ``R``; rounds past ``R`` stay at ``lr_min``.
    """
    span = max(1, rounds - 1)

    def f(server_round: int) -> float:
        progress = min(1.0, max(0, server_round - 1) / span)
        return cosine_anneal(lr, lr_min, progress)

    return f


def cosine_restarts_lr(lr: float, *, lr_min: float, t0: int, t_mult: int
                       ) -> Callable[[int], float]:
    """Cosine annealing with warm restarts (SGDR), one scheduler step per round.

    Args:
        lr: Learning rate at the start of every cycle.
        lr_min: Floor (``eta_min``).
        t0: Rounds in the first cycle (``T_0`` ≥ 1).
        t_mult: Growth of the cycle length (``T_mult`` ≥ 1).
    """

    def f(server_round: int) -> float:
        t_cur, t_i = max(0, server_round - 1), t0
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= t_mult
        return cosine_anneal(lr, lr_min, t_cur / t_i)

    return f


def step_mu(mu: float, *, at_rounds: Sequence[int], factor: float) -> Callable[[int], float]:
    """``mu · factor^k`` where ``k`` is how many of ``at_rounds`` are ≤ the round."""
    marks = sorted(at_rounds)
    return lambda server_round: mu * factor ** sum(1 for m in marks if m <= server_round)


def adaptive_mu(
    mu: float, *, threshold: float, factor: float, mu_min: float, mu_max: float
) -> Callable[[int, LossHistory], float]:
    """A mu that reacts to the spread of the clients' losses in earlier rounds.

    Args:
        mu: Value in round 1.
        threshold: Population std of client policy losses above which mu grows.
        factor: Multiplier (> 1) up, divisor down.
        mu_min: Lower bound.
        mu_max: Upper bound.

    Returns:
        ``f(server_round, history)``: the round's mu from the losses of rounds
        ``1 .. server_round − 1`` (rounds with fewer than two losses leave mu unchanged).
    """

    def f(server_round: int, history: LossHistory) -> float:
        value = min(max(mu, mu_min), mu_max)
        for r in range(1, server_round):
            losses = [x for x in history.get(r, ()) if math.isfinite(x)]
            if len(losses) < 2:
                continue
            spread = statistics.pstdev(losses)
            value = value * factor if spread > threshold else value / factor
            value = min(max(value, mu_min), mu_max)
        return value

    return f


def lr_schedule(config: RunConfig) -> Callable[[int], float]:
    """The configured per-round learning rate (peak ``training.lr``)."""
    s: ScheduleConfig = config.schedule
    lr = config.training.lr
    if s.lr == "cosine":
        return cosine_lr(lr, lr_min=s.lr_min, rounds=config.federation.rounds)
    if s.lr == "cosine_restarts":
        return cosine_restarts_lr(lr, lr_min=s.lr_min, t0=s.lr_t0, t_mult=s.lr_t_mult)
    return constant_lr(lr)


def mu_schedule(config: RunConfig) -> Callable[[int, LossHistory], float]:
    """The configured per-round FedProx mu (from ``federation.proximal_mu``).

    Returns:
        ``f(server_round, history)``; only ``adaptive`` reads ``history``.
    """
    s: ScheduleConfig = config.schedule
    mu = config.federation.proximal_mu
    if s.mu == "adaptive":
        return adaptive_mu(mu, threshold=s.mu_adaptive_threshold, factor=s.mu_adaptive_factor,
                           mu_min=s.mu_min, mu_max=s.mu_max)
    if s.mu == "step":
        fixed = step_mu(mu, at_rounds=s.mu_step_rounds, factor=s.mu_step_factor)
    else:
        fixed = constant_lr(mu)
    return lambda server_round, history: fixed(server_round)
