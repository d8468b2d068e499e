"""Load a run directory (zk0 or upstream zk0 format) into a :class:`RunData`.

Also resolves the ``RUN`` argument of ``zk0 analyze-run``: a run directory, ``latest``
or a name prefix such as ``outputs/2025-10-17``. Every path comes from
:class:`zk0cli.core.rundir.RunDir`. Reading never writes; a file that is missing or
unreadable becomes a note, not an error, so running, failed and interrupted runs load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zk0cli import constants as C
from zk0cli.analysis.model import CheckpointRecord, ClientRecord, RoundRecord, RunData
from zk0cli.core import contract as R
from zk0cli.core.contract import (
    AGG_NUM_CLIENTS,
    CLIENT,
    CONFIG_JSON,
    EVAL,
    FAILURE,
    LATEST,
    MANIFEST_JSON,
    MODELS_DIR,
    ROUND,
    ROW,
    RUN,
    RUN_JSON,
    RUN_STATUSES,
)
from zk0cli.core.rundir import RunDir, read_json
from zk0cli.errors import RunDirError
from zk0cli.log import logger

_NON_FINITE = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "-inf": -math.inf,
               "infinity": math.inf, "-infinity": -math.inf}
_CLIENT_FIELDS = (C.LOSS, C.POLICY_LOSS, C.FEDPROX_LOSS, C.GRAD_NORM, C.PARAM_UPDATE_NORM,
                  C.NUM_EXAMPLES, C.NUM_STEPS, C.LR_KEY, C.SECONDS)
# aggregated client metrics: zk0 names, and the upstream / federated_metrics.json aliases
_AGG_ALIASES = R.UPSTREAM_AGGREGATE_ALIASES


class _Reader:
    """Turns JSON values into floats, remembering every non-finite string seen."""

    def __init__(self) -> None:
        self.non_finite: list[tuple[str, str, str]] = []

    def num(self, value: Any, where: str, name: str) -> float | None:
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int | float):
            if not math.isfinite(value):
                self.non_finite.append((where, name, str(value)))
            return float(value)
        if isinstance(value, str):
            key = value.strip().lower()
            if key in _NON_FINITE:
                self.non_finite.append((where, name, value))
                return _NON_FINITE[key]
            try:
                return float(key)
            except ValueError:
                return None  # "N/A" and the like
        return None


def _rel(rd: RunDir, path: Path) -> str:
    return str(path.relative_to(rd.root))


def _client(raw: dict[str, Any], rdr: _Reader, where: str, idx: int) -> ClientRecord:
    cid = str(raw.get(CLIENT.client_id, raw.get(R.UPSTREAM_CLIENT_ID, f"#{idx}")))
    values = {k: rdr.num(raw.get(k), where, f"clients[{cid}].{k}") for k in _CLIENT_FIELDS}
    failed = raw.get(CLIENT.status) == "failed" or bool(raw.get(R.LEGACY_FAILED)) \
        or bool(raw.get(CLIENT.error))
    return ClientRecord(
        client_id=cid, status="failed" if failed else "ok",
        error=str(raw[CLIENT.error]) if raw.get(CLIENT.error) else None,
        dataset_name=raw.get(CLIENT.dataset_name), **values,
    )


def _aggregated(raw: dict[str, Any], rdr: _Reader, where: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, value in raw.items():
        if isinstance(value, dict | list):
            continue
        out[_AGG_ALIASES.get(key, key)] = rdr.num(value, where, key)
    return out


def _closed_loop(raw: Any, rdr: _Reader, where: str) -> dict[str, dict[str, float | None]]:
    """``closed_loop`` of a round file or metrics row: task -> its numbers."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, dict[str, float | None]] = {}
    for task, numbers in raw.items():
        if isinstance(numbers, dict):
            out[str(task)] = {k: rdr.num(v, where, f"closed_loop.{task}.{k}")
                              for k, v in numbers.items() if not isinstance(v, dict | list)}
    return out


