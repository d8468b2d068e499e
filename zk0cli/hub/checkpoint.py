"""Find and validate the checkpoint ``zk0 push`` uploads.

A checkpoint is a LeRobot policy directory (``models/checkpoint_round_N/``, see
``docs/run-directory.md``). Before anything is sent, :func:`validate_checkpoint` checks
everything LeRobot 0.6 needs to load it and that it is intact, and lists *every*
problem at once in one :class:`~zk0cli.errors.CheckpointError`:

- the files: ``config.json``, ``model.safetensors``, ``policy_preprocessor.json``,
  ``policy_postprocessor.json``, the normaliser state files their steps name in
  ``"state_file"``, ``README.md`` and ``manifest.json`` (zk0's own file, not LeRobot's);
- ``manifest.json``: every listed file exists with the recorded size and SHA-256
  (:func:`zk0cli.core.checkpoint.check_manifest`, the check resume and analysis use);
- every ``.safetensors`` file opens with :func:`safetensors.safe_open` (a truncated or
  padded file fails: its header no longer covers the data);
- ``config.json`` loads through LeRobot's ``PreTrainedConfig`` as a ``SmolVLAConfig``;
- the target repo id is ``namespace/name`` and valid for the Hub.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zk0cli.core.checkpoint import MANIFEST_MISSING, check_manifest
from zk0cli.core.contract import (
    CHECKPOINT_PREFIX,
    LATEST,
    MANIFEST,
    MANIFEST_JSON,
    METRICS_JSON,
    MODEL_CARD,
    MODELS_DIR,
    POLICY_CONFIG_FILE,
    POLICY_FILES,
    POSTPROCESSOR_FILE,
    PREPROCESSOR_FILE,
    PROCESSOR_STATE_FILE_KEY,
    PROCESSOR_STEPS_KEY,
    SAFETENSORS_SUFFIX,
    WEIGHTS_FILE,
    round_of_checkpoint,
)
from zk0cli.core.rundir import RunDir
from zk0cli.errors import CheckpointError, RunDirError
from zk0cli.log import logger

# Older names of the checkpoint files, kept importable.
CONFIG_FILE = POLICY_CONFIG_FILE
CARD_FILE = MODEL_CARD
MANIFEST_FILE = MANIFEST_JSON
METRICS_FILE = METRICS_JSON
POLICY_TYPE = "smolvla"  # LeRobot's ``type`` of a SmolVLA config


@dataclass(frozen=True)
class CheckpointFile:
    """One file of a checkpoint.

    Attributes:
        relpath: Path relative to the checkpoint directory, ``/``-separated.
        size: Size in bytes.
        sha256: Hex SHA-256 recorded in the manifest.
    """

    relpath: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Where a ``zk0 push`` path led.

    Attributes:
        path: Absolute checkpoint directory.
        round: Federated round of the checkpoint.
        run_dir: The run directory holding it, or ``None`` for a checkpoint copied elsewhere.
        from_run_dir: ``True`` when the user gave a run directory and ``models/latest``
            chose the checkpoint.
    """

    path: Path
    round: int
    run_dir: Path | None
    from_run_dir: bool


def _round_of(path: Path) -> int | None:
    rnd = round_of_checkpoint(path.name)
    if rnd is not None:
        return rnd
    try:
        value = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8")).get(MANIFEST.round)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _enclosing_run_dir(checkpoint: Path) -> Path | None:
    if checkpoint.parent.name != MODELS_DIR:
        return None
    try:
        return RunDir.open(checkpoint.parent.parent).root
    except RunDirError:
        return None


def resolve_checkpoint(path: Path) -> ResolvedCheckpoint:
    """Resolve a checkpoint directory, or a run directory to its newest complete checkpoint.

    A directory holding ``run.json`` or ``models/`` is a run directory, whose checkpoint
    is the one ``models/latest`` names (moved only once complete); any other directory is
    taken as a checkpoint.

    Args:
        path: What the user passed.

    Returns:
        The checkpoint, its round and its run directory.

    Raises:
        CheckpointError: ``path`` is neither, or the run has no complete checkpoint.
    """
    path = Path(path).expanduser().absolute()
    if not path.is_dir():
        raise CheckpointError(str(path), ["not a directory (expected a checkpoint or run dir)"])
    rd = RunDir(path)
    is_run = rd.run_json.is_file() or rd.models_dir.is_dir()
    if not is_run:
        rnd = _round_of(path)
        if rnd is None and not (path / MANIFEST_FILE).is_file():
            raise CheckpointError(
                str(path),
                [f"not a checkpoint: no {MANIFEST_FILE} (zk0 writes one into every "
                 f"{CHECKPOINT_PREFIX}N) and not a run directory (no run.json or models/)"],
            )
        if rnd is None:
            raise CheckpointError(
                str(path),
                [f"cannot tell the round: the name is not {CHECKPOINT_PREFIX}N and "
                 f"{MANIFEST_FILE} has no integer {MANIFEST.round!r}"],
            )
        return ResolvedCheckpoint(path, rnd, _enclosing_run_dir(path), from_run_dir=False)
    rd = RunDir.open(path)
    checkpoint = rd.latest_checkpoint()
    if checkpoint is None:
        found = ", ".join(f"{CHECKPOINT_PREFIX}{r}" for r in rd.checkpoint_rounds()) or "none"
        raise CheckpointError(
            str(path),
            [f"{MODELS_DIR}/{LATEST} is missing or names a missing directory, so the run has no "
             f"complete checkpoint (checkpoint directories present: {found}); pass one "
             "checkpoint directory explicitly if you know it is complete"],
        )
    rnd = _round_of(checkpoint)
    if rnd is None:
        raise CheckpointError(str(checkpoint), ["cannot tell the round of this checkpoint"])
    return ResolvedCheckpoint(checkpoint, rnd, rd.root, from_run_dir=True)


