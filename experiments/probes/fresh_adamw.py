# ruff: noqa  (throwaway probes of issue 18, kept as the evidence in docs/results.md)
"""Fresh AdamW per round vs one continued AdamW: one client, real train_round, synthetic data."""
exec(open("experiments/probes/update_size.py").read().split("base = ")[0])
base = evaluate(b, ho, batches=4, batch_size=4, seed=1)
for lr, steps, rounds, warm in ((1e-3, 5, 4, 0), (1e-3, 20, 1, 0), (1e-3, 5, 4, 2), (3e-4, 5, 4, 0)):
    g = dict(g0); curve = [base]
    loader = make_loader(tr, batch_size=4, shuffle=True, seed=0)
    for r in range(rounds):
        set_trainable_state(b.policy, g, source="p")
        trn = TrainingConfig(steps_per_round=steps, batch_size=4, lr=lr, min_lr=lr / 10, warmup_steps=warm)
        res = train_round(b, loader, steps=steps, lr=lr, mu=0.0, training=trn, dataset_name="x", seed=r)
        g = res.tensors; set_trainable_state(b.policy, g, source="p")
        curve.append(evaluate(b, ho, batches=4, batch_size=4, seed=1))
    print(f"lr={lr:g} {rounds}x{steps} steps warm={warm}: heldout " + " ".join(f"{c:.3f}" for c in curve), flush=True)
