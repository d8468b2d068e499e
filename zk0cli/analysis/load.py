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
from zk0cli.core.rundir import RUN_JSON, RUN_STATUSES, RunDir, read_json
from zk0cli.errors import RunDirError
from zk0cli.log import logger

_NON_FINITE = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "-inf": -math.inf,
               "infinity": math.inf, "-infinity": -math.inf}
_CLIENT_FIELDS = (C.LOSS, C.POLICY_LOSS, C.FEDPROX_LOSS, C.GRAD_NORM, C.PARAM_UPDATE_NORM,
                  C.NUM_EXAMPLES, C.NUM_STEPS, C.LR_KEY, C.SECONDS)
# aggregated client metrics: zk0 names, and the upstream / federated_metrics.json aliases
_AGG_ALIASES = {
    "avg_client_loss": "loss_avg", "std_client_loss": "loss_std",
    "avg_policy_loss": "policy_loss_avg", "avg_client_policy_loss": "policy_loss_avg",
    "avg_fedprox_loss": "fedprox_loss_avg", "avg_client_proximal_loss": "fedprox_loss_avg",
    "avg_grad_norm": "grad_norm_avg", "avg_client_grad_norm": "grad_norm_avg",
    "avg_param_update_norm": "param_update_norm_avg", "param_update_norm": "param_update_norm_avg",
}


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
    cid = str(raw.get(C.CLIENT_ID, raw.get("cid", f"#{idx}")))
    values = {k: rdr.num(raw.get(k), where, f"clients[{cid}].{k}") for k in _CLIENT_FIELDS}
    failed = raw.get("status") == "failed" or bool(raw.get(C.FAILED)) or bool(raw.get(C.ERROR))
    return ClientRecord(
        client_id=cid, status="failed" if failed else "ok",
        error=str(raw[C.ERROR]) if raw.get(C.ERROR) else None,
        dataset_name=raw.get(C.DATASET_NAME), **values,
    )


