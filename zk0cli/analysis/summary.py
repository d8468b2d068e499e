"""Summary of a loaded run (what ``summary.json`` holds) and the comparison of two runs."""

from __future__ import annotations

import math
from typing import Any

from zk0cli.analysis.findings import client_loss_avg, expected_clients
from zk0cli.analysis.model import (
    Comparison,
    Finding,
    LossStats,
    Point,
    RoundRow,
    RunData,
    Summary,
)
from zk0cli.constants import PARAM_UPDATE_NORM
from zk0cli.core.contract import AGG_NUM_CLIENTS, AGG_NUM_FAILURES, RUN, RUN_JSON, avg_key

COMPOSITE = "composite"
_HIGHLIGHTS = (
    "seed", "model.kind", "model.path", "federation.rounds", "federation.num_clients",
    "federation.fraction_train", "federation.min_clients", "federation.proximal_mu",
    "training.steps_per_round", "training.batch_size", "training.lr", "training.scheduler",
    "eval.frequency", "checkpoint.interval",
)


def loss_stats(points: list[tuple[int, float | None]]) -> LossStats:
    """First, best (lowest) and last finite value of ``(round, value)`` points."""
    finite = [(r, v) for r, v in points if v is not None and math.isfinite(v)]
    if not finite:
        return LossStats()
    best = min(finite, key=lambda p: p[1])
    return LossStats(first=Point(round=finite[0][0], value=finite[0][1]),
                     best=Point(round=best[0], value=best[1]),
                     last=Point(round=finite[-1][0], value=finite[-1][1]))


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b": value}``; lists are kept as values."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict)
                   else {f"{prefix}{key}": value})
    return {k.rstrip("."): v for k, v in out.items()}


def config_highlights(run: RunData) -> dict[str, Any]:
    """The configuration values worth seeing first (zk0 or upstream ``config.json``)."""
    cfg = run.config or {}
    if run.format == "upstream":  # {"run_config": {...}, "project_version": ...}
        rc = cfg.get("run_config")
        if not isinstance(rc, dict):
            rc = {}
        out: dict[str, Any] = {k: v for k, v in rc.items()
                               if isinstance(v, int | float | str | bool)}
        if "project_version" in cfg:
            out["project_version"] = cfg["project_version"]
        return out
    flat = flatten(cfg)
    out = {k: flat[k] for k in _HIGHLIGHTS if k in flat}
    data = cfg.get("data")
    if not isinstance(data, dict):
        data = {}
    fed = cfg.get("federation")
    used = fed.get("num_clients") if isinstance(fed, dict) else None
    for part in ("clients", "eval"):
        specs = data.get(part)
        if isinstance(specs, list):
            if part == "clients" and isinstance(used, int) and not isinstance(used, bool) \
                    and 0 < used < len(specs):
                specs = specs[:used]  # `--clients N` runs the first N
            out[f"data.{part}"] = [s.get("name") for s in specs if isinstance(s, dict)]
    return out


def data_notes(info: dict[str, Any]) -> list[str]:
    """What ``run.json`` says was left out of the training data or the statistics.

    Args:
        info: The run's ``run.json`` contents (``{}`` when it has none).

    Returns:
        One line per dataset with episodes dropped by ``data.skip_bad_episodes`` and one
        per client left out of the merged statistics.
    """
    notes = []
    for entry in info.get(RUN.skipped_episodes) or []:
        if isinstance(entry, dict) and entry.get("episodes"):
            notes.append(f"data.skip_bad_episodes dropped episodes {entry['episodes']} of "
                         f"{entry.get('dataset')}")
    for line in info.get(RUN.stats_left_out) or []:
        notes.append(f"left out of the merged statistics: {line}")
    return notes


def _status_note(run: RunData, rounds_completed: int, planned: int | None) -> str:
    of = f" of {planned}" if planned else ""
    return {
        "running": f"still running: {rounds_completed}{of} rounds so far; numbers are partial",
        "completed": f"completed {rounds_completed}{of} rounds" + (
            f" ({run.run_info[RUN.stop_reason]})" if run.run_info.get(RUN.stop_reason) else ""),
        "failed": f"failed after {rounds_completed}{of} rounds: {run.run_info.get('error')}",
        "interrupted": f"interrupted after {rounds_completed}{of} rounds",
    }.get(run.status, f"status unknown ({f'no {RUN_JSON}' if run.format == 'upstream' else f'{RUN_JSON} has no valid status'}); {rounds_completed} rounds found")  # noqa: E501


def round_rows(run: RunData) -> list[RoundRow]:
    """One summary row per round: the series behind the plots."""
    ids = expected_clients(run)
    rows = []
    for rec in run.rounds:
        ok = rec.ok_clients
        n_ok = len(ok) if rec.source == "server_eval" else int(
            rec.aggregated_metrics.get(AGG_NUM_CLIENTS) or 0)
        n_fail = sum(1 for c in rec.clients if c.status == "failed") or int(
            rec.aggregated_metrics.get(AGG_NUM_FAILURES) or 0)
        pua = rec.aggregated_metrics.get(avg_key(PARAM_UPDATE_NORM))
        if pua is None:
            norms = [c.param_update_norm for c in ok if c.param_update_norm is not None]
            pua = sum(norms) / len(norms) if norms else None
        rows.append(RoundRow(
            round=rec.round, aggregated=rec.aggregated, clients=n_ok, failures=n_fail,
            participation_pct=(100.0 * n_ok / len(ids) if ids and rec.round >= 1 else None),
            composite=rec.composite, eval_datasets=dict(rec.eval_datasets),
            client_loss_avg=client_loss_avg(rec) if rec.round >= 1 else None,
            client_losses={c.client_id: c.loss for c in ok},
            param_update_norm_avg=pua, proximal_mu=rec.proximal_mu, lr=rec.lr,
            seconds=rec.seconds, closed_loop=dict(rec.closed_loop),
        ))
    return rows


