"""zk0's FedProx server strategy: Flower's ``FedProx`` with checked, streamed aggregation.

Flower's :class:`~flwr.serverapp.strategy.FedProx` only adds ``proximal-mu`` to each
round's train config; the client must add the proximal term (mu/2)·‖w − w_global‖²
itself (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020) —
zk0's client trainer does. This subclass overrides only what differs:

* ``configure_train`` also sends the round's learning rate and step count, and waits at
  most ``node_wait_timeout_s`` for ``min_available_nodes`` to be connected (Flower's
  default waits forever, e.g. after a SuperNode died): after the timeout it samples from
  the nodes that are connected, or, with fewer than ``min_train_nodes``, sends nothing and
  the round is recorded empty ("waiting for N nodes, M connected after T s");
* ``aggregate_train`` reads every reply on its own, drops the ones that report a
  failure or whose tensors fail the name/shape/dtype/finiteness checks (recording the
  client and the reason), aggregates the rest as a running ``num-examples``-weighted
  mean (:class:`~zk0cli.core.transport.WeightedMean`), and rolls back to the previous
  global model if the mean is not finite. Flower's default would crash the ServerApp on
  inconsistent replies and hold every reply in memory. Replies are checked as they
  arrive and their tensors parked on disk, then summed in a fixed order (by client id)
  so the model does not depend on arrival order (:mod:`zk0cli.core.aggregation`); with
  :class:`~zk0cli.flower.streaming.StreamingGrid` the server holds one reply at a time.

With ``privacy.mode = "central"`` (:mod:`zk0cli.core.privacy`) the replies' updates are
clipped again against the global model, averaged with equal weights, and the mean gets the
seeded Gaussian noise before the server optimizer (if any) steps on it; each released round
is charged to the accountant.

Each round's outcome is kept in :attr:`Zk0FedProx.outcomes` for the run recorder.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import TYPE_CHECKING, Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedProx

from zk0cli import constants as K
from zk0cli.core.aggregation import SpilledReplies, fixed_order_mean
from zk0cli.core.contract import (
    AGG_NUM_CLIENTS,
    AGG_NUM_EXAMPLES,
    AGG_NUM_FAILURES,
    avg_key,
    std_key,
)
from zk0cli.core.server_opt import ServerOptimizer
from zk0cli.core.transport import (
    TensorSpec,
    TransportDtype,
    from_array_record,
    tensor_problems,
    to_array_record,
)
from zk0cli.log import logger

if TYPE_CHECKING:
    from flwr.serverapp import Grid

    from zk0cli.core.privacy import ServerPrivacy

# Client metrics averaged into the round's aggregated metrics (name -> key prefix).
AGGREGATED_METRICS: tuple[str, ...] = (
    K.LOSS,
    K.POLICY_LOSS,
    K.FEDPROX_LOSS,
    K.GRAD_NORM,
    K.PARAM_UPDATE_NORM,
)


@dataclass
class ClientReport:
    """What one client's reply to a train message amounted to.

    Attributes:
        client_id: The client's id (partition id in simulation, node config otherwise).
        node_id: Flower node id of the SuperNode.
        ok: Whether the reply was used for aggregation.
        metrics: Numbers and strings the client reported (``loss``, ``dataset_name``...).
        reason: Why the reply was excluded (``None`` when ``ok``).
        weight: ``num-examples`` used as its aggregation weight.
    """

    client_id: str
    node_id: int
    ok: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    weight: float = 0.0


@dataclass
class RoundOutcome:
    """The server's view of one training round.

    Attributes:
        server_round: Round number (1-based).
        reports: One entry per reply (and per missing reply, as a failure).
        aggregated: Whether a new global model came out of the round.
        note: Why not, when it did not.
        proximal_mu: The mu sent to clients.
        lr: The learning rate sent to clients.
        privacy: The round's differential-privacy record (``RoundPrivacy`` fields), or
            ``None`` without DP.
    """

    server_round: int
    reports: list[ClientReport]
    aggregated: bool
    note: str | None
    proximal_mu: float
    lr: float
    privacy: dict[str, Any] | None = None

    @property
    def ok_reports(self) -> list[ClientReport]:
        """Reports that were aggregated."""
        return [r for r in self.reports if r.ok]

    @property
    def failures(self) -> list[ClientReport]:
        """Reports that were excluded."""
        return [r for r in self.reports if not r.ok]


def aggregate_client_metrics(reports: Iterable[ClientReport]) -> dict[str, float | int]:
    """Mean and population std of each client metric over the aggregated replies.

    Returns:
        ``{"num_clients", "num_failures", "num_examples", "<metric>_avg", "<metric>_std"}``
        for each metric in :data:`AGGREGATED_METRICS`; averages are unweighted over
        clients (NaN when no client reported the metric).
    """
    reports = list(reports)
    ok = [r for r in reports if r.ok]
    out: dict[str, float | int] = {
        AGG_NUM_CLIENTS: len(ok),
        AGG_NUM_FAILURES: len(reports) - len(ok),
        AGG_NUM_EXAMPLES: int(sum(r.weight for r in ok)),
    }
    for name in AGGREGATED_METRICS:
        values = [float(r.metrics[name]) for r in ok if name in r.metrics]
        out[avg_key(name)] = statistics.fmean(values) if values else math.nan
        out[std_key(name)] = statistics.pstdev(values) if values else math.nan
    return out


def read_train_reply(
    msg: Message,
    expected: Mapping[str, TensorSpec],
    *,
    node_id: int | None = None,
    known_client_id: str | None = None,
) -> tuple[ClientReport, dict[str, Any] | None]:
    """Check one train reply; return its report and, when usable, its tensors.

    A reply is excluded when Flower reports an error for it, when the client reported
    a failure (``failed`` = 1 with an ``error``), when ``num-examples`` is missing or
    not positive, or when its tensors fail :func:`~zk0cli.core.transport.tensor_problems`.

    Args:
        msg: The reply.
        expected: Specs of the trainable tensors.
        node_id: The node the original message went to (error replies that Flower
            generates for a dead node come from the SuperLink, not from that node).
        known_client_id: The client id that node reported in an earlier round.
    """
    node_id = int(msg.metadata.src_node_id) if node_id is None else node_id
    if msg.has_error():
        reason = f"Flower error {msg.error.code}: {msg.error.reason}"
        cid = known_client_id or str(node_id)
        return ClientReport(cid, node_id, False, reason=reason), None
    content = msg.content
    info = content.config_records.get(K.INFO_KEY, ConfigRecord())
    metrics_rec = content.metric_records.get(K.METRICS_KEY, MetricRecord())
    metrics: dict[str, Any] = {k: v for k, v in metrics_rec.items()}
    metrics.update({k: v for k, v in info.items() if k != K.ERROR})
    client_id = str(info.get(K.CLIENT_ID, known_client_id or node_id))
    report = ClientReport(client_id, node_id, False, metrics=metrics)
    if metrics.get(K.FAILED):
        report.reason = str(info.get(K.ERROR, "client reported a failure without a reason"))
        return report, None
    weight = metrics.get(K.NUM_EXAMPLES_KEY)
    if not isinstance(weight, int | float) or not weight > 0 or not math.isfinite(weight):
        report.reason = f"{K.NUM_EXAMPLES_KEY} must be a positive number, got {weight!r}"
        return report, None
    arrays = content.array_records.get(K.ARRAYS_KEY)
    if arrays is None:
        report.reason = f"reply has no ArrayRecord {K.ARRAYS_KEY!r}"
        return report, None
    try:
        tensors = from_array_record(arrays)
    except Exception as err:  # an undecodable record is the client's fault, not ours
        report.reason = f"undecodable arrays: {err}"
        return report, None
    problems = tensor_problems(tensors, expected)
    if problems:
        report.reason = "; ".join(problems)
        return report, None
    report.ok, report.weight = True, float(weight)
    return report, tensors


class Zk0FedProx(FedProx):
    """FedProx with per-reply validation, streaming aggregation and round records.

    Args:
        expected: Names, shapes and dtypes of the trainable tensors every reply must hold.
        proximal_mu: FedProx mu sent to clients (0 gives FedAvg; Flower warns then).
        lr_for_round: Learning rate to send in a round (``server_round -> lr``).
        mu_for_round: mu to send in a round, from the clients' policy losses of earlier
            rounds (``(server_round, {round: [loss, ...]}) -> mu``,
            :mod:`zk0cli.core.schedules`); ``None`` keeps ``proximal_mu``.
        steps: Local optimizer steps per client per round.
        fraction_train: Fraction of connected nodes sampled per round.
        min_train_nodes: Minimum nodes sampled per round.
        min_available_nodes: Nodes that must be connected before a round starts.
        node_wait_timeout_s: Seconds to wait for ``min_available_nodes`` before sampling
            from the connected nodes or skipping the round; ``None`` waits forever.
        transport_dtype: Wire dtype of the global tensors sent to clients (see
            :func:`~zk0cli.core.transport.to_array_record`); replies are decoded whatever
            dtype they travelled in.
        round_offset: Rounds done before this process started (a resume); Flower counts
            from 1 again, the run's rounds continue.
        prior_losses: Round -> clients' policy losses recorded before a resume, so an
            adaptive mu schedule continues where it was.
        server_optimizer: Server optimizer stepping on the round's mean (``None``: the
            mean is the next global model).
        privacy: Central differential privacy (:class:`~zk0cli.core.privacy.ServerPrivacy`):
            replies are clipped, averaged with equal weights and noised; ``None``: off.
    """

    def __init__(
        self,
        *,
        expected: Mapping[str, TensorSpec],
        proximal_mu: float,
        lr_for_round: Callable[[int], float],
        steps: int,
        fraction_train: float = 1.0,
        min_train_nodes: int = 1,
        min_available_nodes: int = 1,
        node_wait_timeout_s: float | None = None,
        transport_dtype: TransportDtype = "float32",
        mu_for_round: Callable[[int, Mapping[int, list[float]]], float] | None = None,
        round_offset: int = 0,
        prior_losses: Mapping[int, list[float]] | None = None,
        server_optimizer: ServerOptimizer | None = None,
        privacy: ServerPrivacy | None = None,
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=0.0,  # evaluation is server-side (evaluate_fn)
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=0,
            min_available_nodes=min_available_nodes,
            weighted_by_key=K.NUM_EXAMPLES_KEY,
            arrayrecord_key=K.ARRAYS_KEY,
            configrecord_key=K.CONFIG_KEY,
            proximal_mu=proximal_mu,
        )
        self.expected = dict(expected)
        self.transport_dtype: TransportDtype = transport_dtype
        self.lr_for_round = lr_for_round
        self.mu_for_round = mu_for_round
        self.steps = steps
        self.outcomes: dict[int, RoundOutcome] = {}
        self.round_offset = round_offset  # rounds done before this process started (resume)
        # clients' policy losses of the rounds recorded before a resume (adaptive mu)
        self.prior_losses: dict[int, list[float]] = dict(prior_losses or {})
        self._sent: dict[int, list[Message]] = {}
        self._client_ids: dict[int, str] = {}  # node id -> client id it reported
        self.node_wait_timeout_s = node_wait_timeout_s
        self._wait_notes: dict[int, str] = {}
        self.server_optimizer = server_optimizer
        self._global: dict[str, Any] | None = None  # the arrays sent this round
        self.privacy = privacy
        self._sampled: dict[int, int] = {}  # round -> train messages sent (DP accounting)
        self._server_clipped = 0  # replies of the current round the server scaled down

    def summary(self) -> None:
        """Log the strategy's settings (Flower's summary plus zk0's)."""
        logger.info("zk0 FedProx: %d trainable tensors, %d steps per round",
                    len(self.expected), self.steps)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Add the round's lr and steps to the train config, then defer to FedProx."""
        server_round += self.round_offset  # Flower counts from 1 again after a resume
        config[K.ROUND_KEY] = server_round
        if self.mu_for_round is not None:  # FedProx sends self.proximal_mu
            self.proximal_mu = float(self.mu_for_round(server_round, self.loss_history()))
        config[K.LR_KEY] = float(self.lr_for_round(server_round))
        config[K.STEPS_KEY] = int(self.steps)
        if self.privacy is not None:  # sites check it against their own max_epsilon
            config[K.DP_EPSILON_KEY] = float(
                self.privacy.accountant.projected(self.privacy.planned_sample))
        self._remember_global(arrays)
        if self.node_wait_timeout_s is None:
            messages = list(super().configure_train(server_round, arrays, config, grid))
        else:
            messages = self._configure_train_bounded(server_round, arrays, config, grid)
        self._sent[server_round] = messages  # Flower sets their message ids when sending
        self._sampled[server_round] = len(messages)
        return messages

    def _remember_global(self, arrays: ArrayRecord) -> None:
        """Keep the global model of this round (the server optimizer's ``x``)."""
        if self.server_optimizer is not None or self.privacy is not None:
            self._global = from_array_record(arrays)

    def _server_update(self, mean: dict[str, Any]) -> dict[str, Any]:
        """The next global model: the mean itself, or the server optimizer's step on it."""
        if self.server_optimizer is None or self._global is None:
            return mean
        return self.server_optimizer.step(self._global, mean)

    def loss_history(self) -> dict[int, list[float]]:
        """Round -> policy losses of the clients aggregated in that round.

        Includes :attr:`prior_losses` (rounds recorded before a resume), so an adaptive mu
        schedule continues where it was.
        """
        current = {r: [float(c.metrics[K.POLICY_LOSS]) for c in o.ok_reports
                       if K.POLICY_LOSS in c.metrics] for r, o in self.outcomes.items()}
        return {**self.prior_losses, **current}

    def _configure_train_bounded(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """FedProx's configure_train over the nodes connected after at most the timeout."""
        timeout = float(self.node_wait_timeout_s or 0.0)
        need = self.min_available_nodes
        node_ids = wait_for_nodes(grid, need, timeout_s=timeout)
        if len(node_ids) < self.min_train_nodes:
            note = (f"waiting for {need} nodes, {len(node_ids)} connected after {timeout:g} s; "
                    "nothing sent, previous global model kept")
            self._wait_notes[server_round] = note
            logger.log(WARNING, "round %s: %s", server_round, note)
            return []
        # Sample from this snapshot: Flower's sample_nodes would loop forever if a node
        # left between our wait and its own count.
        saved = self.min_available_nodes
        self.min_available_nodes = min(saved, len(node_ids))
        try:
            return list(super().configure_train(server_round, arrays, config,
                                                _NodeSnapshot(grid, node_ids)))  # type: ignore[arg-type]
        finally:
            self.min_available_nodes = saved

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the valid replies; record every excluded one with its reason.

        Replies are read as they arrive (``replies`` may be a lazy iterator, e.g.
        :class:`~zk0cli.flower.streaming.StreamingGrid`'s): each is checked, its tensors
        parked on disk and the reply dropped; the mean is then summed in a fixed order
        (:meth:`weighted_mean`), so at most one reply is decoded in memory at a time.

        Returns:
            The new global arrays and aggregated metrics, or ``(None, None)`` when fewer
            than ``min_train_nodes`` (``federation.min_clients``) replies were valid or the
            mean was not finite (Flower then keeps the previous global model).
        """
        server_round += self.round_offset
        dp: dict[str, Any] | None = None
        with SpilledReplies() as spilled:
            self._server_clipped = 0
            reports = self.collect_replies(server_round, replies, spilled)
            count = len(spilled)
            arrays, metrics, note = None, None, None
            if self.privacy is not None:
                dp = self._privacy_record(server_round, count)
            if 0 < count < self.min_train_nodes:
                note = (f"only {count} valid repl{'y' if count == 1 else 'ies'}, fewer "
                        f"than federation.min_clients = {self.min_train_nodes}; previous "
                        "global model kept")
            elif count:
                mean = self.weighted_mean(spilled)
                if self.privacy is not None and self._global is not None and dp is not None:
                    mean, dp["noise_std"] = self.privacy.release(self._global, mean,
                                                                 clients=count)
                problems = tensor_problems(mean, self.expected)
                if problems:
                    note = "aggregated model rejected, previous kept: " + "; ".join(problems)
                else:
                    if self.privacy is not None and dp is not None:
                        dp["epsilon"] = self.privacy.charge(int(dp["sample_size"]))
                    mean = self._server_update(mean)
                    arrays = to_array_record(mean, transport_dtype=self.transport_dtype)
                    agg = aggregate_client_metrics(reports)
                    metrics = MetricRecord({k: float(v) for k, v in agg.items()})
                del mean
            else:
                note = self._wait_notes.pop(server_round, None) or \
                    "no valid replies; previous global model kept"
        self.outcomes[server_round] = RoundOutcome(
            server_round=server_round,
            reports=reports,
            aggregated=arrays is not None,
            note=note,
            proximal_mu=float(self.proximal_mu),
            lr=float(self.lr_for_round(server_round)),
            privacy=dp,
        )
        if dp is not None and dp["noise_std"] is not None:
            logger.log(INFO, "round %s: noise std %.3g on the mean of %d clipped updates; "
                       "epsilon %.4g at delta %g", server_round, dp["noise_std"], count,
                       dp["epsilon"], dp["delta"])
        logger.log(INFO, "round %s: %d aggregated, %d excluded%s", server_round,
                   count, len(reports) - count, f" ({note})" if note else "")
        return arrays, metrics

    def _privacy_record(self, server_round: int, count: int) -> dict[str, Any]:
        """The round's ``privacy`` record before release (ε so far, no noise yet)."""
        priv = self.privacy
        assert priv is not None
        acc = priv.accountant
        sampled = self._sampled.pop(server_round, priv.planned_sample)
        return {"epsilon": acc.epsilon, "delta": acc.delta,
                "clipping_norm": priv.clipping_norm, "noise_multiplier": priv.noise_multiplier,
                "noise_std": None, "clients": count,
                "sample_size": min(max(sampled, 1), acc.population),
                "population": acc.population, "server_clipped": self._server_clipped}

    def collect_replies(
        self, server_round: int, replies: Iterable[Message], spilled: SpilledReplies
    ) -> list[ClientReport]:
        """Check each reply as it arrives; park the valid ones' tensors in ``spilled``.

        Returns:
            One report per reply and per message that got no reply, in the fixed order
            (client id, node id) whatever the arrival order.
        """
        sent = self._sent.pop(server_round, [])
        node_of = {m.metadata.message_id: int(m.metadata.dst_node_id) for m in sent}
        keyed: list[tuple[tuple[str, int], ClientReport]] = []
        for msg in replies:
            key = _reply_order(msg)
            node_id = node_of.get(msg.metadata.reply_to_message_id,
                                  int(msg.metadata.src_node_id))
            report, tensors = read_train_reply(msg, self.expected, node_id=node_id,
                                               known_client_id=self._client_ids.get(node_id))
            if not msg.has_error():
                self._client_ids[node_id] = report.client_id
            del msg  # the encoded reply is not needed any more
            if tensors is not None and self.privacy is not None and self._global is not None:
                # DP: park the update clipped again against the global model, equal weights
                tensors, scaled = self.privacy.clip(tensors, self._global)
                self._server_clipped += int(scaled)
                spilled.add(key, tensors, 1.0)
                del tensors
            elif tensors is not None:
                spilled.add(key, tensors, report.weight)
                del tensors  # one decoded reply in memory at a time
            else:
                logger.log(WARNING, "round %s: excluded client %s: %s",
                           server_round, report.client_id, report.reason)
            keyed.append((key, report))
        # A fixed order (by client id) makes the records, like the float sums, independent
        # of the order in which replies happened to arrive.
        reports = [r for _, r in sorted(keyed, key=lambda kr: kr[0])]
        replied = {r.node_id for r in reports}
        for node_id in node_of.values():
            if node_id not in replied:
                cid = self._client_ids.get(node_id, str(node_id))
                reports.append(ClientReport(cid, node_id, False,
                                            reason="no reply before the round timeout"))
        return reports

    def weighted_mean(self, spilled: SpilledReplies) -> dict[str, Any]:
        """The ``num-examples``-weighted mean of the parked replies, in their fixed order.

        With DP the parked replies are clipped updates of weight 1: their equal-weight mean.

        Returns:
            Name -> tensor (each name's dtype); see
            :func:`~zk0cli.core.aggregation.fixed_order_mean`.
        """
        mean = fixed_order_mean(spilled)
        if mean is None:  # callers only ask with at least one reply parked
            raise ValueError("no replies to average")
        return mean


def _reply_order(msg: Message) -> tuple[str, int]:
    client_id = ""
    if not msg.has_error():
        info = msg.content.config_records.get(K.INFO_KEY)
        client_id = str(info.get(K.CLIENT_ID, "")) if info is not None else ""
    return client_id.zfill(12), int(msg.metadata.src_node_id)


class _NodeSnapshot:
    """A grid whose ``get_node_ids`` returns a fixed list (what FedAvg samples from)."""

    def __init__(self, grid: Any, node_ids: list[int]) -> None:
        self._grid = grid
        self._node_ids = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self._node_ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def wait_for_nodes(grid: Any, count: int, *, timeout_s: float, poll_s: float = 1.0
                   ) -> list[int]:
    """Wait until ``count`` nodes are connected, for at most ``timeout_s`` seconds.

    Args:
        grid: Flower ``Grid`` (anything with ``get_node_ids()``).
        count: Nodes wanted.
        timeout_s: Longest wait, in seconds.
        poll_s: Seconds between two looks.

    Returns:
        The ids of the nodes connected when ``count`` was reached or the time ran out
        (possibly fewer than ``count``).
    """
    deadline = time.monotonic() + timeout_s
    next_log = 0.0
    while True:
        node_ids = [int(n) for n in grid.get_node_ids()]
        now = time.monotonic()
        if len(node_ids) >= count or now >= deadline:
            return node_ids
        if now >= next_log:
            logger.info("waiting for %d nodes: %d connected (%.0f s left)", count,
                        len(node_ids), deadline - now)
            next_log = now + 10.0
        time.sleep(min(poll_s, max(0.0, deadline - now)))
