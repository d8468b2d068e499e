"""Flower processes zk0 starts and stops: a local SuperLink, ``flwr run``/``ls``/``stop``.

zk0 drives Flower through its public command-line tools (``flower-superlink``,
``flwr``) with a private ``FLWR_HOME`` per run, so the exact commands can be printed
for operators and nothing leaks into the user's Flower configuration. Every process
zk0 starts is stopped with its whole process tree (:func:`stop_tree`).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from zk0cli.constants import QUIET_ENV
from zk0cli.errors import FederationError
from zk0cli.log import logger

CONNECTION = "zk0"
_APP_PYPROJECT = Path(__file__).resolve().parent.parent / "flower" / "app" / "pyproject.toml"


def flower_bin(name: str) -> str:
    """Absolute path of a Flower console script installed next to this Python."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise FederationError(f"{name} not found next to {sys.executable} or on PATH; "
                              "reinstall zk0 (pip install -e .) in this environment.")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, *, timeout_s: float, proc: subprocess.Popen[Any] | None,
                  log_file: Path | None = None, what: str = "SuperLink") -> None:
    """Wait until ``host:port`` accepts TCP connections.

    Args:
        host: Address to connect to.
        port: TCP port.
        timeout_s: Longest wait, in seconds.
        proc: The process that should open the port (its exit ends the wait).
        log_file: Its log, whose end goes into the error message.
        what: Name of the process in messages.

    Raises:
        FederationError: The process exited or the port did not open in time (with the
            end of its log).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise FederationError(f"{what} exited with code {proc.returncode} before "
                                  f"listening on {host}:{port}.{tail(log_file)}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise FederationError(f"{what} did not listen on {host}:{port} within {timeout_s:.0f} s."
                          f"{tail(log_file)}")


def tail(path: Path | None, n: int = 15) -> str:
    """The last ``n`` lines of a log file, as a message suffix (empty if there is none)."""
    return _tail(path, n)


def _tail(path: Path | None, n: int = 15) -> str:
    if path is None or not path.is_file():
        return ""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:]
    return "\nLast lines of " + str(path) + ":\n" + "\n".join(lines)


def stop_tree(proc: subprocess.Popen[Any], *, timeout_s: float = 10.0) -> None:
    """Terminate a process and all its descendants (SIGTERM, then SIGKILL)."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _gone, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout_s)
    try:
        proc.wait(timeout=1)
    except subprocess.TimeoutExpired:
        pass


@dataclass
class FlowerHome:
    """A private ``FLWR_HOME`` with one SuperLink connection named ``zk0``.

    Attributes:
        path: The folder (``config.toml`` lives here).
        address: ``HOST:PORT`` of the SuperLink's Control API.
        root_certificates: CA certificate for TLS, or ``None`` for an insecure connection.
    """

    path: Path
    address: str
    root_certificates: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def write(self) -> None:
        """Write ``config.toml`` for the connection."""
        import tomli_w

        conn: dict[str, Any] = {"address": self.address}
        if self.root_certificates:
            conn["root-certificates"] = str(self.root_certificates)
        else:
            conn["insecure"] = True
        self.path.mkdir(parents=True, exist_ok=True)
        text = tomli_w.dumps({"superlink": {"default": CONNECTION, CONNECTION: conn}})
        (self.path / "config.toml").write_text(text, encoding="utf-8")

    def env(self) -> dict[str, str]:
        """Environment for Flower processes: quiet, offline-safe, this FLWR_HOME.

        The folder of this Python's console scripts comes first on ``PATH``: the SuperLink
        and SuperNodes start ``flower-superexec``, ``flwr-serverapp`` and
        ``flwr-clientapp`` by name.
        """
        return flower_env({**self.extra_env, "FLWR_HOME": str(self.path)})


#: Environment variable that marks every process this zk0 process starts (and their
#: descendants, which inherit it), so that survivors can be found and stopped.
PROCESS_TOKEN_ENV = "ZK0_PROCESS_TOKEN"
PROCESS_TOKEN = f"{os.getpid()}-{os.urandom(6).hex()}"


