"""``zk0 simulate`` and ``zk0 tiny-run``: run a federation on this machine."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

from zk0cli.cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, handle_errors, make_console
from zk0cli.cli.options import (
    ClientsOpt,
    ConfigOpt,
    OutOpt,
    PresetOpt,
    ResumeOpt,
    RoundsOpt,
    SetOpt,
)

if TYPE_CHECKING:
    from zk0cli.core.config import RunConfig
    from zk0cli.core.rundir import RunDir
    from zk0cli.engine.lifecycle import Runner, RunOutcome, RunRequest
    from zk0cli.engine.runs import RunProgress

console = make_console()


class EtaClock:
    """A steady ETA: the mean measured round time times the rounds left, counting down.

    Rounds are timed from the moment the display first sees a round start training to the
    moment it is recorded, so set-up (datasets, statistics, round-0 evaluation) is not
    counted, and the estimate changes only when a round completes.
    """

    def __init__(self) -> None:
        self._started: dict[int, float] = {}  # round -> when its training was first seen
        self._durations: dict[int, float] = {}
        self._last_done = -1
        self._t_done = 0.0

    def update(self, p: RunProgress, now: float) -> float | None:
        """Seconds left (``None`` until a round has been timed)."""
        training = p.rounds_done + 1
        if p.rounds_done != self._last_done:
            for r in range(self._last_done + 1, p.rounds_done + 1):
                if r in self._started:
                    self._durations[r] = now - self._started[r]
            if self._last_done >= 0:  # a round was just recorded: the next one starts now
                self._started.setdefault(training, now)
            self._last_done, self._t_done = p.rounds_done, now
        if "training" in p.phase or p.clients_reported:
            self._started.setdefault(training, now)
        if not self._durations or p.rounds_done >= p.rounds_total:
            return None
        per = sum(self._durations.values()) / len(self._durations)
        return max(0.0, per * (p.rounds_total - p.rounds_done) - (now - self._t_done))


def _progress_table(p: RunProgress, clients: int, eta_s: float | None = None) -> Table:
    t = Table.grid(padding=(0, 2))
    eta = f"  ETA {eta_s:.0f} s" if eta_s is not None else ""
    loss = f"{p.last_loss:.4f}" if p.last_loss is not None else "-"
    t.add_row("round", f"{min(p.rounds_done + 1, p.rounds_total)}/{p.rounds_total}"
              if p.rounds_done < p.rounds_total else f"{p.rounds_total}/{p.rounds_total}")
    t.add_row("clients finished", f"{p.clients_reported}/{clients}")
    t.add_row("server policy loss", loss)
    t.add_row("elapsed", f"{p.elapsed_s:.0f} s{eta}")
    t.add_row("status", p.status)
    t.add_row("now", p.phase or "starting the SuperLink and the ServerApp")
    return t


def summary_table(rundir: RunDir) -> Table:
    """Per-round summary read from ``server/federated_metrics.json``."""
    from zk0cli.core.rundir import read_metrics_rows

    rows = read_metrics_rows(rundir)
    t = Table(title="zk0 run summary", title_justify="left")
    for col in ("round", "clients", "failed", "client loss", "fedprox", "server loss", "s"):
        t.add_column(col, justify="right")

    def f(v: object, fmt: str = ".4f") -> str:
        return format(v, fmt) if isinstance(v, int | float) else "-"

    for r in rows:
        t.add_row(str(r.round), str(r.num_clients), str(r.num_failures), f(r.avg_client_loss),
                  f(r.avg_fedprox_loss, ".2e"), f(r.server_policy_loss), f(r.seconds, ".1f"))
    return t


class RichDisplay:
    """The rich console implementation of :class:`~zk0cli.engine.lifecycle.RunDisplay`."""

    @contextmanager
    def status(self, text: str) -> Iterator[Callable[[str], None]]:
        """A spinner; yields a function that changes its text."""
        with console.status(text) as st:
            yield st.update

    def info(self, text: str) -> None:
        """Print one line."""
        console.print(text)

    def follow(self, config: RunConfig, rundir: RunDir, runner: Runner) -> str:
        """Run ``runner(on_progress)`` under the live progress table.

        What this process logs (commands started, datasets, library output) goes to the
        run's ``logs/zk0.log``; the console shows warnings only (all of it with ``-v``).
        After Ctrl-C it prints what was kept and the exact ``--resume`` command.
        """
        import logging

        from zk0cli import constants as K
        from zk0cli.core import contract as C
        from zk0cli.core.diskfull import RunLogHandler, run_writes

        clock = EtaClock()
        with run_writes(rundir, what=f"{C.LOGS_DIR}/{C.CLI_LOG}"):
            rundir.logs_dir.mkdir(parents=True, exist_ok=True)
            log_file = RunLogHandler(rundir.logs_dir / C.CLI_LOG)
        log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        zk0_logger = logging.getLogger(K.LOGGER_NAME)
        zk0_logger.addHandler(log_file)

        def show(live: Live, p: RunProgress) -> None:
            live.update(_progress_table(p, config.num_clients, clock.update(p, time.monotonic())))

        try:
            with Live(console=console, refresh_per_second=2, transient=True) as live:
                return runner(lambda p: show(live, p))
        except KeyboardInterrupt:
            print_interrupted(rundir)
            raise
        finally:
            zk0_logger.removeHandler(log_file)
            log_file.close()


def show_outcome(outcome: RunOutcome, *, t0: float) -> RunDir:
    """Print the per-round summary and the status; exit 1 unless the run completed.

    Raises:
        typer.Exit: With 1 when the run did not complete; 2 when it stopped at the join
            check (the sites' datasets do not fit the policy).
    """
    rundir = outcome.rundir
    console.print(summary_table(rundir))
    console.print(f"status: {outcome.status} in {time.monotonic() - t0:.0f} s — {rundir.root}")
    record = rundir.run_record()
    if record.stop_reason:  # federation.early_stop ended it before rounds_planned
        console.print(Text.assemble(("stopped early: ", "cyan"), record.stop_reason,
                                    f"; best checkpoint {record.best_checkpoint or 'none'}"))
    for line in record.client_failures:  # below max_client_failure_rate
        console.print(Text.assemble(("client failures: ", "yellow"), line))
    _print_tracking(rundir.read_run())
    if not outcome.completed:
        from zk0cli.cli.errors import err_console

        err_console.print(f"run {outcome.status}: {outcome.error or f'see {rundir.server_log}'}")
        joined = rundir.run_record().join_check
        if outcome.status == "failed" and not all(r.get("ok") for r in joined):
            raise typer.Exit(EXIT_USAGE)  # the sites' datasets do not fit the policy
        raise typer.Exit(EXIT_FAILURE)
    return rundir


def run_request(command: str, *, config: Path | None, preset: str | None,
                sets: list[str] | None, flags: Mapping[str, object], out: Path | None = None,
                resume: Path | None = None) -> RunRequest:
    """The engine's :class:`~zk0cli.engine.lifecycle.RunRequest` from parsed options."""
    from zk0cli.engine.lifecycle import RunRequest

    return RunRequest(command=command, config=config, preset=preset, sets=list(sets or []),
                      flags=dict(flags), out=out, resume=resume)


def print_interrupted(rundir: RunDir) -> None:
    """After Ctrl-C: the rounds recorded, the checkpoint kept and the exact resume command."""
    import shlex

    from zk0cli.core.contract import RunRecord

    console.print(summary_table(rundir))
    try:
        run = rundir.run_record()
    except Exception:  # a half-written run.json must not hide the interrupt message
        run = RunRecord()
    ckpt = rundir.latest_checkpoint()
    console.print(f"interrupted after {run.rounds_completed} of {run.rounds_planned or '?'} "
                  f"round(s); kept: {rundir.root} (round files, logs"
                  + (f", checkpoint {ckpt.name})" if ckpt else "; no checkpoint yet)"))
    command = "train" if run.engine == "deployment" else "simulate"
    if ckpt is not None:
        console.print(f"continue with: zk0 {command} --resume {shlex.quote(str(rundir.root))}"
                      + (" --superlink HOST:PORT" if command == "train" else ""))
    else:
        console.print("no checkpoint was written, so there is nothing to resume; start again.")


def _print_tracking(run: Mapping[str, object]) -> None:
    """Where the experiment trackers logged (``run.json`` ``tracking``), never secrets."""
    from zk0cli import constants as K

    tracking = run.get(K.RUN_TRACKING_KEY)
    if not isinstance(tracking, Mapping):
        return
    tb = tracking.get("tensorboard")
    if isinstance(tb, Mapping) and tb.get("log_dir"):
        console.print(f"TensorBoard: tensorboard --logdir {tb['log_dir']}")
    wb = tracking.get("wandb")
    if isinstance(wb, Mapping):
        if wb.get(K.WANDB_URL):
            console.print(f"W&B run: {wb[K.WANDB_URL]}")
        if wb.get(K.WANDB_SYNC_COMMAND):
            console.print(f"W&B run {wb.get(K.WANDB_ID)} logged offline; upload it with: "
                          f"{wb[K.WANDB_SYNC_COMMAND]}")



def simulate(
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    rounds: RoundsOpt = None,
    clients: ClientsOpt = None,
    out: OutOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = None,
) -> None:
    """Run N virtual clients on this machine through a local Flower SuperLink."""
    from zk0cli.engine import lifecycle

    t0 = time.monotonic()
    with handle_errors():
        req = run_request("simulate", config=config, preset=preset, sets=set_, out=out,
                          resume=resume, flags={"federation.rounds": rounds,
                                                "federation.num_clients": clients})
        show_outcome(lifecycle.simulate(req, RichDisplay()), t0=t0)
    raise typer.Exit(EXIT_OK)


def tiny_run(
    config: ConfigOpt = None,
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds of the smoke run.")] = 1,
    clients: Annotated[int, typer.Option("--clients", help="Clients of the smoke run.")] = 2,
    out: OutOpt = None,
    set_: SetOpt = None,
    push: Annotated[bool, typer.Option("--push", help="Push the checkpoint (needs --repo-id).")]
    = False,
    repo_id: Annotated[str | None, typer.Option("--repo-id", help="Hub repo for --push.",
                                                show_default=False)] = None,
) -> None:
    """One-round smoke run of the whole lifecycle on the embedded defaults (offline).

    Phases: config, data, federation, checkpoint, analysis, and push only with --push.
    """
    from zk0cli.engine import tiny_run as T

    t0 = time.monotonic()
    phase = "config"
    try:
        with handle_errors(lambda: phase):
            req = run_request("tiny-run", config=config, preset=None if config else "tiny",
                              sets=set_, out=out, flags={"federation.rounds": rounds,
                                                         "federation.num_clients": clients})

            def on_phase(name: str) -> None:
                nonlocal phase
                phase = name

            T.run_tiny(req, RichDisplay(), on_phase=on_phase, push_repo=repo_id,
                       push_requested=push, on_federation_end=lambda o: show_outcome(o, t0=t0))
    except typer.Exit as exc:
        if exc.exit_code not in (0, None):
            from zk0cli.cli.errors import err_console

            err_console.print(f"tiny-run failed in phase: {phase}")
        raise
    console.print("tiny-run: all phases passed")
