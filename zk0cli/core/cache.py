"""The user cache directory of zk0 (tiny VLM, simulator meshes and datasets)."""

from __future__ import annotations

import os
from pathlib import Path

#: Overrides the cache directory when set.
CACHE_DIR_ENV = "ZK0_CACHE_DIR"


def cache_root() -> Path:
    """The user cache directory of zk0: ``$ZK0_CACHE_DIR``, else ``$XDG_CACHE_HOME/zk0``.

    Returns:
        The directory (not created here); ``~/.cache/zk0`` when neither variable is set.
    """
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "zk0"
