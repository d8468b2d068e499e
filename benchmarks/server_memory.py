"""(b) Peak RSS of ``zk0 simulate``'s server process for N full-size replies.

A real ``zk0 simulate`` run (local SuperLink, ``flwr-simulation`` with the zk0 ServerApp,
Ray) on the full-size SmolVLA architecture (random weights, 99,880,992 trainable
parameters, bf16 on the wire), one round, N clients. The clients are the benchmark-only
ClientApp :mod:`bench_clientapp` (no training: perturbed global tensors), selected with
``make_app_dir(..., clientapp=...)``, so N replies of the real size travel through the
real transport while the clients cost little. The server process is ``flwr-simulation``:
it runs the ServerApp, holds the SuperLink state the replies land in and drives Ray; its
RSS (Ray's workers are other processes) is sampled from outside with psutil every 0.2 s.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLIENTAPP = "benchmarks.bench_clientapp:app"


class PeakRSS:
    """Samples the peak RSS of every ``flwr-simulation`` process while running."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for p in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = " ".join(p.info.get("cmdline") or [])
                mem = p.info.get("memory_info")
                if "flwr-simulation" in cmd and mem is not None:
                    self.peak = max(self.peak, int(mem.rss))
            self._stop.wait(self.interval_s)


def _prepare(work: Path, episodes: int) -> tuple[Path, Path]:
    from fullsize import build_full_policy

    from zk0cli.testing import write_synthetic_dataset

    ckpt = work / "fullsize-ckpt"
    if not (ckpt / "model.safetensors").is_file():
        policy = build_full_policy(seed=0)
        policy.save_pretrained(ckpt)
        del policy
    data = work / "fullsize-data"
    if not data.exists():
        write_synthetic_dataset(data, repo_id="zk0bench/fullsize", episodes=episodes,
                                frames=8, size=32, cameras=("camera1", "camera2"), seed=0)
    return ckpt, data


def measure_server_memory(work: Path, counts: list[int]) -> dict[str, Any]:
    """One ``zk0 simulate`` round per client count; the server process's peak RSS.

    Returns:
        ``{"by_clients": {"N": {"peak_rss_bytes", "wall_seconds", "status"}}, "ratio_max_vs_min",
        "target_ratio", "pass", ...}``.
    """
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])])
    from zk0cli.core.config import validate_config
    from zk0cli.engine import flwr_proc, simulate
    from zk0cli.engine.runs import create_run

    ckpt, data = _prepare(work, episodes=max(counts) + 2)
    real = flwr_proc.make_app_dir
    by: dict[str, Any] = {}
    simulate.make_app_dir = functools.partial(real, clientapp=CLIENTAPP)  # type: ignore[attr-defined]
    try:
        for n in counts:
            config = validate_config({
                "seed": 0,
                "output_root": str(work / "outputs"),
                "model": {"kind": "pretrained", "path": str(ckpt), "device": "cpu"},
                "data": {"clients": [{"source": "local", "name": "zk0bench/fullsize",
                                      "root": str(data)}],
                         "partition": "episodes", "heldout_episodes": 1, "stats": "local"},
                "training": {"steps_per_round": 1, "batch_size": 1},
                "federation": {"rounds": 1, "num_clients": n, "min_clients": n,
                               "round_timeout_s": 1800, "transport_dtype": "bfloat16"},
                "eval": {"frequency": 100_000, "batches": 1, "batch_size": 1},
                "checkpoint": {"interval": 100_000},
            })
            rundir = create_run(config, out=None, command="benchmark", engine="simulation")
            t0 = time.perf_counter()
            with PeakRSS() as rss:
                status = simulate.run_simulation(config, rundir)
            by[str(n)] = {"peak_rss_bytes": rss.peak, "status": status,
                          "wall_seconds": time.perf_counter() - t0}
            if status != "completed":
                raise RuntimeError(f"{n} clients: simulation {status}: "
                                   f"{rundir.read_run().get('error')}")
    finally:
        simulate.make_app_dir = real  # type: ignore[attr-defined]
    peaks = {int(k): v["peak_rss_bytes"] for k, v in by.items()}
    ratio = peaks[max(peaks)] / peaks[min(peaks)]
    return {"by_clients": by, "model": "full-size SmolVLA, 99,880,992 trainable parameters",
            "transport_dtype": "bfloat16", "rounds": 1,
            "ratio_max_vs_min": ratio, "target_ratio": 1.2, "pass": ratio <= 1.2}


if __name__ == "__main__":
    import json
    import sys

    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/zk0-servermem")
    counts = [int(c) for c in (sys.argv[2] if len(sys.argv) > 2 else "2,4,8,16").split(",")]
    work.mkdir(parents=True, exist_ok=True)
    print(json.dumps(measure_server_memory(work, counts), indent=2))
