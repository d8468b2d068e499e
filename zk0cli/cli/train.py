"""``zk0 train``: a real federation on Flower SuperLink and SuperNodes.

``zk0 train --superlink HOST:PORT`` submits the zk0 app to a running SuperLink;
``zk0 train --local-nodes K`` runs a whole deployment on this machine. The subcommands
start the pieces: ``certs``, ``superlink``, ``register``, ``supernode``. Every Flower
command zk0 runs is printed (``$ ...``) so operators can run Flower directly later.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from zk0cli.cli.errors import EXIT_OK, handle_errors
from zk0cli.cli.options import (
    ClientsOpt,
    ConfigOpt,
    OutOpt,
    PresetOpt,
    ResumeOpt,
    RoundsOpt,
    SetOpt,
)
from zk0cli.cli.run import console

if TYPE_CHECKING:
    from zk0cli.engine import lifecycle

app = typer.Typer(help="Run a real federation on a Flower SuperLink and SuperNodes "
                  "(see docs/deployment.md).", invoke_without_command=True)

SuperLinkAddrOpt = Annotated[
    str | None, typer.Option("--superlink", help="SuperLink address HOST:PORT.",
                             show_default=False)]
RootCertOpt = Annotated[
    Path | None, typer.Option("--root-certificates",
                              help="CA certificate (ca.crt) the SuperLink's certificate is "
                              "signed with.", show_default=False)]
InsecureOpt = Annotated[
    bool, typer.Option("--insecure", help="No TLS (plain HTTP). Only on a trusted network.")]
TlsDirOpt = Annotated[
    Path | None, typer.Option("--tls-dir", help="Folder from `zk0 train certs` (ca.crt, "
                              "server.pem, server.key, node-<i>.key).", show_default=False)]
AuthOpt = Annotated[
    bool, typer.Option("--auth", help="SuperNode authentication (registered node keys only; "
                       "needs TLS).")]


def _echo(line: str) -> None:
    from rich.text import Text

    console.print(Text(f"$ {line}", style="dim"))


def train_target(*, superlink: str | None, root_certificates: Path | None, insecure: bool,
                 local_nodes: int | None, tls_dir: Path | None, auth: bool
                 ) -> lifecycle.TrainTarget:
    """Validate where ``zk0 train`` runs: ``--superlink`` or ``--local-nodes`` (exactly one).

    Raises:
        UsageError: Neither or both, or options of the other mode.
        DeploymentOptionsError: An invalid address, certificate or count.
    """
    from zk0cli.engine import lifecycle
    from zk0cli.engine.deploy_options import (
        ConnectionOptions,
        LocalTrialOptions,
        validate_options,
    )
    from zk0cli.errors import UsageError

    if (superlink is None) == (local_nodes is None):
        raise UsageError("give exactly one of --superlink HOST:PORT (a running SuperLink) "
                         "or --local-nodes K (a trial on this machine).")
    if local_nodes is not None:
        if root_certificates is not None:
            raise UsageError("--root-certificates is for --superlink; with --local-nodes "
                             "use --tls-dir (or nothing for a throwaway CA).")
        return lifecycle.TrainTarget(trial=validate_options(
            LocalTrialOptions, nodes=local_nodes, tls_dir=tls_dir, insecure=insecure, auth=auth))
    if tls_dir is not None or auth:
        raise UsageError("--tls-dir and --auth start a local SuperLink (with "
                         "--local-nodes or `zk0 train superlink`); to submit to a "
                         "running SuperLink give --root-certificates ca.crt.")
    return lifecycle.TrainTarget(connection=validate_options(
        ConnectionOptions, superlink=superlink, root_certificates=root_certificates,
        insecure=insecure))


@app.callback()
def train(
    ctx: typer.Context,
    superlink: SuperLinkAddrOpt = None,
    root_certificates: RootCertOpt = None,
    insecure: InsecureOpt = False,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    rounds: RoundsOpt = None,
    clients: ClientsOpt = None,
    out: OutOpt = None,
    set_: SetOpt = None,
    local_nodes: Annotated[
        int | None, typer.Option("--local-nodes", help="Trial on this machine: a SuperLink "
                                 "and K SuperNodes, node i on data.clients[i].",
                                 show_default=False)] = None,
    tls_dir: TlsDirOpt = None,
    auth: AuthOpt = False,
    resume: ResumeOpt = None,
) -> None:
    """Submit the zk0 app to a SuperLink (run this on the coordinator), or run a local trial.

    Writes the same run directory as `zk0 simulate`; exits with the run's status.
    """
    if ctx.invoked_subcommand is not None:
        return
    import time

    from zk0cli.cli.run import RichDisplay, run_request, show_outcome
    from zk0cli.engine import lifecycle

    t0 = time.monotonic()
    with handle_errors():
        target = train_target(superlink=superlink, root_certificates=root_certificates,
                              insecure=insecure, local_nodes=local_nodes, tls_dir=tls_dir,
                              auth=auth)
        req = run_request("train", config=config, preset=preset, sets=set_, out=out,
                          resume=resume, flags={"federation.rounds": rounds,
                                                "federation.num_clients": clients or local_nodes})
        show_outcome(lifecycle.train(req, target, RichDisplay(), on_command=_echo), t0=t0)
    raise typer.Exit(EXIT_OK)


@app.command("superlink")
def superlink_cmd(
    tls_dir: TlsDirOpt = None,
    insecure: InsecureOpt = False,
    auth: AuthOpt = False,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: all).")]
    = "0.0.0.0",
    port: Annotated[int, typer.Option("--port", help="The SuperLink's one TCP port "
                                      "(sites, `flwr` and the ServerApp all use it).")] = 9092,
    state_dir: Annotated[Path, typer.Option("--state-dir", help="SuperLink database (node "
                                            "registrations, runs) and log.")]
    = Path("zk0-superlink"),
) -> None:
    """Start a SuperLink (TLS by default; --insecure must be explicit) until Ctrl-C."""
    with handle_errors():
        from zk0cli.engine import deploy as D
        from zk0cli.engine.deploy_options import SuperLinkOptions, validate_options

        state = state_dir.absolute()
        opts = validate_options(SuperLinkOptions, host=host, port=port, tls_dir=tls_dir,
                                insecure=insecure, auth=auth, database=state / "superlink.db")

        def ready() -> None:
            console.print(f"SuperLink listening on {host}:{port} "
                          f"({'TLS' if opts.tls else 'no TLS'}"
                          f"{', SuperNode authentication' if auth else ''}); log: "
                          f"{state / 'superlink.log'}. Ctrl-C stops it.")

        try:
            code = D.serve_superlink(opts, state_dir=state, on_command=_echo, on_ready=ready)
        except KeyboardInterrupt:
            console.print("SuperLink stopped.")
            code = 0
    raise typer.Exit(code)


@app.command("supernode")
def supernode_cmd(
    superlink: Annotated[str, typer.Option("--superlink", help="SuperLink HOST:PORT.")],
    site_config: Annotated[Path | None, typer.Option(
        "--site-config", help="This site's settings (TOML): dataset, dataset_root, "
        "rename_map, device, num_workers, cache_dir, client_id. Flags override it.",
        show_default=False)] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="This site's dataset: repo id (with --dataset-root: its name).",
        show_default=False)] = None,
    dataset_root: Annotated[Path | None, typer.Option(
        "--dataset-root", help="Local LeRobotDataset folder (stays on this machine).",
        show_default=False)] = None,
    rename: Annotated[list[str] | None, typer.Option(
        "--rename", help="DATASET_KEY=POLICY_KEY for this site's rename map (repeatable).",
        show_default=False)] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="Torch device of local training (auto, cpu, cuda, mps).",
        show_default=False)] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", help="DataLoader worker processes.", show_default=False)] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", help="Cache folder (Hugging Face, LeRobot and zk0 caches).",
        show_default=False)] = None,
    root_certificates: RootCertOpt = None,
    insecure: InsecureOpt = False,
    auth_key: Annotated[Path | None, typer.Option(
        "--auth-key", help="This node's private key (node-<i>.key) for authentication.",
        show_default=False)] = None,
    port: Annotated[int | None, typer.Option(
        "--port", help="Port of the node's own local API (distinct per node on one host; "
        "Flower's default 9094).", show_default=False)] = None,
    client_id: Annotated[str | None, typer.Option(
        "--client-id", help="Name of this site in the run directory (clients/<id>/).",
        show_default=False)] = None,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="Site file, log and Flower files (default: "
        "$XDG_STATE_HOME/zk0/supernode, i.e. ~/.local/state/zk0/supernode).",
        show_default=False)] = None,
) -> None:
    """Join a federation: a SuperNode training the zk0 ClientApp on this site's dataset.

    Checks the site's settings, certificates and dataset before connecting (exit 2).
    """
    with handle_errors():
        from zk0cli.core.config import load_site_config
        from zk0cli.engine import deploy as D
        from zk0cli.engine.deploy_options import SuperNodeOptions, validate_options

        opts = validate_options(SuperNodeOptions, superlink=superlink,
                                root_certificates=root_certificates, insecure=insecure,
                                auth_key=auth_key, port=port)
        site = load_site_config(site_config, {
            "dataset": dataset, "dataset_root": dataset_root, "device": device,
            "num_workers": workers, "cache_dir": cache_dir, "client_id": client_id,
            "rename_map": _rename_map(rename)}, flag_names=_SITE_FLAGS)
        state = (state_dir or D.default_state_dir("supernode")).absolute()

        def ready() -> None:
            console.print(f"SuperNode connected to {superlink} with dataset {site.dataset}; "
                          f"log: {state / 'supernode.log'}. Ctrl-C leaves the federation.")

        try:
            code = D.serve_supernode(opts, site, state_dir=state, on_command=_echo,
                                     on_ready=ready)
        except KeyboardInterrupt:
            console.print("SuperNode stopped.")
            code = 0
    raise typer.Exit(code)


# How the site settings given as `zk0 train supernode` flags are spelled there.
_SITE_FLAGS = {"dataset": "--dataset", "dataset_root": "--dataset-root", "device": "--device",
               "num_workers": "--workers", "cache_dir": "--cache-dir",
               "client_id": "--client-id", "rename_map": "--rename"}


def _rename_map(items: list[str] | None) -> dict[str, str] | None:
    """``--rename A=B`` flags as a mapping (``None`` when none was given).

    Raises:
        ConfigError: An item is not ``DATASET_KEY=POLICY_KEY``.
    """
    if not items:
        return None
    from zk0cli.errors import ConfigError, FieldProblem

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError([FieldProblem("--rename", item, "DATASET_KEY=POLICY_KEY, e.g. "
                                            "observation.images.top=observation.images."
                                            "camera1")], source="flags")
        out[key.strip()] = value.strip()
    return out


@app.command("certs")
def certs_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder to write (new files only).")],
    host: Annotated[list[str] | None, typer.Option(
        "--host", help="Name or IP address sites use to reach the SuperLink (repeatable; "
        "localhost and 127.0.0.1 are always added).", show_default=False)] = None,
    nodes: Annotated[int, typer.Option("--nodes", min=0, max=1000,
                                       help="SuperNode key pairs to make.")] = 0,
    days: Annotated[int, typer.Option("--days", min=1, max=3650,
                                      help="Validity in days.")] = 365,
) -> None:
    """Make a CA, a SuperLink certificate for the given hosts, and SuperNode key pairs."""
    with handle_errors():
        from zk0cli.engine.certs import CA_KEY, make_certificates

        bundle = make_certificates(out, hosts=host or [], nodes=nodes, days=days)
        console.print(f"wrote to {out.absolute()}:")
        console.print(f"  {bundle.tls.ca_cert.name}: give to every site (--root-certificates)")
        console.print(f"  {CA_KEY}: keep private (signs certificates)")
        console.print(f"  {bundle.tls.server_cert.name}, {bundle.tls.server_key.name}: the "
                      f"SuperLink's (valid for {', '.join(bundle.hosts)})")
        for k in bundle.nodes:
            console.print(f"  {k.private_key.name}: give to one site (--auth-key); "
                          f"{k.public_key.name}: register it (zk0 train register)")
    raise typer.Exit(EXIT_OK)


@app.command("register")
def register_cmd(
    public_keys: Annotated[list[Path], typer.Argument(help="Node public keys (node-<i>.pub).")],
    superlink: Annotated[str, typer.Option("--superlink", help="SuperLink HOST:PORT.")],
    root_certificates: RootCertOpt = None,
    insecure: InsecureOpt = False,
    state_dir: Annotated[Path, typer.Option("--state-dir", help="Flower connection files.")]
    = Path("zk0-admin"),
) -> None:
    """Register SuperNode public keys with a SuperLink started with --auth."""
    with handle_errors():
        from zk0cli.engine import deploy as D
        from zk0cli.engine.deploy_options import RegisterOptions, validate_options

        opts = validate_options(RegisterOptions, superlink=superlink, public_keys=public_keys,
                                root_certificates=root_certificates, insecure=insecure)
        ids = D.register_public_keys(opts, opts.public_keys, home=state_dir.absolute(),
                                     on_command=_echo)
        for key, node_id in zip(opts.public_keys, ids, strict=True):
            console.print(f"registered {key.name}: node id {node_id}")
    raise typer.Exit(EXIT_OK)