def _eval_datasets(raw: dict[str, Any], rdr: _Reader, where: str) -> dict[str, float | None]:
    server_eval = raw.get(ROUND.server_eval)
    if isinstance(server_eval, dict) and isinstance(server_eval.get(EVAL.datasets), dict):
        return {str(k): rdr.num(v, where, f"{ROUND.server_eval}.{EVAL.datasets}.{k}")
                for k, v in server_eval[EVAL.datasets].items()}
    out = {}  # upstream: a list of {dataset_name, loss, ...}
    for i, item in enumerate(raw.get(R.UPSTREAM_PER_DATASET_EVAL) or []):
        if isinstance(item, dict):
            name = str(item.get(C.DATASET_NAME) or item.get(R.UPSTREAM_EVALDATA_ID, i))
            out[name] = rdr.num(item.get(C.LOSS), where,
                                f"{R.UPSTREAM_PER_DATASET_EVAL}.{name}")
    return out


def _round_from_eval(rd: RunDir, n: int, rdr: _Reader, notes: list[str]) -> RoundRecord | None:
    path = rd.server_eval(n)
    where = _rel(rd, path)
    try:
        raw = read_json(path)
    except RunDirError as err:
        notes.append(f"{where} could not be read ({err}); round {n} skipped.")
        return None
    if not isinstance(raw, dict):
        notes.append(f"{where} is not a JSON object; round {n} skipped.")
        return None
    server_eval = raw.get(ROUND.server_eval)
    if isinstance(server_eval, dict) and EVAL.composite in server_eval:
        composite = rdr.num(server_eval.get(EVAL.composite), where,
                            f"{ROUND.server_eval}.{EVAL.composite}")
    else:
        composite = rdr.num(raw.get(ROUND.server_composite_eval_loss), where,
                            ROUND.server_composite_eval_loss)
    agg = _aggregated(raw.get(ROUND.client_aggregated_training_metrics) or {}, rdr, where)
    clients = [_client(c, rdr, where, i)
               for i, c in enumerate(raw.get(ROUND.individual_client_training_metrics) or [])
               if isinstance(c, dict)]
    failures = [{FAILURE.client_id: str(f.get(FAILURE.client_id, "?")),
                 FAILURE.reason: str(f.get(FAILURE.reason, ""))}
                for f in raw.get(ROUND.failures) or [] if isinstance(f, dict)]
    known = {c.client_id for c in clients}
    clients += [ClientRecord(client_id=f[FAILURE.client_id], status="failed",
                             error=f[FAILURE.reason])
                for f in failures if f[FAILURE.client_id] not in known]
    aggregated = raw.get(ROUND.aggregated)
    if not isinstance(aggregated, bool):
        n_agg = agg.get(AGG_NUM_CLIENTS)
        aggregated = None if n == 0 else bool(
            any(c.status == "ok" for c in clients) or (n_agg is not None and n_agg > 0))
    note = raw.get(ROUND.note)
    return RoundRecord(
        round=n, aggregated=aggregated, note=str(note) if note else None,
        proximal_mu=rdr.num(raw.get(ROUND.proximal_mu, agg.get(R.UPSTREAM_DIAGNOSIS_MU)),
                            where, ROUND.proximal_mu),
        lr=rdr.num(raw.get(ROUND.lr, agg.get(R.UPSTREAM_DIAGNOSIS_LR)), where, ROUND.lr),
        seconds=rdr.num(raw.get(ROUND.seconds), where, ROUND.seconds),
        eval_datasets=_eval_datasets(raw, rdr, where), composite=composite,
        aggregated_metrics=agg, clients=clients, failures=failures,
        closed_loop=_closed_loop(raw.get(ROUND.closed_loop), rdr, where),
    )


def _round_from_row(row: dict[str, Any], rdr: _Reader, where: str) -> RoundRecord:
    n = int(row[ROW.round])
    agg = _aggregated(row, rdr, f"{where} round {n}")
    aggregated = row.get(ROW.aggregated)
    return RoundRecord(
        round=n, source="federated_metrics",
        aggregated=aggregated if isinstance(aggregated, bool) else None,
        proximal_mu=agg.pop(ROW.proximal_mu, None), lr=agg.pop(ROW.lr, None),
        seconds=agg.pop(ROW.seconds, None), composite=agg.pop(ROW.server_policy_loss, None),
        aggregated_metrics={k: v for k, v in agg.items() if k != ROW.round},
        closed_loop=_closed_loop(row.get(ROW.closed_loop), rdr, f"{where} round {n}"),
    )


