# ruff: noqa  (throwaway probe of issue 18, kept as the evidence in docs/results.md)
"""Re-evaluate every checkpoint of a `zk0 simulate` run on wider held-out sets.

    python experiments/probes/eval_sets.py outputs/<run>

For round 0 (the initial model, rebuilt from the run's seed) and each
models/checkpoint_round_<N>, the loss on: the server's own eval set as the run read it
(first `eval.batches` x `eval.batch_size` frames), the same dataset's frames evenly spaced
(8, 32 frames) and all of it, and all frames of every held-out client episode and of
unseen-layout datasets (seed 1000) of the clients' tasks. Never a training frame.
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

torch.set_num_threads(1)
from zk0cli.core import data as D
from zk0cli.core.config import DatasetSpec, RunConfig
from zk0cli.core.evaluation import ServerEvaluator, _with_stats
from zk0cli.core.policy import get_trainable_state
from zk0cli.core.trainer import evaluate

run = Path(sys.argv[1])
cfg = RunConfig.model_validate(json.loads((run / "config.json").read_text()))
ev = ServerEvaluator.from_config(cfg)
if cfg.data.stats == "federated":  # as the run did: the clients' merged statistics
    from zk0cli.core.stats import compute_sums, merge_sums, sums_to_json
    parts = D.client_partitions(cfg)
    ev.use_stats(sums_to_json(merge_sums([compute_sums(p.ref, p.train_episodes, rename_map=cfg.data.rename_map) for p in parts])))
init = get_trainable_state(ev.bundle.policy)
names = list(init)
chunk = ev.bundle.policy.config.chunk_size
tasks = [c.name for c in cfg.data.clients[: len({p.name for p in D.client_partitions(cfg)})]]
for t in tasks:
    if t == "pick_place":
        continue
    spec = DatasetSpec(source="sim", name=t, seed=1000, episodes=2)
    r = D.resolve_dataset(spec, cfg.data.sim)
    ds = D.open_dataset(r, episodes=None, chunk_size=chunk, video_backend=cfg.data.video_backend)
    from zk0cli.core.evaluation import EvalSet
    ev.sets.append(EvalSet(f"{t}@1000", ds, ev.bundle if cfg.data.stats == "federated" else _with_stats(ev.bundle, D.load_metadata(r), cfg), composite=False))


def strided(ds, n):
    idx = [round(i * (len(ds) - 1) / (n - 1)) for i in range(n)]
    return torch.utils.data.Subset(ds, idx)


E = cfg.eval
def row(tensors):
    ev.set_global(tensors)
    out = {}
    for s in ev.sets:
        if s.composite:
            out[f"{s.name} first{E.batches * E.batch_size}"] = evaluate(s.bundle, s.dataset, batches=E.batches, batch_size=E.batch_size, seed=E.seed)
            for n in (8, 32):
                out[f"{s.name} even{n}"] = evaluate(s.bundle, strided(s.dataset, n), batches=99, batch_size=8, seed=E.seed)
        out[f"{s.name} all{len(s.dataset)}"] = evaluate(s.bundle, s.dataset, batches=10**6, batch_size=8, seed=E.seed)
    return out


rows = {0: row(init)}
for ck in sorted((run / "models").glob("checkpoint_round_*"), key=lambda p: int(p.name.rsplit("_", 1)[1])):
    sd = load_file(ck / "model.safetensors")
    rows[int(ck.name.rsplit("_", 1)[1])] = row({k: sd[k] for k in names})
keys = list(rows[0])
print("set".ljust(34) + "".join(f"r{r}".rjust(8) for r in rows))
for k in keys:
    print(k.ljust(34) + "".join(f"{rows[r][k]:8.3f}" for r in rows))
