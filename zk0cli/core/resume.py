"""Continue an interrupted federation from its newest complete checkpoint.

What a resume restores and why it is enough for an identical continuation:

* the global trainable tensors, from ``models/latest`` (verified against its manifest);
  the frozen weights are rebuilt from ``seed`` exactly as in the first run;
* the round index: the next round is the checkpoint's round + 1;
* the strategy state: mu and lr are functions of the round (and, for adaptive
  schedules, of the recorded round files, which are kept up to the checkpoint);
* random state: every random draw in zk0 is seeded from ``(seed, round, client)``
  (client data order, flow-matching noise and time) or fixed (evaluation), so there is
  no hidden generator state to carry over.

Round files written after the checkpoint belong to rounds that will run again; they are
moved to ``superseded/resume-<k>/`` (never deleted), and the resume is recorded in
``run.json``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zk0cli.core.checkpoint import verify_checkpoint
from zk0cli.core.config import RunConfig, config_to_json
from zk0cli.core.rundir import RunDir, read_json, write_json
from zk0cli.errors import RunDirError, UsageError

# Fields whose change makes the checkpoint meaningless for the new run (dotted prefixes).
BREAKING_PREFIXES: tuple[str, ...] = (
    "seed", "model.", "data.clients", "data.eval", "data.partition", "data.heldout_episodes",
    "data.rename_map", "data.sim.", "federation.num_clients",
)
SUPERSEDED_DIR = "superseded"


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run starts.

    Attributes:
        checkpoint: The verified checkpoint directory.
        server_round: Its round; the run continues at ``server_round + 1``.
    """

    checkpoint: Path
    server_round: int


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): data}


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]
                       ) -> tuple[list[str], list[str]]:
    """Differences between two configurations, split into breaking and safe ones.

    Returns:
        ``(breaking, safe)``: lines ``"path: old -> new"``; breaking ones match
        :data:`BREAKING_PREFIXES` (model, datasets, clients, seed).
    """
    a, b = _flatten(old), _flatten(new)
    breaking: list[str] = []
    safe: list[str] = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            line = f"{key}: {a.get(key)!r} -> {b.get(key)!r}"
            is_breaking = any(key == p.rstrip(".") or key.startswith(p)
                              for p in BREAKING_PREFIXES)
            (breaking if is_breaking else safe).append(line)
    return breaking, safe


def find_resume_point(rundir: RunDir) -> ResumePoint:
    """The newest complete checkpoint of a run.

    Raises:
        RunDirError: No checkpoint, or ``models/latest`` names a damaged one.
        CheckpointError: The checkpoint does not match its manifest.
    """
    ckpt = rundir.latest_checkpoint()
    if ckpt is None:
        raise RunDirError(
            f"{rundir.root} has no complete checkpoint (models/latest is missing), so there is "
            "nothing to resume from; start a new run (checkpoint.interval sets how often "
            "checkpoints are written)."
        )
    verify_checkpoint(ckpt)
    manifest = read_json(ckpt / "manifest.json")
    return ResumePoint(ckpt, int(manifest["round"]))


def _check_strategy(old: Mapping[str, Any], config: RunConfig, point: ResumePoint) -> None:
    """The strategy may not change, and a server optimizer needs its saved state."""
    from zk0cli import constants as C
    from zk0cli.core.server_opt import SERVER_OPTIMIZERS

    was = (old.get("federation") or {}).get("strategy", C.STRATEGY_FEDPROX)
    now = config.federation.strategy
    if was != now:
        raise UsageError(
            f"Cannot resume {point.checkpoint.parent.parent}: federation.strategy was "
            f"{was!r} and is now {now!r}; resume with {was!r} or start a new run."
        )
    if now in SERVER_OPTIMIZERS and not (point.checkpoint / C.SERVER_OPTIMIZER_FILE).is_file():
        raise UsageError(
            f"Cannot resume from {point.checkpoint}: federation.strategy = {now!r} needs the "
            f"server optimizer's state ({C.SERVER_OPTIMIZER_FILE}) and the checkpoint has "
            "none; start a new run."
        )


