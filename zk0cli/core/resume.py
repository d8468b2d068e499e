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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from zk0cli import constants as K
from zk0cli.core.checkpoint import read_manifest, verify_checkpoint
from zk0cli.core.config import RunConfig, config_to_json
from zk0cli.core.contract import (
    ADAPTER_DIR,
    ADAPTER_WEIGHTS_FILE,
    CLIENTS_DIR,
    LATEST,
    MODELS_DIR,
    SERVER_DIR,
    WEIGHTS_FILE,
    ResumeEntry,
    ResumeFrom,
)
from zk0cli.core.owner import claim
from zk0cli.core.rundir import RunDir, read_json, write_json
from zk0cli.errors import CheckpointError, RunDirError, UsageError
from zk0cli.log import logger

# Fields whose change makes the checkpoint meaningless for the new run (dotted prefixes).
BREAKING_PREFIXES: tuple[str, ...] = (
    "seed", "model.", "data.clients", "data.eval", "data.partition", "data.heldout_episodes",
    "data.rename_map", "data.sim.", "federation.num_clients",
    # the accountant's ledger and the noise stream hold only for the run's own DP settings
    "privacy.mode", "privacy.clipping_norm", "privacy.noise_multiplier", "privacy.delta",
)


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run starts.

    Attributes:
        checkpoint: The verified checkpoint directory.
        server_round: Its round; the run continues at ``server_round + 1``.
        fallback: Why ``models/latest`` was not used (``None`` when it was).
        previous_owner: The earlier owner of the run that died without releasing it
            (``None`` when the run was released cleanly).
    """

    checkpoint: Path
    server_round: int
    fallback: str | None = None
    previous_owner: str | None = None


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
    """The newest intact checkpoint of a run.

    ``models/latest`` is tried first; if it is missing, names a missing folder or a
    checkpoint that does not match its manifest, the newest intact
    ``checkpoint_round_N`` is used instead and :attr:`ResumePoint.fallback` says why.

    Raises:
        RunDirError: No intact checkpoint at all (listing what was wrong with each).
    """
    problems: list[str] = []
    latest = rundir.latest_checkpoint()
    if latest is not None:
        try:
            verify_checkpoint(latest)
            return ResumePoint(latest, _round_of(latest))
        except CheckpointError as err:
            problems.append(f"{MODELS_DIR}/{LATEST} -> {latest.name}: {', '.join(err.problems)}")
    elif rundir.latest.is_file():
        problems.append(f"{MODELS_DIR}/{LATEST} names a checkpoint folder that does not exist")
    else:
        problems.append(f"{MODELS_DIR}/{LATEST} is missing")
    for r in sorted(rundir.checkpoint_rounds(), reverse=True):
        ckpt = rundir.checkpoint(r)
        if latest is not None and ckpt.resolve() == latest.resolve():
            continue
        try:
            verify_checkpoint(ckpt)
        except CheckpointError as err:
            problems.append(f"{ckpt.name}: {', '.join(err.problems)}")
            continue
        return ResumePoint(ckpt, _round_of(ckpt), fallback="; ".join(problems))
    lines = "\n".join(f"  - {p}" for p in problems)
    raise RunDirError(
        f"{rundir.root} has no complete checkpoint, so there is nothing to resume from:\n"
        f"{lines}\nStart a new run (checkpoint.interval sets how often checkpoints are "
        "written)."
    )


def _round_of(ckpt: Path) -> int:
    return read_manifest(ckpt).round


def _check_strategy(old: Mapping[str, Any], config: RunConfig, point: ResumePoint) -> None:
    """The strategy may not change, and a server optimizer needs its saved state."""
    from zk0cli import constants as K
    from zk0cli.core import contract as C
    from zk0cli.core.server_opt import SERVER_OPTIMIZERS

    was = (old.get("federation") or {}).get("strategy", K.STRATEGY_FEDPROX)
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
        RunOwnedError: Another live process owns the run (nothing is changed).
    """
    owner = claim(rundir.root)  # refused while the owner lives; taken over once it is gone
    point = find_resume_point(rundir)
    if owner.previous is not None:
        point = replace(point, previous_owner=owner.previous.describe())
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
    run = rundir.run_record()
    if run.status == "completed" and run.stop_reason:
        raise UsageError(
            f"Cannot resume {rundir.root}: it completed early ({run.stop_reason}). Its final "
            f"checkpoint is {rundir.latest_checkpoint() or 'missing'} and its best "
            f"{run.best_checkpoint or 'is the initial model'}; start a new run to train "
            "further (e.g. `zk0 simulate --config ...` with federation.early_stop changed)."
        )
    if config.federation.rounds <= point.server_round:
        raise UsageError(
            f"Cannot resume {rundir.root}: its checkpoint is at round {point.server_round} and "
            f"federation.rounds = {config.federation.rounds}; pass --rounds N with N > "
            f"{point.server_round} to train further."
        )
    from zk0cli.core.diskfull import run_writes

    with run_writes(rundir, what="the resume's bookkeeping"):
        return _record_resume(rundir, config, point, safe)


