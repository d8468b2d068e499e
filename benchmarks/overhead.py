"""(c) Round overhead of ``zk0 simulate`` with the tiny preset, (e) ``zk0 tiny-run``, and
(g) the round overhead of a deployment (``zk0 train --local-nodes 2``).

A real simulation (local SuperLink, Ray, the zk0 Flower apps) with 2 clients on local
fixture datasets. Server evaluation and checkpoints happen only at round 0 and in the
last round, so the rounds in between measure the federation's own cost: for round N,
overhead = the server's round seconds (``server/round_N_server_eval.json``) minus the
slowest client's own ``seconds`` (training, as the client reports it). Round 1 (Ray actors
import torch and build the policy) is the warm-up and is reported separately.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def measure_overhead(workdir: Path, *, rounds: int, steps: int = 5) -> dict[str, Any]:
    """Run one simulation; return per-round seconds, client seconds and overheads."""
    from zk0cli.core.config import validate_config
    from zk0cli.engine.runs import create_run
    from zk0cli.engine.simulate import run_simulation

    roots = _fixture_roots(workdir)
    config = validate_config({
        "seed": 0,
        "output_root": str(workdir / "outputs"),
        "model": {"kind": "tiny", "device": "cpu"},
        "data": {"clients": [{"source": "local", "name": f"zk0bench/client{i}",
                              "root": str(r)} for i, r in enumerate(roots)],
                 "heldout_episodes": 1},
        "training": {"steps_per_round": steps, "batch_size": 4, "lr": 1e-3, "min_lr": 1e-4},
        "federation": {"rounds": rounds, "min_clients": 2, "round_timeout_s": 600},
        "eval": {"frequency": 100_000, "batches": 2, "batch_size": 4},
        "checkpoint": {"interval": 100_000},
    })
    rundir = create_run(config, out=None, command="benchmark", engine="simulation")
    t0 = time.perf_counter()
    status = run_simulation(config, rundir)
    wall = time.perf_counter() - t0
    if status != "completed":
        raise RuntimeError(f"simulation {status}: {rundir.read_run().get('error')}")
    per_round = round_overheads(rundir, rounds)
    warm = [r["overhead_seconds"] for r in per_round[1:-1]]
    return {
        "rounds": rounds, "clients": 2, "steps_per_round": steps, "wall_seconds": wall,
        "run_dir": str(rundir.root), "per_round": per_round,
        "warmup_round_seconds": per_round[0]["seconds"],
        "overhead_seconds_median": statistics.median(warm) if warm else None,
        "target_seconds": 1.0,
        "pass": bool(warm) and statistics.median(warm) <= 1.0,
    }


def _fixture_roots(workdir: Path) -> list[Path]:
    from fixtures import write_dataset

    roots = []
    for i in range(2):
        root = workdir / f"sim-client{i}"
        if not root.exists():
            write_dataset(root, repo_id=f"zk0bench/client{i}", episodes=3, frames=30,
                          size=64, seed=i)
        roots.append(root)
    return roots


def _deploy_round_overheads(workdir: Path, *, rounds: int, steps: int, warm: bool
                            ) -> dict[str, Any]:
    """One local trial (``zk0 train --local-nodes 2``: TLS, a SuperLink, 2 SuperNodes)."""
    from zk0cli.core.config import validate_config
    from zk0cli.engine import deploy
    from zk0cli.engine.deploy_options import LocalTrialOptions
    from zk0cli.engine.runs import create_run

    roots = _fixture_roots(workdir)
    config = validate_config({
        "seed": 0,
        "output_root": str(workdir / "outputs"),
        "model": {"kind": "tiny", "device": "cpu"},
        "data": {"clients": [{"source": "local", "name": f"zk0bench/client{i}",
                              "root": str(r)} for i, r in enumerate(roots)],
                 "partition": "dataset", "heldout_episodes": 1},
        "training": {"steps_per_round": steps, "batch_size": 4, "lr": 1e-3, "min_lr": 1e-4},
        "federation": {"rounds": rounds, "num_clients": 2, "min_clients": 2,
                       "round_timeout_s": 600},
        "eval": {"frequency": 100_000, "batches": 2, "batch_size": 4},
        "checkpoint": {"interval": 100_000},
    })
    rundir = create_run(config, out=None, command="benchmark", engine="deployment")
    saved = deploy.WARM_CLIENTAPP
    deploy.WARM_CLIENTAPP = warm
    t0 = time.perf_counter()
    try:
        status = deploy.run_local_trial(config, rundir, LocalTrialOptions(nodes=2))
    finally:
        deploy.WARM_CLIENTAPP = saved
    wall = time.perf_counter() - t0
    if status != "completed":
        raise RuntimeError(f"local trial {status}: {rundir.read_run().get('error')}")
    per_round = round_overheads(rundir, rounds)
    between = [r["overhead_seconds"] for r in per_round[1:-1]]
    return {"warm_clientapp": warm, "wall_seconds": wall, "run_dir": str(rundir.root),
            "per_round": per_round,
            "overhead_seconds_median": statistics.median(between) if between else None,
            "overhead_seconds_max": max(r["overhead_seconds"] for r in per_round),
            "first_round_overhead_seconds": per_round[0]["overhead_seconds"]}


def measure_deploy_overhead(workdir: Path, *, rounds: int = 5, steps: int = 5,
                            cold: bool = True) -> dict[str, Any]:
    """(g) Deployment round overhead of a local trial: warm ClientApp vs Flower's default.

    For every round: the server's round seconds minus the slowest site's own training
    seconds. ``warm`` is zk0's deployment (``--isolation process`` and one warm ClientApp
    process per SuperNode); ``cold`` (the "before") is Flower's default isolation, a fresh
    ClientApp process per message. The figure is the median over the rounds between the
    first and the last (server evaluation and checkpoints run at round 0 and in the last
    round); the first round includes building the policy and opening the dataset.
    """
    warm = _deploy_round_overheads(workdir, rounds=rounds, steps=steps, warm=True)
    out: dict[str, Any] = {"rounds": rounds, "supernodes": 2, "steps_per_round": steps,
                           "warm": warm, "target_seconds": 5.0}
    if cold:
        out["cold"] = _deploy_round_overheads(workdir, rounds=rounds, steps=steps,
                                              warm=False)
    med = warm["overhead_seconds_median"]
    out["pass"] = med is not None and med <= 5.0
    return out


def measure_tiny_run(workdir: Path) -> dict[str, Any]:
    """Cold wall time of ``zk0 tiny-run`` (fresh cache), if the simulator is available."""
    import importlib.util
    import os

    if importlib.util.find_spec("zk0cli.core.sim") is None:
        return {"measured": False,
                "reason": "zk0cli.core.sim (the SO-101 simulator that tiny-run's embedded "
                          "datasets need) is not on this branch"}
    env = {**os.environ, "ZK0_CACHE_DIR": str(workdir / "cold-cache")}
    out = workdir / "tiny-run"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "zk0cli", "tiny-run", "--out", str(out)],
                          env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    return {"measured": True, "exit_code": proc.returncode, "wall_seconds": wall,
            "tail": proc.stdout[-500:] + proc.stderr[-500:]}


if __name__ == "__main__":
    print(json.dumps(measure_overhead(Path(sys.argv[1]), rounds=int(sys.argv[2])), indent=1))


def round_overheads(rundir: Any, rounds: int) -> list[dict[str, Any]]:
    """Per round of a finished run: its seconds, the slowest client's training seconds,
    their difference (the round's overhead, s) and whether the server evaluated."""
    from zk0cli.core.rundir import read_json

    per_round = []
    for n in range(1, rounds + 1):
        rf = read_json(rundir.server_eval(n))
        clients = [float(c["seconds"]) for c in rf["individual_client_training_metrics"]]
        per_round.append({"round": n, "seconds": rf["seconds"],
                          "client_seconds_max": max(clients),
                          "overhead_seconds": rf["seconds"] - max(clients),
                          "server_eval": rf["server_eval"] is not None})
    return per_round
