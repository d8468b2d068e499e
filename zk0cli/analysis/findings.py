"""Anomaly detectors: pure functions ``(RunData, AnalysisThresholds) -> list[Finding]``.

Each detector reads the loaded run only (no files) and reports the rounds concerned and
the evidence, one line per observation. :func:`detect_all` runs them all in a fixed order.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import TypeGuard

from zk0cli.analysis.model import Finding, RoundRecord, RunData
from zk0cli.analysis.thresholds import AnalysisThresholds
from zk0cli.core.contract import (
    AGG_NUM_CLIENTS,
    FEDERATED_METRICS_JSON,
    REL_FEDERATED_METRICS,
    REL_LATEST,
    REL_POLICY_LOSS_HISTORY,
    RUN,
    rel_server_eval,
)

_ZERO_CLIENT_FIELDS = ("loss", "policy_loss", "grad_norm", "param_update_norm")
_ZERO_AGG_FIELDS = ("loss_avg", "policy_loss_avg", "grad_norm_avg", "param_update_norm_avg")


def _finite(x: float | None) -> TypeGuard[float]:
    return x is not None and math.isfinite(x)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _client_sort_key(cid: str) -> tuple[int, int | str]:
    return (0, int(cid)) if cid.isdigit() else (1, cid)


def configured_clients(run: RunData) -> int | None:
    """Number of clients ``config.json`` asks for (zk0 format), or ``None``."""
    cfg = run.config or {}
    fed, data = cfg.get("federation") or {}, cfg.get("data") or {}
    if isinstance(fed, dict) and isinstance(fed.get("num_clients"), int):
        return int(fed["num_clients"])
    if isinstance(data, dict) and isinstance(data.get("clients"), list):
        return len(data["clients"])
    return None


def expected_clients(run: RunData) -> list[str]:
    """Client ids seen in any training round, in numeric/name order."""
    ids = {c.client_id for r in run.training_rounds for c in r.clients}
    return sorted(ids, key=_client_sort_key)


def client_loss_avg(rec: RoundRecord) -> float | None:
    """Mean training loss of the round's clients (the aggregated value when recorded)."""
    if rec.source == "server_eval" and not rec.ok_clients:
        return None  # upstream wrote avg_client_loss = 0.0 for rounds without clients
    value = rec.aggregated_metrics.get("loss_avg")
    if value is not None:
        return value
    losses = [c.loss for c in rec.ok_clients if c.loss is not None]
    return sum(losses) / len(losses) if losses else None


def composite_series(run: RunData) -> list[tuple[int, float]]:
    """``(round, server composite eval loss)`` for every round with a finite value."""
    return [(r.round, r.composite) for r in run.rounds if _finite(r.composite)]


def _sampled(run: RunData) -> bool:
    fed = (run.config or {}).get("federation") or {}
    frac = fed.get("fraction_train", 1.0) if isinstance(fed, dict) else 1.0
    return isinstance(frac, int | float) and frac < 1.0


def detect_dropouts(run: RunData, th: AnalysisThresholds) -> list[Finding]:
    """Clients that failed, or (when every client is sampled) did not report, in a round."""
    ids, sampled = expected_clients(run), _sampled(run)
    per_client: dict[str, list[tuple[int, str]]] = defaultdict(list)
    shortfall: list[tuple[int, str]] = []
    want = max(len(ids), configured_clients(run) or 0)
    for rec in run.training_rounds:
        if rec.source != "server_eval":
            n = rec.aggregated_metrics.get(AGG_NUM_CLIENTS)
            if n is not None and n < want and not sampled:
                shortfall.append((rec.round, f"round {rec.round}: {n:g} of {want} clients"))
            continue
        seen = {c.client_id: c for c in rec.clients}
        for cid in ids:
            c = seen.get(cid)
            if c is not None and c.status == "failed":
                per_client[cid].append((rec.round, f"round {rec.round}: failed ({c.error or '?'})"))
            elif c is None and not sampled:
                per_client[cid].append((rec.round, f"round {rec.round}: no report"))
        if not sampled and len(ids) < want:
            shortfall.append((rec.round, f"round {rec.round}: {len(rec.ok_clients)} of {want} "
                              "configured clients reported"))
    out = [Finding(kind="client_dropout", severity="warning", client_id=cid,
                   rounds=[r for r, _ in obs], evidence=[e for _, e in obs],
                   message=f"client {cid} dropped out of {len(obs)} round(s)")
           for cid, obs in sorted(per_client.items(), key=lambda kv: _client_sort_key(kv[0]))]
    if shortfall:
        out.append(Finding(kind="client_dropout", severity="warning",
                           rounds=[r for r, _ in shortfall], evidence=[e for _, e in shortfall],
                           message=f"fewer clients than configured ({want}) in "
                           f"{len(shortfall)} round(s)"))
    return out