def prepare_resume(rundir: RunDir, config: RunConfig) -> ResumePoint:
    """Check that ``config`` may continue ``rundir`` and set the run directory up for it.

    Args:
        rundir: The interrupted run.
        config: The configuration to continue with (the run's own, plus overrides).

    Returns:
        Where the run continues.

    Raises:
        UsageError: The configuration changed in a breaking way (listing every
            difference), the run already completed all its rounds, or ``rounds`` is not
            beyond the checkpoint.
        RunDirError: No usable checkpoint.
    """
    point = find_resume_point(rundir)
    old = read_json(rundir.config_json)
    new = config.model_dump(mode="json")
    breaking, safe = config_differences(old, new)
    if breaking:
        lines = "\n".join(f"  - {b}" for b in breaking)
        raise UsageError(
            f"Cannot resume {rundir.root}: the configuration changed in ways the checkpoint "
            f"cannot carry over:\n{lines}\nResume with the run's own settings for these "
            "fields (rounds, timeouts, training hyper-parameters, evaluation, checkpoint and "
            "logging settings may change), or start a new run."
        )
    _check_strategy(old, config, point)
    if config.federation.rounds <= point.server_round:
        raise UsageError(
            f"Cannot resume {rundir.root}: its checkpoint is at round {point.server_round} and "
            f"federation.rounds = {config.federation.rounds}; pass --rounds N with N > "
            f"{point.server_round} to train further."
        )
    run = rundir.read_run()
    resumes = list(run.get("resumes", []))
    moved = _supersede_after(rundir, point.server_round, len(resumes) + 1)
    for tmp in rundir.models_dir.glob(".checkpoint_round_*"):
        shutil.rmtree(tmp, ignore_errors=True)  # partial writes of a killed run
    entry = {"at": time.time(), "from_round": point.server_round,
             "checkpoint": point.checkpoint.name, "previous_status": run.get("status"),
             "config_changes": safe, "superseded_files": moved}
    if safe:
        sdir = rundir.root / SUPERSEDED_DIR / f"resume-{len(resumes) + 1}"
        sdir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(rundir.config_json, sdir / "config.json")
    rundir.config_json.write_text(config_to_json(config) + "\n", encoding="utf-8")
    rundir.update_run(status="running", error=None, ended_at=None,
                      resumes=[*resumes, entry], rounds_planned=config.federation.rounds,
                      rounds_completed=point.server_round,
                      resume={"from_round": point.server_round,
                              "checkpoint": str(point.checkpoint)})
    return point


def _supersede_after(rundir: RunDir, server_round: int, k: int) -> int:
    """Move every per-round file of rounds after ``server_round`` aside; trim histories."""
    dest = rundir.root / SUPERSEDED_DIR / f"resume-{k}"
    moved = 0
    later = [r for r in rundir.server_eval_rounds() if r > server_round]
    for r in later:
        src = rundir.server_eval(r)
        (dest / "server").mkdir(parents=True, exist_ok=True)
        shutil.move(src, dest / "server" / src.name)
        moved += 1
    if rundir.clients_dir.is_dir():
        for f in rundir.clients_dir.glob("*/round_*.json"):
            tail = f.stem.removeprefix("round_")
            if tail.isdigit() and int(tail) > server_round:
                target = dest / "clients" / f.parent.name
                target.mkdir(parents=True, exist_ok=True)
                shutil.move(f, target / f.name)
                moved += 1
    if rundir.federated_metrics.is_file():
        rows = read_json(rundir.federated_metrics)
        if any(r.get("round", 0) > server_round for r in rows):
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(rundir.federated_metrics, dest / rundir.federated_metrics.name)
            write_json(rundir.federated_metrics,
                       [r for r in rows if r.get("round", 0) <= server_round])
    if rundir.policy_loss_history.is_file():
        hist = read_json(rundir.policy_loss_history)
        if any(int(r) > server_round for r in hist):
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(rundir.policy_loss_history, dest / rundir.policy_loss_history.name)
            write_json(rundir.policy_loss_history,
                       {r: v for r, v in hist.items() if int(r) <= server_round})
    return moved


def load_global_tensors(checkpoint: Path, names: list[str]) -> dict[str, Any]:
    """The trainable tensors ``names`` from a checkpoint's ``model.safetensors``.

    Raises:
        RunDirError: A trainable tensor is missing from the checkpoint.
    """
    from safetensors import safe_open

    out = {}
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as fh:
        keys = set(fh.keys())
        missing = [n for n in names if n not in keys]
        if missing:
            raise RunDirError(f"{checkpoint}/model.safetensors lacks {len(missing)} trainable "
                              f"tensor(s), e.g. {missing[0]}; it is not this run's policy.")
        for n in names:
            out[n] = fh.get_tensor(n)
    return out
