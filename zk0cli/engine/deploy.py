"""``zk0 train``: the zk0 Flower app on Flower's deployment engine (SuperLink + SuperNodes).

zk0 runs Flower's own processes (``flower-superlink``, ``flower-supernode``, ``flwr``) and
reports each exact command through ``on_command``, so operators can run Flower directly
later. TLS is the default; SuperNode authentication registers each node's public key
with the SuperLink (``flwr supernode register``).

* :func:`run_deployment` submits the zk0 app to a running SuperLink and follows the run
  directory, like ``zk0 simulate`` (the ServerApp runs on the SuperLink's machine and
  writes the run directory there: run ``zk0 train`` on the coordinator).
* :func:`run_local_trial` starts a SuperLink and K SuperNodes on this machine, each node
  with its own dataset from ``data.clients``, runs the federation, and stops every
  process it started, also on Ctrl-C or an exception.
* :func:`serve_superlink` / :func:`serve_supernode` run one Flower process in the
  foreground for ``zk0 train superlink`` / ``zk0 train supernode``.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zk0cli import constants as K
from zk0cli.core.config import RunConfig, SiteConfig
from zk0cli.core.contract import SITE_STATE_FILE, SUPERLINK_LOG, SUPERNODE_STATE_LOG
from zk0cli.core.rundir import RunDir
from zk0cli.engine.certs import TlsFiles, make_certificates, make_node_keys, node_key_paths
from zk0cli.engine.deploy_options import (
    ConnectionOptions,
    LocalTrialOptions,
    SuperLinkOptions,
    SuperNodeOptions,
    parse_address,
)
from zk0cli.engine.flwr_proc import (
    FlowerHome,
    flower_bin,
    flower_env,
    flwr_command,
    free_port,
    make_app_dir,
    register_node,
    start_process,
    stop_tree,
    submit_run,
    tail,
    wait_for_port,
)
from zk0cli.engine.runs import ProgressFn
from zk0cli.engine.supervisor import Supervisor
from zk0cli.engine.warm import DEFAULT_RUNTIME_PORT, WarmClientApp
from zk0cli.errors import FederationError, NodeRefusedError, SuperLinkConnectionError, UsageError
from zk0cli.log import logger

CommandFn = Callable[[str], None]
#: ``True``: SuperNodes run with ``--isolation process`` and one warm ClientApp process
#: each (:mod:`zk0cli.engine.warm`); ``False``: Flower's default, a fresh ClientApp
#: process per message (benchmarks measure both).
WARM_CLIENTAPP = True
#: What Flower logs when the SuperLink refuses an unregistered node key.
REFUSED_MARKERS: tuple[str, ...] = ("Exit Code: 305", "Failed to activate SuperNode")


def _announce(cmd: Sequence[str] | str, on_command: CommandFn | None) -> None:
    line = cmd if isinstance(cmd, str) else shlex.join(cmd)
    if on_command is not None:
        on_command(line)
    else:
        logger.info("running: %s", line)


# --- commands ---------------------------------------------------------------------------


def superlink_command(opts: SuperLinkOptions, *, database: Path | None = None) -> list[str]:
    """The ``flower-superlink`` command line for these options."""
    cmd = [flower_bin("flower-superlink")]
    tls = opts.tls
    if tls is None:
        cmd.append("--insecure")
    else:
        cmd += ["--ssl-ca-certfile", str(tls.ca_cert), "--ssl-certfile", str(tls.server_cert),
                "--ssl-keyfile", str(tls.server_key)]
    if opts.auth:
        cmd.append("--enable-supernode-auth")
    cmd += ["--host", opts.host, "--port", str(opts.port),
            "--disable-runtime-dependency-installation"]
    db = database or opts.database
    if db is not None:
        cmd += ["--database", str(db)]
    return cmd


def node_config_arg(site_file: Path) -> str:
    """Flower ``--node-config`` text naming the site's settings file for the zk0 ClientApp."""
    return f'{K.NODE_SITE_CONFIG_KEY}="{site_file}"'