def detect_no_aggregation(run: RunData, th: AnalysisThresholds) -> list[Finding]:
    """Training rounds in which the server aggregated nothing."""
    rounds, evidence = [], []
    for rec in run.training_rounds:
        if rec.aggregated is False or (rec.aggregated is None and rec.source == "server_eval"
                                       and not rec.ok_clients):
            reasons = "; ".join([*([rec.note] if rec.note else []),
                                 *(f"client {f['client_id']}: {f['reason']}"
                                   for f in rec.failures)])
            rounds.append(rec.round)
            evidence.append(f"round {rec.round}: {len(rec.ok_clients)} client update(s) "
                            f"aggregated" + (f" ({reasons})" if reasons else ""))
    if not rounds:
        return []
    return [Finding(kind="no_aggregation", severity="error", rounds=rounds, evidence=evidence,
                    message=f"{len(rounds)} round(s) aggregated no client update")]


_ROUND_IN_WHERE = re.compile(r"round[_ ](\d+)")
_ROUND_IN_FIELD = re.compile(r"^\[(\d+)\]$")


def detect_non_finite(run: RunData, th: AnalysisThresholds) -> list[Finding]:
    """Every NaN/Inf value stored in the run's files."""
    # zk0 writes NaN means/stds for a round in which no client reported: "no data", not a
    # numerical failure (that round is reported as no_aggregation)
    empty = {r.round for r in run.training_rounds if r.aggregated_metrics.get(AGG_NUM_CLIENTS) == 0}
    rounds: set[int] = set()
    evidence = []
    for where, name, value in run.non_finite:
        m = _ROUND_IN_WHERE.search(where) or _ROUND_IN_FIELD.match(name)
        n = int(m.group(1)) if m else None
        if n in empty and name.endswith(("_avg", "_std")):
            continue
        if n is not None:
            rounds.add(n)
        evidence.append(f"{where}: {name} = {value}")
    if not evidence:
        return []
    return [Finding(kind="non_finite", severity="error", rounds=sorted(rounds), evidence=evidence,
                    message=f"{len(evidence)} non-finite value(s) (NaN/Inf) in the run's files")]


def detect_zeroed(run: RunData, th: AnalysisThresholds) -> list[Finding]:
    """Losses and norms that are exactly zero (within ``zero_tolerance``) where they cannot be."""
    hits: dict[str, list[tuple[int, str]]] = defaultdict(list)

    def check(name: str, value: float | None, n: int, label: str) -> None:
        if value is not None and abs(value) <= th.zero_tolerance:
            hits[name].append((n, f"round {n}: {label} = {value:g}"))

    for rec in run.rounds:
        check("server composite eval loss", rec.composite, rec.round, "composite")
        for ds, v in rec.eval_datasets.items():
            check("server eval loss", v, rec.round, f"eval[{ds}]")
        if rec.round < 1:
            continue
        for key in _ZERO_AGG_FIELDS:
            check(key, rec.aggregated_metrics.get(key), rec.round, key)
        for c in rec.ok_clients:
            for key in _ZERO_CLIENT_FIELDS:
                check(f"client {key}", getattr(c, key), rec.round, f"client {c.client_id} {key}")
    return [Finding(kind="zeroed_metric", severity="warning", rounds=sorted({r for r, _ in obs}),
                    evidence=[e for _, e in obs], message=f"{name} is zero in {len(obs)} place(s)")
            for name, obs in hits.items()]


def detect_divergence(run: RunData, th: AnalysisThresholds) -> list[Finding]:
    """Server composite loss rising ``divergence_rises`` times in a row, or far above its best."""
    series, out = composite_series(run), []
    run_start = 0
    for i in range(1, len(series) + 1):
        if i < len(series) and series[i][1] > series[i - 1][1]:
            continue
        if i - 1 - run_start >= th.divergence_rises:
            stretch = series[run_start:i]
            first, last = stretch[0][1], stretch[-1][1]
            rise = (last - first) / abs(first) if first else math.inf
            big = rise >= th.divergence_min_rise
            out.append(Finding(
                kind="divergence", severity="error" if big else "warning",
                rounds=[r for r, _ in stretch],
                evidence=[" -> ".join(f"r{r}: {_fmt(v)}" for r, v in stretch)
                          + f" (+{rise:.1%})"],
                message=f"server loss rose {i - 1 - run_start} evaluations in a row "
                f"(rounds {stretch[0][0]}-{stretch[-1][0]}), by {rise:.1%}"
                + ("" if big else f", less than divergence_min_rise = "
                   f"{th.divergence_min_rise:.0%}: noise or a slow drift so far")))
        run_start = i
    far, best = [], math.inf
    for r, v in series:
        if best < math.inf and v > th.divergence_ratio * best:
            far.append((r, f"round {r}: {_fmt(v)} > {th.divergence_ratio:g} x best {_fmt(best)}"))
        best = min(best, v)
    if far:
        out.append(Finding(kind="divergence", severity="error", rounds=[r for r, _ in far],
                           evidence=[e for _, e in far],
                           message=f"server loss above {th.divergence_ratio:g}x its best in "
                           f"{len(far)} evaluation(s)"))
    return out


