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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from zk0cli.core.rundir import RunDir, public_permissions, read_json, write_json
from zk0cli.errors import CheckpointError
from zk0cli.log import logger

MANIFEST_JSON = "manifest.json"
METRICS_JSON = "metrics.json"
MODEL_CARD = "README.md"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def build_manifest(directory: Path, *, server_round: int) -> dict[str, Any]:
    """Sizes (bytes) and SHA-256 of every file under ``directory`` except the manifest."""
    files = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MANIFEST_JSON:
            rel = p.relative_to(directory).as_posix()
            files[rel] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    return {"round": server_round, "created_at": time.time(), "files": files}


def manifest_problems(directory: Path) -> list[str]:
    """Every way a checkpoint directory differs from its manifest (empty list: intact)."""
    manifest_path = directory / MANIFEST_JSON
    if not manifest_path.is_file():
        return [f"{MANIFEST_JSON} is missing (an incomplete checkpoint)"]
    try:
        manifest = read_json(manifest_path)
        entries = dict(manifest["files"])
    except (KeyError, TypeError, ValueError, OSError) as err:
        return [f"{MANIFEST_JSON} is unreadable: {err}"]
    problems = []
    for rel, entry in entries.items():
        p = directory / rel
        if not p.is_file():
            problems.append(f"{rel}: listed in the manifest but missing")
        elif p.stat().st_size != entry.get("size"):
            problems.append(f"{rel}: size {p.stat().st_size} != manifest {entry.get('size')}")
        elif sha256_file(p) != entry.get("sha256"):
            problems.append(f"{rel}: SHA-256 does not match the manifest")
    return problems


def verify_checkpoint(directory: Path) -> None:
    """Raise if a checkpoint directory is incomplete or altered.

    Raises:
        CheckpointError: Listing every problem found by :func:`manifest_problems`.
    """
    problems = manifest_problems(directory)
    if problems:
        raise CheckpointError(str(directory), problems)


def write_checkpoint(
    rundir: RunDir,
    server_round: int,
    *,
    save_policy: Callable[[Path], None],
    metrics: Mapping[str, Any],
    write_card: Callable[[Path], None] | None = None,
    min_free_bytes: int = 0,
) -> Path:
    """Write ``models/checkpoint_round_N`` atomically and point ``models/latest`` at it.

    Args:
        rundir: The run directory.
        server_round: Round whose global model is saved.
        save_policy: Writes the LeRobot policy directory (policy + processors) into the
            given folder.
        metrics: Written to ``metrics.json``.
        write_card: Writes ``README.md`` (the model card) into the given folder.
        min_free_bytes: Refuse to start when the disk has less free space (bytes).

    Returns:
        The checkpoint directory.

    Raises:
        OSError: The disk is full (``ENOSPC``) or the folder is not writable; the
            previous checkpoint and ``models/latest`` are untouched and the partial
            directory is removed.
    """
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
        write_json(tmp / METRICS_JSON, dict(metrics))
        if write_card is not None:
            write_card(tmp)
        write_json(tmp / MANIFEST_JSON, build_manifest(tmp, server_round=server_round))
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
