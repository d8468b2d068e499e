"""What the ServerApp reads from a Flower ``Context`` (on the coordinator).

A ClientApp never calls this: the coordinator's files are not on the sites; the
sites get the train instruction (:mod:`zk0cli.core.contract.instruction`) instead.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from zk0cli import constants as K
from zk0cli.core.config import RunConfig, validate_config


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
