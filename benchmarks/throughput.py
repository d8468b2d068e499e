"""(d) zk0's client trainer vs a plain LeRobot training loop, same model, data and loader.

Both loops run the tiny SmolVLA on the same local dataset with the same ``DataLoader``
(``zk0cli.core.data.make_loader``, same batch size and workers): the plain loop is
``preprocessor(batch)`` → ``policy.forward`` → ``backward`` → gradient clipping →
``AdamW.step``; zk0's is :func:`zk0cli.core.trainer.train_round` (plus the FedProx term,
the LR schedule, finiteness checks and metrics). Time waiting for the next batch is
measured around the loader's iterator in both. Repeats alternate the two loops and the
median is reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class TimedLoader:
    """Wraps a DataLoader; accumulates the seconds spent waiting for each batch."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.wait = 0.0
        self.batches = 0

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.wait += time.perf_counter() - t0
            self.batches += 1
            yield batch

    def __len__(self) -> int:
        return len(self.loader)


def _plain_loop(bundle: Any, loader: TimedLoader, steps: int, lr: float, clip: float) -> None:
    import torch

    policy = bundle.policy
    policy.train()
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=1e-10)
    done = 0
    while done < steps:
        for raw in loader:
            batch = bundle.preprocessor(raw)
            loss, _ = policy.forward(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            done += 1
            if done >= steps:
                break


def measure_throughput(workdir: Path, *, steps: int, repeats: int, batch_size: int,
                       workers: list[int], device: str = "cpu") -> dict[str, Any]:
    """Steps/s of both loops for each ``num_workers`` and the data-wait share.

    Returns:
        ``{"runs": [{"num_workers", "zk0_steps_per_s", "plain_steps_per_s", "ratio",
        "zk0_data_wait_share", "plain_data_wait_share"}], "ratio", "pass", ...}``; the
        checked ``ratio`` is the one at ``training.num_workers``'s default.
    """
    import torch
    from fixtures import write_dataset

    from zk0cli.core.config import ModelConfig, TrainingConfig
    from zk0cli.core.data import DatasetRef, dataset_stats, load_metadata, make_loader, open_dataset
    from zk0cli.core.policy import TINY_CHUNK_SIZE, build_policy
    from zk0cli.core.trainer import train_round

    torch.set_num_threads(1)
    root = workdir / "throughput-data"
    repo = "zk0bench/throughput"
    if not root.exists():
        write_dataset(root, repo_id=repo, episodes=6, frames=40, size=64)
    ref = DatasetRef(name=repo, repo_id=repo, root=root)
    meta = load_metadata(ref)
    dataset = open_dataset(ref, episodes=None, chunk_size=TINY_CHUNK_SIZE,
                           video_backend="pyav")
    bundle = build_policy(ModelConfig(kind="tiny", path=None, device=device), meta=meta,
                          rename_map={}, stats=dataset_stats(meta, {}), seed=0)
    training = TrainingConfig(steps_per_round=steps, batch_size=batch_size)
    runs = []
    for nw in workers:
        zk0_s, plain_s, zk0_w, plain_w = [], [], [], []
        # One loader per loop, kept across repeats as a client keeps it across rounds.
        loaders = {w: make_loader(dataset, batch_size=batch_size, shuffle=True, seed=0,
                                  num_workers=nw) for w in ("zk0", "plain")}
        for rep in range(repeats + 1):  # the first repeat warms up and is dropped
            for which in (("zk0", "plain") if rep % 2 else ("plain", "zk0")):
                loader = TimedLoader(loaders[which])
                t0 = time.perf_counter()
                if which == "zk0":
                    train_round(bundle, loader, steps=steps, lr=1e-4, mu=0.01,
                                training=training, dataset_name=repo, seed=rep)
                else:
                    _plain_loop(bundle, loader, steps, 1e-4, training.grad_clip_norm)
                dt = time.perf_counter() - t0
                if rep == 0:
                    continue
                (zk0_s if which == "zk0" else plain_s).append(steps / dt)
                (zk0_w if which == "zk0" else plain_w).append(loader.wait / dt)
        del loaders  # stops persistent workers
        z, p = statistics.median(zk0_s), statistics.median(plain_s)
        runs.append({"num_workers": nw, "zk0_steps_per_s": z, "plain_steps_per_s": p,
                     "ratio": z / p, "zk0_data_wait_share": statistics.median(zk0_w),
                     "plain_data_wait_share": statistics.median(plain_w)})
    default = TrainingConfig().num_workers
    ref = next((r for r in runs if r["num_workers"] == default), runs[0])
    best = max(runs, key=lambda r: r["zk0_steps_per_s"])
    return {"steps": steps, "repeats": repeats, "batch_size": batch_size, "runs": runs,
            "default_num_workers": default, "fastest_num_workers": best["num_workers"],
            "ratio": ref["ratio"], "target_ratio": 0.95, "pass": ref["ratio"] >= 0.95}