def _history(rd: RunDir, rdr: _Reader, notes: list[str]) -> dict[int, float | None] | None:
    if not rd.policy_loss_history.is_file():
        return None
    where = _rel(rd, rd.policy_loss_history)
    try:
        raw = read_json(rd.policy_loss_history)
    except RunDirError as err:
        notes.append(f"{where} could not be read ({err}).")
        return {}
    out: dict[int, float | None] = {}
    for key, value in (raw.items() if isinstance(raw, dict) else []):
        if not str(key).lstrip("-").isdigit():
            continue
        if isinstance(value, dict):  # upstream: {"server_policy_loss": x, "action_dim": 7}
            value = value.get(R.UPSTREAM_HISTORY_LOSS, value.get(C.POLICY_LOSS))
        out[int(key)] = rdr.num(value, where, f"[{key}]")
    return dict(sorted(out.items()))


def _history_by_round(history: dict[int, float | None], rounds: dict[int, RoundRecord],
                      notes: list[str]) -> dict[int, float | None]:
    """Upstream ``policy_loss_history.json``: keys are positions in a list, not rounds.

    When the keys are exactly ``0..k-1`` and do not all name rounds with a server
    evaluation, key ``i`` is the ``i``-th evaluated round (in round order).
    """
    keys = sorted(history)
    evaluated = sorted(n for n, r in rounds.items() if r.source == "server_eval"
                       and (r.composite is not None or r.eval_datasets))
    if keys != list(range(len(keys))) or set(keys) <= set(evaluated) or not evaluated:
        return history
    if len(keys) > len(evaluated):
        notes.append(f"server/policy_loss_history.json has {len(keys)} entries but only "
                     f"{len(evaluated)} evaluated rounds; its keys were read as round numbers.")
        return history
    notes.append("server/policy_loss_history.json (upstream) is keyed by position: entry i "
                 f"was matched to the i-th evaluated round ({evaluated[0]}..."
                 f"{evaluated[len(keys) - 1]}).")
    return {evaluated[i]: history[i] for i in keys}


def _unreadable_client_files(rd: RunDir) -> list[str]:
    """A note for every ``clients/<id>/round_<N>.json`` that is not a readable JSON object."""
    notes: list[str] = []
    if not rd.clients_dir.is_dir():
        return notes
    for path in sorted(rd.clients_dir.glob("*/round_*.json")):
        try:
            ok = isinstance(read_json(path), dict)
        except RunDirError as err:
            notes.append(f"{_rel(rd, path)} could not be read ({err}); that client's round "
                         "report was skipped.")
            continue
        if not ok:
            notes.append(f"{_rel(rd, path)} is not a JSON object; skipped.")
    return notes


def check_checkpoint(path: Path, n: int, *, verify_checksums: bool = True) -> CheckpointRecord:
    """Compare a checkpoint directory with its ``manifest.json``.

    This is :func:`zk0cli.core.checkpoint.check_manifest` (sizes and, with
    ``verify_checksums``, SHA-256); files not listed in the manifest are problems here.

    Args:
        path: ``models/checkpoint_round_<N>/``.
        n: Its round.
        verify_checksums: Hash every file (SHA-256) as well as checking sizes (bytes).

    Returns:
        The record; ``problems`` lists missing, extra, resized or altered files.
    """
    from zk0cli.core.checkpoint import check_manifest

    check = check_manifest(path, verify_checksums=verify_checksums)
    has_manifest = (path / MANIFEST_JSON).is_file()
    problems = [*check.problems, *(f"{rel}: not listed in {MANIFEST_JSON}"
                                   for rel in check.unlisted)]
    return CheckpointRecord(round=n, path=path, has_manifest=has_manifest, problems=problems)


