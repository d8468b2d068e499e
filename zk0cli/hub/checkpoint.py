"""Find and validate the checkpoint ``zk0 push`` uploads.

A checkpoint is a LeRobot policy directory (``models/checkpoint_round_N/``, see
``docs/run-directory.md``). Before anything is sent, :func:`validate_checkpoint` checks
everything LeRobot 0.6 needs to load it and that it is intact, and lists *every*
problem at once in one :class:`~zk0cli.errors.CheckpointError`:

- the files: ``config.json``, ``model.safetensors``, ``policy_preprocessor.json``,
  ``policy_postprocessor.json``, the normaliser state files their steps name in
  ``"state_file"``, ``README.md`` and ``manifest.json``;
- ``manifest.json``: every listed file exists with the recorded size and SHA-256;
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

from zk0cli.core.checkpoint import MANIFEST_JSON, sha256_file
from zk0cli.core.rundir import CHECKPOINT_PREFIX, MODELS_DIR, RunDir
from zk0cli.errors import CheckpointError, RunDirError
from zk0cli.log import logger

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
CARD_FILE = "README.md"
MANIFEST_FILE = MANIFEST_JSON
METRICS_FILE = "metrics.json"
POLICY_TYPE = "smolvla"


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
    tail = path.name.removeprefix(CHECKPOINT_PREFIX)
    if path.name.startswith(CHECKPOINT_PREFIX) and tail.isdigit():
        return int(tail)
    try:
        value = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8")).get("round")
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
    is_run = (path / "run.json").is_file() or (path / MODELS_DIR).is_dir()
    if not is_run:
        rnd = _round_of(path)
        if rnd is None:
            raise CheckpointError(
                str(path),
                [f"cannot tell the round: the name is not {CHECKPOINT_PREFIX}N and "
                 f"{MANIFEST_FILE} has no integer 'round'"],
            )
        return ResolvedCheckpoint(path, rnd, _enclosing_run_dir(path), from_run_dir=False)
    rd = RunDir.open(path)
    checkpoint = rd.latest_checkpoint()
    if checkpoint is None:
        found = ", ".join(f"{CHECKPOINT_PREFIX}{r}" for r in rd.checkpoint_rounds()) or "none"
        raise CheckpointError(
            str(path),
            [f"{MODELS_DIR}/latest is missing or names a missing directory, so the run has no "
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
    steps = processor.get("steps") if isinstance(processor, dict) else None
    if not isinstance(steps, list):
        problems.append(f"{name}: has no 'steps' list (not a LeRobot processor pipeline)")
        return []
    return [str(s["state_file"]) for s in steps if isinstance(s, dict) and s.get("state_file")]


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


def _check_manifest(
    directory: Path, required: list[str], problems: list[str], *, skip: set[str]
) -> list[CheckpointFile]:
    manifest = _read_json(directory / MANIFEST_FILE, problems)
    entries = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(entries, dict):
        if manifest is not None:
            problems.append(f"{MANIFEST_FILE}: has no 'files' mapping")
        return []
    files = []
    for relpath, entry in sorted(entries.items()):
        if relpath in skip:
            continue
        path = directory / relpath
        if not isinstance(entry, dict) or not {"size", "sha256"} <= set(entry):
            problems.append(f"{MANIFEST_FILE}: entry {relpath!r} lacks 'size' or 'sha256'")
            continue
        if not path.is_file():
            if relpath not in required:  # required files are reported once, as missing
                problems.append(f"{relpath}: listed in {MANIFEST_FILE} but missing")
            continue
        size = path.stat().st_size
        if size != entry["size"]:
            problems.append(f"{relpath}: size {size} bytes, manifest says {entry['size']}")
            continue
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            problems.append(f"{relpath}: SHA-256 {digest[:12]}… does not match the manifest's "
                            f"{str(entry['sha256'])[:12]}… (file changed or corrupt)")
            continue
        files.append(CheckpointFile(relpath, size, digest))
    for relpath in required:
        listed = relpath in entries or relpath in skip or relpath == MANIFEST_FILE
        if not listed and (directory / relpath).is_file():
            problems.append(f"{relpath}: not listed in {MANIFEST_FILE}")
    return files


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
    required = [CONFIG_FILE, WEIGHTS_FILE, PREPROCESSOR_FILE, POSTPROCESSOR_FILE, MANIFEST_FILE]
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
    files: list[CheckpointFile] = []
    if (directory / MANIFEST_FILE).is_file():
        skip = set() if require_card else {CARD_FILE}
        files = _check_manifest(directory, required, problems, skip=skip)
    for relpath in required:
        if relpath.endswith(".safetensors") and (directory / relpath).is_file():
            _check_safetensors(directory / relpath, problems)
    if (directory / CONFIG_FILE).is_file():
        _check_config(directory, problems)
    if problems:
        raise CheckpointError(str(directory), problems)
    listed = {f.relpath for f in files} | {MANIFEST_FILE, *([] if require_card else [CARD_FILE])}
    extra = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                   if p.is_file() and p.relative_to(directory).as_posix() not in listed)
    if extra:
        logger.warning("Not in %s, not uploaded: %s", MANIFEST_FILE, ", ".join(extra))
    return files
