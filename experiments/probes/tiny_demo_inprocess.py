# ruff: noqa  (throwaway probes of issue 18, kept as the evidence in docs/results.md)
"""Probe: why does the tiny demo's held-out loss rise? In-process, real trainer."""
import sys
import time

import torch

sys.path.insert(0, "experiments")
from federation_vs_local import MemoryDataset

from zk0cli.core import data as D
from zk0cli.core.config import DatasetSpec, ModelConfig, SimConfig, TrainingConfig
from zk0cli.core.data import make_loader
from zk0cli.core.policy import (
    TINY_CHUNK_SIZE,
    build_policy,
    get_trainable_state,
    set_trainable_state,
)
from zk0cli.core.stats import compute_sums, merge_sums, to_lerobot_stats
from zk0cli.core.trainer import evaluate, train_round
from zk0cli.core.transport import WeightedMean

torch.set_num_threads(1)
sim = SimConfig(episodes=4, height=96, width=128)
tasks = ["lift", "pick_place", "stack"]
tr, sums = {}, {}
for t in tasks:
    ref = D.resolve_dataset(DatasetSpec(source="sim", name=t, seed=42, episodes=4), sim)
    meta = D.load_metadata(ref)
    sums[t] = compute_sums(ref, [0, 1, 2], rename_map={})
    tr[t] = MemoryDataset(D.open_dataset(ref, episodes=[0, 1, 2], chunk_size=TINY_CHUNK_SIZE, video_backend="pyav"))
ev = D.resolve_dataset(DatasetSpec(source="sim", name="pick_place", seed=1000, episodes=2), sim)
evds = MemoryDataset(D.open_dataset(ev, episodes=None, chunk_size=TINY_CHUNK_SIZE, video_backend="pyav"))
stats = to_lerobot_stats(merge_sums(sums.values()))
bundle = build_policy(ModelConfig(kind="tiny", device="cpu"), meta=meta, rename_map={}, stats=stats, seed=42)
init = get_trainable_state(bundle.policy)
def even(ds, n):
    return torch.utils.data.Subset(ds, [round(i * (len(ds) - 1) / (n - 1)) for i in range(n)])
ev32 = even(evds, 32)
def ev_(g):  # "narrow": the preset's 8 first frames; "wide": 32 evenly spaced frames
    set_trainable_state(bundle.policy, g, source="p")
    return (evaluate(bundle, evds, batches=2, batch_size=4, seed=1234),
            evaluate(bundle, ev32, batches=4, batch_size=8, seed=1234))
def run(name, rounds=3, steps=5, lr=1e-3, min_lr=1e-4, warm=0, sched="cosine", server=None, slr=1.0, mom=0.0, mu=0.01):
    from zk0cli.core.server_opt import ServerOptimizer
    so = ServerOptimizer(server, lr=slr, momentum=mom) if server else None
    trn = TrainingConfig(steps_per_round=steps, batch_size=4, lr=lr, min_lr=min_lr, warmup_steps=warm, scheduler=sched)
    loaders = {t: make_loader(tr[t], batch_size=4, shuffle=True, seed=42 + i) for i, t in enumerate(tasks)}
    g = dict(init); out = [ev_(g)]; cl = []
    for r in range(1, rounds + 1):
        acc = WeightedMean(); ls = []
        for i, t in enumerate(tasks):
            set_trainable_state(bundle.policy, g, source="p")
            res = train_round(bundle, loaders[t], steps=steps, lr=lr, mu=mu, training=trn, dataset_name=t, seed=42 + 7919 * r + i)
            acc.add(res.tensors, float(res.metrics["num_examples"])); ls.append(float(res.metrics["policy_loss"]))
        m = acc.result()
        if so: m = so.step(g, m)
        g = m; out.append(ev_(g)); cl.append(sum(ls) / len(ls))
    print(f"{name:28s} narrow " + " ".join(f"{a:.3f}" for a, _ in out) + " | wide " + " ".join(f"{b:.3f}" for _, b in out) + " | train " + " ".join(f"{c:.3f}" for c in cl), flush=True)
import sys

for spec in sys.argv[1:]:  # e.g. 'steps=10' "server='fedavgm',mom=0.5"
    kw = eval(f"dict({spec})"); t0 = time.time(); run(spec, **kw); print("  ", round(time.time() - t0), "s", flush=True)
