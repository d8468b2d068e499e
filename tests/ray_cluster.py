"""A private two-node Ray cluster on 127.0.0.1 for tests (``ray start``, never ``ray stop``).

The cluster lives in its own ``--temp-dir`` (so ``/tmp/ray/ray_current_cluster`` is not
written and no other ``ray.init()`` on this machine joins it) and on free ports. It is
stopped through the processes it started: every descendant of the two ``ray start
--block`` processes and every process whose command line names its temp dir, and nothing
else (``ray stop`` would stop every Ray of the machine, other runs' included).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from zk0cli.engine.flwr_proc import free_port


def _ray_bin() -> str:
    return str(Path(sys.executable).parent / "ray")


@dataclass
class TestCluster:
    """Head and worker ``ray start --block`` processes; ``address`` is ``HOST:PORT``."""

    temp_dir: Path
    address: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    initial_nodes: list[dict[str, object]] = field(default_factory=list)  # ray.nodes() at start

    def processes(self) -> list[psutil.Process]:
        """Every live process of this cluster (``ray start``, GCS, raylets, workers)."""
        found: dict[int, psutil.Process] = {}
        for proc in self.procs:
            try:
                root = psutil.Process(proc.pid)
                for p in [root, *root.children(recursive=True)]:
                    found[p.pid] = p
            except psutil.NoSuchProcess:
                pass
        needle = str(self.temp_dir)
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(needle in a for a in p.info["cmdline"] or []):
                    found[p.pid] = p
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return [p for p in found.values() if _alive(p)]

    def nodes(self) -> list[dict[str, object]]:
        """``ray.nodes()`` of this cluster (alive ones), read by a separate driver."""
        code = (f"import json, ray; ray.init(address={self.address!r}, log_to_driver=False);"
                "print(json.dumps([{k: n[k] for k in ('NodeID', 'Alive', 'Resources')}"
                " for n in ray.nodes() if n['Alive']])); ray.shutdown()")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, every process of this cluster; remove its temp dir."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            procs = self.processes()
            for p in procs:
                try:
                    p.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(procs, timeout=10)
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start_cluster(*, nodes: tuple[dict[str, float], ...] = ({"node_a": 1}, {"node_b": 1}),
                  cpus: int = 1, timeout_s: float = 120) -> TestCluster:
    """Start a head node and ``len(nodes) - 1`` workers, each with ``cpus`` CPUs, no GPU.

    Args:
        nodes: Custom resources of each node (labels that tell the nodes apart).
        cpus: CPUs of each node.
        timeout_s: Longest wait for every node to be alive.
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-wt-", dir="/tmp"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    common = ["--block", "--num-cpus", str(cpus), "--num-gpus", "0",
              "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
              "--object-store-memory", str(300 * 1024 * 1024)]
    cluster = TestCluster(temp_dir, address)
    try:
        for i, res in enumerate(nodes):
            head = ["--head", "--port", str(port), "--temp-dir", str(temp_dir),
                    "--include-dashboard=false", "--dashboard-agent-listen-port",
                    str(free_port()), "--metrics-export-port", str(free_port())] \
                if i == 0 else ["--address", address,
                                "--metrics-export-port", str(free_port()),
                                "--dashboard-agent-listen-port", str(free_port())]
            cmd = [_ray_bin(), "start", *head, *common, "--resources", json.dumps(res)]
            log_path = temp_dir / f"start-{i}.log"
            with log_path.open("ab") as log:
                cluster.procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=log,
                                                      stdin=subprocess.DEVNULL,
                                                      start_new_session=True))
            _wait_started(cluster.procs[-1], log_path, timeout_s)
        cluster.initial_nodes = _wait_nodes(cluster, len(nodes), timeout_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_started(proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Wait for ``ray start --block`` to print that its node runs (no driver needed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if "Ray runtime started" in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"ray start did not start a node: {log.read_text(errors='replace')}")


def _wait_nodes(cluster: TestCluster, count: int, timeout_s: float
                ) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in cluster.procs):
            break
        try:
            nodes = cluster.nodes()
            if len(nodes) >= count:
                return nodes
        except subprocess.SubprocessError as err:
            last = str(err)
        time.sleep(1)
    raise RuntimeError(f"Ray test cluster did not get {count} node(s): {last}")
