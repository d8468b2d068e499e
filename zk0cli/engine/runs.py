"""Creating a run directory and following a Flower run until it ends.

Shared by ``zk0 simulate``, ``zk0 train`` and ``zk0 tiny-run``: the engine writes
``config.json`` and the first ``run.json``, submits the zk0 Flower app, then watches the
run directory (which the ServerApp writes) and Flower's run status, reporting
:class:`RunProgress` to the caller's display.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zk0cli.core.config import RunConfig, config_to_json
from zk0cli.core.contract import FINAL_STATUSES, RunRecord
from zk0cli.core.diskfull import reserve, run_writes
from zk0cli.core.owner import claim
from zk0cli.core.rundir import RunDir, check_new_dir, read_server_round
from zk0cli.engine.flwr_proc import FlowerHome, run_status, stop_run
from zk0cli.errors import FederationError, RunDirError
from zk0cli.flower.progress import live_progress
from zk0cli.log import logger


@dataclass
class RunProgress:
    """What the live display shows.

    Attributes:
        rounds_done: Rounds whose files are written (0 = initial evaluation only).
        rounds_total: ``federation.rounds``.
        clients_reported: Client reports seen in the newest round being trained.
        last_loss: Newest composite server policy loss (``None`` before the first).
        elapsed_s: Seconds since submission.
        status: ``run.json`` status.
        phase: What the ServerApp is doing (``"round 0 evaluation"``); ``""`` before it
            started.
    """

    rounds_done: int
    rounds_total: int
    clients_reported: int
    last_loss: float | None
    elapsed_s: float
    status: str
    phase: str = ""


ProgressFn = Callable[[RunProgress], None]


def create_run(config: RunConfig, *, out: Path | None, command: str, engine: str) -> RunDir:
    """Create the run directory and write ``config.json`` and an initial ``run.json``.

    Args:
        config: The validated configuration.
        out: Run directory to create (must not exist), or ``None`` for
            ``<output_root>/<timestamp>``.
        command: The zk0 command, recorded in ``run.json``.
        engine: ``simulation`` or ``deployment``.

    The calling process becomes the run's owner (:func:`zk0cli.core.owner.claim`).

    Raises:
        RunDirError: ``out`` already exists (nothing is overwritten).
        DiskFullError: The disk is full (``run.json`` says ``failed`` if it fits).
    """
    if out is not None:
        out = check_new_dir(out, purpose="--out")
        rundir = RunDir.create(out.parent, name=out.name)
    else:
        rundir = RunDir.create(config.output_root)
    with run_writes(rundir, what="the new run directory"):
        claim(rundir.root)  # this process owns the run from its first file on
        reserve(rundir)  # room for the final run.json even if the disk fills up
        rundir.config_json.write_text(config_to_json(config) + "\n", encoding="utf-8")
        rundir.update_run(status="running", command=command, engine=engine, seed=config.seed,
                          rounds_planned=config.federation.rounds, rounds_completed=0,
                          started_at=time.time(), error=None)
    return rundir


def progress_of(rundir: RunDir, total: int, t0: float) -> RunProgress:
    """Read the run directory into a :class:`RunProgress` (cheap; safe while it is written)."""
    from zk0cli.core.rundir import read_policy_loss_history

    run = _safe(rundir.run_record) or RunRecord()
    history = _safe(lambda: read_policy_loss_history(rundir)) or {}
    last = history[max(history)] if history else None
    last = float(last) if isinstance(last, int | float) and not isinstance(last, bool) else None
    reported, phase = live_progress(rundir.server_dir, rundir.clients_dir,
                                    run.rounds_completed + 1)
    return RunProgress(run.rounds_completed, total, reported, last,
                       time.monotonic() - t0, run.status, phase)


def _safe[T](read: Callable[[], T]) -> T | None:
    """``read()``, or ``None`` when the file is half-written or not what it should be."""
    try:
        return read()
    except (RunDirError, ValueError, TypeError):  # pydantic's ValidationError is a ValueError
        return None


def follow_run(
    rundir: RunDir,
    home: FlowerHome,
    run_id: int,
    config: RunConfig,
    *,
    on_progress: ProgressFn | None = None,
    poll_s: float = 1.0,
    flower_check_s: float = 15.0,
    is_alive: Callable[[], bool] | None = None,
) -> str:
    """Wait for the run to end; returns the final ``run.json`` status.

    The ServerApp writes ``completed``/``failed`` itself; Flower's own status is checked
    every ``flower_check_s`` seconds in case the ServerApp died without writing. The wait
    is bounded: rounds × (round timeout + node wait timeout + 10 min) + 10 min.

    Raises:
        KeyboardInterrupt: Passed through (the caller stops the run).
    """
    t0 = time.monotonic()
    fed = config.federation
    per_round = fed.round_timeout_s + (fed.node_wait_timeout_s or 0.0) + 600
    deadline = t0 + fed.rounds * per_round + 600
    last_check = t0
    while True:
        prog = progress_of(rundir, fed.rounds, t0)
        if on_progress:
            on_progress(prog)
        if prog.status in FINAL_STATUSES:
            return prog.status
        now = time.monotonic()
        if is_alive is not None and not is_alive():
            return _fail(rundir, "the SuperLink process exited during the run")
        if now - last_check > flower_check_s:
            last_check = now
            try:
                status = run_status(home, run_id)
            except FederationError as err:
                logger.warning("could not read Flower's run status: %s", err)
                status = "unknown"
            if status.startswith("finished"):
                time.sleep(poll_s)  # the ServerApp may still be writing run.json
                prog = progress_of(rundir, fed.rounds, t0)
                if prog.status in FINAL_STATUSES:
                    return prog.status
                cause = last_exception(rundir.server_log)
                return _fail(rundir, f"Flower reports the run {status} but the ServerApp "
                             "wrote no final status" + (f" ({cause})" if cause else "")
                             + f"; see {rundir.server_log} and {rundir.logs_dir}/")
        if now > deadline:
            stop_run(home, run_id)
            return _fail(rundir, f"the run exceeded its time limit ({deadline - t0:.0f} s)")
        time.sleep(poll_s)


def last_exception(log: Path) -> str | None:
    """The first ``Exception: ...`` line of a Flower log, e.g. Ray's start-up failure.

    Args:
        log: ``server.log`` of a run (may be missing).

    Returns:
        The line without the log prefix (at most 300 characters), or ``None``.
    """
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(("Exception: ", "RuntimeError: ")) and "Ending simulation" not in line \
                and "Runtime crashed" not in line:
            return line[:300]
    return None


def _fail(rundir: RunDir, error: str) -> str:
    rundir.update_run(status="failed", error=error, ended_at=time.time())
    return "failed"


def mark_interrupted(rundir: RunDir) -> None:
    """Record a user interrupt in ``run.json`` unless the run already ended."""
    run = _safe(rundir.run_record) or RunRecord()
    if run.status not in ("completed", "failed"):
        rundir.update_run(status="interrupted", ended_at=time.time(),
                          error="interrupted (Ctrl-C, SIGTERM or SIGHUP)")


def client_failure_shares(rundir: RunDir, rounds: int) -> dict[str, tuple[int, list[str]]]:
    """Per client: the training rounds (1..``rounds``) it failed in, and the reasons.

    Read from the server round files (``failures`` of each round).

    Returns:
        ``{client_id: (rounds failed, [reason, ...])}`` for clients that failed at least once.
    """
    out: dict[str, tuple[int, list[str]]] = {}
    for r in range(1, rounds + 1):
        record = _safe(functools.partial(read_server_round, rundir, r))
        if record is None:
            continue
        seen: set[str] = set()
        for f in record.failures:
            if f.client_id in seen:
                continue
            seen.add(f.client_id)
            n, reasons = out.get(f.client_id, (0, []))
            out[f.client_id] = (n + 1, [*reasons, f"round {r}: {f.reason}"])
    return out


def apply_client_failure_policy(rundir: RunDir, config: RunConfig, status: str) -> str:
    """Fail a completed run whose clients failed too often; record the failures either way.

    A client that failed in more than ``federation.max_client_failure_rate`` of the
    training rounds ends the run ``failed`` (the error names each such client, its share
    and its reasons); below the limit ``run.json`` ``client_failures`` lists them for the
    summary and ``zk0 analyze-run``.

    Returns:
        The final status (``status``, or ``failed``).
    """
    if status != "completed":
        return status
    rounds = config.federation.rounds
    shares = client_failure_shares(rundir, rounds)
    if not shares:
        return status
    limit = config.federation.max_client_failure_rate
    lines = {cid: f"client {cid} failed in {n} of {rounds} round(s) ({n / rounds:.0%}): "
             + "; ".join(reasons[:3]) + (" ..." if len(reasons) > 3 else "")
             for cid, (n, reasons) in sorted(shares.items())}
    over = [cid for cid, (n, _) in shares.items() if n / rounds > limit]
    rundir.update_run(client_failures=list(lines.values()))
    if not over:
        return status
    error = (f"{len(over)} client(s) failed in more than federation.max_client_failure_rate "
             f"= {limit:g} of the rounds: " + " | ".join(lines[c] for c in sorted(over)))
    return _fail(rundir, error)