def flower_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment, quiet and offline-safe, with this Python's scripts first on PATH."""
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if bindir not in path.split(os.pathsep):
        path = bindir + os.pathsep + path if path else bindir
    return {**os.environ, **QUIET_ENV, "PATH": path, PROCESS_TOKEN_ENV: PROCESS_TOKEN,
            **(extra or {})}


def reap_survivors(*, grace_s: float = 5.0) -> int:
    """Wait for every process zk0 started to exit; SIGKILL those still alive after ``grace_s``.

    Processes that left the SuperLink's tree (Ray workers reparented to init while Ray
    shuts down) are found through :data:`PROCESS_TOKEN_ENV` in their environment.

    Returns:
        How many processes had to be killed.
    """
    import psutil

    from zk0cli.engine.watchdog import token_processes

    def survivors() -> list[psutil.Process]:
        return token_processes(PROCESS_TOKEN)

    deadline = time.monotonic() + grace_s
    left = survivors()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = survivors()
    for p in left:
        logger.warning("killing leftover process %s (%s)", p.pid, p.name())
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return len(left)


def start_process(cmd: Sequence[str], *, env: Mapping[str, str], log_path: Path,
                  cwd: Path | None = None) -> subprocess.Popen[Any]:
    """Start a long-running Flower process with output to ``log_path`` (own session)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("starting: %s", shlex.join(cmd))
    fh: IO[bytes] = log_path.open("ab")
    try:
        return subprocess.Popen(list(cmd), env=dict(env), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True,
                                preexec_fn=_die_with_parent)
    finally:
        fh.close()


#: ClientApp component that replaces zk0's own in every app made here (tests only: e.g.
#: ``"zk0cli.testing_faults:app"``); ``None`` ships ``zk0cli.flower.client_app:app``.
CLIENTAPP: str | None = None
_SHIPPED_CLIENTAPP = 'clientapp = "zk0cli.flower.client_app:app"'


def make_app_dir(directory: Path, *, clientapp: str | None = None) -> Path:
    """Copy the zk0 Flower App definition (a pyproject.toml) into ``directory``.

    Args:
        directory: Folder to write (created if needed).
        clientapp: ``"module:attribute"`` of another ClientApp (tests and benchmarks);
            default :data:`CLIENTAPP`, else zk0's own.

    Returns:
        ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    text = _APP_PYPROJECT.read_text(encoding="utf-8")
    component = clientapp or CLIENTAPP
    if component is not None:
        if _SHIPPED_CLIENTAPP not in text:
            raise ValueError(f"{_APP_PYPROJECT} does not name the default ClientApp")
        text = text.replace(_SHIPPED_CLIENTAPP, f"clientapp = {json.dumps(component)}")
    (directory / "pyproject.toml").write_text(text, encoding="utf-8")
    return directory


