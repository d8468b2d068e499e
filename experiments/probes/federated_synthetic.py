# ruff: noqa  (throwaway probes of issue 18, kept as the evidence in docs/results.md)
"""3 clients (synthetic datasets seeds 1..3), FedAvg of real train_rounds; held-out = seed 9."""
exec(open("experiments/probes/update_size.py").read().split("base = ")[0])
from zk0cli.core.server_opt import ServerOptimizer
from zk0cli.core.transport import WeightedMean

cl = []
for s in (1, 2, 3):
    r_ = write_synthetic_dataset(Path(tempfile.mkdtemp()) / "d", repo_id="zk0test/so101", seed=s)
    cl.append(open_dataset(DatasetRef(name="c", repo_id="zk0test/so101", root=r_), episodes=[0, 1, 2], chunk_size=TINY_CHUNK_SIZE, video_backend="pyav"))
r_ = write_synthetic_dataset(Path(tempfile.mkdtemp()) / "d", repo_id="zk0test/so101", seed=9)
ev = open_dataset(DatasetRef(name="e", repo_id="zk0test/so101", root=r_), episodes=[0, 1], chunk_size=TINY_CHUNK_SIZE, video_backend="pyav")
def E(): return evaluate(b, ev, batches=2, batch_size=4, seed=1), evaluate(b, ev, batches=10, batch_size=4, seed=1)
set_trainable_state(b.policy, g0, source="p"); base = E()
for lr, steps, opt in ((1e-3, 5, None), (3e-4, 5, None), (1e-3, 5, "fedavgm"), (1e-3, 5, "fedadam")):
    so = None if opt is None else ServerOptimizer(opt, lr=1.0 if opt == "fedavgm" else 1e-2, momentum=0.5)
    g = dict(g0); curve = [base]; tl = []
    loaders = [make_loader(d, batch_size=4, shuffle=True, seed=i) for i, d in enumerate(cl)]
    for r in range(4):
        acc = WeightedMean(); ls = []
        for i, ld in enumerate(loaders):
            set_trainable_state(b.policy, g, source="p")
            trn = TrainingConfig(steps_per_round=steps, batch_size=4, lr=lr, min_lr=lr / 10)
            res = train_round(b, ld, steps=steps, lr=lr, mu=0.01, training=trn, dataset_name="x", seed=10 * r + i)
            acc.add(res.tensors, float(res.metrics["num_examples"])); ls.append(float(res.metrics["policy_loss"]))
        m = {k: t.float() for k, t in acc.result().items()}
        g = m if so is None else so.step(g, m)
        set_trainable_state(b.policy, g, source="p"); curve.append(E()); tl.append(sum(ls) / 3)
    print(f"lr={lr:g} {opt}: narrow(8 frames) " + " ".join(f"{a:.3f}" for a, _ in curve) + " | wide(40) " + " ".join(f"{c:.3f}" for _, c in curve) + " | client train " + " ".join(f"{c:.3f}" for c in tl), flush=True)
