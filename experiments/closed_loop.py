"""Issue 19's learnable benchmark: closed-loop success of the tiny SmolVLA on `reach`.

Every arm is a `zk0 simulate` run of the tiny SmolVLA on 2 CPU cores, with
`eval.closed_loop` rolling the global model out every few rounds (the success curve and
the cost of each evaluation). The final checkpoint of each arm is then evaluated with
`zk0 eval` on 20 layouts no site trained on (the same layouts for every arm), beside the
scripted expert on the same layouts.

Arms (task `reach`: move the gripper down onto a green target drawn anywhere in the arm's
top-down band; 3 sites, each with its own 30 generated episodes, seeds 0 / 1 / 2):

- federated: the 3 sites, FedAvg, `--rounds` rounds of `--steps` local steps each;
- local_site<i>: site i alone for the same rounds and local steps (no federation).

    python experiments/closed_loop.py                # seeds 0 1, 12 rounds (~35 min)
    python experiments/closed_loop.py --seeds 0 --rounds 6   # (~10 min)

Each `zk0 simulate` / `zk0 eval` runs under the machine's heavy-job lock
(`flock /tmp/zk0-heavy.lock`). Results go to --out (default outputs/closed_loop/) and
--json (default docs/results/closed_loop.json); a Markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SITES = (0, 1, 2)
EPISODES_PER_SITE = 30
EVAL_EPISODES = 20
EVAL_SEED = 0
LOCK = "/tmp/zk0-heavy.lock"


def config_toml(sites: tuple[int, ...], *, steps: int, rounds: int, every: int) -> str:
    """The arm's configuration: tiny SmolVLA, reach data of ``sites``, closed loop on."""
    clients = ",\n".join(f'  {{ source = "sim", name = "reach", seed = {s} }}' for s in sites)
    return f"""[model]
kind = "tiny"
device = "cpu"
[data]
heldout_episodes = 1
clients = [
{clients},
]
[data.sim]
episodes = {EPISODES_PER_SITE}
height = 96
width = 128
[training]
steps_per_round = {steps}
batch_size = 8
lr = 1e-3
min_lr = 1e-4
[federation]
rounds = {rounds}
min_clients = {len(sites)}
strategy = "fedavg"
proximal_mu = 0.0
round_timeout_s = 1200
[eval]
frequency = 1
batches = 2
batch_size = 8
[eval.closed_loop]
tasks = ["reach"]
episodes = 10
every = {every}
seed = 1
[checkpoint]
interval = 1000
"""


def run(cmd: list[str]) -> float:
    """Run ``cmd`` under the heavy-job lock; its wall seconds (raises on failure)."""
    t0 = time.monotonic()
    res = subprocess.run(["flock", LOCK, *cmd], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {res.returncode}\n{res.stdout[-3000:]}"
                           f"{res.stderr[-3000:]}")
    return time.monotonic() - t0


def zk0(*args: str) -> list[str]:
    """A ``python -m zk0cli`` command line."""
    return [sys.executable, "-m", "zk0cli", *args]


def train_arm(out: Path, sites: tuple[int, ...], *, seed: int, steps: int, rounds: int,
              every: int) -> dict[str, Any]:
    """One `zk0 simulate` run; its curve, cost and offline losses from the run files."""
    toml = out.with_suffix(".toml")
    toml.write_text(config_toml(sites, steps=steps, rounds=rounds, every=every))
    secs = run(zk0("simulate", "--config", str(toml), "--out", str(out), "--clients",
                   str(len(sites)), "--set", f"seed={seed}"))
    return arm_entry(out, sites, secs)


def arm_entry(out: Path, sites: list[int] | tuple[int, ...], secs: float) -> dict[str, Any]:
    """What one finished run directory says: curve, closed-loop cost, offline losses."""
    rows = json.loads((out / "server" / "federated_metrics.json").read_text())
    curve = {r["round"]: r["closed_loop"]["reach"] for r in rows if r.get("closed_loop")}
    return {
        "run": str(out), "sites": list(sites), "train_seconds": secs,
        "round_seconds_mean": statistics.fmean(r["seconds"] for r in rows if r["round"] > 0),
        "closed_loop_curve": {str(k): v["success_rate"] for k, v in curve.items()},
        "closed_loop_seconds": statistics.fmean(v["seconds"] for v in curve.values()),
        "closed_loop_seconds_per_step": statistics.fmean(
            v["seconds"] / max(1.0, v["episodes"] * (1 - v["success_rate"]) * v["max_steps"]
                               + v["successes"] * (v["mean_steps_to_success"] or 0))
            for v in curve.values()),
        "offline_loss_final": rows[-1]["server_policy_loss"],
        "client_loss_final": rows[-1]["avg_client_loss"],
    }


def evaluate(target: Path | None, out: Path) -> dict[str, Any]:
    """`zk0 eval` on the final checkpoint (``None``: the scripted expert)."""
    args = ["eval", "--task", "reach", "--episodes", str(EVAL_EPISODES), "--seed",
            str(EVAL_SEED), "--out", str(out)]
    args = [*args, str(target)] if target is not None else [*args, "--expert"]
    secs = run(zk0(*args))
    r = json.loads(out.read_text())["tasks"]["reach"]
    r.pop("episode_results")
    return {**r, "eval_seconds": secs}