def load_run(run_dir: Path, *, verify_checksums: bool = True) -> RunData:
    """Read a run directory, in zk0's format or the upstream zk0 project's.

    Args:
        run_dir: The run directory.
        verify_checksums: Hash checkpoint files against their manifests.

    Returns:
        The normalised run; unreadable or missing files are listed in ``notes``.

    Raises:
        RunDirError: ``run_dir`` is not a run directory (no ``run.json`` and no ``server/``).
    """
    rd = RunDir.open(Path(run_dir))
    if not rd.server_dir.is_dir():
        raise RunDirError(
            f"{rd.root} has no server/ folder: it is not a complete run directory (a zk0 run "
            "creates server/ before round 0; an upstream zk0 run writes its round files "
            "there). Nothing to analyse; pass the run's own folder, e.g. outputs/<run>.")
    rdr, notes = _Reader(), []
    fmt = "zk0" if rd.run_json.is_file() else "upstream"
    run_info: dict[str, Any] = {}
    if fmt == "zk0":
        try:
            raw_run = read_json(rd.run_json)
            run_info = dict(raw_run) if isinstance(raw_run, dict) else {}
        except RunDirError as err:
            notes.append(f"{RUN_JSON} could not be read ({err}).")
    else:
        notes.append(f"No {RUN_JSON}: read as an upstream zk0 run directory; status, timings "
                     "and versions are unknown.")
    status = str(run_info.get(RUN.status, "unknown"))
    if status not in RUN_STATUSES:
        status = "unknown"
    status = _owner_checked(rd.root, status, notes)
    notes += [f"client failures (below federation.max_client_failure_rate): {line}"
              for line in run_info.get(RUN.client_failures) or [] if status == "completed"]
    config = None
    if rd.config_json.is_file():
        try:
            config = read_json(rd.config_json)
        except RunDirError as err:
            notes.append(f"{CONFIG_JSON} could not be read ({err}).")
    else:
        notes.append(f"No {CONFIG_JSON}: configuration highlights are unavailable.")

    rounds = {}
    for n in rd.server_eval_rounds():
        rec = _round_from_eval(rd, n, rdr, notes)
        if rec is not None:
            rounds[n] = rec
    federated_rounds = None
    if rd.federated_metrics.is_file():
        where = _rel(rd, rd.federated_metrics)
        try:
            rows = [r for r in read_json(rd.federated_metrics) if isinstance(r, dict) and
                    isinstance(r.get(ROW.round), int)]
        except (RunDirError, TypeError) as err:
            notes.append(f"{where} could not be read ({err}).")
            rows = []
        federated_rounds = sorted({int(r[ROW.round]) for r in rows})
        for row in rows:
            if row[ROW.round] not in rounds:
                rounds[row[ROW.round]] = _round_from_row(row, rdr, where)
    history = _history(rd, rdr, notes)
    if fmt == "upstream" and history:
        history = _history_by_round(history, rounds, notes)
    notes += _unreadable_client_files(rd)
    seconds = run_info.get(RUN.round_seconds) or {}
    for n, rec in rounds.items():
        if rec.composite is None and history and history.get(n) is not None:
            rec.composite = history[n]
        if rec.seconds is None and str(n) in seconds:
            rec.seconds = rdr.num(seconds[str(n)], RUN_JSON, f"{RUN.round_seconds}.{n}")

    checkpoints = [check_checkpoint(rd.checkpoint(n), n, verify_checksums=verify_checksums)
                   for n in rd.checkpoint_rounds()]
    if fmt == "upstream" and checkpoints:
        notes.append(f"Upstream checkpoints carry no {MANIFEST_JSON}; they were not verified.")
        checkpoints = [c.model_copy(update={"has_manifest": True, "problems": []})
                       if not c.has_manifest else c for c in checkpoints]
    latest, latest_problem = None, None
    if rd.latest.is_file():
        latest = rd.latest.read_text(encoding="utf-8").strip()
        if rd.latest_checkpoint() is None:
            latest_problem = f"{MODELS_DIR}/{LATEST} names {latest!r}, which is not a directory"
    elif checkpoints:  # upstream runs (and interrupted ones) may have no models/latest
        newest = max((c for c in checkpoints if not c.problems), key=lambda c: c.round,
                     default=None)
        if newest is not None:
            latest = newest.path.name
            notes.append(f"No {MODELS_DIR}/{LATEST}: the newest complete checkpoint, {latest}, "
                         "is shown as the latest.")
    logger.debug("loaded %s: %s rounds, %s checkpoints", rd.root, len(rounds), len(checkpoints))
    return RunData(
        root=rd.root, format=fmt, status=status, run_info=run_info, config=config,
        rounds=[rounds[n] for n in sorted(rounds)], policy_loss_history=history,
        federated_rounds=federated_rounds, checkpoints=checkpoints, latest=latest,
        latest_problem=latest_problem, notes=notes, non_finite=rdr.non_finite,
    )


