# ruff: noqa  (throwaway probes of issue 18, kept as the evidence in docs/results.md)
"""Per-round parameter movement of the real client round vs parameter size (tiny SmolVLA)."""
import tempfile
from pathlib import Path

import torch

torch.set_num_threads(1)
from zk0cli.core.config import ModelConfig, TrainingConfig
from zk0cli.core.data import DatasetRef, dataset_stats, load_metadata, make_loader, open_dataset
from zk0cli.core.policy import (
    TINY_CHUNK_SIZE,
    build_policy,
    get_trainable_state,
    set_trainable_state,
)
from zk0cli.core.trainer import evaluate, train_round
from zk0cli.testing import write_synthetic_dataset

root = write_synthetic_dataset(Path(tempfile.mkdtemp()) / "d", repo_id="zk0test/so101")
ref = DatasetRef(name="zk0test/so101", repo_id="zk0test/so101", root=root)
meta = load_metadata(ref)
b = build_policy(ModelConfig(kind="tiny", device="cpu"), meta=meta, rename_map={}, stats=dataset_stats(meta, {}), seed=0)
tr = open_dataset(ref, episodes=[0, 1, 2], chunk_size=TINY_CHUNK_SIZE, video_backend="pyav")
ho = open_dataset(ref, episodes=[3], chunk_size=TINY_CHUNK_SIZE, video_backend="pyav")
g0 = get_trainable_state(b.policy)
def rms(d): return (sum(float((t.float() ** 2).sum()) for t in d.values()) / sum(t.numel() for t in d.values())) ** 0.5
print("param rms", round(rms(g0), 5), "tensors", len(g0))
base = evaluate(b, ho, batches=4, batch_size=4, seed=1)
for lr, warm in ((1e-3, 0), (1e-3, 3), (3e-4, 0), (1e-4, 0)):
    set_trainable_state(b.policy, g0, source="p")
    trn = TrainingConfig(steps_per_round=5, batch_size=4, lr=lr, min_lr=1e-4 if lr > 1e-4 else 1e-5, warmup_steps=warm)
    res = train_round(b, make_loader(tr, batch_size=4, shuffle=True, seed=0), steps=5, lr=lr, mu=0.0, training=trn, dataset_name="x", seed=1)
    upd = {k: res.tensors[k].float() - g0[k].float() for k in g0}
    rel = sorted(float(upd[k].norm() / (g0[k].float().norm() + 1e-12)) for k in g0)
    set_trainable_state(b.policy, res.tensors, source="p")
    print(f"lr={lr:g} warm={warm}: update rms {rms(upd):.5f} ({rms(upd)/rms(g0):.1%} of param rms), "
          f"median per-tensor rel {rel[len(rel)//2]:.1%}, max {rel[-1]:.1%}; train loss {float(res.metrics['policy_loss']):.3f}; "
          f"heldout {base:.3f} -> {evaluate(b, ho, batches=4, batch_size=4, seed=1):.3f}", flush=True)
