"""Privacy against utility on the tiny simulated federation: ε and held-out loss per noise.

Every arm is a real ``zk0 simulate --preset tiny`` run (4 simulated SO-101 clients, tiny
SmolVLA, CPU) with ``data.stats = "local"`` (central DP refuses federated statistics), the
same seed and rounds; the arms differ only in ``privacy``:

- ``off``: no DP (equal settings otherwise);
- ``central`` with ``privacy.clipping_norm = C`` and each ``--noise`` multiplier z.

For each arm it reads ``run.json``'s ``privacy.epsilon`` (at ``privacy.delta = 1e-5``) and
the composite server eval loss of round 0 and of the last round (the held-out episodes of
``data.eval``), and prints a markdown table (the one in docs/privacy.md) and writes it with
the raw numbers to ``--results`` (JSON).

    flock /tmp/zk0-heavy.lock python experiments/dp_tradeoff.py            # ~3 min per arm
    python experiments/dp_tradeoff.py --noise 0.5 1 2 --rounds 5 --clip 1 --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]


def run_arm(out: Path, *, rounds: int, noise: float | None, clip: float, seed: int,
            steps: int) -> dict[str, Any]:
    """One ``zk0 simulate`` run; its ε, first and last composite server loss, seconds."""
    sets = ["data.stats=local", f"seed={seed}", "eval.batches=2",
            f"training.steps_per_round={steps}"]
    if noise is not None:
        sets += ["privacy.mode=central", f"privacy.noise_multiplier={noise}",
                 f"privacy.clipping_norm={clip}"]
    cmd = [sys.executable, "-m", "zk0cli", "simulate", "--preset", "tiny", "--rounds",
           str(rounds), "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"arm noise={noise} failed (exit {proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    run = json.loads((out / "run.json").read_text())
    server = out / "server"

    def composite(r: int) -> float | None:
        rec = json.loads((server / f"round_{r}_server_eval.json").read_text())
        value = rec.get("server_composite_eval_loss")
        return float(value) if value is not None else None

    last = int(run["rounds_completed"])
    norms = []
    for r in range(1, last + 1):
        rec = json.loads((server / f"round_{r}_server_eval.json").read_text())
        norms += [c.get("dp_update_norm", c.get("param_update_norm"))
                  for c in rec.get("individual_client_training_metrics", [])]
    privacy = run.get("privacy") or {}
    eps = privacy.get("epsilon")
    return {"noise_multiplier": noise, "clipping_norm": clip if noise is not None else None,
            "epsilon": None if noise is None else float(str(eps)),
            "delta": privacy.get("delta"), "rounds": last,
            "loss_round0": composite(0), "loss_last": composite(last),
            "client_update_norm_mean": sum(n for n in norms if n is not None) / max(1, len(norms)),
            "seconds": round(seconds, 1), "run_dir": str(out)}


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of docs/privacy.md."""
    lines = ["| noise multiplier z | clip C | ε at δ = 1e-5 | held-out loss, round 0 | "
             "held-out loss, last round | mean client ‖Δ‖ |", "|---|---|---|---|---|---|"]
    for r in rows:
        z = "off (no DP)" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:g}"
        eps = "—" if r["epsilon"] is None else (
            "∞" if r["epsilon"] == float("inf") else f"{r['epsilon']:.3g}")
        clip = "—" if r["clipping_norm"] is None else f"{r['clipping_norm']:g}"
        lines.append(f"| {z} | {clip} | {eps} | {r['loss_round0']:.4f} | "
                     f"{r['loss_last']:.4f} | {r['client_update_norm_mean']:.3g} |")
    return "\n".join(lines)


def main() -> None:
    """Run the arms, print the table, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    ap.add_argument("--clip", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5, help="training.steps_per_round")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-baseline", action="store_true", help="skip the arm without DP")
    ap.add_argument("--work", type=Path, default=Path("/tmp/zk0-dp-tradeoff"))
    ap.add_argument("--results", type=Path, default=ROOT / "docs/results/privacy_tradeoff.json")
    args = ap.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    arms: list[float | None] = ([] if args.no_baseline else [None]) + list(args.noise)
    rows = []
    for noise in arms:
        name = "off" if noise is None else f"z{noise:g}"
        rows.append(run_arm(args.work / f"{stamp}-{name}", rounds=args.rounds, noise=noise,
                            clip=args.clip, seed=args.seed, steps=args.steps))
        print(json.dumps(rows[-1]), flush=True)
    text = table(rows)
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"arms": rows, "table": text, "rounds": args.rounds,
                                        "steps_per_round": args.steps, "seed": args.seed,
                                        "preset": "tiny"}, indent=1)
                            + "\n", encoding="utf-8")
    print(f"wrote {args.results}")
    doc = ROOT / "docs/privacy.md"
    text_doc = doc.read_text(encoding="utf-8")
    begin, end = "<!-- table: experiments/dp_tradeoff.py -->", "<!-- end table -->"
    if begin in text_doc and end in text_doc:  # the measured table of docs/privacy.md
        head, rest = text_doc.split(begin, 1)
        _, tail = rest.split(end, 1)
        note = (f"Tiny preset, {args.rounds} rounds x {args.steps} steps, seed {args.seed}, "
                f"4 sites sampled every round (q = 1), delta = 1e-5.")
        doc.write_text(f"{head}{begin}\n{note}\n\n{text}\n{end}{tail}", encoding="utf-8")
        print(f"updated {doc}")


if __name__ == "__main__":
    main()