def _flwr(args: Sequence[str], home: FlowerHome, *, timeout_s: float = 120) -> str:
    cmd = [flower_bin("flwr"), *args]
    logger.debug("running: %s", " ".join(cmd))
    try:
        res = subprocess.run(cmd, env=home.env(), capture_output=True, text=True,
                             timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FederationError(f"`flwr {args[0]}` did not answer within {timeout_s:.0f} s "
                              f"(SuperLink {home.address}).") from None
    if res.returncode != 0:
        detail = (res.stdout + res.stderr).strip()[-2000:]
        raise FederationError(f"`flwr {args[0]}` failed against SuperLink {home.address} "
                              f"(exit {res.returncode}): {detail}")
    failure = _json_failure(res.stdout)
    if failure is not None:  # `--format json` reports failures with exit code 0
        raise FederationError(f"`flwr {args[0]}` failed against SuperLink {home.address}: "
                              f"{failure}")
    return res.stdout


def _json_failure(out: str) -> str | None:
    """The error message of a ``--format json`` answer with ``"success": false``."""
    if "{" not in out:
        return None
    try:
        payload = json.loads(out[out.index("{"):])
    except ValueError:
        return None
    if isinstance(payload, dict) and payload.get("success") is False:
        return " ".join(str(payload.get("error-message", "no error message")).split())
    return None


def register_node(home: FlowerHome, public_key: Path) -> int:
    """``flwr supernode register KEY.pub`` on the connection; returns the new node id.

    Raises:
        FederationError: The SuperLink refused the key (already registered, auth off...)
            or could not be reached.
    """
    out = _flwr(["supernode", "register", str(public_key), CONNECTION, "--format", "json"],
                home, timeout_s=60)
    try:
        return int(json.loads(out[out.index("{"):])["node-id"])
    except (ValueError, KeyError, TypeError):
        raise FederationError(f"unexpected `flwr supernode register` output: {out[-1000:]}"
                              ) from None


def flwr_command(args: Sequence[str], home: FlowerHome) -> str:
    """The shell line an operator runs for ``flwr ARGS`` with this connection."""
    return f"FLWR_HOME={shlex.quote(str(home.path))} " + shlex.join(["flwr", *args])


def submit_run(home: FlowerHome, app_dir: Path, *, run_config: Mapping[str, str],
               federation_config: Mapping[str, float | int] | None = None) -> int:
    """``flwr run`` the zk0 app; returns the Flower run id.

    Raises:
        FederationError: The SuperLink refused the run or could not be reached.
    """
    args = ["run", str(app_dir), CONNECTION, "--format", "json",
            "--run-config", " ".join(f"{k}={json.dumps(str(v))}" for k, v in run_config.items())]
    if federation_config:
        args += ["--federation-config",
                 " ".join(f"{k}={v}" for k, v in federation_config.items())]
    out = _flwr(args, home)
    try:
        payload = json.loads(out[out.index("{"):])
        return int(payload["run-id"])
    except (ValueError, KeyError, TypeError):
        raise FederationError(f"unexpected `flwr run` output: {out[-1000:]}") from None


def run_status(home: FlowerHome, run_id: int) -> str:
    """Flower's status of a run, e.g. ``running`` or ``finished:completed``."""
    out = _flwr(["ls", CONNECTION, "--run-id", str(run_id), "--format", "json"], home,
                timeout_s=60)
    payload = json.loads(out[out.index("{"):])
    runs = payload.get("runs") or []
    return str(runs[0].get("status", "unknown")) if runs else "unknown"


def stop_run(home: FlowerHome, run_id: int) -> None:
    """``flwr stop`` a run; failures are logged, not raised (used while shutting down)."""
    try:
        _flwr(["stop", str(run_id), CONNECTION], home, timeout_s=30)
    except FederationError as err:
        logger.warning("could not stop Flower run %s: %s", run_id, err)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Ask Linux to SIGTERM this process when zk0 dies, even by SIGKILL (no orphans)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: stop_tree and signal handling still apply


class InterruptGuard:
    """First Ctrl-C, SIGTERM or SIGHUP: ``KeyboardInterrupt`` (clean stop); second: kill now.

    SIGHUP (the terminal or ssh session went away) is handled like the first Ctrl-C, so a
    dropped connection stops the run cleanly and marks it ``interrupted``.

    Args:
        kill_now: Called on the second signal before exiting with 130; must not block
            (e.g. SIGKILL every process zk0 started).
    """

    def __init__(self, kill_now: Callable[[], None]) -> None:
        self.kill_now = kill_now
        self.count = 0
        self._saved: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count == 1:
            raise KeyboardInterrupt
        try:
            self.kill_now()
            _kill_own_children()  # e.g. a `flwr stop` still running from the clean-up
        finally:
            os._exit(130)

    def __enter__(self) -> InterruptGuard:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


def kill_tree_now(procs: Sequence[subprocess.Popen[Any]]) -> None:
    """SIGKILL processes and all their descendants without waiting."""
    import psutil

    for proc in procs:
        try:
            root = psutil.Process(proc.pid)
            for p in [*root.children(recursive=True), root]:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            pass


def _kill_own_children() -> None:
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
