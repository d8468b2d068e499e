"""The run lifecycle of ``zk0 simulate``, ``zk0 train`` and ``zk0 tiny-run``, in one place.

Every run command goes through the same steps, in this order, so that bad input is
refused before minutes of work and nothing already written is touched:

1. check the request (``--resume`` excludes ``--out`` and ``--preset``) and that ``--out``
   can be created;
2. build the configuration (a new one, or the run's own plus overrides for ``--resume``,
   checked against its checkpoint);
3. probe the SuperLink (``train --superlink``) before a run directory exists or changes;
4. prepare the datasets;
5. create the run directory (unless resuming);
6. launch and follow the Flower run under the caller's display;
7. return the outcome (the caller shows it and picks the exit code).

The display is the caller's (:class:`RunDisplay`): the engine never imports rich or Typer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from zk0cli.core.contract import LATEST, MODELS_DIR
from zk0cli.core.rundir import RunDir
from zk0cli.errors import UsageError

if TYPE_CHECKING:
    from zk0cli.core.config import RunConfig
    from zk0cli.engine.deploy_options import ConnectionOptions, LocalTrialOptions
    from zk0cli.engine.prepare import PreparedData
    from zk0cli.engine.raycluster import ClusterResources
    from zk0cli.engine.runs import ProgressFn

#: Runs the Flower run with a progress callback; returns the final ``run.json`` status.
Runner = Callable[["ProgressFn"], str]


class RunDisplay(Protocol):
    """What the engine asks of the caller's display (the CLI implements it with rich)."""

    def status(self, text: str) -> AbstractContextManager[Callable[[str], None]]:
        """A spinner with ``text``; the value is a function that changes the text."""
        ...

    def info(self, text: str) -> None:
        """Print one line."""
        ...

    def follow(self, config: RunConfig, rundir: RunDir, runner: Runner) -> str:
        """Run ``runner`` under a live progress display; return its status."""
        ...