_ROUNDS_KEYS = ("federation.rounds", "num-server-rounds", "num_server_rounds", "num_rounds",
                "rounds")  # zk0's key, then the upstream project's (Flower run config)


def planned_rounds(config: Any) -> int | None:
    """``federation.rounds`` of a run's configuration, or the upstream ``num-server-rounds``.

    Args:
        config: The run's ``config.json`` contents (any nesting), or ``None``.

    Returns:
        The number of rounds planned, or ``None`` when the configuration does not say.
    """
    flat = flatten(config or {})
    for key in _ROUNDS_KEYS:
        for name, value in flat.items():
            if (name == key or name.endswith("." + key)) and isinstance(value, int) \
                    and not isinstance(value, bool):
                return value
    return None


def summarize(run: RunData, findings: list[Finding]) -> Summary:
    """Build the summary of a loaded run.

    Args:
        run: The loaded run.
        findings: The detectors' findings (:func:`zk0cli.analysis.findings.detect_all`).

    Returns:
        The summary; ``comparison`` is left empty.
    """
    rows = round_rows(run)
    info = run.run_info
    found = max((r.round for r in run.rounds), default=0)
    completed = int(info.get(RUN.rounds_completed) or found)
    planned = info.get(RUN.rounds_planned)
    if planned is None:
        planned = planned_rounds(run.config)
    datasets = sorted({k for r in rows for k in r.eval_datasets})
    server_eval = {COMPOSITE: loss_stats([(r.round, r.composite) for r in rows])}
    server_eval.update({d: loss_stats([(r.round, r.eval_datasets.get(d)) for r in rows])
                        for d in datasets})
    part = [r.participation_pct for r in rows if r.participation_pct is not None]
    secs = [r.seconds for r in rows  # round 0 only evaluates the initial model: not a round
            if r.round >= 1 and r.seconds is not None and math.isfinite(r.seconds)]
    run_keys = (RUN.status, RUN.engine, RUN.command, RUN.seed, RUN.versions, RUN.started_at,
                RUN.ended_at, RUN.updated_at, RUN.error)
    return Summary(
        run_dir=run.root, run_name=run.root.name, format=run.format, status=run.status,
        status_note=_status_note(run, completed, planned if isinstance(planned, int) else None),
        notes=[*run.notes, *data_notes(info)],
        run={k: info[k] for k in run_keys if k in info},
        config_highlights=config_highlights(run),
        rounds_planned=planned if isinstance(planned, int) else None,
        rounds_completed=completed, expected_clients=expected_clients(run),
        participation_pct=sum(part) / len(part) if part else None,
        server_eval=server_eval,
        client_loss=loss_stats([(r.round, r.client_loss_avg) for r in rows]),
        param_update_norm=loss_stats([(r.round, r.param_update_norm_avg) for r in rows
                                      if r.round >= 1]),
        seconds_per_round_mean=sum(secs) / len(secs) if secs else None,
        checkpoints=[{"round": c.round, "name": c.path.name, "complete": c.complete,
                      "problems": c.problems} for c in run.checkpoints],
        latest_checkpoint=run.latest, rounds=rows, findings=findings,
        privacy=info.get(RUN.privacy) if isinstance(info.get(RUN.privacy), dict) else None,
    )


def compare(this: Summary, other: Summary, this_run: RunData, other_run: RunData) -> Comparison:
    """Differences between two summarised runs (this minus other).

    Only what both runs have is compared (an upstream run has no config.json and other
    eval dataset names); what only one run has is listed once in ``not_compared``.

    Returns:
        Per eval series both runs have: best and last of both runs and their differences;
        the configuration keys both runs set whose values differ (``output_root``
        excluded).
    """
    server_eval: dict[str, dict[str, float | None]] = {}
    for name in sorted(set(this.server_eval) & set(other.server_eval)):
        a, b = this.server_eval.get(name, LossStats()), other.server_eval.get(name, LossStats())
        row: dict[str, float | None] = {}
        for which in ("best", "last"):
            pa, pb = getattr(a, which), getattr(b, which)
            row[which] = pa.value if pa else None
            row[f"other_{which}"] = pb.value if pb else None
            row[f"{which}_diff"] = pa.value - pb.value if pa and pb else None
        server_eval[name] = row
    fa, fb = flatten(this_run.config or {}), flatten(other_run.config or {})
    diffs = {k: (fa[k], fb[k]) for k in sorted(set(fa) & set(fb))
             if fa[k] != fb[k] and k != "output_root"}
    not_compared = _one_sided("eval series", set(this.server_eval), set(other.server_eval))
    not_compared += _one_sided("config keys", set(fa), set(fb))
    last = this.client_loss.last, other.client_loss.last
    return Comparison(
        other_run_dir=other.run_dir, other_run_name=other.run_name, other_status=other.status,
        rounds_completed=(this.rounds_completed, other.rounds_completed),
        server_eval=server_eval,
        client_loss_last=(last[0].value if last[0] else None, last[1].value if last[1] else None),
        findings_count=(len(this.findings), len(other.findings)),
        config_differences=diffs, other_rounds=other.rounds, not_compared=not_compared,
    )


def _one_sided(what: str, mine: set[str], theirs: set[str]) -> list[str]:
    """``["config keys only in this run (3): a, b, c", ...]`` for the keys not shared."""
    out = []
    for side, keys in (("this run", mine - theirs), ("the other run", theirs - mine)):
        if keys:
            shown = ", ".join(sorted(keys)[:12]) + (" ..." if len(keys) > 12 else "")
            out.append(f"{what} only in {side} ({len(keys)}): {shown}")
    return out