def detect_stall(run: RunData, th: AnalysisThresholds) -> list[Finding]:
    """``stall_window`` or more evaluations in a row without a new best server loss."""
    series = composite_series(run)
    out: list[Finding] = []
    if not series:
        return out
    best = series[0][1]
    since: list[tuple[int, float]] = []  # evaluations since the last new best

    def flush() -> None:
        if len(since) >= th.stall_window:
            out.append(Finding(
                kind="stall", severity="warning", rounds=[x for x, _ in since],
                evidence=[f"best {_fmt(best)}; then " + ", ".join(f"r{x}: {_fmt(y)}"
                                                                  for x, y in since)],
                message=f"no improvement of the server loss for {len(since)} evaluations "
                f"(rounds {since[0][0]}-{since[-1][0]})"))

    for r, v in series[1:]:
        if v < best * (1.0 - th.stall_min_improvement):
            flush()
            best = v
            since.clear()
        else:
            since.append((r, v))
    flush()
    return out


def detect_outlier_clients(run: RunData, th: AnalysisThresholds) -> list[Finding]:
    """Clients whose loss is far above the other clients' in the same round."""
    per_client: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for rec in run.training_rounds:
        losses = {c.client_id: c.loss for c in rec.ok_clients if _finite(c.loss)}
        if len(losses) < th.outlier_min_clients:
            continue
        for cid, loss in losses.items():
            others = [v for k, v in losses.items() if k != cid]
            mean, std = statistics.fmean(others), statistics.pstdev(others)
            limit = max(mean + th.outlier_std * std, mean * (1.0 + th.outlier_min_excess))
            if loss > limit:
                per_client[cid].append((rec.round, f"round {rec.round}: loss {_fmt(loss)}, "
                                        f"others mean {_fmt(mean)} std {_fmt(std)}"))
    return [Finding(kind="outlier_client", severity="warning", client_id=cid,
                    rounds=[r for r, _ in obs], evidence=[e for _, e in obs],
                    message=f"client {cid} is an outlier (loss > others' mean + "
                    f"{th.outlier_std:g} std) in {len(obs)} round(s)")
            for cid, obs in sorted(per_client.items(), key=lambda kv: _client_sort_key(kv[0]))]


def unevaluated_rounds(run: RunData) -> set[int]:
    """Rounds an upstream run never evaluated by design (it evaluates every k-th round).

    Upstream zk0 writes ``round_<N>_server_eval.json`` only for evaluated rounds; when the
    evaluated rounds are evenly spaced (step k = their greatest common difference > 1),
    the rounds in between are not gaps. zk0's own runs write every round.
    """
    import math as _math

    if run.format == "zk0":
        return set()
    evald = sorted(r.round for r in run.rounds if r.source == "server_eval")
    if len(evald) < 2:
        return set()
    step = 0
    for a, b in zip(evald, evald[1:], strict=False):
        step = _math.gcd(step, b - a)
    if step <= 1:
        return set()
    last = max(r.round for r in run.rounds)
    return {n for n in range(evald[0], last + 1) if (n - evald[0]) % step and n not in evald}


def detect_history_gaps(run: RunData, th: AnalysisThresholds) -> list[Finding]:
    """Missing rounds and rounds missing from the history files."""
    rounds, evidence = set(), []
    from_eval = [r.round for r in run.rounds if r.source == "server_eval"]
    present = {r.round for r in run.rounds}
    not_evaluated = unevaluated_rounds(run)
    if present:
        first = 0 if run.format == "zk0" else min(present)
        last = max(max(present), int(run.run_info.get(RUN.rounds_completed) or 0))
        for n in range(first, last + 1):
            if n not in present and n not in not_evaluated:
                rounds.add(n)
                evidence.append(f"round {n}: no {rel_server_eval(n)} and no "
                                f"{FEDERATED_METRICS_JSON} row")
    for rec in run.rounds:
        if rec.source == "federated_metrics" and rec.round not in not_evaluated:
            rounds.add(rec.round)
            evidence.append(f"round {rec.round}: {rel_server_eval(rec.round)} "
                            f"missing (row in {FEDERATED_METRICS_JSON})")
    settled = [n for n in from_eval if not (run.status == "running" and n == max(from_eval))]
    if settled and run.federated_rounds is None and run.format == "zk0":
        evidence.append(f"{REL_FEDERATED_METRICS} is missing")
    elif run.federated_rounds is not None:
        for n in settled:  # upstream rows are training rounds: round 0 has none
            if n not in run.federated_rounds and (n > 0 or run.format == "zk0"):
                rounds.add(n)
                evidence.append(f"round {n}: no row in {REL_FEDERATED_METRICS}")
    evaluated = [r.round for r in run.rounds if r.source == "server_eval"
                 and r.composite is not None and r.round in settled]
    hist = run.policy_loss_history
    if evaluated and hist is None and run.format == "zk0":
        evidence.append(f"{REL_POLICY_LOSS_HISTORY} is missing")
    elif evaluated and hist is not None:
        if not hist:
            evidence.append(f"{REL_POLICY_LOSS_HISTORY} is empty")
        missing = [n for n in evaluated if n not in hist]
        rounds.update(missing)
        evidence += [f"round {n}: evaluated but not in {REL_POLICY_LOSS_HISTORY}"
                     for n in (missing if hist else [])]
    if not evidence:
        return []
    return [Finding(kind="history_gap", severity="warning", rounds=sorted(rounds),
                    evidence=evidence, message=f"gaps in the run's history ({len(evidence)})")]


