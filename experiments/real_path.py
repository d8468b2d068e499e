"""Issue 18's experiment through the real path: every arm is a `zk0 simulate` run.

Arms (tiny preset, clients lift / pick_place / stack, the preset's 10 steps x batch 4):

- federated: fedavg, fedprox (mu 0.01 and 0.1), fedavgm (server lr 1, momentum 0.9),
  fedadam (server lr 0.01);
- centralised: one client on the union of the three clients' *training* episodes
  (LeRobot's ``delete_episodes`` + ``aggregate_datasets``), at equal total client steps
  (30 per round) and at equal sequential updates (10 per round);
- local only: one single-client run per task (10 steps per round).

Each arm's final checkpoint is then evaluated on the same held-out sets: the held-out
episode of each client dataset and unseen layouts (seed 1000) of the three tasks, every
frame, with the clients' merged statistics (the union's statistics are the same merge).

    python experiments/real_path.py --quick            # 1 seed, 2 rounds, 3 arms (~5 min)
    python experiments/real_path.py --seeds 0 1 2      # the full grid (~40 min on 2 cores)

Run it under the machine's heavy-job lock (flock /tmp/zk0-heavy.lock ...). Results go to
--out (default outputs/real_path/): results.json and a Markdown table on stdout.
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

TASKS = ("lift", "pick_place", "stack")
STEPS = 10

FEDERATED: dict[str, list[str]] = {
    "fedavg": ["federation.strategy=\"fedavg\""],
    "fedprox_mu0.01": ["federation.strategy=\"fedprox\"", "federation.proximal_mu=0.01"],
    "fedprox_mu0.1": ["federation.strategy=\"fedprox\"", "federation.proximal_mu=0.1"],
    "fedavgm": ["federation.strategy=\"fedavgm\"", "federation.server_lr=1.0",
                "federation.server_momentum=0.9"],
    "fedadam": ["federation.strategy=\"fedadam\"", "federation.server_lr=0.01"],
}
QUICK_ARMS = ("fedavg", "central_total", "local")


def simulate(out: Path, rounds: int, seed: int, sets: list[str], clients: int = 3,
             config: Path | None = None) -> float:
    """One `zk0 simulate` run; returns its wall seconds (raises on failure)."""
    cmd = [sys.executable, "-m", "zk0cli", "simulate", "--out", str(out),
           "--rounds", str(rounds), "--clients", str(clients), "--set", f"seed={seed}",
           "--set", "checkpoint.interval=1000"]
    cmd += ["--config", str(config)] if config else ["--preset", "tiny"]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{out.name}: exit {res.returncode}\n{res.stdout[-2000:]}"
                           f"{res.stderr[-2000:]}")
    return time.monotonic() - t0


def union_dataset(work: Path) -> Path:
    """The three clients' training episodes (held-out ones removed) as one dataset."""
    from lerobot.datasets.aggregate import aggregate_datasets
    from lerobot.datasets.dataset_tools import delete_episodes
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from zk0cli.core import data as D
    from zk0cli.core.config import load_config

    root = work / "union"
    if (root / "meta" / "info.json").is_file():
        return root
    cfg = load_config(preset="tiny", flags={"federation.num_clients": 3})
    parts = D.client_partitions(cfg)
    trimmed = []
    for p in parts:
        ds = LeRobotDataset(p.ref.repo_id, root=p.ref.root, video_backend="pyav")
        dst = work / f"train_{p.name}"
        shutil.rmtree(dst, ignore_errors=True)
        delete_episodes(ds, episode_indices=list(p.heldout_episodes), output_dir=dst,
                        repo_id=f"zk0/train_{p.name}")
        trimmed.append(dst)
    aggregate_datasets([f"zk0/train_{p.name}" for p in parts], "zk0/union",
                       roots=trimmed, aggr_root=root)
    return root


def final_tensors(run: Path) -> dict[str, Any]:
    """The tensors of the checkpoint ``models/latest`` names in run directory ``run``."""
    from safetensors.torch import load_file

    latest = (run / "models" / "latest").read_text().strip()
    return load_file(run / "models" / latest / "model.safetensors")


def evaluator() -> tuple[Any, list[tuple[str, Any]]]:
    """The common evaluation: merged statistics, held-out episodes and unseen layouts."""
    from zk0cli.core import data as D
    from zk0cli.core.config import DatasetSpec, load_config
    from zk0cli.core.evaluation import ServerEvaluator
    from zk0cli.core.stats import compute_sums, merge_sums, sums_to_json

    cfg = load_config(preset="tiny", flags={"federation.num_clients": 3})
    ev = ServerEvaluator.from_config(cfg)
    parts = D.client_partitions(cfg)
    ev.use_stats(sums_to_json(merge_sums(
        [compute_sums(p.ref, p.train_episodes, rename_map={}) for p in parts])))
    chunk = ev.bundle.policy.config.chunk_size
    sets = [(s.name, s.dataset) for s in ev.sets if s.name.startswith("heldout/")]
    for t in TASKS:
        r = D.resolve_dataset(DatasetSpec(source="sim", name=t, seed=1000, episodes=2),
                              cfg.data.sim)
        sets.append((f"unseen/{t}", D.open_dataset(r, episodes=None, chunk_size=chunk,
                                                   video_backend="pyav")))
    return ev, sets


