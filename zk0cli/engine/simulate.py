"""``zk0 simulate``: N virtual clients on this machine through a real local SuperLink.

zk0 starts a private ``flower-superlink --simulation`` on a free loopback port (runtime
dependency installation and telemetry off, its own ``FLWR_HOME``), submits the zk0
Flower app with this run's configuration, follows the run directory, and stops the
SuperLink and everything it started when the run ends, fails or is interrupted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zk0cli import constants as K
from zk0cli.core.config import RunConfig
from zk0cli.core.rundir import RunDir
from zk0cli.engine.flwr_proc import (
    FlowerHome,
    flower_bin,
    free_port,
    make_app_dir,
    submit_run,
    wait_for_port,
)
from zk0cli.engine.raycluster import (
    PRIVATE_RAY,
    RAY_ADDRESS_ENV,
    ClusterResources,
    clients_per_node,
    private_cluster,
)
from zk0cli.engine.runs import ProgressFn
from zk0cli.engine.supervisor import Supervisor
from zk0cli.log import logger


@dataclass(frozen=True)
class Parallelism:
    """How many simulated clients train at once, as Ray computes it.

    Attributes:
        cpus: CPUs Ray may use in total (all nodes).
        cpus_per_client: ``federation.client_cpus``.
        gpus_per_client: ``federation.client_gpus``.
        parallel_clients: Clients that can run at the same time.
        gpus: GPUs Ray sees (only counted when ``gpus_per_client > 0``, else 0).
        per_node: ``(node label, clients it holds)`` per node of a Ray cluster
            (``federation.ray_address``); empty for the private local Ray.
    """

    cpus: float
    cpus_per_client: float
    gpus_per_client: float
    parallel_clients: int
    gpus: float = 0
    per_node: tuple[tuple[str, int], ...] = ()

    def describe(self) -> str:
        """``2 client(s) in parallel (1 CPU each of 2; 0.5 GPU each of 1)``.

        On a Ray cluster the clients each node holds follow: ``...; per node: A 1, B 1``.
        """
        gpu = f"; {self.gpus_per_client:g} GPU each of {self.gpus:g}" \
            if self.gpus_per_client > 0 else ""
        nodes = "; per node: " + ", ".join(f"{label} {n}" for label, n in self.per_node) \
            if self.per_node else ""
        return (f"{self.parallel_clients} client(s) in parallel "
                f"({self.cpus_per_client:g} CPU each of {self.cpus:g}{gpu}{nodes})")


def parallelism(config: RunConfig, *, gpu_count: Callable[[], int] | None = None,
                cluster: ClusterResources | None = None) -> Parallelism:
    """Resources of the simulation, as Ray will schedule them.

    The private local Ray gets every CPU of this machine (or
    ``federation.max_parallel_clients`` × client CPUs) and its CUDA devices; a Ray cluster
    (``federation.ray_address``) has the nodes in ``cluster``. Each client reserves
    ``federation.client_cpus`` CPUs and ``federation.client_gpus`` GPUs; per node
    Flower fits ``int(CPU / client_cpus)`` clients, with ``client_gpus > 0`` at most
    ``int(GPU / client_gpus)`` (:func:`zk0cli.engine.raycluster.clients_per_node`), and
    ``min(clients, sum over nodes)`` run at once (at least 1).

    Args:
        config: The validated configuration.
        gpu_count: CUDA devices of this machine (default: ask torch; injectable for tests).
        cluster: The running cluster's nodes (:func:`~zk0cli.engine.raycluster.
            query_cluster`); ``None`` for the private local Ray.
    """
    fed = config.federation
    if cluster is None:
        cpus = os.cpu_count() or 1
        if fed.max_parallel_clients is not None:
            cpus = max(1, int(fed.max_parallel_clients * fed.client_cpus + 0.999))
        gpus = 0
        if fed.client_gpus > 0:
            from zk0cli.engine.preflight import cuda_devices

            gpus = (gpu_count or cuda_devices)()
        local = private_cluster(cpus, gpus)
        fit = clients_per_node(local.nodes[0], fed.client_cpus, fed.client_gpus)
        return Parallelism(cpus, fed.client_cpus, fed.client_gpus,
                           max(1, min(config.num_clients, fit)), gpus)
    per_node = tuple((n.label(), clients_per_node(n, fed.client_cpus, fed.client_gpus))
                     for n in cluster.nodes)
    parallel = max(1, min(config.num_clients, sum(k for _, k in per_node)))
    return Parallelism(cluster.cpus, fed.client_cpus, fed.client_gpus, parallel,
                       cluster.gpus if fed.client_gpus > 0 else 0, per_node)


def run_simulation(config: RunConfig, rundir: RunDir, *,
                   on_progress: ProgressFn | None = None,
                   cluster: ClusterResources | None = None) -> str:
    """Run the federation in Flower's simulation runtime; returns the final status.

    Args:
        config: The validated configuration.
        rundir: The run directory.
        on_progress: Called with the run's progress while it runs.
        cluster: The nodes of ``federation.ray_address`` (read before launch by
            :func:`~zk0cli.engine.raycluster.query_cluster`); ``None`` for the private
            local Ray. ``flwr-simulation`` joins that cluster as a Ray driver
            (``RAY_ADDRESS``); stopping the run stops the driver and its client actors,
            never the cluster.

    Raises:
        FederationError: The SuperLink could not start or refused the run.
        RunOwnedError: Another live process owns ``rundir``.
        KeyboardInterrupt: After stopping the run and the SuperLink and marking the
            run interrupted.
    """
    work = Path(tempfile.mkdtemp(prefix="zk0-flwr-"))
    port = free_port()
    # Ray reads RAY_ADDRESS first in ray.init(): "local" always starts a new private Ray
    # (never a `ray start` cluster of this machine, whatever the user's shell sets).
    ray_env = {RAY_ADDRESS_ENV: config.federation.ray_address or PRIVATE_RAY}
    home = FlowerHome(work / "flwr_home", f"127.0.0.1:{port}", extra_env=ray_env)
    home.write()
    cmd = [flower_bin("flower-superlink"), "--simulation", "--insecure",
           "--host", "127.0.0.1", "--port", str(port),
           "--disable-runtime-dependency-installation",
           "--database", str(work / "state.db")]
    try:
        with Supervisor(rundir) as sup:
            proc = sup.start(cmd, env=home.env(), log_path=rundir.superlink_log, cwd=work)
            sup.submitted(home, _submit(config, rundir, home, work, port, proc, cluster))
            status = sup.follow(config, on_progress=on_progress,
                                is_alive=lambda: proc.poll() is None)
            record_client_nodes(rundir, config.federation.rounds)
            return status
    finally:
        shutil.rmtree(work, ignore_errors=True)


def record_client_nodes(rundir: RunDir, rounds: int) -> dict[str, list[str]]:
    """``run.json`` ``ray_client_nodes``: per client, the Ray nodes its rounds ran on.

    Read from the server round files (each client's ``ray_node_id``, reported by the
    ClientApp inside its Ray actor). Nothing is written when no client reported one.

    Returns:
        ``{client_id: [node_id, ...]}`` (node ids sorted, each once).
    """
    from pydantic import ValidationError

    from zk0cli.core.rundir import read_server_round
    from zk0cli.errors import RunDirError

    nodes: dict[str, set[str]] = {}
    for r in range(1, rounds + 1):
        try:
            record = read_server_round(rundir, r)
        except (RunDirError, ValidationError):  # a round that never ran has no file
            continue
        for m in record.individual_client_training_metrics:
            node = getattr(m, "ray_node_id", None)
            if node:
                nodes.setdefault(m.client_id, set()).add(str(node))
    out = {cid: sorted(v) for cid, v in sorted(nodes.items())}
    if out:
        rundir.update_run(ray_client_nodes=out)
    return out


def _submit(config: RunConfig, rundir: RunDir, home: FlowerHome, work: Path, port: int,
            proc: Any, cluster: ClusterResources | None) -> int:
    """Wait for the SuperLink, submit the zk0 app; returns the Flower run id."""
    wait_for_port("127.0.0.1", port, timeout_s=60, proc=proc, log_file=rundir.superlink_log)
    par = parallelism(config, cluster=cluster)
    fed_cfg: dict[str, float | int] = {
        "num-supernodes": config.num_clients,
        "client-resources-num-cpus": par.cpus_per_client,
        "client-resources-num-gpus": par.gpus_per_client,
    }
    if cluster is None:  # ray.init refuses num_cpus when it joins a running cluster
        fed_cfg["init-args-num-cpus"] = int(par.cpus)
        cluster = private_cluster(int(par.cpus), int(par.gpus))
    run_id = submit_run(home, make_app_dir(work / "app"),
                        run_config={K.RUN_CONFIG_PATH_KEY: str(rundir.config_json),
                                    K.RUN_DIR_KEY: str(rundir.root)},
                        federation_config=fed_cfg)
    rundir.update_run(flower_run_id=str(run_id), parallel_clients=par.parallel_clients,
                      ray_cluster=cluster.to_json())
    logger.info("submitted Flower run %s to the local SuperLink on port %s", run_id, port)
    return run_id
