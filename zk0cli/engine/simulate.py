"""``zk0 simulate``: N virtual clients on this machine through a real local SuperLink.

zk0 starts a private ``flower-superlink --simulation`` on a free loopback port (runtime
dependency installation and telemetry off, its own ``FLWR_HOME``), submits the zk0
Flower app with this run's configuration, follows the run directory, and stops the
SuperLink and everything it started when the run ends, fails or is interrupted.
"""

from __future__ import annotations

import math
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
from zk0cli.engine.runs import ProgressFn
from zk0cli.engine.supervisor import Supervisor
from zk0cli.log import logger


@dataclass(frozen=True)
class Parallelism:
    """How many simulated clients train at once, as Ray computes it.

    Attributes:
        cpus: CPUs Ray may use in total.
        cpus_per_client: ``federation.client_cpus``.
        gpus_per_client: ``federation.client_gpus``.
        parallel_clients: Clients that can run at the same time.
        gpus: GPUs Ray sees (only counted when ``gpus_per_client > 0``, else 0).
    """

    cpus: int
    cpus_per_client: float
    gpus_per_client: float
    parallel_clients: int
    gpus: int = 0

    def describe(self) -> str:
        """``2 client(s) in parallel (1 CPU each of 2; 0.5 GPU each of 1)``."""
        gpu = f"; {self.gpus_per_client:g} GPU each of {self.gpus}" \
            if self.gpus_per_client > 0 else ""
        return (f"{self.parallel_clients} client(s) in parallel "
                f"({self.cpus_per_client:g} CPU each of {self.cpus}{gpu})")


def parallelism(config: RunConfig, *, gpu_count: Callable[[], int] | None = None) -> Parallelism:
    """Resources of the simulation, as Ray will schedule them.

    Ray gets every CPU of this machine (or ``federation.max_parallel_clients`` × client CPUs)
    and each client reserves ``federation.client_cpus`` CPUs and ``federation.client_gpus``
    GPUs; Ray runs ``min(clients, cpus // client_cpus, gpus // client_gpus)`` at once (the
    GPU term only when ``client_gpus > 0``).

    Args:
        config: The validated configuration.
        gpu_count: CUDA devices of this machine (default: ask torch; injectable for tests).
    """
    fed = config.federation
    cpus = os.cpu_count() or 1
    if fed.max_parallel_clients is not None:
        cpus = max(1, int(fed.max_parallel_clients * fed.client_cpus + 0.999))
    parallel = max(1, min(config.num_clients, int(cpus // fed.client_cpus)))
    gpus = 0
    if fed.client_gpus > 0:
        from zk0cli.engine.preflight import cuda_devices

        gpus = (gpu_count or cuda_devices)()
        parallel = max(1, min(parallel, math.floor(gpus / fed.client_gpus + 1e-9)))
    return Parallelism(cpus, fed.client_cpus, fed.client_gpus, parallel, gpus)


def run_simulation(config: RunConfig, rundir: RunDir, *,
                   on_progress: ProgressFn | None = None) -> str:
    """Run the federation in Flower's simulation runtime; returns the final status.

    Raises:
        FederationError: The SuperLink could not start or refused the run.
        RunOwnedError: Another live process owns ``rundir``.
        KeyboardInterrupt: After stopping the run and the SuperLink and marking the
            run interrupted.
    """
    work = Path(tempfile.mkdtemp(prefix="zk0-flwr-"))
    port = free_port()
    home = FlowerHome(work / "flwr_home", f"127.0.0.1:{port}")
    home.write()
    cmd = [flower_bin("flower-superlink"), "--simulation", "--insecure",
           "--host", "127.0.0.1", "--port", str(port),
           "--disable-runtime-dependency-installation",
           "--database", str(work / "state.db")]
    try:
        with Supervisor(rundir) as sup:
            proc = sup.start(cmd, env=home.env(), log_path=rundir.superlink_log, cwd=work)
            sup.submitted(home, _submit(config, rundir, home, work, port, proc))
            return sup.follow(config, on_progress=on_progress,
                              is_alive=lambda: proc.poll() is None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _submit(config: RunConfig, rundir: RunDir, home: FlowerHome, work: Path, port: int,
            proc: Any) -> int:
    """Wait for the SuperLink, submit the zk0 app; returns the Flower run id."""
    wait_for_port("127.0.0.1", port, timeout_s=60, proc=proc, log_file=rundir.superlink_log)
    par = parallelism(config)
    fed_cfg: dict[str, float | int] = {
        "num-supernodes": config.num_clients,
        "client-resources-num-cpus": par.cpus_per_client,
        "client-resources-num-gpus": par.gpus_per_client,
        "init-args-num-cpus": par.cpus,
    }
    run_id = submit_run(home, make_app_dir(work / "app"),
                        run_config={K.RUN_CONFIG_PATH_KEY: str(rundir.config_json),
                                    K.RUN_DIR_KEY: str(rundir.root)},
                        federation_config=fed_cfg)
    rundir.update_run(flower_run_id=str(run_id), parallel_clients=par.parallel_clients)
    logger.info("submitted Flower run %s to the local SuperLink on port %s", run_id, port)
    return run_id
