"""Weights & Biases runs, offline-first, continued on ``--resume``.

``tracking.wandb.mode = "online"`` needs credentials (``WANDB_API_KEY`` or a netrc
entry from ``wandb login``) and a reachable W&B server; without either the run is
logged offline under ``outputs/<run>/wandb/`` and ``run.json`` keeps the
``wandb sync`` command that uploads it later. The W&B run id is kept in ``run.json``
(``tracking.wandb.id``) so that a resumed zk0 run continues the same W&B run. The API
key is only ever read by wandb itself: zk0 checks that one exists, never logs,
prints or stores it.
"""

from __future__ import annotations

import netrc
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from zk0cli import constants as K
from zk0cli.core import contract as C
from zk0cli.core.tracking.base import require_module, round_scalars
from zk0cli.log import logger

WANDB_FIELD = "tracking.wandb.mode"
DEFAULT_BASE_URL = "https://api.wandb.ai"
CONNECT_TIMEOUT_S = 3.0


def _host() -> tuple[str, int]:
    url = urlparse(os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL)
    return url.hostname or "api.wandb.ai", url.port or (443 if url.scheme != "http" else 80)


def has_credentials() -> bool:
    """Whether wandb would find an API key (``WANDB_API_KEY`` or a netrc entry).

    Only the presence is checked; the key is not read into any zk0 value.
    """
    if os.environ.get("WANDB_API_KEY"):
        return True
    host, _ = _host()
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def server_reachable(timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the W&B server (``WANDB_BASE_URL``) opens in time."""
    host, port = _host()
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


Mode = Literal["online", "offline"]


def effective_mode(requested: str) -> tuple[Mode, str | None]:
    """The mode a run can use, and why it differs from ``requested``.

    Args:
        requested: ``online`` or ``offline``.

    Returns:
        ``(mode, reason)``: ``online`` only with credentials and a reachable server,
        otherwise ``offline`` with the reason (``None`` when nothing changed).
    """
    if requested != "online":
        return "offline", None
    if not has_credentials():
        return "offline", "no W&B credentials (set WANDB_API_KEY or run `wandb login`)"
    if not server_reachable():
        return "offline", f"the W&B server {_host()[0]} cannot be reached"
    return "online", None


class WandbTracker:
    """Logs each round's scalars to a W&B run (step = server round).

    Args:
        run_dir: The run directory; W&B's files go to ``<run_dir>/wandb/``.
        mode: ``online`` or ``offline`` (see :func:`effective_mode`).
        project: W&B project.
        entity: W&B entity (user or team); ``None`` is the account's default.
        tags: Run tags.
        config: The run's resolved configuration (``config.json``), logged as the W&B
            run config.

    Raises:
        MissingDependencyError: ``wandb`` is not installed.
    """

    name = "wandb"

    def __init__(self, run_dir: Path, *, mode: str, project: str, entity: str | None,
                 tags: Sequence[str], config: Mapping[str, Any]) -> None:
        require_module("wandb", tracker="Weights & Biases", field=WANDB_FIELD)
        self.run_dir = Path(run_dir)
        self.requested_mode = mode
        self.mode: Mode = "offline"
        self.project, self.entity, self.tags = project, entity, list(tags)
        self.config = dict(config)
        self._run: Any = None

    def start(self, run_record: Mapping[str, Any]) -> Mapping[str, Any]:
        """Start (or, on a resume, continue) the W&B run.

        Returns:
            ``{"id", "mode", "project", "entity", "url"?}`` for ``run.json``.
        """
        import wandb

        previous = (run_record.get(K.RUN_TRACKING_KEY) or {}).get(self.name) or {}
        run_id = previous.get(K.WANDB_ID)
        self.mode, reason = effective_mode(self.requested_mode)
        if reason:
            logger.warning("W&B: %s; logging offline instead", reason)
        wdir = self.run_dir / C.WANDB_DIR
        wdir.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(console="off", silent=True, disable_git=True,
                                  save_code=False, x_disable_stats=True,
                                  x_disable_machine_info=True)
        self._run = wandb.init(
            project=self.project, entity=self.entity, tags=self.tags or None,
            name=self.run_dir.name, id=run_id, resume="allow" if run_id else None,
            mode=self.mode, dir=str(self.run_dir), config=self.config, settings=settings,
        )
        info: dict[str, Any] = {K.WANDB_ID: self._run.id, K.WANDB_MODE: self.mode,
                                "project": self.project, "entity": self.entity}
        if self.mode == "online":
            info[K.WANDB_URL] = self._run.url
        logger.info("W&B run %s (%s)", self._run.id, self.mode)
        return info

    def log_round(self, server_round: int, round_record: Mapping[str, Any],
                  client_records: Sequence[Mapping[str, Any]]) -> None:
        """Log the round's scalars at step ``server_round``."""
        if self._run is None:
            return
        scalars = round_scalars(round_record, client_records)
        if scalars:
            self._run.log(scalars, step=server_round)

    def finish(self, status: str) -> Mapping[str, Any]:
        """Finish the W&B run; for offline runs, return and log the ``wandb sync`` command."""
        if self._run is None:
            return {}
        run, self._run = self._run, None
        sync_dir = run.settings.sync_dir
        run.finish(exit_code=0 if status == "completed" else 1)
        if self.mode == "offline":
            command = f"wandb sync {sync_dir}"
            logger.info("W&B run logged offline; upload it with: %s", command)
            return {K.WANDB_SYNC_COMMAND: command}
        return {}