def collect(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Rebuild the result from the finished arms in ``work`` (``--collect``)."""
    arms: dict[str, dict[str, Any]] = {}
    for ev in sorted(work.glob("s*_*_eval.json")):
        name = ev.name.removesuffix("_eval.json")
        seed, arm = name[1:].split("_", 1)
        out = work / name
        run_json = json.loads((out / "run.json").read_text())
        sites = list(SITES) if arm == "federated" else [int(arm.removeprefix("local_site"))]
        # the rounds' wall seconds (a resumed run's started_at includes the wait between)
        entry = arm_entry(out, sites, sum(run_json["round_seconds"].values()))
        final = json.loads(ev.read_text())["tasks"]["reach"]
        final.pop("episode_results")
        entry["final"] = final
        entry["rounds"] = max(int(r) for r in json.loads(
            (out / "server" / "policy_loss_history.json").read_text()))
        history = json.loads((out / "server" / "policy_loss_history.json").read_text())
        for earlier in sorted(work.glob(f"{name}_eval_round*.json")):  # before a --resume
            r = json.loads(earlier.read_text())["tasks"]["reach"]
            r.pop("episode_results")
            at = earlier.stem.rsplit("round", 1)[1]
            r["offline_loss"] = history.get(at)
            r["round_seconds"] = sum(v for k, v in run_json["round_seconds"].items()
                                     if int(k) <= int(at))
            entry.setdefault("earlier", {})[at] = r
        arms.setdefault(arm, {})[seed] = entry
    expert = json.loads((work / "expert.json").read_text())["tasks"]["reach"]
    expert.pop("episode_results")
    return {"task": "reach", "rounds": args.rounds, "steps_per_round": args.steps,
            "batch_size": 8, "episodes_per_site": EPISODES_PER_SITE,
            "eval_episodes": EVAL_EPISODES, "eval_seed": EVAL_SEED,
            "seeds": sorted({int(s) for a in arms.values() for s in a}), "wall_s": None,
            "expert": expert, "arms": arms}


def main() -> int:
    """Train the arms, evaluate them closed-loop, write the JSON and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collect", action="store_true",
                    help="only rebuild --json and the table from the finished arms in --out")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--every", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("outputs/closed_loop"))
    ap.add_argument("--json", type=Path, default=Path("docs/results/closed_loop.json"))
    a = ap.parse_args()
    work = a.out.resolve()
    if a.collect:
        result = collect(work, a)
        a.json.write_text(json.dumps(result, indent=1) + "\n")
        print(table(result))
        return 0
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t_all = time.monotonic()
    arms: dict[str, dict[str, Any]] = {}
    expert = evaluate(None, work / "expert.json")
    for seed in a.seeds:
        plan = {"federated": SITES, **{f"local_site{s}": (s,) for s in SITES}}
        for arm, sites in plan.items():
            out = work / f"s{seed}_{arm}"
            entry = train_arm(out, sites, seed=seed, steps=a.steps, rounds=a.rounds,
                              every=a.every)
            entry["final"] = evaluate(out, work / f"s{seed}_{arm}_eval.json")
            arms.setdefault(arm, {})[str(seed)] = entry
            print(f"seed {seed} {arm}: success {entry['final']['success_rate']:.2f} "
                  f"({entry['train_seconds']:.0f} s)", flush=True)
    wall = time.monotonic() - t_all
    result = {
        "task": "reach", "rounds": a.rounds, "steps_per_round": a.steps, "batch_size": 8,
        "episodes_per_site": EPISODES_PER_SITE, "eval_episodes": EVAL_EPISODES,
        "eval_seed": EVAL_SEED, "seeds": a.seeds, "wall_s": wall, "expert": expert,
        "arms": arms,
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{a.rounds} rounds x {a.steps} steps, seeds {a.seeds}, {wall:.0f} s wall\n")
    print(table(result))
    return 0


def table(result: dict[str, Any]) -> str:
    """The docs/results.md table: one row per arm and seed, plus the expert."""
    lines = ["| policy | seed | success | 95 % interval | episodes | mean steps to success | "
             "offline loss (held-out) | wall s of the rounds |",
             "|---|---|---|---|---|---|---|---|"]

    def cells(r: dict[str, Any]) -> str:
        steps = r["mean_steps_to_success"]
        return (f"{r['successes']}/{r['episodes']} ({100 * r['success_rate']:.0f} %) | "
                f"{100 * r['ci_low']:.0f}–{100 * r['ci_high']:.0f} % | {r['episodes']} | "
                f"{'n/a' if steps is None else f'{steps:.0f}'}")
    for arm, seeds in result["arms"].items():
        for seed, e in seeds.items():
            loss = e["offline_loss_final"]
            for rounds, r in sorted(e.get("earlier", {}).items(), key=lambda x: int(x[0])):
                lines.append(f"| {arm}, round {rounds} | {seed} | {cells(r)} | "
                             f"{r['offline_loss']:.3f} | {r['round_seconds']:.0f} |")
            arm_name = f"{arm}, round {e['rounds']}" if "rounds" in e else arm
            lines.append(f"| {arm_name} | {seed} | {cells(e['final'])} | "
                         f"{'n/a' if loss is None else f'{loss:.3f}'} | "
                         f"{e['train_seconds']:.0f} |")
    lines.append(f"| scripted expert | – | {cells(result['expert'])} | – | – |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
