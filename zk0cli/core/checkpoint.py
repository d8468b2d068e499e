"""The checkpoint writer: complete LeRobot policy directories, or nothing.

A checkpoint ``models/checkpoint_round_N/`` is written into a temporary sibling
directory, hashed into ``manifest.json``, and renamed into place only when complete;
``models/latest`` is moved after that. A kill at any moment therefore leaves the
previous checkpoint and ``models/latest`` intact.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from zk0cli.core.contract import (  # noqa: F401  (METRICS_JSON, MODEL_CARD: re-exported)
    MANIFEST_JSON,
    METRICS_JSON,
    MODEL_CARD,
    CheckpointManifest,
    CheckpointMetrics,
    ManifestEntry,
)
from zk0cli.core.rundir import RunDir, public_permissions, read_json, write_json
from zk0cli.errors import CheckpointError, RunDirError
from zk0cli.log import logger

_CHUNK = 1 << 20
MANIFEST_MISSING = (f"{MANIFEST_JSON}: missing (zk0 writes it last, so the checkpoint is "
                    "incomplete or was not written by zk0)")


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def build_manifest(directory: Path, *, server_round: int) -> CheckpointManifest:
    """Sizes (bytes) and SHA-256 of every file under ``directory`` except the manifest."""
    files = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MANIFEST_JSON:
            rel = p.relative_to(directory).as_posix()
            files[rel] = ManifestEntry(size=p.stat().st_size, sha256=sha256_file(p))
    return CheckpointManifest(round=server_round, created_at=time.time(), files=files)


def read_manifest(directory: Path) -> CheckpointManifest:
    """A checkpoint's ``manifest.json``.

    Raises:
        CheckpointError: It is missing, not JSON, or not a manifest.
    """
    path = Path(directory) / MANIFEST_JSON
    if not path.is_file():
        raise CheckpointError(str(directory), [MANIFEST_MISSING])
    try:
        return CheckpointManifest.model_validate(read_json(path))
    except (RunDirError, ValidationError) as err:
        raise CheckpointError(str(directory), [f"{MANIFEST_JSON}: unreadable: {err}"]) from None


@dataclass(frozen=True)
class ManifestCheck:
    """How a checkpoint directory compares with its manifest.

    Attributes:
        manifest: The manifest, or ``None`` when missing or unreadable.
        problems: Missing, resized or altered listed files (and a missing or unreadable
            manifest), one line each.
        verified: Listed files that exist and match (size, and SHA-256 when checked).
        unlisted: Files present but not listed (``/``-separated, sorted); whether that is
            a problem is the caller's rule.
    """

    manifest: CheckpointManifest | None
    problems: list[str]
    verified: dict[str, ManifestEntry] = field(default_factory=dict)
    unlisted: list[str] = field(default_factory=list)


def check_manifest(directory: Path, *, verify_checksums: bool = True,
                   skip: Collection[str] = (), reported_elsewhere: Collection[str] = ()
                   ) -> ManifestCheck:
    """Compare a checkpoint directory with its ``manifest.json``: the one manifest check.

    Used by resume, ``tiny-run``, ``analyze-run`` and ``push``.

    Args:
        directory: The checkpoint directory.
        verify_checksums: Hash every listed file (SHA-256) as well as checking sizes.
        skip: Relative paths not to check at all (e.g. a model card about to be rebuilt).
        reported_elsewhere: Listed paths whose absence the caller reports itself.

    Returns:
        The comparison; ``problems`` is empty for an intact checkpoint.
    """
    directory = Path(directory)
    try:
        manifest = read_manifest(directory)
    except CheckpointError as err:
        return ManifestCheck(None, err.problems)
    problems: list[str] = []
    verified: dict[str, ManifestEntry] = {}
    for rel, entry in sorted(manifest.files.items()):
        if rel in skip:
            continue
        path = directory / rel
        if not path.is_file():
            if rel not in reported_elsewhere:
                problems.append(f"{rel}: listed in {MANIFEST_JSON} but missing")
            continue
        size = path.stat().st_size
        if size != entry.size:
            problems.append(f"{rel}: size {size} bytes, manifest says {entry.size}")
            continue
        if verify_checksums:
            digest = sha256_file(path)
            if digest != entry.sha256:
                problems.append(f"{rel}: SHA-256 {digest[:12]}… does not match the manifest's "
                                f"{entry.sha256[:12]}… (file changed or corrupt)")
                continue
        verified[rel] = entry
    unlisted = sorted(rel for p in directory.rglob("*") if p.is_file()
                      if (rel := p.relative_to(directory).as_posix()) != MANIFEST_JSON
                      and rel not in manifest.files and rel not in skip)
    return ManifestCheck(manifest, problems, verified, unlisted)


def manifest_problems(directory: Path) -> list[str]:
    """Every way a checkpoint directory differs from its manifest (empty list: intact)."""
    return check_manifest(directory).problems


def verify_checkpoint(directory: Path) -> None:
    """Raise if a checkpoint directory is incomplete or altered.

    Raises:
        CheckpointError: Listing every problem found by :func:`check_manifest`.
    """
    problems = manifest_problems(directory)
    if problems:
        raise CheckpointError(str(directory), problems)


def write_checkpoint(
    rundir: RunDir,
    server_round: int,
    *,
    save_policy: Callable[[Path], None],
    metrics: CheckpointMetrics | Mapping[str, Any],
    write_card: Callable[[Path], None] | None = None,
    min_free_bytes: int = 0,
) -> Path:
    """Write ``models/checkpoint_round_N`` atomically and point ``models/latest`` at it.

    Args:
        rundir: The run directory.
        server_round: Round whose global model is saved.
        save_policy: Writes the LeRobot policy directory (policy + processors) into the
            given folder.
        metrics: Written to ``metrics.json`` (a :class:`CheckpointMetrics`, or a mapping).
        write_card: Writes ``README.md`` (the model card) into the given folder.
        min_free_bytes: Refuse to start when the disk has less free space (bytes).

    Returns:
        The checkpoint directory.

    Raises:
        DiskFullError: The disk is full (``ENOSPC``, or less than ``min_free_bytes``
            free); ``run.json`` is ``failed`` with the reason
            (:func:`zk0cli.core.diskfull.run_writes`).
        OSError: The folder is not writable. In both cases the previous checkpoint and
            ``models/latest`` are untouched and the partial directory is removed.
    """
    from zk0cli.core.diskfull import run_writes

    with run_writes(rundir, what=f"the checkpoint of round {server_round}"):
        return _write_checkpoint(rundir, server_round, save_policy=save_policy,
                                 metrics=metrics, write_card=write_card,
                                 min_free_bytes=min_free_bytes)


def _write_checkpoint(rundir: RunDir, server_round: int, *, save_policy: Callable[[Path], None],
                      metrics: CheckpointMetrics | Mapping[str, Any],
                      write_card: Callable[[Path], None] | None, min_free_bytes: int) -> Path:
    final = rundir.checkpoint(server_round)
    free = shutil.disk_usage(rundir.models_dir).free
    if free < min_free_bytes:
        raise OSError(
            28, f"only {free} bytes free under {rundir.models_dir}, need {min_free_bytes} "
            "for a checkpoint; the previous checkpoint is kept"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=rundir.models_dir))
    try:
        save_policy(tmp)
        write_json(tmp / METRICS_JSON, metrics.to_json()
                   if isinstance(metrics, CheckpointMetrics) else dict(metrics))
        if write_card is not None:
            write_card(tmp)
        write_json(tmp / MANIFEST_JSON,
                   build_manifest(tmp, server_round=server_round).to_json())
        public_permissions(tmp)
        if final.exists():  # a stale copy from an earlier attempt at this round
            stale = final.with_name(f".{final.name}.stale-{int(time.time())}")
            os.replace(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    rundir.set_latest(final)
    logger.info("checkpoint written: %s", final)
    return final