def _record_resume(rundir: RunDir, config: RunConfig, point: ResumePoint, safe: list[str]
                   ) -> ResumePoint:
    """Move the later rounds' files aside and record the resume (config.json, run.json)."""
    from zk0cli.core.diskfull import reserve

    reserve(rundir)  # room again for the final run.json (a full disk may have used it)
    run = rundir.run_record()
    k = len(run.resumes) + 1
    moved = _supersede_after(rundir, point.server_round, k)
    for tmp in rundir.partial_checkpoints():
        shutil.rmtree(tmp, ignore_errors=True)  # partial writes of a killed run
    entry = ResumeEntry(at=time.time(), from_round=point.server_round,
                        checkpoint=point.checkpoint.name, previous_status=run.status,
                        fallback=point.fallback, previous_owner=point.previous_owner,
                        config_changes=safe, superseded_files=moved)
    if safe:
        sdir = rundir.superseded(k)
        sdir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(rundir.config_json, sdir / rundir.config_json.name)
    rundir.config_json.write_text(config_to_json(config) + "\n", encoding="utf-8")
    rundir.update_run(status="running", error=None, ended_at=None,
                      resumes=[*run.resumes, entry], rounds_planned=config.federation.rounds,
                      rounds_completed=point.server_round,
                      resume=ResumeFrom(from_round=point.server_round,
                                        checkpoint=str(point.checkpoint)))
    return point


def _supersede_after(rundir: RunDir, server_round: int, k: int) -> int:
    """Move every per-round file of rounds after ``server_round`` aside; trim histories."""
    from zk0cli.core.rundir import read_metrics_rows, read_policy_loss_history

    dest = rundir.superseded(k)
    moved = 0
    later = [r for r in rundir.server_eval_rounds() if r > server_round]
    for r in later:
        src = rundir.server_eval(r)
        (dest / SERVER_DIR).mkdir(parents=True, exist_ok=True)
        shutil.move(src, dest / SERVER_DIR / src.name)
        moved += 1
    for r, f in rundir.client_round_files():
        if r > server_round:
            target = dest / CLIENTS_DIR / f.parent.name
            target.mkdir(parents=True, exist_ok=True)
            shutil.move(f, target / f.name)
            moved += 1
    rows = read_metrics_rows(rundir)
    if any(r.round > server_round for r in rows):
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(rundir.federated_metrics, dest / rundir.federated_metrics.name)
        write_json(rundir.federated_metrics,
                   [r.to_json() for r in rows if r.round <= server_round])
    hist = read_policy_loss_history(rundir)
    if any(r > server_round for r in hist):
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(rundir.policy_loss_history, dest / rundir.policy_loss_history.name)
        write_json(rundir.policy_loss_history,
                   {str(r): v for r, v in hist.items() if r <= server_round})
    return moved


