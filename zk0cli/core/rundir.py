"""The run directory: the contract between phases (see ``docs/design.md``).

This module is the only place that builds run-directory paths, from the names of
:mod:`zk0cli.core.contract`::

    outputs/<YYYY-MM-DD_HH-MM-SS>/
      run.json  config.json
      server/round_<N>_server_eval.json  server/federated_metrics.json
      server/policy_loss_history.json
      clients/<client_id>/round_<N>.json
      models/checkpoint_round_<N>/  models/latest
      report/  server.log  logs/  superseded/resume-<k>/

JSON files are written atomically (temporary file + ``os.replace``), so a reader never
sees half a file and a kill never leaves one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from zk0cli.core import contract as C
from zk0cli.core.contract import (  # noqa: F401  (re-exported: older import paths)
    CHECKPOINT_PREFIX,
    CLIENTS_DIR,
    CONFIG_JSON,
    FEDERATED_METRICS_JSON,
    LATEST,
    MODELS_DIR,
    POLICY_LOSS_HISTORY_JSON,
    REPORT_DIR,
    RUN_JSON,
    RUN_NAME_FORMAT,
    RUN_STATUSES,
    SERVER_DIR,
    MetricsRow,
    RunRecord,
    RunStatus,
    ServerRoundRecord,
)
from zk0cli.errors import RunDirError


def _json_default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return _sanitize(obj.model_dump())
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _sanitize(obj: Any) -> Any:
    """Replace NaN/Inf floats by strings so that the files stay strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_sanitize(v) for v in obj]
    return obj