def supernode_command(opts: SuperNodeOptions) -> list[str]:
    """The ``flower-supernode`` command line for these options."""
    cmd = [flower_bin("flower-supernode"), "--superlink", opts.superlink]
    if opts.insecure:
        cmd.append("--insecure")
    else:
        cmd += ["--root-certificates", str(opts.root_certificates)]
    if opts.auth_key is not None:
        cmd += ["--auth-supernode-private-key", str(opts.auth_key)]
    if opts.port is not None:
        cmd += ["--port", str(opts.port)]
    if opts.site_file is not None:
        cmd += ["--node-config", node_config_arg(opts.site_file)]
    if WARM_CLIENTAPP:
        cmd += ["--isolation", "process"]  # zk0's warm ClientApp runs the messages
    return cmd


def default_state_dir(role: str) -> Path:
    """Per-user state folder of a zk0 service: ``$XDG_STATE_HOME/zk0/<role>``.

    Args:
        role: ``"supernode"``, ``"superlink"``...

    Returns:
        ``$XDG_STATE_HOME/zk0/<role>``, by default ``~/.local/state/zk0/<role>``.
    """
    import os

    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "zk0" / role


def site_env(site: SiteConfig) -> dict[str, str]:
    """Environment of a site's processes for its ``cache_dir`` (empty: the usual caches)."""
    if site.cache_dir is None:
        return {}
    cache = Path(site.cache_dir).expanduser().absolute()
    return {"HF_HOME": str(cache / "huggingface"), "HF_LEROBOT_HOME": str(cache / "lerobot"),
            "ZK0_CACHE_DIR": str(cache / "zk0")}


