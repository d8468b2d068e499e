"""Tables and curves of one `experiments/real_path.py` run, for docs/results.md.

Reads ``results.json`` and the arms' run directories under ``--work`` (default
outputs/real_path/) and writes into ``--docs`` (default docs/results/):

- ``real_path.json``: per arm, the final held-out and unseen means per seed, their mean and
  population standard deviation, the wall seconds per run, and the per-round curve of the
  server's own evaluation set (mean over seeds);
- ``real_path_curves.png``: those curves, one line per arm (not local only: a single-task
  run's server normalises with that task's statistics, so its losses are in other units).

It prints the Markdown table that docs/results.md quotes.

    python experiments/real_path_report.py --work outputs/real_path
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

LABELS = {
    "fedavg": "FedAvg",
    "fedprox_mu0.01": "FedProx, mu = 0.01",
    "fedprox_mu0.1": "FedProx, mu = 0.1",
    "fedavgm": "FedAvgM (server lr 1, momentum 0.9)",
    "fedadam": "FedAdam (server lr 0.01)",
    "central_total": "centralised, equal total client steps (30 per round)",
    "central_seq": "centralised, equal sequential updates (10 per round)",
    "local": "local only (mean of the 3 single-task models)",
}


def server_curve(run: Path) -> list[float]:
    """The server's composite held-out loss after rounds 0..R of one run directory."""
    rows = json.loads((run / "server" / "federated_metrics.json").read_text())
    curve: dict[int, float] = {}
    for r in rows:
        loss = r.get("server_policy_loss")
        if loss is not None:
            curve[int(r["round"])] = float(loss)
    return [curve[k] for k in sorted(curve)]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Per-arm finals (mean ± std over seeds) and mean curves."""
    out: dict[str, Any] = {"rounds": results["rounds"], "seeds": results["seeds"],
                           "wall_s": results["wall_s"], "arms": {}}
    for arm, r in results["arms"].items():
        seeds = r["seeds"]
        held = [e["scores"]["heldout_mean"] for e in seeds.values()]
        unseen = [e["scores"]["unseen_mean"] for e in seeds.values()]
        secs = [e["seconds"] / len(e["runs"]) for e in seeds.values()]
        curves = []
        for e in seeds.values():  # local only: the mean curve of its single-task runs
            per_run = [server_curve(Path(x["run"])) for x in e["runs"]]
            curves.append([statistics.fmean(c[i] for c in per_run)
                           for i in range(min(len(c) for c in per_run))])
        n = min(len(c) for c in curves)
        out["arms"][arm] = {
            "heldout_mean": mean_std(held), "unseen_mean": mean_std(unseen),
            "heldout_by_seed": held, "unseen_by_seed": unseen,
            "seconds_per_run": statistics.fmean(secs),
            "server_curve": [statistics.fmean(c[i] for c in curves) for i in range(n)],
        }
    return out


def plot(summary: dict[str, Any], path: Path) -> None:
    """One line per arm: the server's held-out loss after each round (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm, a in summary["arms"].items():
        if arm == "local":  # its server evaluated with one task's statistics: other units
            continue
        style = "--" if arm.startswith("central") else (":" if arm == "local" else "-")
        ax.plot(range(len(a["server_curve"])), a["server_curve"], style, marker="o",
                markersize=3, label=LABELS.get(arm, arm))
    ax.set_xlabel("round")
    ax.set_ylabel("server held-out policy loss (pick_place, seed 1000)")
    ax.set_title(f"Real path (zk0 simulate), mean over seeds {summary['seeds']}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(summary: dict[str, Any]) -> str:
    """The Markdown table of final losses (mean ± std over seeds)."""
    ref = summary["arms"].get("central_total", {}).get("heldout_mean", (None,))[0]
    lines = ["| arm | held-out mean | unseen layouts mean | vs centralised (equal total "
             "steps) | s per run |", "|---|---|---|---|---|"]
    for arm, a in summary["arms"].items():
        (hm, hs), (um, us) = a["heldout_mean"], a["unseen_mean"]
        gap = f"{100 * (hm - ref) / ref:+.1f} %" if ref and arm != "central_total" else ""
        lines.append(f"| {LABELS.get(arm, arm)} | {hm:.3f} ± {hs:.3f} | {um:.3f} ± {us:.3f} "
                     f"| {gap} | {a['seconds_per_run']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    """Write real_path.json and real_path_curves.png; print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("outputs/real_path"))
    ap.add_argument("--docs", type=Path, default=Path("docs/results"))
    a = ap.parse_args()
    summary = summarise(json.loads((a.work / "results.json").read_text()))
    a.docs.mkdir(parents=True, exist_ok=True)
    (a.docs / "real_path.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(summary, a.docs / "real_path_curves.png")
    print(table(summary))
    print(f"\n{summary['rounds']} rounds, seeds {summary['seeds']}, "
          f"{summary['wall_s'] / 60:.0f} min wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
