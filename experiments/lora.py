"""Issue 22's learning experiment: exact LoRA vs naive LoRA vs the full expert, real path.

Every arm is a `zk0 simulate` run of the tiny preset with experiments/real_path.py's
set-up (clients lift / pick_place / stack, 10 AdamW steps x batch 4 per round, lr 1e-3 ->
1e-4, FedAvg), at equal rounds and seeds; the arms differ only in ``model.peft``:

- ``full``: no adapters, the whole action expert and projections train and travel;
- ``lora_ffa``: LoRA rank 16 on LeRobot's default targets, FFA-LoRA (A frozen and shared,
  only B trains and travels; zk0's exact aggregation, the default);
- ``lora_naive``: the same adapters, A and B both train and are averaged separately;
- ``lora_ffa_lr1e-2`` / ``lora_naive_lr1e-2``: the same two at 10x the learning rate
  (1e-2 -> 1e-3), as LoRA is usually run with a larger one than full fine-tuning.

Each arm's final checkpoint (for LoRA runs, the merged policy the checkpoint holds) is
scored by real_path.py's evaluator: every frame of the clients' held-out episodes and of
unseen layouts (seed 1000), with the clients' merged statistics.

    flock /tmp/zk0-heavy.lock python experiments/lora.py --seeds 0 1 2   # ~40 min, 2 cores

Writes ``docs/results/lora.json`` (``--results``) and prints the table docs/results.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from real_path import evaluator, final_tensors, score, simulate  # noqa: E402
from real_path_report import server_curve  # noqa: E402

ARMS: dict[str, list[str]] = {
    "full": [],
    "lora_ffa": ["model.peft.rank=16", "model.peft.aggregation=\"ffa\""],
    "lora_naive": ["model.peft.rank=16", "model.peft.aggregation=\"naive\""],
    # LoRA usually wants a larger learning rate than full fine-tuning: the same two at 10x
    "lora_ffa_lr1e-2": ["model.peft.rank=16", "model.peft.aggregation=\"ffa\"",
                        "training.lr=1e-2", "training.min_lr=1e-3"],
    "lora_naive_lr1e-2": ["model.peft.rank=16", "model.peft.aggregation=\"naive\"",
                          "training.lr=1e-2", "training.min_lr=1e-3"],
}
LABELS = {
    "full": "full expert (no adapters)",
    "lora_ffa": "LoRA r16, exact (FFA-LoRA: B only)",
    "lora_naive": "LoRA r16, naive (A and B averaged separately)",
    "lora_ffa_lr1e-2": "LoRA r16, exact, lr 1e-2 → 1e-3",
    "lora_naive_lr1e-2": "LoRA r16, naive, lr 1e-2 → 1e-3",
}
COMMON = ["federation.strategy=\"fedavg\""]


def travelling_parameters(sets: list[str]) -> int:
    """Parameters one client sends per round with ``sets`` on the tiny preset."""
    from zk0cli.core.config import load_config
    from zk0cli.core.policy import check_peft

    cfg = load_config(preset="tiny", overrides=sets)
    summary = check_peft(cfg.model)
    if summary is None:
        probe = check_peft(load_config(preset="tiny", overrides=["model.peft.rank=1"]).model)
        assert probe is not None
        return probe.full_parameters
    return summary.parameters


def ms(values: list[float]) -> str:
    """``mean ± population std``, three decimals."""
    return f"{statistics.fmean(values):.3f} ± {statistics.pstdev(values):.3f}"


def main() -> int:
    """Run the arms, score their final checkpoints, write the JSON, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--work", type=Path, default=Path("outputs/lora"))
    ap.add_argument("--results", type=Path, default=HERE.parent / "docs/results/lora.json")
    a = ap.parse_args()
    work = a.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t_all = time.monotonic()
    arms: dict[str, dict[str, Any]] = {}
    for seed in a.seeds:
        for arm in a.arms:
            out = work / f"s{seed}" / arm
            secs = simulate(out, a.rounds, seed, [*COMMON, *ARMS[arm]])
            arms.setdefault(arm, {"seeds": {}})["seeds"][str(seed)] = {
                "run": str(out), "seconds": secs, "curve": server_curve(out)}
    for r in arms.values():  # the JSON names runs relative to the work folder
        for entry in r["seeds"].values():
            entry["run"] = str(Path(entry["run"]).relative_to(work.parent))
            print(f"seed {seed} {arm}: {secs:.0f} s", flush=True)
    ev, sets = evaluator()
    for arm, r in arms.items():
        r["label"] = LABELS[arm]
        r["parameters_per_client_round"] = travelling_parameters(ARMS[arm])
        for entry in r["seeds"].values():
            entry["scores"] = score(ev, sets, final_tensors(work.parent / entry["run"]))
    wall = time.monotonic() - t_all
    lines = ["| arm | parameters sent per client per round | held-out mean | "
             "unseen layouts mean | s per run |", "|---|---|---|---|---|"]
    for r in arms.values():
        seeds = r["seeds"].values()
        h = [e["scores"]["heldout_mean"] for e in seeds]
        u = [e["scores"]["unseen_mean"] for e in seeds]
        s = [e["seconds"] for e in seeds]
        r["heldout_mean"], r["unseen_mean"] = statistics.fmean(h), statistics.fmean(u)
        lines.append(f"| {r['label']} | {r['parameters_per_client_round']:,} | {ms(h)} | "
                     f"{ms(u)} | {statistics.fmean(s):.0f} |")
    table = "\n".join(lines)
    a.results.parent.mkdir(parents=True, exist_ok=True)
    a.results.write_text(json.dumps({
        "rounds": a.rounds, "seeds": a.seeds, "wall_s": wall, "preset": "tiny",
        "common": COMMON, "settings": {k: ARMS[k] for k in a.arms}, "arms": arms,
        "table": table}, indent=1) + "\n", encoding="utf-8")
    print(f"\n{a.rounds} rounds, seeds {a.seeds}, {wall:.0f} s wall\n\n{table}")
    print(f"wrote {a.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
