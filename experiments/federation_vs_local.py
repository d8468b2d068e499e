"""Does federation learn? FedProx vs FedAvg vs centralised vs each client alone.

Four clients, one simulated SO-101 task each (lift, pick_place, stack, push; seed 0,
6 episodes: 5 train, the last held out), the tiny SmolVLA, CPU. Arms, all with the same
number of optimizer steps in total (rounds × steps × 4) and the same per-round LR:

(a) FedProx (mu > 0), (b) FedAvg (mu = 0): the real zk0 client round
    (:func:`zk0cli.core.trainer.train_round`) per client from the global weights, then a
    ``num-examples``-weighted mean (:class:`zk0cli.core.transport.WeightedMean`, what
    :class:`~zk0cli.core.strategy.Zk0FedProx` uses) — in-process, no Flower processes;
(c) centralised: one model on the union, ``4 × steps`` per round;
(d) local only: each client trains its own model, ``steps`` per round, never averaged.

Every arm normalises with the federated statistics (:mod:`zk0cli.core.stats`: the exact
merge of the four clients' sufficient statistics), so all losses are in the same units.
Evaluation: deterministic held-out policy loss (:func:`zk0cli.core.trainer.evaluate`) on
each task's held-out episode and on unseen layouts (seed 500, 2 episodes per task:
the simulator has four tasks and all four are clients', so "unseen" is a held-out seed),
and closed-loop success on ``lift`` for the scripted expert and the final models.

Usage::

    HF_HUB_OFFLINE=1 MUJOCO_GL=egl python experiments/federation_vs_local.py [--quick]

Writes ``docs/results/metrics.json``, ``summary.md`` and the PNG curves.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

TASKS = ("lift", "pick_place", "stack", "push")
TRAIN_SEED, TRAIN_EPISODES = 0, 6
UNSEEN_SEED, UNSEEN_EPISODES = 500, 2


class MemoryDataset:
    """Decode a LeRobotDataset once; keep images as uint8 (fast, small)."""

    def __init__(self, ds: Any) -> None:
        import torch

        self.items = []
        for i in range(len(ds)):
            item = dict(ds[i])
            for k in [k for k in item if k.startswith("observation.images.")]:
                item[k] = (item[k] * 255).round().to(torch.uint8)
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.items[i])
        for k in [k for k in item if k.startswith("observation.images.")]:
            item[k] = item[k].float() / 255
        return item


def build_data(chunk: int) -> dict[str, Any]:
    """Train/held-out/unseen sets in memory and the merged statistics of the train sets."""
    from zk0cli.core import data as D
    from zk0cli.core.config import DatasetSpec, SimConfig
    from zk0cli.core.stats import compute_sums, merge_sums, to_lerobot_stats

    sim = SimConfig()
    out: dict[str, Any] = {"train": {}, "heldout": {}, "unseen": {}, "sums": {}}
    train_eps = list(range(TRAIN_EPISODES - 1))
    for task in TASKS:
        ref = D.resolve_dataset(DatasetSpec(source="sim", name=task, seed=TRAIN_SEED,
                                            episodes=TRAIN_EPISODES), sim)
        unseen = D.resolve_dataset(DatasetSpec(source="sim", name=task, seed=UNSEEN_SEED,
                                               episodes=UNSEEN_EPISODES), sim)
        out["meta"] = D.load_metadata(ref)
        out["sums"][task] = compute_sums(ref, train_eps, rename_map={})

        def mem(r: Any, eps: list[int] | None) -> MemoryDataset:
            return MemoryDataset(D.open_dataset(r, episodes=eps, chunk_size=chunk,
                                                video_backend="pyav"))

        out["train"][task] = mem(ref, train_eps)
        out["heldout"][task] = mem(ref, [TRAIN_EPISODES - 1])
        out["unseen"][task] = mem(unseen, None)
    out["stats"] = to_lerobot_stats(merge_sums(out["sums"].values()))
    return out


class Runner:
    """The shared tiny SmolVLA, data and LR schedule; one method per arm."""

    def __init__(self, args: argparse.Namespace) -> None:
        from zk0cli.core.config import ModelConfig, TrainingConfig
        from zk0cli.core.policy import TINY_CHUNK_SIZE, build_policy, get_trainable_state
        from zk0cli.core.schedules import cosine_lr

        self.args = args
        t0 = time.perf_counter()
        self.data = build_data(TINY_CHUNK_SIZE)
        self.log(f"data ready in {time.perf_counter() - t0:.0f} s: "
                 + ", ".join(f"{t}={len(d)}" for t, d in self.data["train"].items()))
        self.bundle = build_policy(ModelConfig(kind="tiny", device="cpu"),
                                   meta=self.data["meta"], rename_map={},
                                   stats=self.data["stats"], seed=args.seed)
        self.init = get_trainable_state(self.bundle.policy)
        self.training = TrainingConfig(scheduler="constant", lr=args.lr, min_lr=0.0,
                                       batch_size=args.batch_size)
        self.lr = cosine_lr(args.lr, lr_min=args.lr / 10, rounds=args.rounds)

    def log(self, text: str) -> None:
        """Print a timestamped progress line."""
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def loader(self, dataset: Any, seed: int) -> Any:
        """A seeded shuffling loader of ``--batch-size`` frames."""
        from zk0cli.core.data import make_loader

        return make_loader(dataset, batch_size=self.args.batch_size, shuffle=True, seed=seed)

    def evaluate(self, tensors: dict[str, Any], server_round: int) -> dict[str, float] | None:
        """Held-out and unseen losses every ``--eval-every`` rounds and at the last."""
        from zk0cli.core.policy import set_trainable_state
        from zk0cli.core.trainer import evaluate

        if server_round % self.args.eval_every and server_round != self.args.rounds:
            return None
        set_trainable_state(self.bundle.policy, tensors, source="experiment")
        out = {"round": server_round}
        for split in ("heldout", "unseen"):
            for task, ds in self.data[split].items():
                out[f"{split}/{task}"] = evaluate(self.bundle, ds, batches=self.args.eval_batches,
                                                  batch_size=8, seed=1234)
        return out

    def train(self, tensors: dict[str, Any], loader: Any, *, steps: int, lr: float, mu: float,
              name: str, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """One zk0 client round (train_round) from ``tensors``."""
        from zk0cli.core.policy import set_trainable_state
        from zk0cli.core.trainer import train_round

        set_trainable_state(self.bundle.policy, tensors, source="experiment")
        res = train_round(self.bundle, loader, steps=steps, lr=lr, mu=mu,
                          training=self.training, dataset_name=name, seed=seed)
        return res.tensors, res.metrics

    def federated(self, mu: float) -> dict[str, Any]:
        """Arms (a)/(b): FedProx with ``mu`` (FedAvg at 0), weighted mean per round."""
        from zk0cli.core.transport import WeightedMean

        a = self.args
        loaders = {t: self.loader(self.data["train"][t], a.seed + i) for i, t in enumerate(TASKS)}
        glob = dict(self.init)
        curve = [self.evaluate(glob, 0)]
        client_loss: list[dict[str, float]] = []
        for r in range(1, a.rounds + 1):
            acc = WeightedMean()
            losses = {}
            for i, t in enumerate(TASKS):
                tensors, m = self.train(glob, loaders[t], steps=a.steps, lr=self.lr(r), mu=mu,
                                        name=t, seed=a.seed + 7919 * r + i)
                acc.add(tensors, float(m["num_examples"]))
                losses[t] = float(m["policy_loss"])
            glob = acc.result()
            client_loss.append(losses)
            _add(curve, self.evaluate(glob, r))
            self.log(f"mu={mu} round {r}: clients {_fmt(losses)} | heldout mean "
                     f"{_mean(curve[-1], 'heldout'):.4f} (round {curve[-1]['round']})")
        return {"curve": curve, "client_policy_loss": client_loss, "final": glob}

    def centralised(self, *, large_batch: bool = False) -> dict[str, Any]:
        """Arm (c): one model on the union, 4 × steps per round.

        With ``large_batch``: ``steps`` per round of 4 × the batch instead (the same frames
        and the same number of *sequential* updates as one federated client).
        """
        import torch

        from zk0cli.core.data import make_loader

        a = self.args
        union = torch.utils.data.ConcatDataset([self.data["train"][t] for t in TASKS])
        loader = make_loader(union, batch_size=a.batch_size * (4 if large_batch else 1),
                             shuffle=True, seed=a.seed)
        steps = a.steps if large_batch else 4 * a.steps
        w = dict(self.init)
        curve = [self.evaluate(w, 0)]
        train_loss = []
        for r in range(1, a.rounds + 1):
            w, m = self.train(w, loader, steps=steps, lr=self.lr(r), mu=0.0,
                              name="union", seed=a.seed + 7919 * r)
            train_loss.append(float(m["policy_loss"]))
            _add(curve, self.evaluate(w, r))
            self.log(f"central round {r}: train {train_loss[-1]:.4f} | heldout mean "
                     f"{_mean(curve[-1], 'heldout'):.4f}")
        return {"curve": curve, "train_policy_loss": train_loss, "final": w}

    def local(self) -> dict[str, Any]:
        """Arm (d): each client alone, steps per round, never averaged."""
        a = self.args
        out = {}
        for i, t in enumerate(TASKS):
            loader = self.loader(self.data["train"][t], a.seed + i)
            w = dict(self.init)
            curve = [self.evaluate(w, 0)]
            for r in range(1, a.rounds + 1):
                w, _ = self.train(w, loader, steps=a.steps, lr=self.lr(r), mu=0.0, name=t,
                                  seed=a.seed + 7919 * r + i)
                _add(curve, self.evaluate(w, r))
            self.log(f"local {t}: heldout {_fmt({k: v for k, v in curve[-1].items()})}")
            out[t] = {"curve": curve, "final": w}
        return out

    def closed_loop(self, finals: dict[str, Any]) -> dict[str, float]:
        """Success rate on lift: the scripted expert and each final model."""
        from zk0cli.core.policy import set_trainable_state
        from zk0cli.core.sim import LeRobotPolicyFn, ScriptedExpert, evaluate_policy

        a = self.args
        out = {"expert": evaluate_policy(ScriptedExpert(), tasks=["lift"],
                                         episodes=a.sim_episodes, seed=7)["lift"]}
        for name, w in finals.items():
            set_trainable_state(self.bundle.policy, w, source="experiment")
            self.bundle.policy.eval()
            fn = LeRobotPolicyFn(self.bundle.policy, self.bundle.preprocessor,
                                 self.bundle.postprocessor)
            out[name] = evaluate_policy(fn, tasks=["lift"], episodes=a.sim_episodes,
                                        seed=7)["lift"]
            self.bundle.policy.train()
            self.log(f"closed loop lift {name}: {out[name]:.2f}")
        return out


def _add(curve: list[dict[str, float]], row: dict[str, float] | None) -> None:
    if row is not None:
        curve.append(row)


def _mean(row: dict[str, float], split: str) -> float:
    return statistics.fmean(v for k, v in row.items() if k.startswith(split + "/"))


def _fmt(d: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in d.items())


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    """Final held-out losses per arm, and the targets."""
    rows: dict[str, dict[str, float]] = {}
    for arm in ("fedprox", "fedavg", "central"):
        rows[arm] = res[arm]["curve"][-1]
    for t in TASKS:
        rows[f"local:{t}"] = res["local"][t]["curve"][-1]
    out: dict[str, Any] = {"final": rows}
    fed = {arm: _mean(rows[arm], "heldout") for arm in ("fedprox", "fedavg", "central")}
    out["heldout_mean"] = fed
    out["unseen_mean"] = {arm: _mean(rows[arm], "unseen") for arm in ("fedprox", "fedavg",
                                                                       "central")}
    # local-only on the *other* clients' tasks vs the federated model on the same tasks
    others_local, others_fed = [], {"fedprox": [], "fedavg": []}
    for t in TASKS:
        for u in TASKS:
            if u != t:
                others_local.append(rows[f"local:{t}"][f"heldout/{u}"])
                for arm in others_fed:
                    others_fed[arm].append(rows[arm][f"heldout/{u}"])
    out["other_tasks"] = {"local": statistics.fmean(others_local),
                          **{k: statistics.fmean(v) for k, v in others_fed.items()}}
    out["own_task_local"] = statistics.fmean(rows[f"local:{t}"][f"heldout/{t}"] for t in TASKS)
    out["local_unseen_mean"] = statistics.fmean(_mean(rows[f"local:{t}"], "unseen")
                                                for t in TASKS)
    out["targets"] = {
        f"{arm}_within_10pct_of_central": fed[arm] <= 1.10 * fed["central"]
        for arm in ("fedprox", "fedavg")}
    out["targets"].update({
        f"{arm}_better_than_local_on_other_tasks":
            out["other_tasks"][arm] < out["other_tasks"]["local"] for arm in ("fedprox", "fedavg")})
    return out


def _x(curve: list[dict[str, float]]) -> list[float]:
    return [c["round"] for c in curve]


def plot(res: dict[str, Any], outdir: Path) -> list[str]:
    """Write the PNG curves into ``outdir``; return their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for split in ("heldout", "unseen"):
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=90)
        for arm, style in (("fedprox", "-"), ("fedavg", "--"), ("central", "-.")):
            ax.plot(_x(res[arm]["curve"]), [_mean(c, split) for c in res[arm]["curve"]], style,
                    label=arm)
        local = [statistics.fmean(_mean(res["local"][t]["curve"][r], split) for t in TASKS)
                 for r in range(len(res["fedprox"]["curve"]))]
        ax.plot(_x(res["fedprox"]["curve"]), local, ":", label="local only (mean of 4 models)")
        ax.set_xlabel("round (4 × steps optimizer steps per arm)")
        ax.set_ylabel("policy loss (mean over 4 tasks)")
        ax.set_title(f"{split} loss" + (" (episode 6 of each task)" if split == "heldout"
                                        else " (unseen layouts, seed 500)"))
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"{split}_loss.png"
        fig.savefig(outdir / name)
        plt.close(fig)
        files.append(name)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=90, sharey=True)
    for ax, arm in zip(axes, ("fedprox", "fedavg"), strict=True):
        for t in TASKS:
            ax.plot([r[t] for r in res[arm]["client_policy_loss"]], label=t)
        ax.set_title(f"{arm}: client training policy loss")
        ax.set_xlabel("round")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(outdir / "client_loss.png")
    plt.close(fig)
    files.append("client_loss.png")
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=90)
    for t in TASKS:
        ax.plot(_x(res["local"][t]["curve"]), [c[f"heldout/{t}"] for c in res["local"][t]["curve"]],
                ":", label=f"local {t}, own")
        ax.plot(_x(res["fedprox"]["curve"]), [c[f"heldout/{t}"] for c in res["fedprox"]["curve"]],
                "-", label=f"fedprox {t}")
    ax.set_xlabel("round")
    ax.set_ylabel("held-out policy loss")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(outdir / "per_task_loss.png")
    plt.close(fig)
    files.append("per_task_loss.png")
    return files


