"""Synthetic run directories for the analyze-run tests (docs/run-directory.md).

``write_run`` writes a clean zk0 run (losses falling smoothly, every client in every
round, complete checkpoints); its keyword arguments seed one anomaly each.
``write_upstream_run`` writes a run in the upstream zk0 project's format (no run.json,
no config.json, upstream key names).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from zk0cli.core.checkpoint import MANIFEST_JSON, build_manifest
from zk0cli.core.rundir import RunDir, write_json

EVAL_SETS = ("heldout/lift", "heldout/push")


def clean_composite(n: int) -> float:
    return 1.0 * 0.85**n


def clean_client_loss(cid: str, n: int) -> float:
    return 1.2 * 0.85**n * (1 + 0.03 * int(cid))


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def write_checkpoint(rd: RunDir, n: int) -> Path:
    ckpt = rd.checkpoint(n)
    ckpt.mkdir(parents=True)
    files = {"config.json": b'{"type": "smolvla"}', "model.safetensors": bytes(range(256)) * 4,
             "metrics.json": b'{"round": %d}' % n, "README.md": b"# model card\n"}
    for name, content in files.items():
        (ckpt / name).write_bytes(content)
    write_json(ckpt / MANIFEST_JSON, build_manifest(ckpt, server_round=n))
    return ckpt


def write_run(
    outputs: Path,
    *,
    name: str = "2025-10-17_08-00-00",
    rounds: int = 6,
    clients: int = 3,
    status: str = "completed",
    composite: Callable[[int], float] = clean_composite,
    client_loss: Callable[[str, int], float] = clean_client_loss,
    dropouts: Mapping[int, Iterable[str]] | None = None,
    failures: Mapping[int, Iterable[str]] | None = None,
    no_aggregation: Iterable[int] = (),
    overrides: Iterable[tuple[int, tuple[Any, ...], Any]] = (),
    missing_rounds: Iterable[int] = (),
    history_skip: Iterable[int] = (),
    checkpoints: Iterable[int] = (5, 6),
    checkpoint_no_manifest: Iterable[int] = (),
    checkpoint_tamper: Iterable[int] = (),
    latest: str | None = "checkpoint_round_6",
) -> RunDir:
    """Write a zk0 run directory; every default gives a run with no findings."""
    rd = RunDir.create(outputs, name=name)
    dropouts, failures = dict(dropouts or {}), dict(failures or {})
    no_aggregation, missing = set(no_aggregation), set(missing_rounds)
    ids = [str(i) for i in range(clients)]
    fed_rows, history = [], {}
    for n in range(rounds + 1):
        comp = composite(n)
        datasets = {EVAL_SETS[0]: comp * 0.95, EVAL_SETS[1]: comp * 1.05}
        lr, mu = 1e-4 * 0.95**n, 0.01
        individual, failed = [], []
        if n >= 1:
            for cid in ids:
                if cid in set(dropouts.get(n, ())):
                    continue
                if n in no_aggregation or cid in set(failures.get(n, ())):
                    failed.append({"client_id": cid, "reason": "TrainingDivergedError: boom"})
                    continue
                loss = client_loss(cid, n)
                individual.append({
                    "client_id": cid, "dataset_name": f"lift-{cid}", "loss": loss,
                    "policy_loss": loss - 0.001, "fedprox_loss": 0.001, "grad_norm": 2.0,
                    "param_update_norm": 0.05 * 0.9**n, "param_hash": "ab" * 32,
                    "num_steps": 5, "num_examples": 20, "lr": lr, "seconds": 3.0})
        losses = [c["loss"] for c in individual]
        avg = (sum(losses) / len(losses)) if losses else math.nan  # as zk0's strategy writes
        some = 1.0 if individual else math.nan
        agg = {"num_clients": len(individual), "num_failures": len(failed),
               "num_examples": 20 * len(individual), "loss_avg": avg, "loss_std": 0.01 * some,
               "policy_loss_avg": avg - 0.001, "fedprox_loss_avg": 0.001 * some,
               "grad_norm_avg": 2.0 * some, "param_update_norm_avg": 0.05 * 0.9**n * some,
               } if n else None
        data = {
            "round": n, "aggregated": bool(individual) if n else False,
            "note": None if individual or not n else "no client update to aggregate",
            "proximal_mu": mu, "lr": lr, "seconds": 10.0,
            "server_eval": {"datasets": datasets, "composite": comp},
            "server_composite_eval_loss": comp,
            "client_aggregated_training_metrics": agg,
            "individual_client_training_metrics": individual, "failures": failed,
        }
        for r, path, value in overrides:
            if r == n:
                _set(data, path, value)
        if n in missing:
            continue
        write_json(rd.server_eval(n), data)
        for c in individual:
            write_json(rd.client_round(c["client_id"], n), {**c, "round": n, "status": "ok"})
        for f in failed:
            write_json(rd.client_round(f["client_id"], n),
                       {"client_id": f["client_id"], "round": n, "status": "failed",
                        "error": f["reason"]})
        fed_rows.append({
            "round": n, "aggregated": data["aggregated"], "num_clients": len(individual),
            "num_failures": len(failed), "avg_client_loss": (agg or {}).get("loss_avg"),
            "avg_policy_loss": (agg or {}).get("policy_loss_avg"), "avg_fedprox_loss": 0.001,
            "avg_grad_norm": 2.0,
            "avg_param_update_norm": (agg or {}).get("param_update_norm_avg"),
            "server_policy_loss": data["server_eval"]["composite"], "proximal_mu": mu,
            "lr": lr, "seconds": 10.0})
        if n not in set(history_skip):
            history[str(n)] = data["server_eval"]["composite"]
    write_json(rd.federated_metrics, fed_rows)
    write_json(rd.policy_loss_history, history)
    for n in checkpoints:
        write_checkpoint(rd, n)
    for n in checkpoint_no_manifest:
        (rd.checkpoint(n) / "manifest.json").unlink()
    for n in checkpoint_tamper:
        (rd.checkpoint(n) / "model.safetensors").write_bytes(bytes(1024))  # same size
    if latest is not None:
        rd.latest.write_text(latest + "\n", encoding="utf-8")
    write_json(rd.config_json, {
        "seed": 42, "output_root": str(outputs),
        "model": {"kind": "tiny", "path": None},
        "data": {"clients": [{"source": "sim", "name": "lift"} for _ in ids],
                 "eval": [{"source": "sim", "name": s.split("/")[1]} for s in EVAL_SETS]},
        "training": {"steps_per_round": 5, "batch_size": 4, "lr": 1e-4},
        "federation": {"rounds": rounds, "num_clients": clients, "fraction_train": 1.0,
                       "proximal_mu": 0.01},
    })
    rd.update_run(status=status, engine="simulation", command="simulate", seed=42,
                  versions={"zk0": "0.1.0"}, started_at=1.76e9, rounds_planned=rounds,
                  rounds_completed=rounds, error="boom" if status == "failed" else None,
                  round_seconds={str(n): 10.0 for n in range(rounds + 1)})
    return rd


def write_upstream_run(outputs: Path, *, name: str = "2025-10-17_09-00-00") -> Path:
    """An upstream-format run: rounds 1-4, client 2 missing in round 3, round 4 empty.

    Round 4 has no client updates and the upstream's zeroed ``avg_client_loss`` (0.0).
    """
    root = outputs / name
    server = root / "server"
    server.mkdir(parents=True)
    rows, history = [], {}
    for n in range(1, 5):
        cids = [0, 1, 2] if n < 3 else ([0, 1] if n == 3 else [])
        indiv = [{"client_id": c, "loss": 1.0 - 0.1 * n + 0.01 * c,
                  "policy_loss": 0.9 - 0.1 * n, "fedprox_loss": 0.01, "grad_norm": 1.5,
                  "param_update_norm": 0.02} for c in cids]
        avg = sum(i["loss"] for i in indiv) / len(indiv) if indiv else 0.0
        composite = "N/A" if n == 2 else 0.8 - 0.05 * n
        write_json(server / f"round_{n}_server_eval.json", {
            "server_composite_eval_loss": composite,
            "client_aggregated_training_metrics": {
                "avg_client_loss": avg, "std_client_loss": 0.01,
                "avg_client_proximal_loss": 0.01, "avg_client_grad_norm": 1.5,
                "num_clients": len(indiv)},
            "individual_client_training_metrics": indiv,
            "server_per_dataset_eval_results": [] if n == 2 else [
                {"dataset_name": "lerobot/svla_so100_stacking", "evaldata_id": 0,
                 "loss": 0.8 - 0.05 * n, "num_examples": 1024}],
            "num_server_eval_datasets": 0 if n == 2 else 1,
        })
        rows.append({"round": n, "num_clients": len(indiv), "avg_client_loss": avg,
                     "param_update_norm": 0.02})
        if n != 2:
            history[str(n)] = {"server_policy_loss": 0.8 - 0.05 * n, "action_dim": 7}
    write_json(server / "federated_metrics.json", rows)
    write_json(server / "policy_loss_history.json", history)
    return root


def write_upstream_sparse_run(outputs: Path, *, name: str = "2025-11-02_10-00-00") -> Path:
    """An upstream run of 6 rounds evaluated every other round (0, 2, 4, 6).

    Like the upstream project writes it: ``round_N_server_eval.json`` only for evaluated
    rounds, ``federated_metrics.json`` rows for rounds 1-6, ``policy_loss_history.json``
    keyed by position (0..3) with the round only implied, checkpoints of rounds 4 and 6
    without ``models/latest``, a ``config.json`` with ``num-server-rounds``.
    """
    root = outputs / name
    server = root / "server"
    server.mkdir(parents=True)
    history, rows = {}, []
    for pos, n in enumerate((0, 2, 4, 6)):
        loss = 0.9 - 0.1 * n / 2
        indiv = [{"client_id": c, "loss": loss + 0.1, "policy_loss": loss + 0.1}
                 for c in (0, 1)] if n else []
        write_json(server / f"round_{n}_server_eval.json", {
            "server_composite_eval_loss": loss,
            "client_aggregated_training_metrics": {"avg_client_loss": loss + 0.1,
                                                   "num_clients": len(indiv)},
            "individual_client_training_metrics": indiv,
            "server_per_dataset_eval_results": [
                {"dataset_name": "lerobot/svla_so100_stacking", "loss": loss}],
        })
        history[str(pos)] = {"server_policy_loss": loss, "action_dim": 7}
    for n in range(1, 7):
        rows.append({"round": n, "num_clients": 2, "avg_client_loss": 1.0 - 0.05 * n})
    write_json(server / "federated_metrics.json", rows)
    write_json(server / "policy_loss_history.json", history)
    write_json(root / "config.json", {"num-server-rounds": 6, "proximal-mu": 0.01,
                                      "eval-frequency": 2})
    for n in (4, 6):
        ckpt = root / "models" / f"checkpoint_round_{n}"
        ckpt.mkdir(parents=True)
        (ckpt / "model.safetensors").write_bytes(bytes(64))
    return root