def detect_incomplete_checkpoints(run: RunData, th: AnalysisThresholds) -> list[Finding]:
    """Checkpoints without a manifest or not matching it, and a wrong ``models/latest``."""
    out = [Finding(kind="incomplete_checkpoint", severity="error", rounds=[c.round],
                   evidence=[f"{c.path.name}: {p}" for p in c.problems],
                   message=f"checkpoint of round {c.round} is incomplete")
           for c in run.checkpoints if not c.complete]
    if run.latest_problem:
        out.append(Finding(kind="incomplete_checkpoint", severity="error",
                           evidence=[run.latest_problem], message=f"{REL_LATEST} is dangling"))
    elif run.latest:
        bad = [c for c in run.checkpoints if c.path.name == run.latest and not c.complete]
        if bad:
            out.append(Finding(kind="incomplete_checkpoint", severity="error",
                               rounds=[bad[0].round],
                               evidence=[f"{REL_LATEST} names {run.latest}"],
                               message=f"{REL_LATEST} names an incomplete checkpoint"))
    return out


def detect_generalization_gap(run: RunData, th: AnalysisThresholds) -> list[Finding]:
    """Client training loss falling while the held-out server loss rises."""
    raw = [(r.round, client_loss_avg(r), r.composite) for r in run.training_rounds]
    pts = [(n, c, s) for n, c, s in raw if _finite(c) and _finite(s)]
    w, hits = th.gap_window, []
    for i in range(len(pts) - w + 1):
        (n0, c0, s0), (n1, c1, s1) = pts[i], pts[i + w - 1]
        # A relative change needs a positive base (zeroed losses are detect_zeroed's).
        if (c0 > 0 and s0 > 0 and c1 <= c0 * (1 - th.gap_min_change)
                and s1 >= s0 * (1 + th.gap_min_change)):
            hits.append((i, i + w - 1))
    stretches: list[list[int]] = []
    for a, b in hits:
        if stretches and a <= stretches[-1][1]:
            stretches[-1][1] = b
        else:
            stretches.append([a, b])
    out = []
    for a, b in stretches:
        (n0, c0, s0), (n1, c1, s1) = pts[a], pts[b]
        out.append(Finding(
            kind="generalization_gap", severity="warning",
            rounds=[n for n, _, _ in pts[a:b + 1]],
            evidence=[f"client training loss {_fmt(c0)} -> {_fmt(c1)} "
                      f"({(c1 / c0 - 1) * 100:+.0f}%), server eval loss {_fmt(s0)} -> "
                      f"{_fmt(s1)} ({(s1 / s0 - 1) * 100:+.0f}%)"],
            message=f"generalisation gap in rounds {n0}-{n1}: clients fit their data while "
            "the held-out loss rises"))
    return out


DETECTORS: tuple[Callable[[RunData, AnalysisThresholds], list[Finding]], ...] = (
    detect_incomplete_checkpoints, detect_non_finite, detect_no_aggregation, detect_divergence,
    detect_dropouts, detect_zeroed, detect_stall, detect_outlier_clients,
    detect_generalization_gap, detect_history_gaps,
)


def detect_all(run: RunData, thresholds: AnalysisThresholds | None = None) -> list[Finding]:
    """Run every detector.

    Args:
        run: The loaded run.
        thresholds: Detector thresholds (defaults: :class:`AnalysisThresholds`).

    Returns:
        Findings, errors first, in detector order.
    """
    th = thresholds or AnalysisThresholds()
    found = [f for detect in DETECTORS for f in detect(run, th)]
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(found, key=lambda f: order[f.severity])
