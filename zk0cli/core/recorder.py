"""Writes what the server learns each round into the run directory.

The ServerApp calls :class:`RunRecorder` once per round with the strategy's
:class:`~zk0cli.core.strategy.RoundOutcome` and the server evaluation; the file formats
are documented in ``docs/run-directory.md``.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from zk0cli import constants as K
from zk0cli.core.contract import (
    AGG_NUM_CLIENTS,
    AGG_NUM_FAILURES,
    CLIENT,
    ClientMetrics,
    ClientRoundRecord,
    FailureRecord,
    MetricsRow,
    ServerEval,
    ServerRoundRecord,
    avg_key,
)
from zk0cli.core.rundir import (  # noqa: F401  (readers re-exported)
    RunDir,
    RunStatus,
    read_metrics_rows,
    read_policy_loss_history,
    read_server_round,
    write_json,
)
from zk0cli.core.strategy import RoundOutcome, aggregate_client_metrics
from zk0cli.log import logger

if TYPE_CHECKING:
    from zk0cli.core.tracking import Tracker


def library_versions() -> dict[str, str]:
    """Installed versions of zk0 and the libraries that decide its numbers."""
    out = {"python": platform.python_version()}
    for name, dist in (("zk0", "zk0cli"), ("flwr", "flwr"), ("lerobot", "lerobot"),
                       ("torch", "torch")):
        try:
            out[name] = version(dist)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


class RunRecorder:
    """Round files, histories and ``run.json`` for one run.

    Every record is a model of :mod:`zk0cli.core.contract`.

    Args:
        rundir: The run directory (already created, holding ``config.json``).
        trackers: Experiment trackers fed after each record is written
            (:mod:`zk0cli.core.tracking`); a tracker that fails is dropped with a warning,
            the run and its files go on.
    """

    def __init__(self, rundir: RunDir, *, trackers: Sequence[Tracker] = ()) -> None:
        self.rundir = rundir
        self.trackers = list(trackers)

    def start(self, *, engine: str, command: str, seed: int, rounds: int) -> None:
        """Mark the run as running (keeps fields the engine wrote earlier)."""
        run = self.rundir.run_record()
        self.rundir.update_run(
            status="running",
            engine=engine,
            command=run.command or command,
            seed=seed,
            versions=library_versions(),
            started_at=run.started_at or time.time(),
            rounds_planned=rounds,
            error=None,
        )
        self._track("start", self.rundir.read_run())

    def finish(self, status: RunStatus, *, error: str | None = None) -> None:
        """Record the final status (``completed``, ``failed`` or ``interrupted``)."""
        self.rundir.update_run(status=status, error=error, ended_at=time.time())
        self._track("finish", status)

    def record_round(
        self,
        server_round: int,
        *,
        outcome: RoundOutcome | None,
        server_eval: ServerEval | Mapping[str, Any] | None,
        seconds: float,
        closed_loop: Mapping[str, Any] | None = None,
    ) -> ServerRoundRecord:
        """Write every file of one round and return the round record.

        Args:
            server_round: The round (0 = evaluation of the initial model).
            outcome: The strategy's view of the training round (``None`` for round 0).
            server_eval: The server evaluation, or ``None`` when the round was not
                evaluated.
            seconds: Wall seconds the round took on the server.
            closed_loop: Task -> closed-loop summary (``eval.closed_loop``;
                :class:`~zk0cli.core.contract.ClosedLoopTask` fields), or ``None``.
        """
        from zk0cli.core.diskfull import run_writes

        with run_writes(self.rundir, what=f"the files of round {server_round}"):
            return self._record_round(server_round, outcome=outcome, server_eval=server_eval,
                                      seconds=seconds, closed_loop=closed_loop)

    def _record_round(self, server_round: int, *, outcome: RoundOutcome | None,
                      server_eval: ServerEval | Mapping[str, Any] | None,
                      seconds: float, closed_loop: Mapping[str, Any] | None = None
                      ) -> ServerRoundRecord:
        if server_eval is not None and not isinstance(server_eval, ServerEval):
            server_eval = ServerEval.model_validate(server_eval)
        reports = outcome.reports if outcome else []
        individual = []
        client_files = []
        for r in reports:
            metrics = {k: v for k, v in r.metrics.items()
                       if k not in (K.FAILED, K.NUM_EXAMPLES_KEY, K.ERROR)}
            # Flower's weighting key is dropped; num_examples stays
            entry = ClientMetrics.model_validate(
                {**metrics, CLIENT.client_id: r.client_id, CLIENT.node_id: r.node_id})
            client_file = ClientRoundRecord.model_validate(
                {**entry.to_json(), CLIENT.round: server_round,
                 CLIENT.status: "ok" if r.ok else "failed",
                 CLIENT.error: None if r.ok else r.reason})
            data = client_file.to_json()
            if r.ok:
                data.pop(CLIENT.error)
            write_json(self.rundir.client_round(r.client_id, server_round), data)
            client_files.append(data)
            if r.ok:
                individual.append(entry)
        aggregated = aggregate_client_metrics(reports) if outcome else None
        record = ServerRoundRecord(
            round=server_round,
            aggregated=bool(outcome and outcome.aggregated),
            note=outcome.note if outcome else None,
            proximal_mu=outcome.proximal_mu if outcome else None,
            lr=outcome.lr if outcome else None,
            seconds=seconds,
            timestamp=time.time(),
            server_eval=server_eval,
            server_composite_eval_loss=server_eval.composite if server_eval else None,
            client_aggregated_training_metrics=aggregated,
            individual_client_training_metrics=individual,
            failures=[FailureRecord(client_id=r.client_id, node_id=r.node_id,
                                    reason=r.reason or "") for r in reports if not r.ok],
            privacy=outcome.privacy if outcome is not None else None,
            closed_loop=dict(closed_loop) if closed_loop is not None else None,
        )
        write_json(self.rundir.server_eval(server_round), record.to_json())
        self._append_history(record)
        run = self.rundir.run_record()
        self.rundir.update_run(rounds_completed=server_round,
                               round_seconds={**run.round_seconds, str(server_round): seconds})
        self._track("log_round", server_round, record.to_json(), client_files)
        return record

    # --- experiment trackers (zk0cli.core.tracking) ---------------------------------------

    def _track(self, event: str, *args: Any) -> None:
        """Call ``event`` (``start``, ``log_round``, ``finish``) on every tracker.

        What ``start`` and ``finish`` return is kept in ``run.json`` under ``tracking``.
        """
        kept: dict[str, Mapping[str, Any]] = {}
        for tracker in list(self.trackers):
            try:
                info = getattr(tracker, event)(*args)
            except Exception as err:  # a tracker never stops the run; the JSON is the source
                logger.warning("tracker %s failed in %s (%s: %s); it is turned off for this "
                               "run", tracker.name, event, type(err).__name__, err)
                self.trackers.remove(tracker)
                continue
            if info:
                kept[tracker.name] = info
        if kept:
            tracking = dict(self.rundir.run_record().tracking or {})
            for name, info in kept.items():
                tracking[name] = {**(tracking.get(name) or {}), **info}
            self.rundir.update_run(tracking=tracking)

    def _append_history(self, record: ServerRoundRecord) -> None:
        agg = record.client_aggregated_training_metrics or {}
        composite = record.server_composite_eval_loss
        row = MetricsRow(
            round=record.round,
            aggregated=record.aggregated,
            num_clients=agg.get(AGG_NUM_CLIENTS, 0),
            num_failures=agg.get(AGG_NUM_FAILURES, 0),
            avg_client_loss=agg.get(avg_key(K.LOSS)),
            avg_policy_loss=agg.get(avg_key(K.POLICY_LOSS)),
            avg_fedprox_loss=agg.get(avg_key(K.FEDPROX_LOSS)),
            avg_grad_norm=agg.get(avg_key(K.GRAD_NORM)),
            avg_param_update_norm=agg.get(avg_key(K.PARAM_UPDATE_NORM)),
            server_policy_loss=composite,
            proximal_mu=record.proximal_mu,
            lr=record.lr,
            seconds=record.seconds,
            closed_loop=record.closed_loop,
        )
        rows = [r for r in read_metrics_rows(self.rundir) if r.round != record.round]
        write_json(self.rundir.federated_metrics,
                   [r.to_json() for r in sorted([*rows, row], key=lambda r: r.round)])
        if composite is not None:
            history = read_policy_loss_history(self.rundir)
            history[record.round] = composite
            write_json(self.rundir.policy_loss_history,
                       {str(k): v for k, v in sorted(history.items())})
