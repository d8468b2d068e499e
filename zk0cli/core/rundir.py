"""The run directory: the contract between phases (see ``docs/design.md``).

This module is the only place that builds run-directory paths::

    outputs/<YYYY-MM-DD_HH-MM-SS>/
      run.json  config.json
      server/round_<N>_server_eval.json  server/federated_metrics.json
      server/policy_loss_history.json
      clients/<client_id>/round_<N>.json
      models/checkpoint_round_<N>/  models/latest
      report/

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
from typing import Any, Literal

from zk0cli.errors import RunDirError

RunStatus = Literal["running", "completed", "failed", "interrupted"]
RUN_STATUSES: tuple[str, ...] = ("running", "completed", "failed", "interrupted")

RUN_JSON = "run.json"
CONFIG_JSON = "config.json"
SERVER_DIR = "server"
CLIENTS_DIR = "clients"
MODELS_DIR = "models"
REPORT_DIR = "report"
FEDERATED_METRICS_JSON = "federated_metrics.json"
POLICY_LOSS_HISTORY_JSON = "policy_loss_history.json"
LATEST = "latest"
CHECKPOINT_PREFIX = "checkpoint_round_"
RUN_NAME_FORMAT = "%Y-%m-%d_%H-%M-%S"


def _json_default(obj: Any) -> Any:
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

    Raises:
        OSError: The folder is not writable or the disk is full (the old file stays).
    """
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

    def server_eval(self, server_round: int) -> Path:
        """``server/round_<N>_server_eval.json``."""
        return self.server_dir / f"round_{server_round}_server_eval.json"

    def client_round(self, client_id: str, server_round: int) -> Path:
        """``clients/<client_id>/round_<N>.json``."""
        return self.clients_dir / str(client_id) / f"round_{server_round}.json"

    def checkpoint(self, server_round: int) -> Path:
        """``models/checkpoint_round_<N>/``."""
        return self.models_dir / f"{CHECKPOINT_PREFIX}{server_round}"

    # --- reading ---------------------------------------------------------------------------
    def server_eval_rounds(self) -> list[int]:
        """Rounds that have a ``round_N_server_eval.json``, ascending."""
        rounds = []
        for p in self.server_dir.glob("round_*_server_eval.json"):
            middle = p.name.removeprefix("round_").removesuffix("_server_eval.json")
            if middle.isdigit():
                rounds.append(int(middle))
        return sorted(rounds)

    def checkpoint_rounds(self) -> list[int]:
        """Rounds that have a checkpoint directory (complete or not), ascending."""
        out = []
        for p in self.models_dir.glob(f"{CHECKPOINT_PREFIX}*"):
            tail = p.name.removeprefix(CHECKPOINT_PREFIX)
            if p.is_dir() and tail.isdigit():
                out.append(int(tail))
        return sorted(out)

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

    def read_run(self) -> dict[str, Any]:
        """Contents of ``run.json`` (empty dict if absent)."""
        return read_json(self.run_json) if self.run_json.is_file() else {}

    def update_run(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into ``run.json`` and write it atomically; returns the result."""
        data = self.read_run()
        data.update(fields)
        data["updated_at"] = time.time()
        write_json(self.run_json, data)
        return data