@dataclass(frozen=True)
class RunRequest:
    """What a run command was asked to do (already parsed from its options).

    Attributes:
        command: ``simulate``, ``train`` or ``tiny-run`` (recorded in ``run.json``).
        config: ``--config`` file.
        preset: ``--preset`` name.
        sets: ``--set section.key=value`` overrides.
        flags: Flag values by dotted config path (``None``: not given).
        out: ``--out`` run directory to create.
        resume: ``--resume`` run directory to continue.
    """

    command: str
    config: Path | None = None
    preset: str | None = None
    sets: list[str] = field(default_factory=list)
    flags: Mapping[str, object] = field(default_factory=dict)
    out: Path | None = None
    resume: Path | None = None


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended.

    Attributes:
        rundir: Its run directory.
        status: The final ``run.json`` status.
        error: ``run.json``'s ``error`` (why it failed), if any.
    """

    rundir: RunDir
    status: str
    error: str | None

    @property
    def completed(self) -> bool:
        """Whether every round ran."""
        return self.status == "completed"


def check_request(req: RunRequest) -> None:
    """Step 1: refuse contradictory options and an ``--out`` that cannot be created.

    Raises:
        UsageError: ``--resume`` with ``--out`` or ``--preset``; ``--config`` with
            ``--preset`` (a config file is a whole configuration).
        RunDirError: ``--out`` exists or cannot be created.
    """
    if req.resume is not None and (req.out is not None or req.preset is not None):
        raise UsageError("--resume continues the given run directory: drop --out and "
                         "--preset (the run's config.json is the base).")
    if req.config is not None and req.preset is not None:
        raise UsageError(f"--preset {req.preset} and --config {req.config} were both given; a "
                         "config file is a whole configuration, so give one of them. To start a "
                         f"file from the preset: zk0 config show --preset {req.preset} > my.toml; "
                         "to change single fields use --set section.key=value.")
    if req.out is not None:
        from zk0cli.core.rundir import check_new_dir

        check_new_dir(req.out, purpose="--out")  # before any process or dataset work


def load_config(req: RunRequest) -> RunConfig:
    """Step 2 for a new run: ``--config``/``--preset``, ``--set`` and flags.

    Raises:
        ConfigError: Listing every invalid field.
    """
    from zk0cli.core.config import load_config as _load
    from zk0cli.core.tracking import require_trackers

    cfg = _load(preset=req.preset, config_file=req.config, overrides=req.sets, flags=req.flags)
    require_trackers(cfg.tracking)  # exit 2 naming the extra, before anything starts
    return cfg


def open_resume(req: RunRequest, ui: RunDisplay) -> tuple[RunDir, RunConfig]:
    """Step 2 for ``--resume``: the run's own configuration plus overrides, checked.

    Raises:
        RunDirError: Not a run directory, or no complete checkpoint.
        UsageError: The configuration changed in a way the checkpoint cannot carry over.
        RunOwnedError: Another live process owns the run.
    """
    from zk0cli.core.config import load_config as _load
    from zk0cli.core.resume import prepare_resume
    from zk0cli.core.rundir import read_json

    assert req.resume is not None
    rundir = RunDir.open(req.resume)
    from zk0cli.core.owner import claim, owner_alive

    if owner_alive(rundir.root):  # refuse a live owner's run at once, before slower checks
        claim(rundir.root)  # raises RunOwnedError naming that owner
    base = read_json(rundir.config_json)
    cfg = _load(config_file=req.config, base=base, overrides=req.sets, flags=req.flags)
    from zk0cli.core.tracking import require_trackers

    require_trackers(cfg.tracking)  # before prepare_resume moves any file
    _check_resources(cfg, ui, simulation=req.command != "train")
    point = prepare_resume(rundir, cfg)
    if point.previous_owner:
        ui.info(f"taking over {rundir.root}: its owner ({point.previous_owner}) is gone")
    if point.fallback:
        ui.info(f"{MODELS_DIR}/{LATEST} is not usable ({point.fallback}); using the newest "
                f"intact checkpoint, {point.checkpoint.name}")
    ui.info(f"resuming {rundir.root} after round {point.server_round} "
            f"({point.checkpoint.name})")
    return rundir, cfg


def _check_resources(cfg: RunConfig, ui: RunDisplay, *, simulation: bool) -> None:
    """Pre-flight: this machine can run ``cfg`` (before any process starts or file moves).

    Raises:
        UsageError: Too many CPUs per client, or CUDA required and absent.
        ConfigError: ``model.peft`` adapts no module of the policy.
    """
    from zk0cli.engine.preflight import check_resources

    for warning in check_resources(cfg, simulation=simulation):
        ui.info(f"warning: {warning}")
    if cfg.model.peft is not None:
        from zk0cli.core.policy import check_peft

        summary = check_peft(cfg.model)
        assert summary is not None
        ui.info(summary.describe(cfg.model.peft, cfg.federation.transport_dtype))


def _ray_cluster(cfg: RunConfig, ui: RunDisplay) -> ClusterResources | None:
    """Pre-flight for ``federation.ray_address``: the running cluster's nodes, checked.

    Returns:
        The cluster's alive nodes, or ``None`` for zk0's private local Ray.

    Raises:
        UsageError: No cluster answers at the address, or no node can hold one client
            (:func:`~zk0cli.engine.raycluster.check_cluster`).
    """
    address = cfg.federation.ray_address
    if address is None:
        return None
    from zk0cli.engine.raycluster import check_cluster, query_cluster

    with ui.status(f"reading the Ray cluster at {address}..."):
        cluster = query_cluster(address)
    check_cluster(cluster, cfg.federation.client_cpus, cfg.federation.client_gpus)
    ui.info(cluster.describe())
    return cluster


def _config_and_run(req: RunRequest, ui: RunDisplay) -> tuple[RunDir | None, RunConfig]:
    if req.resume is not None:
        return open_resume(req, ui)
    return None, load_config(req)


def _create(req: RunRequest, cfg: RunConfig, rundir: RunDir | None, engine: str) -> RunDir:
    """Step 5: the run directory (a resumed run already has one)."""
    if rundir is not None:
        return rundir
    from zk0cli.engine.runs import create_run

    return create_run(cfg, out=req.out, command=req.command, engine=engine)


def _record_skipped(rundir: RunDir, prepared: PreparedData, ui: RunDisplay) -> None:
    """``data.skip_bad_episodes``: record the dropped episodes in run.json and print them."""
    text = prepared.describe_skipped()
    if text is None:
        return
    from zk0cli.core.diskfull import run_writes

    with run_writes(rundir, what="run.json"):
        rundir.update_run(skipped_episodes=list(prepared.skipped))
    for line in text.splitlines():
        ui.info(line)


def _finish(rundir: RunDir, status: str) -> RunOutcome:
    """Step 7."""
    return RunOutcome(rundir, status, rundir.run_record().error)


def simulate(req: RunRequest, ui: RunDisplay, *, config: RunConfig | None = None
             ) -> RunOutcome:
    """``zk0 simulate`` (and the federation of ``zk0 tiny-run``): every step, in order.

    Args:
        req: The request.
        ui: The display.
        config: The configuration when the caller already built it (a new run).

    Raises:
        UsageError: Bad options, configuration, run directory or dataset (nothing
            started).
    """
    from zk0cli.engine.prepare import prepare_datasets
    from zk0cli.engine.simulate import parallelism, run_simulation

    check_request(req)
    rundir, cfg = (None, config) if config is not None and req.resume is None \
        else _config_and_run(req, ui)
    if rundir is None:
        _check_resources(cfg, ui, simulation=True)
    cluster = _ray_cluster(cfg, ui)
    with ui.status("preparing datasets...") as update:
        prepared = prepare_datasets(cfg, on_dataset=lambda n: update(
            f"preparing dataset {n}..."))
    rundir = _create(req, cfg, rundir, "simulation")
    _record_skipped(rundir, prepared, ui)
    par = parallelism(cfg, cluster=cluster)
    ui.info(f"run directory: {rundir.root}")
    ui.info(f"{cfg.num_clients} clients, {cfg.federation.rounds} round(s); {par.describe()}")
    run = rundir
    status = ui.follow(cfg, run, lambda on_progress: run_simulation(
        cfg, run, on_progress=on_progress, cluster=cluster))
    return _finish(run, status)


@dataclass(frozen=True)
class TrainTarget:
    """Where ``zk0 train`` runs: a running SuperLink, or a local trial.

    Attributes:
        connection: ``--superlink`` (and its TLS settings), or ``None``.
        trial: ``--local-nodes`` (and its TLS/auth settings), or ``None``.
    """

    connection: ConnectionOptions | None = None
    trial: LocalTrialOptions | None = None


def train(req: RunRequest, target: TrainTarget, ui: RunDisplay, *,
          on_command: Callable[[str], None] | None = None) -> RunOutcome:
    """``zk0 train``: every step, in order, for a running SuperLink or a local trial.

    Args:
        req: The request.
        target: A validated connection or local-trial options (exactly one).
        ui: The display.
        on_command: Receives every Flower command line zk0 runs.

    Raises:
        UsageError: Bad options, configuration, run directory or dataset (nothing
            started).
        SuperLinkConnectionError: The SuperLink cannot be reached (before any run
            directory is created or changed).
    """
    from zk0cli.engine import deploy as D

    check_request(req)
    if target.trial is not None:
        trial = target.trial
        from zk0cli.engine.prepare import prepare_datasets

        rundir, cfg = _config_and_run(req, ui)
        if rundir is None:
            _check_resources(cfg, ui, simulation=False)
        with ui.status("preparing datasets..."):
            prepared = prepare_datasets(cfg)
        run = _create(req, cfg, rundir, "deployment")
        _record_skipped(run, prepared, ui)
        ui.info(f"run directory: {run.root}")
        ui.info(f"local trial: SuperLink + {trial.nodes} SuperNodes, "
                f"{'TLS' if not trial.insecure else 'no TLS'}"
                f"{', node authentication' if trial.auth else ''}; "
                f"{cfg.federation.rounds} round(s)")
        status = ui.follow(cfg, run, lambda on_progress: D.run_local_trial(
            cfg, run, trial, on_progress=on_progress, on_command=on_command))
        return _finish(run, status)
    conn = target.connection
    assert conn is not None
    fresh = load_config(req) if req.resume is None else None
    if fresh is not None:
        _check_resources(fresh, ui, simulation=False)
    D.check_on_coordinator(conn.superlink)  # the run directory is written there
    D.probe_superlink(conn)  # before a run directory exists or is changed
    rundir, cfg = (None, fresh) if fresh is not None else open_resume(req, ui)
    with ui.status("preparing the server's datasets..."):
        D.prepare_coordinator_datasets(cfg)
    run = _create(req, cfg, rundir, "deployment")
    ui.info(f"run directory: {run.root}")
    ui.info(f"SuperLink {conn.superlink} ({'TLS' if not conn.insecure else 'no TLS'}); "
            f"waiting for {cfg.federation.min_clients} of {cfg.num_clients} SuperNodes; "
            f"{cfg.federation.rounds} round(s)")
    config = cfg
    status = ui.follow(config, run, lambda on_progress: D.run_deployment(
        config, run, superlink=conn.superlink, root_certificates=conn.root_certificates,
        on_progress=on_progress, on_command=on_command))
    return _finish(run, status)

