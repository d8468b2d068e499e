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
from zk0cli.core.rundir import RunDir, RunStatus, read_json, write_json
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
        run = self.rundir.read_run()
        self.rundir.update_run(
            status="running",
            engine=engine,
            command=run.get("command", command),
            seed=seed,
            versions=library_versions(),
            started_at=run.get("started_at", time.time()),
            rounds_planned=rounds,
            rounds_completed=run.get("rounds_completed", 0),
            round_seconds=run.get("round_seconds", {}),
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
        server_eval: dict[str, Any] | None,
        seconds: float,
    ) -> dict[str, Any]:
        """Write every file of one round and return the round file's content.

        Args:
            server_round: The round (0 = evaluation of the initial model).
            outcome: The strategy's view of the training round (``None`` for round 0).
            server_eval: ``{"datasets": {name: loss}, "composite": loss}`` or ``None``
                when the round was not evaluated.
            seconds: Wall seconds the round took on the server.
        """
        reports = outcome.reports if outcome else []
        individual = []
        client_files = []
        for r in reports:
            entry = {K.CLIENT_ID: r.client_id, **r.metrics, "node_id": r.node_id}
            entry.pop(K.FAILED, None)
            entry.pop(K.NUM_EXAMPLES_KEY, None)  # Flower's weighting key; num_examples stays
            individual.append(entry)
            client_file = {**entry, "round": server_round, "status": "ok" if r.ok else "failed"}
            if not r.ok:
                client_file[K.ERROR] = r.reason
            write_json(self.rundir.client_round(r.client_id, server_round), client_file)
            client_files.append(client_file)
        aggregated = aggregate_client_metrics(reports) if outcome else None
        composite = server_eval["composite"] if server_eval else None
        round_file = {
            "round": server_round,
            "aggregated": bool(outcome and outcome.aggregated),
            "note": outcome.note if outcome else None,
            "proximal_mu": outcome.proximal_mu if outcome else None,
            "lr": outcome.lr if outcome else None,
            "seconds": seconds,
            "timestamp": time.time(),
            "server_eval": server_eval,
            "server_composite_eval_loss": composite,
            "client_aggregated_training_metrics": aggregated,
            "individual_client_training_metrics": [e for e, r in zip(individual, reports,
                                                                     strict=True) if r.ok],
            "failures": [{K.CLIENT_ID: r.client_id, "node_id": r.node_id, "reason": r.reason}
                         for r in reports if not r.ok],
        }
        write_json(self.rundir.server_eval(server_round), round_file)
        self._append_history(server_round, round_file, composite)
        run = self.rundir.read_run()
        round_seconds = dict(run.get("round_seconds", {}))
        round_seconds[str(server_round)] = seconds
        self.rundir.update_run(rounds_completed=server_round, round_seconds=round_seconds)
        self._track("log_round", server_round, round_file, client_files)
        return round_file

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
            tracking = dict(self.rundir.read_run().get(K.RUN_TRACKING_KEY) or {})
            for name, info in kept.items():
                tracking[name] = {**(tracking.get(name) or {}), **info}
            self.rundir.update_run(**{K.RUN_TRACKING_KEY: tracking})

    def _append_history(self, server_round: int, round_file: dict[str, Any],
                        composite: float | None) -> None:
        agg = round_file["client_aggregated_training_metrics"] or {}
        row = {
            "round": server_round,
            "aggregated": round_file["aggregated"],
            "num_clients": agg.get("num_clients", 0),
            "num_failures": agg.get("num_failures", 0),
            "avg_client_loss": agg.get(f"{K.LOSS}_avg"),
            "avg_policy_loss": agg.get(f"{K.POLICY_LOSS}_avg"),
            "avg_fedprox_loss": agg.get(f"{K.FEDPROX_LOSS}_avg"),
            "avg_grad_norm": agg.get(f"{K.GRAD_NORM}_avg"),
            "avg_param_update_norm": agg.get(f"{K.PARAM_UPDATE_NORM}_avg"),
            "server_policy_loss": composite,
            "proximal_mu": round_file["proximal_mu"],
            "lr": round_file["lr"],
            "seconds": round_file["seconds"],
        }
        path = self.rundir.federated_metrics
        rows = [r for r in (read_json(path) if path.is_file() else [])
                if r.get("round") != server_round]
        write_json(path, sorted([*rows, row], key=lambda r: r["round"]))
        if composite is not None:
            hpath = self.rundir.policy_loss_history
            history = read_json(hpath) if hpath.is_file() else {}
            history[str(server_round)] = composite
            write_json(hpath, dict(sorted(history.items(), key=lambda kv: int(kv[0]))))
