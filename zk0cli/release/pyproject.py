"""The ``[project] version`` of a pyproject.toml: read it, rewrite it in place.

pyproject.toml is the single source of truth for zk0's version; the package's
``__version__`` comes from the installed metadata, which is built from this file.
The file is read with :mod:`tomllib` and written by replacing the one
``version = "..."`` line of the ``[project]`` table, so comments and layout stay.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from packaging.version import Version

from zk0cli.errors import ReleaseError
from zk0cli.release.versioning import parse_version

PYPROJECT = "pyproject.toml"

_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_VERSION_LINE = re.compile(r"""^(\s*version\s*=\s*)(["'])([^"'\n]*)\2(.*)$""", re.DOTALL)


def _load(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ReleaseError(
            f"{path} does not exist. Point --repo at the root of a Python project whose "
            "pyproject.toml has a [project] version."
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ReleaseError(f"{path} is not valid TOML ({exc}). Fix it and commit.") from None


def read_project(path: Path) -> tuple[str, Version]:
    """The ``[project]`` name and version of a pyproject.toml.

    Args:
        path: The pyproject.toml file.

    Returns:
        ``(name, version)``, e.g. ``("zk0cli", Version("0.1.0"))``.

    Raises:
        ReleaseError: The file is missing or invalid, the version is missing,
            ``dynamic``, or not a bumpable PEP 440 version.
    """
    project = _load(path).get("project", {})
    name = str(project.get("name", ""))
    if "version" in project.get("dynamic", []) or "version" not in project:
        raise ReleaseError(
            f"{path} has no static [project] version (seen: dynamic = "
            f"{project.get('dynamic', [])!r}). zk0 release keeps the version in "
            'pyproject.toml: write version = "0.1.0" under [project] and commit.'
        )
    return name, parse_version(str(project["version"]), source=f"{path} [project] version")


def render_version_change(text: str, new: Version | str) -> str:
    """``text`` (a pyproject.toml) with the ``[project]`` version line set to ``new``.

    Only the value between the quotes changes; every other byte is kept.

    Args:
        text: The file's content.
        new: The version to write.

    Returns:
        The new content.

    Raises:
        ReleaseError: No single ``version = "..."`` line in the ``[project]`` table.
    """
    lines = text.splitlines(keepends=True)
    table: str | None = None
    hits: list[int] = []
    for i, line in enumerate(lines):
        header = _TABLE.match(line)
        if header:
            table = header.group(1)
        elif table == "project" and _VERSION_LINE.match(line):
            hits.append(i)
    if len(hits) != 1:
        raise ReleaseError(
            f"pyproject.toml has {len(hits)} 'version = \"...\"' lines in [project]; "
            'zk0 release rewrites exactly one. Write the version as version = "X.Y.Z" '
            "on its own line under [project]."
        )
    match = _VERSION_LINE.match(lines[hits[0]])
    assert match is not None  # matched above
    lines[hits[0]] = f"{match.group(1)}{match.group(2)}{new}{match.group(2)}{match.group(4)}"
    result = "".join(lines)
    check = tomllib.loads(result).get("project", {}).get("version")
    if check is None or Version(str(check)) != Version(str(new)):
        raise ReleaseError(  # pragma: no cover - guards the regex against odd layouts
            f"Rewriting pyproject.toml did not give version {new} (got {check!r}); "
            "edit the version by hand."
        )
    return result


def write_project_version(path: Path, new: Version | str) -> None:
    """Rewrite the ``[project]`` version of a pyproject.toml in place.

    Args:
        path: The pyproject.toml file.
        new: The version to write.

    Raises:
        ReleaseError: See :func:`render_version_change`.
    """
    raw = path.read_bytes().decode("utf-8")
    path.write_bytes(render_version_change(raw, new).encode("utf-8"))


def installed_version_for(
    project_root: Path, name: str, *, search_path: Sequence[str] | None = None
) -> Version | None:
    """The installed version of distribution ``name``, if it was installed from ``project_root``.

    Only installs that record their source directory (PEP 610 ``direct_url.json``:
    ``pip install -e .`` or ``pip install .``) are considered; a wheel from an index
    or an install from another checkout says nothing about this repository.

    Args:
        project_root: The repository root holding pyproject.toml.
        name: The distribution name from ``[project] name``.
        search_path: Directories to look for installed distributions in
            (default ``sys.path``).

    Returns:
        The installed version, or ``None`` when ``name`` is not installed from here.
    """
    if not name:
        return None
    root = project_root.resolve()
    dists = (
        metadata.distributions(name=name)
        if search_path is None
        else metadata.distributions(name=name, path=list(search_path))
    )
    for dist in dists:
        raw = dist.read_text("direct_url.json")
        if not raw:
            continue
        try:
            url = urlparse(json.loads(raw).get("url", ""))
        except (ValueError, AttributeError):
            continue
        if url.scheme == "file" and Path(unquote(url.path)).resolve() == root:
            return Version(dist.version)
    return None