def _aggregated(raw: dict[str, Any], rdr: _Reader, where: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, value in raw.items():
        if isinstance(value, dict | list):
            continue
        out[_AGG_ALIASES.get(key, key)] = rdr.num(value, where, key)
    return out


def _eval_datasets(raw: dict[str, Any], rdr: _Reader, where: str) -> dict[str, float | None]:
    server_eval = raw.get("server_eval")
    if isinstance(server_eval, dict) and isinstance(server_eval.get("datasets"), dict):
        return {str(k): rdr.num(v, where, f"server_eval.datasets.{k}")
                for k, v in server_eval["datasets"].items()}
    out = {}  # upstream: a list of {dataset_name, loss, ...}
    for i, item in enumerate(raw.get("server_per_dataset_eval_results") or []):
        if isinstance(item, dict):
            name = str(item.get(C.DATASET_NAME) or item.get("evaldata_id", i))
            out[name] = rdr.num(item.get(C.LOSS), where, f"server_per_dataset_eval_results.{name}")
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
    server_eval = raw.get("server_eval")
    if isinstance(server_eval, dict) and "composite" in server_eval:
        composite = rdr.num(server_eval.get("composite"), where, "server_eval.composite")
    else:
        composite = rdr.num(raw.get("server_composite_eval_loss"), where,
                            "server_composite_eval_loss")
    agg = _aggregated(raw.get("client_aggregated_training_metrics") or {}, rdr, where)
    clients = [_client(c, rdr, where, i)
               for i, c in enumerate(raw.get("individual_client_training_metrics") or [])
               if isinstance(c, dict)]
    failures = [{"client_id": str(f.get(C.CLIENT_ID, "?")), "reason": str(f.get("reason", ""))}
                for f in raw.get("failures") or [] if isinstance(f, dict)]
    known = {c.client_id for c in clients}
    clients += [ClientRecord(client_id=f["client_id"], status="failed", error=f["reason"])
                for f in failures if f["client_id"] not in known]
    aggregated = raw.get("aggregated")
    if not isinstance(aggregated, bool):
        n_agg = agg.get("num_clients")
        aggregated = None if n == 0 else bool(
            any(c.status == "ok" for c in clients) or (n_agg is not None and n_agg > 0))
    note = raw.get("note")
    return RoundRecord(
        round=n, aggregated=aggregated, note=str(note) if note else None,
        proximal_mu=rdr.num(raw.get("proximal_mu", agg.get("diagnosis_mu")), where, "proximal_mu"),
        lr=rdr.num(raw.get("lr", agg.get("diagnosis_lr")), where, "lr"),
        seconds=rdr.num(raw.get(C.SECONDS), where, C.SECONDS),
        eval_datasets=_eval_datasets(raw, rdr, where), composite=composite,
        aggregated_metrics=agg, clients=clients, failures=failures,
    )


def _round_from_row(row: dict[str, Any], rdr: _Reader, where: str) -> RoundRecord:
    n = int(row["round"])
    agg = _aggregated(row, rdr, f"{where} round {n}")
    aggregated = row.get("aggregated")
    return RoundRecord(
        round=n, source="federated_metrics",
        aggregated=aggregated if isinstance(aggregated, bool) else None,
        proximal_mu=agg.pop("proximal_mu", None), lr=agg.pop("lr", None),
        seconds=agg.pop(C.SECONDS, None), composite=agg.pop("server_policy_loss", None),
        aggregated_metrics={k: v for k, v in agg.items() if k != "round"},
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
            value = value.get("server_policy_loss", value.get(C.POLICY_LOSS))
        out[int(key)] = rdr.num(value, where, f"[{key}]")
    return dict(sorted(out.items()))


def check_checkpoint(path: Path, n: int, *, verify_checksums: bool = True) -> CheckpointRecord:
    """Compare a checkpoint directory with its ``manifest.json``.

    With ``verify_checksums`` this is :func:`zk0cli.core.checkpoint.manifest_problems`
    (sizes and SHA-256); without, sizes only. Files not listed in the manifest are
    reported either way.

    Args:
        path: ``models/checkpoint_round_<N>/``.
        n: Its round.
        verify_checksums: Hash every file (SHA-256) as well as checking sizes (bytes).

    Returns:
        The record; ``problems`` lists missing, extra, resized or altered files.
    """
    from zk0cli.core.checkpoint import MANIFEST_JSON, manifest_problems

    manifest_path = path / MANIFEST_JSON
    if not manifest_path.is_file():
        return CheckpointRecord(round=n, path=path, has_manifest=False,
                                problems=[f"{MANIFEST_JSON} is missing"])
    try:
        files = dict(read_json(manifest_path)["files"])
    except (RunDirError, KeyError, TypeError, ValueError) as err:
        return CheckpointRecord(round=n, path=path, has_manifest=True,
                                problems=[f"{MANIFEST_JSON} is unreadable: {err}"])
    if verify_checksums:
        problems = manifest_problems(path)
    else:
        problems = []
        for rel, meta in sorted(files.items()):
            f = path / rel
            if not f.is_file():
                problems.append(f"{rel}: listed in the manifest but missing")
            elif f.stat().st_size != meta.get("size"):
                problems.append(f"{rel}: size {f.stat().st_size} != manifest {meta.get('size')}")
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel != MANIFEST_JSON and rel not in files:
            problems.append(f"{rel}: not in the manifest")
    return CheckpointRecord(round=n, path=path, has_manifest=True, problems=problems)


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
    rdr, notes = _Reader(), []
    fmt = "zk0" if rd.run_json.is_file() else "upstream"
    run_info: dict[str, Any] = {}
    if fmt == "zk0":
        try:
            run_info = rd.read_run()
        except RunDirError as err:
            notes.append(f"run.json could not be read ({err}).")
    else:
        notes.append("No run.json: read as an upstream zk0 run directory; status, timings and "
                     "versions are unknown.")
    status = str(run_info.get("status", "unknown"))
    if status not in RUN_STATUSES:
        status = "unknown"
    status = _owner_checked(rd.root, status, notes)
    notes += [f"client failures (below federation.max_client_failure_rate): {line}"
              for line in run_info.get("client_failures") or [] if status == "completed"]
    config = None
    if rd.config_json.is_file():
        try:
            config = read_json(rd.config_json)
        except RunDirError as err:
            notes.append(f"config.json could not be read ({err}).")
    else:
        notes.append("No config.json: configuration highlights are unavailable.")

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
                    isinstance(r.get("round"), int)]
        except (RunDirError, TypeError) as err:
            notes.append(f"{where} could not be read ({err}).")
            rows = []
        federated_rounds = sorted({int(r["round"]) for r in rows})
        for row in rows:
            if row["round"] not in rounds:
                rounds[row["round"]] = _round_from_row(row, rdr, where)
    history = _history(rd, rdr, notes)
    seconds = run_info.get("round_seconds") or {}
    for n, rec in rounds.items():
        if rec.composite is None and history and history.get(n) is not None:
            rec.composite = history[n]
        if rec.seconds is None and str(n) in seconds:
            rec.seconds = rdr.num(seconds[str(n)], RUN_JSON, f"round_seconds.{n}")

    checkpoints = [check_checkpoint(rd.checkpoint(n), n, verify_checksums=verify_checksums)
                   for n in rd.checkpoint_rounds()]
    if fmt == "upstream" and checkpoints:
        notes.append("Upstream checkpoints carry no manifest.json; they were not verified.")
        checkpoints = [c.model_copy(update={"has_manifest": True, "problems": []})
                       if not c.has_manifest else c for c in checkpoints]
    latest, latest_problem = None, None
    if rd.latest.is_file():
        latest = rd.latest.read_text(encoding="utf-8").strip()
        if rd.latest_checkpoint() is None:
            latest_problem = f"models/latest names {latest!r}, which is not a directory"
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