def check_repo_id(repo_id: str) -> str | None:
    """Why ``repo_id`` is not a usable Hub model id (``namespace/name``), or ``None``."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_id.count("/") != 1:
        return (f"repo id {repo_id!r} must be 'namespace/name' (your user or organisation, "
                "a slash, the model name), e.g. 'alice/zk0-smolvla-so100'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        return f"repo id {repo_id!r} is not valid on the Hub: {err}"
    return None


def _read_json(path: Path, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        problems.append(f"{path.name}: not readable JSON ({err})")
        return None


def _state_files(processor: Any, name: str, problems: list[str]) -> list[str]:
    steps = processor.get(PROCESSOR_STEPS_KEY) if isinstance(processor, dict) else None
    if not isinstance(steps, list):
        problems.append(f"{name}: has no {PROCESSOR_STEPS_KEY!r} list (not a LeRobot processor "
                        "pipeline)")
        return []
    return [str(s[PROCESSOR_STATE_FILE_KEY]) for s in steps
            if isinstance(s, dict) and s.get(PROCESSOR_STATE_FILE_KEY)]


def _check_safetensors(path: Path, problems: list[str]) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            keys = list(fh.keys())
    except (SafetensorError, OSError) as err:
        problems.append(f"{path.name}: unreadable safetensors (truncated or corrupt?): {err}")
        return
    if path.name == WEIGHTS_FILE and not keys:
        problems.append(f"{path.name}: holds no tensors")


def _check_config(directory: Path, problems: list[str]) -> None:
    raw = _read_json(directory / CONFIG_FILE, problems)
    if raw is None:
        return
    seen = raw.get("type") if isinstance(raw, dict) else None
    if seen != POLICY_TYPE:
        problems.append(f"{CONFIG_FILE}: policy type = {seen!r}; push uploads SmolVLA policies "
                        f"only (type {POLICY_TYPE!r})")
        return
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    try:
        config = PreTrainedConfig.from_pretrained(directory)
    except Exception as err:  # draccus raises several types for a bad field
        problems.append(f"{CONFIG_FILE}: does not load as a LeRobot SmolVLA config: {err}")
        return
    if not isinstance(config, SmolVLAConfig):
        problems.append(f"{CONFIG_FILE}: loads as {type(config).__name__}, not SmolVLAConfig")


def validate_checkpoint(
    checkpoint: Path, *, repo_id: str | None = None, require_card: bool = True
) -> list[CheckpointFile]:
    """Check that a checkpoint is complete, intact and loads as a SmolVLA policy.

    Args:
        checkpoint: The checkpoint directory.
        repo_id: Target Hub repo id, checked too when given.
        require_card: Whether ``README.md`` must exist (``False`` when the card is
            regenerated; its manifest entry is then not checked either).

    Returns:
        The files the manifest lists, verified, sorted by path.

    Raises:
        CheckpointError: Listing every problem found (missing files, size or hash
            mismatches, unreadable safetensors, wrong config type, bad repo id).
    """
    directory = Path(checkpoint).absolute()
    problems: list[str] = []
    if repo_id is not None and (why := check_repo_id(repo_id)):
        problems.append(why)
    if not directory.is_dir():
        raise CheckpointError(str(directory), [*problems, "not a directory"])
    required = [*POLICY_FILES]
    if require_card:
        required.append(CARD_FILE)
    for name in (PREPROCESSOR_FILE, POSTPROCESSOR_FILE):
        if (directory / name).is_file():
            processor = _read_json(directory / name, problems)
            if processor is not None:
                states = _state_files(processor, name, problems)
                required += [f for f in states if f not in required]
    missing = [f for f in required if not (directory / f).is_file()]
    problems += [f"{f}: missing (LeRobot needs it to load the policy)" if f != CARD_FILE
                 else f"{f}: missing (the model card; pass --regenerate-card to build one)"
                 for f in missing]
    skip = set() if require_card else {CARD_FILE}
    check = check_manifest(directory, skip=skip, reported_elsewhere=required)
    if check.manifest is None:
        problems += [MANIFEST_MISSING] if not (directory / MANIFEST_FILE).is_file() \
            else check.problems
    else:
        problems += check.problems
        problems += [f"{f}: not listed in {MANIFEST_FILE}" for f in required
                     if f in check.unlisted]
    files = [CheckpointFile(rel, e.size, e.sha256) for rel, e in sorted(check.verified.items())]
    for relpath in required:
        if relpath.endswith(SAFETENSORS_SUFFIX) and (directory / relpath).is_file():
            _check_safetensors(directory / relpath, problems)
    if (directory / CONFIG_FILE).is_file():
        _check_config(directory, problems)
    if problems:
        raise CheckpointError(str(directory), problems)
    if check.unlisted:
        logger.warning("Not in %s, not uploaded: %s", MANIFEST_FILE, ", ".join(check.unlisted))
    return files
