"""``zk0 simulate`` and ``zk0 tiny-run``: run a federation on this machine."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.live import Live
from rich.table import Table

from zk0cli.cli.errors import EXIT_FAILURE, EXIT_OK, handle_errors, make_console
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
    from zk0cli.engine.runs import ProgressFn, RunProgress

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
    from zk0cli.core.rundir import read_json

    rows = read_json(rundir.federated_metrics) if rundir.federated_metrics.is_file() else []
    t = Table(title="zk0 run summary", title_justify="left")
    for col in ("round", "clients", "failed", "client loss", "fedprox", "server loss", "s"):
        t.add_column(col, justify="right")

    def f(v: object, fmt: str = ".4f") -> str:
        return format(v, fmt) if isinstance(v, int | float) else "-"

    for r in rows:
        t.add_row(str(r["round"]), str(r.get("num_clients", "-")),
                  str(r.get("num_failures", "-")), f(r.get("avg_client_loss")),
                  f(r.get("avg_fedprox_loss"), ".2e"), f(r.get("server_policy_loss")),
                  f(r.get("seconds"), ".1f"))
    return t


def run_local_federation(config: RunConfig, *, out: Path | None, command: str,
                         rundir: RunDir | None = None) -> RunDir:
    """Validate, prepare data, run the simulation with a live display; return the run dir.

    Args:
        config: The validated configuration.
        out: Run directory to create (``None``: ``outputs/<timestamp>``).
        command: Recorded in ``run.json``.
        rundir: An existing run directory prepared for a resume (then ``out`` is unused).

    Raises:
        typer.Exit: With 1 when the run did not complete, 130 when interrupted.
    """
    from zk0cli.core.rundir import check_new_dir
    from zk0cli.engine.prepare import prepare_datasets
    from zk0cli.engine.runs import create_run
    from zk0cli.engine.simulate import parallelism, run_simulation

    if rundir is None and out is not None:
        check_new_dir(out, purpose="--out")  # before minutes of dataset preparation
    with console.status("preparing datasets...") as status:
        prepare_datasets(config, on_dataset=lambda n: status.update(f"preparing dataset {n}..."))
    if rundir is None:
        rundir = create_run(config, out=out, command=command, engine="simulation")
    par = parallelism(config)
    console.print(f"run directory: {rundir.root}")
    console.print(f"{config.num_clients} clients, {config.federation.rounds} round(s); "
                  f"{par.parallel_clients} client(s) in parallel "
                  f"({par.cpus_per_client:g} CPU each of {par.cpus})")
    return run_with_display(config, rundir, lambda on_progress: run_simulation(
        config, rundir, on_progress=on_progress))


def run_with_display(config: RunConfig, rundir: RunDir,
                     runner: Callable[[ProgressFn], str]) -> RunDir:
    """Run ``runner(on_progress)`` under the live display, then print the summary.

    Shared by ``simulate``, ``tiny-run`` and ``train``.

    Raises:
        typer.Exit: With 1 when the run did not complete.
    """
    import logging

    t0 = time.monotonic()
    clock = EtaClock()
    # What this process logs (commands started, datasets, library output) goes to the run's
    # logs/zk0.log; the console shows warnings only (all of it with -v).
    from zk0cli import constants as K

    (rundir.root / K.LOGS_DIR).mkdir(parents=True, exist_ok=True)
    log_file = logging.FileHandler(rundir.root / K.LOGS_DIR / K.CLI_LOG, encoding="utf-8")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    zk0_logger = logging.getLogger(K.LOGGER_NAME)
    zk0_logger.addHandler(log_file)

    def show(live: Live, p: RunProgress) -> None:
        live.update(_progress_table(p, config.num_clients, clock.update(p, time.monotonic())))

    try:
        with Live(console=console, refresh_per_second=2, transient=True) as live:
            status = runner(lambda p: show(live, p))
    except KeyboardInterrupt:
        print_interrupted(rundir)
        raise
    finally:
        zk0_logger.removeHandler(log_file)
        log_file.close()
    console.print(summary_table(rundir))
    run = rundir.read_run()
    console.print(f"status: {status} in {time.monotonic() - t0:.0f} s — {rundir.root}")
    if status != "completed":
        from zk0cli.cli.errors import err_console

        err_console.print(f"run {status}: {run.get('error') or 'see server.log'}")
        raise typer.Exit(EXIT_FAILURE)
    return rundir


def print_interrupted(rundir: RunDir) -> None:
    """After Ctrl-C: the rounds recorded, the checkpoint kept and the exact resume command."""
    import shlex

    console.print(summary_table(rundir))
    run = _safe_read_run(rundir)
    ckpt = rundir.latest_checkpoint()
    done = run.get("rounds_completed", 0)
    console.print(f"interrupted after {done} of {run.get('rounds_planned', '?')} round(s); "
                  f"kept: {rundir.root} (round files, logs"
                  + (f", checkpoint {ckpt.name})" if ckpt else "; no checkpoint yet)"))
    command = "train" if run.get("engine") == "deployment" else "simulate"
    if ckpt is not None:
        console.print(f"continue with: zk0 {command} --resume {shlex.quote(str(rundir.root))}"
                      + (" --superlink HOST:PORT" if command == "train" else ""))
    else:
        console.print("no checkpoint was written, so there is nothing to resume; start again.")


def _safe_read_run(rundir: RunDir) -> dict[str, object]:
    try:
        return dict(rundir.read_run())
    except Exception:  # a half-written run.json must not hide the interrupt message
        return {}


def load_run_config(config: Path | None, preset: str | None, sets: list[str] | None,
                    flags: Mapping[str, object]) -> RunConfig:
    """Build the run configuration from ``--config``/``--preset``, ``--set`` and flags.

    ``--config`` and ``--preset`` exclude each other (a file is a whole configuration; start
    it from ``zk0 config show --preset ...`` or ``examples/`` instead).

    Raises:
        ConfigError: Listing every invalid field.
        UsageError: Both ``--config`` and ``--preset`` were given.
    """
    from zk0cli.core.config import load_config

    if config is not None and preset is not None:
        from zk0cli.errors import UsageError

        raise UsageError(f"--preset {preset} and --config {config} were both given; a config "
                         "file is a whole configuration, so give one of them. To start a file "
                         f"from the preset: zk0 config show --preset {preset} > my.toml; to "
                         "change single fields use --set section.key=value.")
    return load_config(preset=preset, config_file=config, overrides=sets or [], flags=flags)


def load_for_resume(run: Path, config: Path | None, sets: list[str] | None,
                    flags: Mapping[str, object]) -> tuple[RunDir, RunConfig]:
    """Open a run directory to resume and build its continued configuration.

    The run's own ``config.json`` (or ``--config``) plus ``--set`` and flags, checked
    against the checkpoint by :func:`zk0cli.core.resume.prepare_resume`.

    Raises:
        RunDirError: ``run`` is not a run directory or has no complete checkpoint.
        UsageError: The configuration changed in a way the checkpoint cannot carry over.
    """
    from zk0cli.core.config import load_config
    from zk0cli.core.resume import prepare_resume
    from zk0cli.core.rundir import RunDir, read_json

    rundir = RunDir.open(run)
    base = read_json(rundir.config_json)
    cfg = load_config(config_file=config, base=base, overrides=sets or [], flags=flags)
    point = prepare_resume(rundir, cfg)
    console.print(f"resuming {rundir.root} after round {point.server_round} "
                  f"({point.checkpoint.name})")
    return rundir, cfg


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
    with handle_errors():
        flags: dict[str, object] = {"federation.rounds": rounds,
                                    "federation.num_clients": clients}
        if resume is not None:
            if out is not None or preset is not None:
                from zk0cli.errors import UsageError

                raise UsageError("--resume continues the given run directory: drop --out "
                                 "and --preset (the run's config.json is the base).")
            rundir, cfg = load_for_resume(resume, config, set_, flags)
            run_local_federation(cfg, out=None, command="simulate", rundir=rundir)
        else:
            cfg = load_run_config(config, preset, set_, flags)
            run_local_federation(cfg, out=out, command="simulate")
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

    phase = "config"
    try:
        with handle_errors(phase):
            if push:
                T.check_push_target(repo_id)  # before minutes of smoke run
            cfg = load_run_config(config, None if config else "tiny", set_,
                        {"federation.rounds": rounds, "federation.num_clients": clients})
        phase = "federation"
        with handle_errors(phase):
            rundir = run_local_federation(cfg, out=out, command="tiny-run")
        phase = "checkpoint"
        with handle_errors(phase):
            ckpt = T.check_checkpoint(rundir)
            console.print(f"checkpoint reloads offline with SmolVLAPolicy.from_pretrained: {ckpt}")
        phase = "analysis"
        with handle_errors(phase):
            T.analyze(rundir, console)
        if push:
            phase = "push"
            with handle_errors(phase):
                T.push(ckpt, repo_id=str(repo_id), console=console)
    except typer.Exit as exc:
        if exc.exit_code not in (0, None):
            from zk0cli.cli.errors import err_console

            err_console.print(f"tiny-run failed in phase: {phase}")
        raise
    console.print("tiny-run: all phases passed")
