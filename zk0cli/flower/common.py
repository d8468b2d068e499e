"""What the ServerApp and ClientApp both read from a Flower ``Context``."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from zk0cli import constants as K
from zk0cli.core.config import RunConfig, validate_config

FAULT_ENV = "ZK0_FAULT_INJECTION"


@functools.lru_cache(maxsize=4)
def _load_config(path: str, mtime: float) -> RunConfig:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return validate_config(data, source=path)


def run_config_of(run_config: dict[str, Any]) -> tuple[RunConfig, Path]:
    """The validated zk0 configuration and run directory named in a Flower run config.

    Raises:
        ValueError: The run config lacks the zk0 keys (the app was not started by zk0).
    """
    cfg_path = str(run_config.get(K.RUN_CONFIG_PATH_KEY, ""))
    run_dir = str(run_config.get(K.RUN_DIR_KEY, ""))
    if not cfg_path or not run_dir:
        raise ValueError(
            f"run config must set {K.RUN_CONFIG_PATH_KEY!r} and {K.RUN_DIR_KEY!r} to absolute "
            "paths; start federations with `zk0 simulate` or `zk0 train`"
        )
    return _load_config(cfg_path, os.path.getmtime(cfg_path)), Path(run_dir)


def fault_for(client_id: str) -> str | None:
    """Fault to inject for a client (test harness only).

    ``ZK0_FAULT_INJECTION`` holds JSON ``{"<client_id>" or "*": "<mode>"}`` with mode
    ``raise``, ``nan``, ``shape`` or ``hang``. Unset in normal runs.
    """
    raw = os.environ.get(FAULT_ENV)
    if not raw:
        return None
    table = json.loads(raw)
    return table.get(client_id, table.get("*"))