def create_dir(path: Path, *, purpose: str) -> None:
    """``mkdir -p`` with a user-facing error.

    Args:
        path: Folder to create (existing folders are fine).
        purpose: What the folder is for, named in the error (``"--out"``).

    Raises:
        RunDirError: The folder cannot be created (a file in the way, no permission...).
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(
            f"cannot create {purpose} {path}: {err.strerror or err}. Choose a folder you can "
            "write to (a path whose parents are folders, not files)."
        ) from None


def check_new_dir(path: Path, *, purpose: str) -> Path:
    """Check, without creating anything, that ``path`` does not exist and could be created.

    Returns:
        The absolute path.

    Raises:
        RunDirError: ``path`` exists, or its nearest existing parent is not a writable folder.
    """
    path = Path(path).absolute()
    if path.exists():
        raise RunDirError(f"{purpose} {path} already exists; choose a new directory (zk0 never "
                          "writes into an existing run directory).")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot create {purpose} {path}: {parent} is not a writable folder.")
    return path


def public_permissions(path: Path) -> None:
    """Give ``path`` (and everything under it) the permissions the umask allows.

    Temporary files and folders are created private (0600/0700); run directories are
    meant to be shared like any other output.
    """
    mask = os.umask(0)
    os.umask(mask)
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON atomically; non-finite floats become strings.

    Args:
        path: The file.
        data: JSON-able data, or a record model (dumped with its field names).

    Raises:
        OSError: The folder is not writable or the disk is full (the old file stays).
    """
    if isinstance(data, BaseModel):
        data = data.model_dump()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(_sanitize(data), fh, indent=2, default=_json_default, allow_nan=False)
            fh.write("\n")
        public_permissions(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """Read a JSON file.

    Raises:
        RunDirError: The file is missing or not valid JSON (names the file).
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist.") from None
    except (OSError, ValueError) as err:
        raise RunDirError(f"{path} is not valid JSON ({err}).") from None


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory. Construction touches nothing on disk.

    Attributes:
        root: Absolute path of the run directory.
    """

    root: Path

    @classmethod
    def create(cls, output_root: Path, *, name: str | None = None) -> RunDir:
        """Create a new run directory ``output_root/<YYYY-MM-DD_HH-MM-SS>`` (or ``name``).

        A name already taken gets a ``-1``, ``-2``... suffix; nothing is overwritten.
        """
        output_root = Path(output_root).absolute()
        create_dir(output_root, purpose="the outputs folder")
        base = name or datetime.now().strftime(RUN_NAME_FORMAT)
        candidate, i = output_root / base, 0
        while True:
            try:
                candidate.mkdir(exist_ok=False)
                break
            except FileExistsError:
                i += 1
                candidate = output_root / f"{base}-{i}"
            except OSError as err:
                raise RunDirError(f"cannot create the run directory {candidate}: "
                                  f"{err.strerror or err}.") from None
        rd = cls(candidate)
        for sub in (SERVER_DIR, CLIENTS_DIR, MODELS_DIR):
            (rd.root / sub).mkdir(exist_ok=True)
        return rd

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """Open an existing run directory.

        Raises:
            RunDirError: ``path`` is not a directory holding ``run.json``.
        """
        path = Path(path).absolute()
        if not path.is_dir():
            raise RunDirError(
                f"{path} is not a directory. Expected a zk0 run directory such as "
                "outputs/2025-01-31_12-00-00 (holding run.json and server/)."
            )
        if not (path / RUN_JSON).is_file() and not (path / SERVER_DIR).is_dir():
            raise RunDirError(
                f"{path} is not a zk0 run directory: it has neither {RUN_JSON} nor "
                f"{SERVER_DIR}/. Expected the folder a zk0 run wrote under outputs/."
            )
        return cls(path)

    # --- paths ----------------------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        """``run.json``: status, versions, seed, engine, timings."""
        return self.root / RUN_JSON

    @property
    def config_json(self) -> Path:
        """``config.json``: the resolved configuration."""
        return self.root / CONFIG_JSON

    @property
    def server_dir(self) -> Path:
        """``server/``."""
        return self.root / SERVER_DIR

    @property
    def clients_dir(self) -> Path:
        """``clients/``."""
        return self.root / CLIENTS_DIR

    @property
    def models_dir(self) -> Path:
        """``models/``."""
        return self.root / MODELS_DIR

    @property
    def report_dir(self) -> Path:
        """``report/`` (written by analyze-run)."""
        return self.root / REPORT_DIR

    @property
    def federated_metrics(self) -> Path:
        """``server/federated_metrics.json``: one row per round."""
        return self.server_dir / FEDERATED_METRICS_JSON

    @property
    def policy_loss_history(self) -> Path:
        """``server/policy_loss_history.json``: round -> server policy loss."""
        return self.server_dir / POLICY_LOSS_HISTORY_JSON

    @property
    def latest(self) -> Path:
        """``models/latest``: a text file naming the newest complete checkpoint."""
        return self.models_dir / LATEST

    @property
    def logs_dir(self) -> Path:
        """``logs/``: SuperLink (and local SuperNode) logs."""
        return self.root / C.LOGS_DIR

    @property
    def server_log(self) -> Path:
        """``server.log``: the ServerApp's log (zk0 and Flower)."""
        return self.root / C.SERVER_LOG

    @property
    def superlink_log(self) -> Path:
        """``logs/superlink.log``."""
        return self.logs_dir / C.SUPERLINK_LOG

    def supernode_log(self, index: int) -> Path:
        """``logs/supernode_<i>.log`` (local SuperNodes of ``zk0 train --local-nodes``)."""
        return self.logs_dir / C.supernode_log_name(index)

    def superseded(self, k: int) -> Path:
        """``superseded/resume-<k>/``: round files moved aside by the k-th resume."""
        return self.root / C.SUPERSEDED_DIR / C.resume_dir_name(k)

    def server_eval(self, server_round: int) -> Path:
        """``server/round_<N>_server_eval.json``."""
        return self.server_dir / C.server_eval_name(server_round)

    def client_round(self, client_id: str, server_round: int) -> Path:
        """``clients/<client_id>/round_<N>.json``."""
        return self.clients_dir / str(client_id) / C.client_round_name(server_round)

    def checkpoint(self, server_round: int) -> Path:
        """``models/checkpoint_round_<N>/``."""
        return self.models_dir / C.checkpoint_name(server_round)

    # --- reading ---------------------------------------------------------------------------
    def server_eval_rounds(self) -> list[int]:
        """Rounds that have a ``round_N_server_eval.json``, ascending."""
        rounds = (C.round_of_server_eval(p.name) for p in self.server_dir.glob(C.SERVER_EVAL_GLOB))
        return sorted(r for r in rounds if r is not None)

    def client_round_files(self) -> list[tuple[int, Path]]:
        """``(round, path)`` of every ``clients/<client_id>/round_<N>.json``."""
        if not self.clients_dir.is_dir():
            return []
        found = ((C.round_of_client_file(p.name), p)
                 for p in self.clients_dir.glob(C.CLIENT_ROUND_GLOB))
        return sorted((r, p) for r, p in found if r is not None)

    def clients_reported(self, server_round: int) -> int:
        """How many clients wrote ``round_<N>.json`` for ``server_round``."""
        if not self.clients_dir.is_dir():
            return 0
        return sum(1 for _ in self.clients_dir.glob(f"*/{C.client_round_name(server_round)}"))

    def checkpoint_rounds(self) -> list[int]:
        """Rounds that have a checkpoint directory (complete or not), ascending."""
        out = []
        for p in self.models_dir.glob(C.CHECKPOINT_GLOB):
            r = C.round_of_checkpoint(p.name)
            if p.is_dir() and r is not None:
                out.append(r)
        return sorted(out)

    def partial_checkpoints(self) -> list[Path]:
        """Temporary checkpoint directories a killed write left in ``models/``."""
        return sorted(self.models_dir.glob(C.PARTIAL_CHECKPOINT_GLOB))

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint named by ``models/latest``, or ``None`` if there is none."""
        if not self.latest.is_file():
            return None
        name = self.latest.read_text(encoding="utf-8").strip()
        path = self.models_dir / name
        return path if path.is_dir() else None

    def set_latest(self, checkpoint_dir: Path) -> None:
        """Point ``models/latest`` at ``checkpoint_dir`` (atomically)."""
        fd, tmp = tempfile.mkstemp(prefix=".latest.", dir=self.models_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(checkpoint_dir.name + "\n")
        public_permissions(Path(tmp))
        os.replace(tmp, self.latest)

    def run_record(self) -> RunRecord:
        """``run.json`` as a :class:`~zk0cli.core.contract.RunRecord` (defaults if absent).

        Raises:
            RunDirError: ``run.json`` is not valid JSON or a field has a wrong type.
        """
        if not self.run_json.is_file():
            return RunRecord()
        from pydantic import ValidationError

        try:
            return C.read_run_record(read_json(self.run_json))
        except ValidationError as err:
            raise RunDirError(f"{self.run_json} does not match the run record: {err}") from None

    def read_run(self) -> dict[str, Any]:
        """Contents of ``run.json`` as a plain dict (empty dict if absent)."""
        return self.run_record().to_json() if self.run_json.is_file() else {}

    def update_run(self, **fields: Any) -> RunRecord:
        """Set fields of ``run.json`` and write it atomically; returns the new record.

        Args:
            **fields: :class:`~zk0cli.core.contract.RunRecord` fields (validated).

        Raises:
            TypeError: A name is not a run-record field.
            pydantic.ValidationError: A value has the wrong type.
        """
        unknown = sorted(set(fields) - set(RunRecord.model_fields))
        if unknown:
            raise TypeError(f"not run.json fields: {', '.join(unknown)}")
        record = self.run_record()
        for name, value in fields.items():
            setattr(record, name, value)
        record.schema_version = C.SCHEMA_VERSION
        record.updated_at = time.time()
        write_json(self.run_json, record.to_json())
        return record


def read_metrics_rows(rundir: RunDir) -> list[MetricsRow]:
    """``server/federated_metrics.json`` as rows (empty when absent).

    Raises:
        RunDirError: The file is not valid JSON.
        pydantic.ValidationError: A row does not match :class:`MetricsRow`.
    """
    path = rundir.federated_metrics
    return [MetricsRow.model_validate(r) for r in read_json(path)] if path.is_file() else []


def read_policy_loss_history(rundir: RunDir) -> dict[int, float | None]:
    """``server/policy_loss_history.json`` as round -> loss (empty when absent)."""
    path = rundir.policy_loss_history
    raw = read_json(path) if path.is_file() else {}
    out: dict[int, float | None] = {}
    for key, value in (raw.items() if isinstance(raw, dict) else []):
        if str(key).isdigit():
            try:
                out[int(key)] = None if value is None else float(value)
            except (TypeError, ValueError):
                out[int(key)] = None  # not a number (e.g. an upstream {...} entry)
    return out


def read_server_round(rundir: RunDir, server_round: int) -> ServerRoundRecord:
    """``server/round_<N>_server_eval.json`` as a :class:`ServerRoundRecord`.

    Raises:
        RunDirError: The file is missing or not valid JSON.
        pydantic.ValidationError: It does not match the record.
    """
    return ServerRoundRecord.model_validate(read_json(rundir.server_eval(server_round)))