def write_site_file(site: SiteConfig, path: Path) -> Path:
    """Write the site's settings as JSON for its ClientApp (node config ``site-config``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(site.model_dump_json(indent=2), encoding="utf-8")
    return path


# --- checks -------------------------------------------------------------------------------


def check_on_coordinator(superlink: str) -> None:
    """Refuse to submit from a machine that is not the SuperLink's (the coordinator).

    The ServerApp runs next to the SuperLink and writes the run directory on that machine;
    ``zk0 train --superlink`` follows that directory, so it must run there too. A host is
    this machine's when it resolves to an address this machine can bind (loopback
    included).

    Raises:
        UsageError: ``superlink`` names another machine (or does not resolve).
    """
    host, _port = parse_address(superlink)
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as err:
        raise UsageError(f"--superlink {superlink}: cannot resolve {host!r} "
                         f"({err.strerror or err}).") from None
    for addr in addresses:
        family = socket.AF_INET6 if ":" in str(addr) else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((str(addr), 0))
                return
            except OSError:
                continue
    raise UsageError(
        f"--superlink {superlink}: {host} is not this machine. `zk0 train --superlink` must "
        "run on the coordinator (the machine of the SuperLink): the ServerApp writes the run "
        "directory there and this command follows it. Log in to the coordinator and run it "
        "there, e.g. with --superlink 127.0.0.1:PORT (see docs/deployment.md).")


def probe_superlink(conn: ConnectionOptions, *, timeout_s: float = 5.0) -> None:
    """Check that the SuperLink answers, with TLS or plain HTTP as configured.

    With TLS, its certificate must verify against ``conn.root_certificates`` for the host.

    Raises:
        SuperLinkConnectionError: Unreachable, TLS on one side only, or a certificate that
            does not verify; the message names the address and what to check.
    """
    host, port = parse_address(conn.superlink)
    addr = conn.superlink
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as err:
        raise SuperLinkConnectionError(addr, (
            f"cannot reach the SuperLink at {addr} ({err.strerror or err}). Check that "
            "`zk0 train superlink` (flower-superlink) runs there, that the host and port are "
            f"right, and that a firewall lets TCP port {port} through to it.")) from None
    with sock:
        if conn.root_certificates is None:
            _probe_plain(sock, addr)
            return
        ctx = ssl.create_default_context(cafile=str(conn.root_certificates))
        try:
            with ctx.wrap_socket(sock, server_hostname=host):
                return
        except ssl.SSLCertVerificationError as err:
            raise SuperLinkConnectionError(addr, (
                f"the SuperLink at {addr} presented a certificate that does not verify "
                f"against {conn.root_certificates} ({err.verify_message}). Check that "
                "--root-certificates is the ca.crt of that SuperLink's certificates and that "
                f"its server certificate was made for {host!r} "
                f"(`zk0 train certs --host {host}`).")) from None
        except (ssl.SSLError, OSError) as err:
            raise SuperLinkConnectionError(addr, (
                f"TLS handshake with the SuperLink at {addr} failed ({err}). It probably runs "
                "without TLS (--insecure): start it with --tls-dir, or connect with "
                "--insecure on a trusted network.")) from None


def _probe_plain(sock: socket.socket, addr: str) -> None:
    try:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: zk0\r\n\r\n")
        head = sock.recv(5)
    except OSError:
        head = b""
    if not head.startswith(b"HTTP/"):
        raise SuperLinkConnectionError(addr, (
            f"the SuperLink at {addr} does not answer plain HTTP: it probably uses TLS. "
            "Connect with --root-certificates ca.crt (its CA) instead of --insecure."))


# --- processes ----------------------------------------------------------------------------


def start_superlink(opts: SuperLinkOptions, *, work: Path, log_path: Path,
                    on_command: CommandFn | None = None, timeout_s: float = 60.0
                    ) -> subprocess.Popen[Any]:
    """Start a deployment SuperLink and wait until its port is open.

    Raises:
        FederationError: It exited or did not listen in time (with the end of its log).
    """
    cmd = superlink_command(opts, database=opts.database or work / "superlink.db")
    _announce(cmd, on_command)
    proc = start_process(cmd, env=flower_env({"FLWR_HOME": str(work / "superlink_home")}),
                         log_path=log_path, cwd=work)
    probe_host = "127.0.0.1" if opts.host in ("0.0.0.0", "::") else opts.host
    try:
        wait_for_port(probe_host, opts.port, timeout_s=timeout_s, proc=proc, log_file=log_path)
    except BaseException:
        stop_tree(proc)
        raise
    return proc


def start_supernode(opts: SuperNodeOptions, *, log_path: Path, home: Path,
                    on_command: CommandFn | None = None, settle_s: float = 4.0,
                    env: dict[str, str] | None = None,
                    on_start: Callable[[subprocess.Popen[Any]], Any] | None = None,
                    on_replace: Callable[[subprocess.Popen[Any]], Any] | None = None
                    ) -> tuple[subprocess.Popen[Any], WarmClientApp | None]:
    """Start a SuperNode and its warm ClientApp; fail fast if the SuperLink refuses it.

    Args:
        opts: The node's options.
        log_path: Log of the SuperNode and its ClientApp.
        home: Its ``FLWR_HOME``.
        on_command: Receives the command lines.
        settle_s: Seconds to wait for an early exit (a refused key).
        env: Extra environment (the site's caches).
        on_start: Called with every process started (the SuperNode, each warm ClientApp).
        on_replace: Called with a dead warm ClientApp process that a new one replaces.

    Returns:
        The SuperNode process and its warm ClientApp (``None`` without
        :data:`WARM_CLIENTAPP`).

    Raises:
        NodeRefusedError: Its key is not registered (Flower exit 305).
        FederationError: It exited for another reason.
    """
    cmd = supernode_command(opts)
    _announce(cmd, on_command)
    home.mkdir(parents=True, exist_ok=True)
    node_env = flower_env({"FLWR_HOME": str(home), **(env or {})})
    proc = start_process(cmd, env=node_env, log_path=log_path, cwd=home.parent)
    if on_start is not None:
        on_start(proc)
    warm = None
    try:
        if WARM_CLIENTAPP:
            warm = WarmClientApp(proc, opts.port or DEFAULT_RUNTIME_PORT, env=node_env,
                                 log_path=log_path, cwd=home.parent, on_start=on_start,
                                 on_replace=on_replace)
            _announce(warm.command, on_command)
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise supernode_exit_error(opts.superlink, log_path, proc.returncode)
    except BaseException:
        if warm is not None:
            warm.stop()
        stop_tree(proc)
        raise
    return proc, warm


def supernode_exit_error(address: str, log_path: Path, code: int | None) -> FederationError:
    """The error for a SuperNode that exited: refused (305) or anything else."""
    text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
    if any(m in text for m in REFUSED_MARKERS):
        return NodeRefusedError(
            f"the SuperLink at {address} refused this SuperNode (Flower exit code 305): its "
            "public key is not registered. On the coordinator run `zk0 train register "
            f"node-<i>.pub --superlink {address} --root-certificates ca.crt`, then start the "
            f"node again.{tail(log_path, 8)}")
    return FederationError(f"the SuperNode for {address} exited with code {code}."
                           f"{tail(log_path)}")


def register_public_keys(conn: ConnectionOptions, keys: Sequence[Path], *, home: Path,
                         on_command: CommandFn | None = None) -> list[int]:
    """Register node public keys with a SuperLink (``flwr supernode register``).

    Returns:
        The Flower node ids, in the order of ``keys``.

    Raises:
        SuperLinkConnectionError: The SuperLink cannot be reached.
        FederationError: It refused a key (already registered, or auth is off).
    """
    probe_superlink(conn)
    fh = FlowerHome(home, conn.superlink, conn.root_certificates)
    fh.write()
    ids = []
    for key in keys:
        args = ["supernode", "register", str(key), "zk0", "--format", "json"]
        _announce(flwr_command(args, fh), on_command)
        ids.append(register_node(fh, key))
    return ids


# --- runs ---------------------------------------------------------------------------------


def run_deployment(config: RunConfig, rundir: RunDir, *, superlink: str,
                   root_certificates: Path | None, on_progress: ProgressFn | None = None,
                   on_command: CommandFn | None = None, is_alive: Callable[[], bool] | None
                   = None, supervisor: Supervisor | None = None) -> str:
    """Submit the zk0 app to a deployment SuperLink and follow it; returns the final status.

    Args:
        config: The validated configuration (``config.json`` is already in ``rundir``).
        rundir: The run directory (must be on the machine where the ServerApp runs).
        superlink: ``HOST:PORT`` of the SuperLink.
        root_certificates: Its CA certificate, or ``None`` for an insecure SuperLink.
        on_progress: Called about once a second with the run's progress.
        on_command: Receives every Flower command line run.
        is_alive: Extra liveness check (a local SuperLink process).
        supervisor: The owner of the run when the caller started processes for it (a
            local trial); ``None``: this call owns the run.

    Raises:
        SuperLinkConnectionError: Unreachable SuperLink or TLS mismatch.
        FederationError: The SuperLink refused the run.
        KeyboardInterrupt: After stopping the Flower run and marking the run interrupted.
    """
    conn = ConnectionOptions(superlink=superlink, root_certificates=root_certificates,
                             insecure=root_certificates is None)
    probe_superlink(conn)
    if supervisor is None:
        with Supervisor(rundir) as sup:
            return run_deployment(config, rundir, superlink=superlink,
                                  root_certificates=root_certificates, on_progress=on_progress,
                                  on_command=on_command, is_alive=is_alive, supervisor=sup)
    work = Path(tempfile.mkdtemp(prefix="zk0-train-"))
    home = FlowerHome(work / "flwr_home", superlink, root_certificates)
    home.write()
    try:
        app_dir = make_app_dir(work / "app")
        run_config = {K.RUN_CONFIG_PATH_KEY: str(rundir.config_json),
                      K.RUN_DIR_KEY: str(rundir.root)}
        args = ["run", str(app_dir), "zk0", "--run-config",
                " ".join(f'{k}="{v}"' for k, v in run_config.items())]
        _announce(flwr_command(args, home), on_command)
        run_id = submit_run(home, app_dir, run_config=run_config)
        supervisor.submitted(home, run_id)
        rundir.update_run(flower_run_id=str(run_id), superlink=superlink,
                          tls=root_certificates is not None)
        logger.info("submitted Flower run %s to the SuperLink at %s", run_id, superlink)
        return supervisor.follow(config, on_progress=on_progress, is_alive=is_alive)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def local_node_options(config: RunConfig, *, superlink: str, tls: TlsFiles | None,
                       keys: Sequence[Path | None], work: Path) -> list[SuperNodeOptions]:
    """SuperNode options for a local trial: node i trains on ``data.clients[i]``.

    Each node's site file (``work/node_<i>/site.json``) names its dataset, its rename map
    (``data.clients[i].rename_map``, else ``data.rename_map``), ``model.device`` and
    ``training.num_workers``.

    Raises:
        UsageError: ``data.partition = "episodes"`` or fewer datasets than nodes.
    """
    from zk0cli.core.data import resolve_dataset

    n = len(keys)
    if config.data.partition != "dataset":
        raise UsageError("--local-nodes needs data.partition = 'dataset' (each SuperNode gets "
                         "its own data.clients entry); set --set data.partition=dataset.")
    if n > len(config.data.clients):
        raise UsageError(f"--local-nodes {n} needs {n} entries in data.clients, the config "
                         f"has {len(config.data.clients)}.")
    out = []
    for i, key in enumerate(keys):
        ref = resolve_dataset(config.data.clients[i], config.data.sim)
        site = SiteConfig(dataset=ref.repo_id, dataset_root=ref.root,
                          rename_map=config.data.client_rename_map(i),
                          device=config.model.device,
                          num_workers=config.training.num_workers, client_id=str(i))
        out.append(SuperNodeOptions(
            superlink=superlink, root_certificates=tls.ca_cert if tls else None,
            insecure=tls is None, auth_key=key, port=free_port(),
            site_file=write_site_file(site, work / f"node_{i}" / SITE_STATE_FILE)))
    return out


def run_local_trial(config: RunConfig, rundir: RunDir, opts: LocalTrialOptions, *,
                    on_progress: ProgressFn | None = None,
                    on_command: CommandFn | None = None) -> str:
    """A whole deployment on this machine: SuperLink, K SuperNodes, the run, then stop all.

    TLS uses ``opts.tls_dir`` or a throwaway CA made for this trial (unless insecure);
    with ``opts.auth`` each node's key is registered before it starts. Logs of every
    process go to ``<run dir>/logs/``.

    Returns:
        The run's final status (``completed`` or ``failed``).

    Raises:
        FederationError: A process could not start, or a node was refused.
        KeyboardInterrupt: After stopping everything and marking the run interrupted.
    """
    work = Path(tempfile.mkdtemp(prefix="zk0-trial-"))
    logs = rundir.logs_dir
    try:
        with Supervisor(rundir, cleanup=[work]) as sup:
            return _local_trial(config, rundir, opts, work, logs, sup,
                                on_progress=on_progress, on_command=on_command)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _local_trial(config: RunConfig, rundir: RunDir, opts: LocalTrialOptions, work: Path,
                 logs: Path, sup: Supervisor, *,
                 on_progress: ProgressFn | None, on_command: CommandFn | None) -> str:
    """The body of :func:`run_local_trial`; every process started is adopted by ``sup``."""
    tls: TlsFiles | None = None
    if not opts.insecure:
        tls = TlsFiles.in_dir(opts.tls_dir) if opts.tls_dir else \
            make_certificates(work / "certs", hosts=["localhost"], keep_ca_key=False).tls
    keys: list[Path | None] = [None] * opts.nodes
    if opts.auth:
        keys = [_node_key(opts.tls_dir, work / "certs", i) for i in range(1, opts.nodes + 1)]
    port = free_port()
    address = f"127.0.0.1:{port}"
    nodes = local_node_options(config, superlink=address, tls=tls, keys=keys, work=work)
    sl_opts = SuperLinkOptions(host="127.0.0.1", port=port, tls_dir=opts.tls_dir or
                               (work / "certs" if tls else None), insecure=tls is None,
                               auth=opts.auth)
    superlink = start_superlink(sl_opts, work=work, log_path=rundir.superlink_log,
                                on_command=on_command)
    sup.adopt(superlink)
    if opts.auth:
        conn = ConnectionOptions(superlink=address, root_certificates=tls.ca_cert if tls
                                 else None, insecure=tls is None)
        register_public_keys(conn, [node_key_paths(Path(k).parent, i + 1).public_key
                                    for i, k in enumerate(keys) if k is not None],
                             home=work / "admin_home", on_command=on_command)
    warm: list[WarmClientApp] = []
    for i, node in enumerate(nodes):
        _proc, w = start_supernode(node, log_path=rundir.supernode_log(i),
                                   home=work / f"node_{i}" / "flwr_home",
                                   on_command=on_command, settle_s=0.5, on_start=sup.adopt,
                                   on_replace=sup.forget)
        if w is not None:
            warm.append(w)

    def alive() -> bool:  # also restarts a site's warm ClientApp that exited
        for w in warm:
            if not w.ensure():
                err = w.failure()
                rundir.update_run(status="failed", error=str(err), ended_at=time.time())
                raise err
        return superlink.poll() is None

    return run_deployment(config, rundir, superlink=address,
                          root_certificates=tls.ca_cert if tls else None,
                          on_progress=on_progress, on_command=on_command,
                          is_alive=alive, supervisor=sup)


def _node_key(tls_dir: Path | None, fresh_dir: Path, index: int) -> Path:
    """Node ``index``'s private key: from ``tls_dir`` if there, else made in ``fresh_dir``."""
    if tls_dir is not None and node_key_paths(tls_dir, index).private_key.is_file():
        return node_key_paths(tls_dir, index).private_key
    fresh_dir.mkdir(parents=True, exist_ok=True)
    return make_node_keys(fresh_dir, index).private_key


# --- foreground services ------------------------------------------------------------------


def serve_superlink(opts: SuperLinkOptions, *, state_dir: Path,
                    on_command: CommandFn | None = None,
                    on_ready: Callable[[], None] | None = None) -> int:
    """Run a SuperLink until it exits or Ctrl-C; returns its exit code.

    Raises:
        FederationError: It did not start.
        KeyboardInterrupt: After stopping it.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    proc = start_superlink(opts, work=state_dir, log_path=state_dir / SUPERLINK_LOG,
                           on_command=on_command)
    try:
        if on_ready:
            on_ready()
        return proc.wait()
    finally:
        stop_tree(proc)


def check_site_before_connecting(site: SiteConfig) -> None:
    """Validate a site's dataset and rename map (in its cache) before it connects.

    Raises:
        DatasetError: The dataset is missing, not LeRobotDataset v3.0, has no episodes or
            unreadable features.
        ConfigError: The rename map names a key the dataset lacks.
    """
    import os

    from zk0cli.core.site import check_site

    saved = {k: os.environ.get(k) for k in site_env(site)}
    os.environ.update(site_env(site))
    try:
        check_site(site)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def serve_supernode(opts: SuperNodeOptions, site: SiteConfig, *, state_dir: Path,
                    on_command: CommandFn | None = None,
                    on_ready: Callable[[], None] | None = None) -> int:
    """Check the site, probe the SuperLink, then run a SuperNode until it exits or Ctrl-C.

    Nothing is written before the checks pass, and only under ``state_dir`` (the site
    file ``site.json``, the log and Flower's files).

    Returns:
        0 when it was stopped cleanly.

    Raises:
        UsageError: The site's device is not on this machine (``cuda``/``mps``).
        DatasetError: The site's dataset does not pass :func:`check_site_before_connecting`.
        ConfigError: Its rename map names a key the dataset lacks.
        SuperLinkConnectionError: The SuperLink cannot be reached or TLS fails.
        NodeRefusedError: The SuperLink refused the node's key.
        FederationError: The node exited with an error.
        KeyboardInterrupt: After stopping it.
    """
    from zk0cli.engine.preflight import check_device

    check_device(site.device, field="device (--device or the site file)")
    check_site_before_connecting(site)
    probe_superlink(opts)
    state_dir.mkdir(parents=True, exist_ok=True)
    opts = opts.model_copy(update={"site_file": write_site_file(site, state_dir / SITE_STATE_FILE)})
    log_path = state_dir / SUPERNODE_STATE_LOG
    proc, warm = start_supernode(opts, log_path=log_path, home=state_dir / "flwr_home",
                                 on_command=on_command, env=site_env(site))
    try:
        if on_ready:
            on_ready()
        while proc.poll() is None:  # restart the warm ClientApp if it exits
            if warm is not None and not warm.ensure():
                raise warm.failure()
            time.sleep(0.5)
        code = proc.wait()
        if code != 0:
            raise supernode_exit_error(opts.superlink, log_path, code)
        return code
    finally:
        if warm is not None:
            warm.stop()
        stop_tree(proc)


def prepare_coordinator_datasets(config: RunConfig) -> list[str]:
    """Resolve the datasets the coordinator's ServerApp reads.

    These are ``data.eval``, else the first client dataset (the model's features come
    from it). Client datasets stay private at the sites; the server skips their held-out episodes
    when it cannot open them.

    Returns:
        Display names of the datasets resolved.

    Raises:
        DatasetError: One of them cannot be opened.
    """
    from zk0cli.core import data as D

    specs = list(config.data.eval) or [config.data.clients[0]]
    names = []
    for spec in specs:
        ref = D.resolve_dataset(spec, config.data.sim)
        D.load_metadata(ref)
        names.append(ref.name)
    return names
