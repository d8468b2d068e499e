"""(b) Server peak memory aggregating N full-size replies through ``Zk0FedProx``.

Each count runs in its own process (``python benchmarks/aggregate.py --worker ...``) so
its peak RSS (``VmHWM``) is its own. Replies are real Flower train ``Message`` s with
the full-size trainable tensors (random values, bf16 on the wire) handed to the real
``Zk0FedProx.aggregate_train``:

* ``stream``: replies arrive one at a time (a generator), as zk0's aggregation reads them;
  the server's memory is the running float64 sum, whatever the number of clients.
* ``held``: all N replies are built first and handed over as a list, as Flower's own
  ``Grid.send_and_receive`` returns them: the encoded replies themselves (~0.2 GB each in
  bf16) are then in memory together, before aggregation starts. zk0's ServerApp wraps
  the grid (:class:`zk0cli.flower.streaming.StreamingGrid`) so that it streams instead;
  :mod:`server_memory` measures that real server process.

``aggregation_seconds`` is the whole ``aggregate_train`` call minus the time spent
building the replies inside the generator.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _reply(shapes: dict[str, list[int]], node_id: int, transport: str) -> Any:
    import torch
    from flwr.app import ConfigRecord, Message, Metadata, MetricRecord, RecordDict

    from zk0cli import constants as K
    from zk0cli.core.transport import to_array_record

    g = torch.Generator().manual_seed(node_id)
    tensors = {k: 0.02 * torch.randn(s, generator=g) for k, s in shapes.items()}
    record = to_array_record(tensors, transport_dtype=transport)
    del tensors
    meta = Metadata(run_id=1, message_id=f"m{node_id}", src_node_id=node_id, dst_node_id=0,
                    reply_to_message_id="q", group_id="1", created_at=0.0, ttl=60.0,
                    message_type="train")
    content = RecordDict({
        K.ARRAYS_KEY: record,
        K.METRICS_KEY: MetricRecord({K.NUM_EXAMPLES_KEY: 16 + node_id, K.LOSS: 1.0}),
        K.INFO_KEY: ConfigRecord({K.CLIENT_ID: str(node_id)}),
    })
    return Message(content, metadata=meta)


def _peak_rss() -> int:
    """This process's peak RSS in bytes.

    ``VmHWM`` from ``/proc/self/status`` (reset by ``execve``); ``ru_maxrss`` elsewhere,
    which on Linux keeps the parent's high-water mark across fork + exec.
    """
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(shapes_path: Path, n: int, mode: str, transport: str) -> dict[str, Any]:
    """Aggregate ``n`` replies in this process; return peak RSS and timings."""
    import psutil
    import torch

    from zk0cli.core.strategy import Zk0FedProx
    from zk0cli.core.transport import TensorSpec

    torch.set_num_threads(1)
    shapes = json.loads(shapes_path.read_text())
    expected = {k: TensorSpec(tuple(s), "float32") for k, s in shapes.items()}
    strategy = Zk0FedProx(expected=expected, proximal_mu=0.01, lr_for_round=lambda r: 1e-4,
                          steps=1, transport_dtype=transport)
    baseline = psutil.Process().memory_info().rss
    build_seconds = 0.0

    def built(replies: Iterator[Any]) -> Iterator[Any]:
        """Time spent building replies (not aggregating) inside the generator."""
        nonlocal build_seconds
        while True:
            t0 = time.perf_counter()
            msg = next(replies, None)
            build_seconds += time.perf_counter() - t0
            if msg is None:
                return
            yield msg
            del msg

    if mode == "stream":
        replies: Any = built(_reply(shapes, i + 1, transport) for i in range(n))
    else:
        held = [_reply(shapes, i + 1, transport) for i in range(n)]
        replies = iter(held)
    t0 = time.perf_counter()
    arrays, _ = strategy.aggregate_train(1, replies)
    total = time.perf_counter() - t0
    # aggregate_train's own time: its whole call minus the replies' construction.
    agg_seconds = total - build_seconds
    assert arrays is not None and strategy.outcomes[1].aggregated
    peak = _peak_rss()
    return {"clients": n, "mode": mode, "transport": transport, "peak_rss_bytes": peak,
            "baseline_rss_bytes": baseline, "aggregation_seconds": agg_seconds,
            "wall_seconds": total}


def measure_aggregation(shapes_path: Path, counts: list[int], held_counts: list[int],
                        transport: str = "bfloat16") -> dict[str, Any]:
    """Run one worker process per (mode, count); return their results and the check.

    Args:
        shapes_path: ``{name: shape}`` of the trainable tensors (from :mod:`wire`).
        counts: Client counts of the ``stream`` mode.
        held_counts: Client counts of the ``held`` mode.
        transport: Wire dtype of the replies.
    """
    runs = []
    for mode, ns in (("stream", counts), ("held", held_counts)):
        for n in ns:
            cmd = [sys.executable, str(HERE / "aggregate.py"), "--worker", "--shapes",
                   str(shapes_path), "--clients", str(n), "--mode", mode,
                   "--transport", transport]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"aggregation worker failed:\n{proc.stderr[-3000:]}")
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out: dict[str, Any] = {"runs": runs}
    stream = {r["clients"]: r["peak_rss_bytes"] for r in runs if r["mode"] == "stream"}
    if min(counts) in stream and max(counts) in stream:
        out["stream_ratio_max_vs_min"] = stream[max(counts)] / stream[min(counts)]
        out["target_ratio"] = 1.2
        out["pass"] = out["stream_ratio_max_vs_min"] <= 1.2
    return out


def main() -> None:
    """Worker entry point: prints one JSON line."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--worker", action="store_true")
    p.add_argument("--shapes", type=Path, required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--mode", choices=["stream", "held"], default="stream")
    p.add_argument("--transport", choices=["bfloat16", "float32"], default="bfloat16")
    a = p.parse_args()
    print(json.dumps(worker(a.shapes, a.clients, a.mode, a.transport)))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    main()