def main() -> None:
    """Run every arm once and write the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 rounds × 2 steps (smoke test)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=10, help="optimizer steps per client per round")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="peak LR (cosine to lr/10 over rounds)")
    p.add_argument("--mu", type=float, default=0.1, help="FedProx mu of arm (a)")
    p.add_argument("--eval-batches", type=int, default=2, help="batches of 8 per eval set")
    p.add_argument("--eval-every", type=int, default=3, help="evaluate every N rounds")
    p.add_argument("--sim-episodes", type=int, default=3, help="closed-loop episodes on lift")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--central-large-batch", action="store_true",
                   help="only run the extra arm: centralised, steps per round at 4 × batch")
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    args = p.parse_args()
    if args.central_large_batch:
        extra(args)
        return
    if args.quick:
        args.rounds, args.steps, args.eval_batches, args.sim_episodes = 2, 2, 1, 1
        args.eval_every = 1
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run = Runner(args)
    res: dict[str, Any] = {}
    timings = {}
    for arm, fn in (("fedprox", lambda: run.federated(args.mu)),
                    ("fedavg", lambda: run.federated(0.0)),
                    ("central", run.centralised), ("local", run.local)):
        t = time.perf_counter()
        res[arm] = fn()
        timings[arm] = time.perf_counter() - t
    finals = {"fedprox": res["fedprox"]["final"], "central": res["central"]["final"],
              "local:lift": res["local"]["lift"]["final"]}
    t = time.perf_counter()
    closed = run.closed_loop(finals)
    timings["closed_loop"] = time.perf_counter() - t
    summary = summarise(res)
    files = plot(res, args.out)
    timings["total"] = time.perf_counter() - t0
    stats = {k: {n: v.tolist() for n, v in s.items()} for k, s in run.data["stats"].items()
             if not k.startswith("observation.images.")}
    record = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "tasks": TASKS, "train_frames": {t: len(d) for t, d in run.data["train"].items()},
        "summary": summary, "closed_loop_success_lift": closed, "timings_s": timings,
        "curves": {arm: res[arm]["curve"] for arm in ("fedprox", "fedavg", "central")},
        "local_curves": {t: res["local"][t]["curve"] for t in TASKS},
        "client_policy_loss": {arm: res[arm]["client_policy_loss"]
                               for arm in ("fedprox", "fedavg")},
        "federated_stats": stats, "plots": files,
    }
    (args.out / "metrics.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    (args.out / "summary.md").write_text(markdown(record), encoding="utf-8")
    print(markdown(record))


def extra(args: argparse.Namespace) -> None:
    """The extra arm alone, written to ``central_large_batch.json``."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    run = Runner(args)
    res = run.centralised(large_batch=True)
    row = res["curve"][-1]
    out = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "curve": res["curve"], "train_policy_loss": res["train_policy_loss"],
           "heldout_mean": _mean(row, "heldout"), "unseen_mean": _mean(row, "unseen")}
    (args.out / "central_large_batch.json").write_text(json.dumps(out, indent=1),
                                                       encoding="utf-8")
    print(json.dumps({k: out[k] for k in ("heldout_mean", "unseen_mean")}))


def markdown(rec: dict[str, Any]) -> str:
    """The results as markdown tables."""
    s = rec["summary"]
    cols = [f"heldout/{t}" for t in TASKS] + [f"unseen/{t}" for t in TASKS]
    lines = ["| model | " + " | ".join(cols) + " | heldout mean | unseen mean |",
             "|---" * (len(cols) + 3) + "|"]
    for name, row in s["final"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.4f}" for c in cols)
                     + f" | {_mean(row, 'heldout'):.4f} | {_mean(row, 'unseen'):.4f} |")
    lines += ["", "| comparison | value |", "|---|---|"]
    for arm, v in s["heldout_mean"].items():
        lines.append(f"| held-out mean, {arm} | {v:.4f} |")
    for arm, v in s["other_tasks"].items():
        lines.append(f"| other clients' tasks, {arm} | {v:.4f} |")
    lines.append(f"| local only, own task | {s['own_task_local']:.4f} |")
    for k, v in s["targets"].items():
        lines.append(f"| target {k} | {'met' if v else 'MISSED'} |")
    for k, v in rec["closed_loop_success_lift"].items():
        lines.append(f"| closed-loop success on lift, {k} | {v:.2f} |")
    lines.append(f"| wall time (s) | {rec['timings_s']['total']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
