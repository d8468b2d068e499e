"""``zk0 simulate`` and ``zk0 tiny-run``: run a federation on this machine."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from zk0cli.cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, handle_errors
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

console = Console(highlight=False)


def _progress_table(p: RunProgress, clients: int) -> Table:
    t = Table.grid(padding=(0, 2))
    eta = ""
    if p.rounds_done > 0 and p.rounds_done < p.rounds_total:
        per = p.elapsed_s / p.rounds_done
        eta = f"  ETA {per * (p.rounds_total - p.rounds_done):.0f} s"
    loss = f"{p.last_loss:.4f}" if p.last_loss is not None else "-"
    t.add_row("round", f"{min(p.rounds_done + 1, p.rounds_total)}/{p.rounds_total}"
              if p.rounds_done < p.rounds_total else f"{p.rounds_total}/{p.rounds_total}")
    t.add_row("clients finished", f"{p.clients_reported}/{clients}")
    t.add_row("server policy loss", loss)
    t.add_row("elapsed", f"{p.elapsed_s:.0f} s{eta}")
    t.add_row("status", p.status)
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
        typer.Exit: With 1 when the run did not complete; 2 when it stopped at the join
            check (the sites' datasets do not fit the policy).
    """
    t0 = time.monotonic()
    with Live(console=console, refresh_per_second=2, transient=True) as live:
        status = runner(lambda p: live.update(_progress_table(p, config.num_clients)))
    console.print(summary_table(rundir))
    run = rundir.read_run()
    console.print(f"status: {status} in {time.monotonic() - t0:.0f} s — {rundir.root}")
    if status != "completed":
        from zk0cli.cli.errors import err_console

        err_console.print(f"run {status}: {run.get('error') or 'see server.log'}")
        from zk0cli import constants as K

        joined = run.get(K.JOIN_CHECK_FIELD) or []
        if status == "failed" and not all(r.get("ok") for r in joined):
            raise typer.Exit(EXIT_USAGE)  # the sites' datasets do not fit the policy
        raise typer.Exit(EXIT_FAILURE)
    return rundir


def load_run_config(config: Path | None, preset: str | None, sets: list[str] | None,
                    flags: Mapping[str, object]) -> RunConfig:
    """Build the run configuration from ``--config``/``--preset``, ``--set`` and flags.

    Raises:
        ConfigError: Listing every invalid field.
    """
    from zk0cli.core.config import load_config

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
            if push and not repo_id:
                from zk0cli.errors import UsageError

                raise UsageError("--push needs --repo-id user/model; nothing was pushed.")
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