@dataclass(frozen=True)
class ResumeStart:
    """What a ServerApp process continues from (nothing, for a fresh run).

    Attributes:
        offset: Rounds already done (0 for a fresh run).
        tensors: The checkpoint's trainable tensors, or ``None`` for a fresh run.
        prior_losses: Round -> aggregated clients' policy losses of the done rounds.
        checkpoint: The checkpoint directory resumed from (``None`` for a fresh run).
    """

    offset: int = 0
    tensors: dict[str, Any] | None = None
    prior_losses: dict[int, list[float]] | None = None
    checkpoint: Path | None = None


def resume_start(rundir: RunDir, *, names: list[str]) -> ResumeStart:
    """Read where this ServerApp process starts, from ``run.json``'s ``resume`` record.

    Args:
        rundir: The run directory.
        names: Names of the trainable tensors to load from the checkpoint.

    Returns:
        The round offset, tensors and recorded losses (empty for a fresh run).

    Raises:
        RunDirError: The checkpoint lacks a trainable tensor.
    """
    resume = rundir.run_record().resume
    if resume is None or resume.from_round == 0:
        return ResumeStart()
    tensors = load_global_tensors(Path(resume.checkpoint), names)
    logger.info("resuming after round %s from %s", resume.from_round, resume.checkpoint)
    return ResumeStart(resume.from_round, tensors,
                       recorded_client_losses(rundir, up_to=resume.from_round),
                       Path(resume.checkpoint))


def recorded_client_losses(rundir: RunDir, *, up_to: int) -> dict[int, list[float]]:
    """Round -> aggregated clients' policy losses, from the round files 1..``up_to``."""
    from zk0cli.core.rundir import read_server_round

    out: dict[int, list[float]] = {}
    for r in range(1, up_to + 1):
        if rundir.server_eval(r).is_file():
            clients = read_server_round(rundir, r).individual_client_training_metrics
            out[r] = [float(v) for c in clients
                      if isinstance(v := getattr(c, K.POLICY_LOSS), int | float)]
    return out


def recorded_composites(rundir: RunDir, *, up_to: int) -> list[tuple[int, float | None]]:
    """``(round, composite server loss)`` from the round files 0..``up_to`` (early stop)."""
    from zk0cli.core.rundir import read_server_round

    return [(r, read_server_round(rundir, r).server_composite_eval_loss)
            for r in range(up_to + 1) if rundir.server_eval(r).is_file()]


def load_global_tensors(checkpoint: Path, names: list[str]) -> dict[str, Any]:
    """The trainable tensors ``names`` from a checkpoint.

    From ``model.safetensors``, or, for a LoRA run (``model.peft``: its policy file holds
    merged weights), from ``adapter/adapter_model.safetensors`` under PEFT's key names
    (:func:`~zk0cli.core.policy.adapter_file_key`).

    Raises:
        RunDirError: A trainable tensor is missing from the checkpoint.
    """
    from safetensors import safe_open

    from zk0cli.core.policy import adapter_file_key

    adapter = any(".lora_" in n for n in names)
    if adapter:
        path = checkpoint / ADAPTER_DIR / ADAPTER_WEIGHTS_FILE
        keys_of = {n: adapter_file_key(n) for n in names}
    else:
        path, keys_of = checkpoint / WEIGHTS_FILE, {n: n for n in names}
    rel = path.relative_to(checkpoint).as_posix()
    if not path.is_file():
        raise RunDirError(f"{checkpoint} has no {rel}; it is not this run's policy "
                          f"({'a LoRA run' if adapter else 'a run without LoRA'}).")
    out = {}
    with safe_open(str(path), framework="pt") as fh:
        keys = set(fh.keys())
        missing = [n for n in names if keys_of[n] not in keys]
        if missing:
            raise RunDirError(f"{checkpoint}/{rel} lacks {len(missing)} trainable "
                              f"tensor(s), e.g. {keys_of[missing[0]]}; it is not this run's "
                              "policy.")
        for n in names:
            out[n] = fh.get_tensor(keys_of[n])
    return out