def score(ev: Any, sets: list[tuple[str, Any]], tensors: dict[str, Any]) -> dict[str, float]:
    """Loss on every set (all frames), plus the held-out and unseen means."""
    from zk0cli.core.policy import get_trainable_state
    from zk0cli.core.trainer import evaluate

    names = list(get_trainable_state(ev.bundle.policy))
    ev.set_global({k: tensors[k] for k in names})
    out = {n: evaluate(ev.bundle, ds, batches=10**6, batch_size=8, seed=1234) for n, ds in sets}
    out["heldout_mean"] = statistics.fmean(v for k, v in out.items() if k.startswith("heldout/"))
    out["unseen_mean"] = statistics.fmean(v for k, v in out.items() if k.startswith("unseen/"))
    return out


def run_arm(arm: str, seed: int, rounds: int, work: Path) -> tuple[list[dict[str, Any]], float]:
    """Train one arm for one seed; return the final tensors' runs and wall seconds."""
    base = work / f"s{seed}"
    base.mkdir(parents=True, exist_ok=True)
    if arm in FEDERATED:
        out = base / arm
        secs = simulate(out, rounds, seed, FEDERATED[arm])
        return [{"run": str(out)}], secs
    if arm.startswith("central"):
        union = union_dataset(work)
        steps = STEPS * len(TASKS) if arm == "central_total" else STEPS
        toml = base / f"{arm}.toml"
        toml.write_text(
            "[model]\nkind = \"tiny\"\ndevice = \"cpu\"\n[data]\nheldout_episodes = 0\n"
            f"clients = [{{ source = \"local\", name = \"zk0/union\", root = \"{union}\" }}]\n"
            "eval = [{ source = \"sim\", name = \"pick_place\", seed = 1000, episodes = 2 }]\n"
            "[data.sim]\nepisodes = 4\nheight = 96\nwidth = 128\n"
            f"[training]\nsteps_per_round = {steps}\nbatch_size = 4\nlr = 1e-3\nmin_lr = 1e-4\n"
            "[federation]\nmin_clients = 1\nstrategy = \"fedavg\"\nround_timeout_s = 600\n"
            "[eval]\nbatches = 4\nbatch_size = 8\n", encoding="utf-8")
        out = base / arm
        return [{"run": str(out)}], simulate(out, rounds, seed, [], clients=1, config=toml)
    runs, secs = [], 0.0  # local only: one single-client federation per task
    for t in TASKS:
        out = base / f"local_{t}"
        secs += simulate(out, rounds, seed, [
            f"data.clients=[{{source=\"sim\",name=\"{t}\"}}]", "federation.min_clients=1",
            "federation.strategy=\"fedavg\""], clients=1)
        runs.append({"run": str(out), "task": t})
    return runs, secs


def main() -> int:
    """Run the arms, evaluate their final checkpoints, write results.json and the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 2 rounds, 3 arms")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--arms", nargs="+", default=[*FEDERATED, "central_total", "central_seq",
                                                  "local"])
    ap.add_argument("--out", type=Path, default=Path("outputs/real_path"))
    a = ap.parse_args()
    if a.quick:
        a.seeds, a.rounds, a.arms = a.seeds[:1], 2, list(QUICK_ARMS)
    work = a.out.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t_all = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    for seed in a.seeds:
        for arm in a.arms:
            runs, secs = run_arm(arm, seed, a.rounds, work)
            results.setdefault(arm, {"seeds": {}})["seeds"][str(seed)] = {"runs": runs,
                                                                         "seconds": secs}
            print(f"seed {seed} {arm}: {secs:.0f} s", flush=True)
    ev, sets = evaluator()
    for r in results.values():
        for entry in r["seeds"].values():
            scores = [score(ev, sets, final_tensors(Path(x["run"]))) for x in entry["runs"]]
            entry["scores"] = {k: statistics.fmean(s[k] for s in scores) for k in scores[0]}
    wall = time.monotonic() - t_all
    (work / "results.json").write_text(json.dumps(
        {"rounds": a.rounds, "seeds": a.seeds, "wall_s": wall, "arms": results}, indent=1))
    print(f"\n{a.rounds} rounds, seeds {a.seeds}, {wall:.0f} s wall\n")
    print("| arm | held-out mean | unseen mean | s per run |\n|---|---|---|---|")
    for arm, r in results.items():
        h = [e["scores"]["heldout_mean"] for e in r["seeds"].values()]
        u = [e["scores"]["unseen_mean"] for e in r["seeds"].values()]
        s = [e["seconds"] for e in r["seeds"].values()]

        def ms(v: list[float]) -> str:
            return f"{statistics.fmean(v):.3f} ± {statistics.pstdev(v):.3f}"
        print(f"| {arm} | {ms(h)} | {ms(u)} | {statistics.fmean(s):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