# --- resolving the RUN argument --------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedRun:
    """Which run directory ``RUN`` named, and how.

    Attributes:
        path: The run directory chosen.
        how: ``path``, ``latest`` or ``prefix``.
        others: For ``prefix``/``latest``: the other matching runs, newest first.
    """

    path: Path
    how: str
    others: list[Path] = field(default_factory=list)


def is_run_dir(path: Path) -> bool:
    """True when ``path`` holds ``run.json`` or ``server/`` (zk0 or upstream layout)."""
    rd = RunDir(Path(path))
    return rd.root.is_dir() and (rd.run_json.is_file() or rd.server_dir.is_dir())


def _runs_in(folder: Path, prefix: str = "") -> list[Path]:
    """Run directories directly in ``folder`` whose name starts with ``prefix``, newest first.

    Newest = last in name order: run names are ``YYYY-MM-DD_HH-MM-SS`` timestamps.
    """
    if not folder.is_dir():
        return []
    runs = [p for p in folder.iterdir() if p.name.startswith(prefix) and is_run_dir(p)]
    return sorted(runs, key=lambda p: p.name, reverse=True)


def resolve_run(arg: str | Path, *, outputs_root: Path = Path("outputs")) -> ResolvedRun:
    """Resolve the ``RUN`` argument of ``zk0 analyze-run``.

    Args:
        arg: A run directory, ``latest`` (the newest run under ``outputs_root``), or a path
            prefix such as ``outputs/2025-10-17`` (the newest run whose name starts so).
        outputs_root: Folder holding run directories (default ``./outputs``).

    Returns:
        The chosen run and the other candidates.

    Raises:
        RunDirError: Nothing matches (a UsageError: the CLI exits 2).
    """
    text = str(arg)
    expected = ("Expected a run directory (a folder holding run.json or server/, such as "
                "outputs/2025-10-17_08-02-19), 'latest', or a prefix of run names such as "
                "outputs/2025-10-17.")
    if text == "latest":
        runs = _runs_in(Path(outputs_root))
        if not runs:
            raise RunDirError(f"No run directories under {Path(outputs_root).absolute()}. "
                              f"{expected} Pass --outputs-root to look elsewhere.")
        return ResolvedRun(runs[0].absolute(), "latest", [p.absolute() for p in runs[1:]])
    path = Path(text)
    if path.is_dir():
        if is_run_dir(path):
            return ResolvedRun(path.absolute(), "path")
        inside = _runs_in(path)
        hint = (f" It holds {len(inside)} run directories; pass one of them or "
                f"'latest --outputs-root {path}'." if inside else "")
        raise RunDirError(f"{path.absolute()} is not a zk0 run directory.{hint} {expected}")
    candidates = _runs_in(path.parent, path.name)
    if not candidates and len(path.parts) == 1:
        candidates = _runs_in(Path(outputs_root), path.name)
    if not candidates:
        raise RunDirError(f"{text!r} is neither a directory nor a prefix of any run under "
                          f"{path.parent.absolute()}. {expected}")
    return ResolvedRun(candidates[0].absolute(), "prefix", [p.absolute() for p in candidates[1:]])


def _owner_checked(root: Path, status: str, notes: list[str]) -> str:
    """``running`` becomes ``interrupted`` when nobody owns the run any more."""
    from zk0cli.core.owner import owner_alive, read_owner

    if status != "running" or owner_alive(root) is not False:
        return status
    owner = read_owner(root)
    who = f" ({owner.describe()})" if owner else ""
    notes.append(f"run.json says running, but the process that owned the run{who} is gone "
                 "(killed, out of memory or its terminal closed): read as interrupted; "
                 "`zk0 simulate --resume` continues it.")
    return "interrupted"
