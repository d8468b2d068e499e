"""Next-version arithmetic on PEP 440 versions, with ``packaging.version``.

Releases are ``MAJOR.MINOR.PATCH`` (an epoch is kept; post-releases count as their
base release). Pre-releases are ``a``, ``b`` or ``rc`` followed by a number, e.g.
``0.2.0rc1``; ``.devN`` versions count as earlier than any ``a``.

Rules (the same as npm's ``semver.inc``, so they are easy to predict):

* From a final release ``X.Y.Z``: ``major`` → ``X+1.0.0``, ``minor`` → ``X.Y+1.0``,
  ``patch`` → ``X.Y.Z+1``.
* From a pre-release of ``X.Y.Z`` the part is already "spent" when the pre-release
  is heading for that kind of release: ``patch`` always finalises it (``0.2.1rc1`` →
  ``0.2.1``); ``minor`` finalises it when ``Z == 0`` (``0.2.0rc1`` → ``0.2.0``);
  ``major`` finalises it when ``Y == Z == 0`` (``1.0.0rc1`` → ``1.0.0``). Otherwise
  the part is bumped from ``X.Y.Z`` as for a final release (``0.2.1rc1`` + minor →
  ``0.3.0``).
* With a pre-release label ``L`` the target is computed as above, then: if the current
  version is already a pre-release of that same target, the pre-release moves on
  (``0.2.0rc1`` + minor, rc → ``0.2.0rc2``; ``0.2.0b3`` + minor, rc → ``0.2.0rc1``);
  otherwise the new version is ``target`` + ``L1`` (``0.1.0`` + minor, rc →
  ``0.2.0rc1``). Going back a phase (``rc`` → ``a``) is refused.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from packaging.version import InvalidVersion, Version

from zk0cli.errors import ReleaseError

PreLabel = Literal["a", "b", "rc"]
"""Accepted pre-release labels, in PEP 440 order."""

_PHASE_RANK: dict[str, int] = {"dev": 0, "a": 1, "b": 2, "rc": 3}


class Part(StrEnum):
    """Which component of ``MAJOR.MINOR.PATCH`` a release bumps."""

    PATCH = "patch"
    MINOR = "minor"
    MAJOR = "major"


def parse_version(text: str, *, source: str = "version") -> Version:
    """Parse a release version, refusing forms ``zk0 release`` cannot bump.

    Args:
        text: The version string, e.g. ``"0.2.0rc1"``.
        source: Where the string came from, named in the error message.

    Returns:
        The parsed version.

    Raises:
        ReleaseError: Not PEP 440, a local version (``+abc``), or more than three
            release components.
    """
    try:
        version = Version(text)
    except InvalidVersion:
        raise ReleaseError(
            f"{source} = {text!r} is not a PEP 440 version. Write a version such as "
            "'0.1.0' or '0.2.0rc1' there, commit, and run zk0 release again."
        ) from None
    if version.local is not None or len(version.release) > 3:
        raise ReleaseError(
            f"{source} = {text!r} cannot be bumped: zk0 release handles MAJOR.MINOR.PATCH "
            "with an optional aN/bN/rcN/.devN suffix, without a local '+...' part. "
            "Set a version of that form, commit, and run zk0 release again."
        )
    return version


def _base(version: Version) -> tuple[int, int, int]:
    release = (*version.release, 0, 0)[:3]
    return release[0], release[1], release[2]


def _phase(version: Version) -> tuple[int, int] | None:
    """(phase rank, number) of a pre-release, or None for a final release."""
    if version.pre is not None:
        return _PHASE_RANK[version.pre[0]], version.pre[1]
    if version.dev is not None:
        return _PHASE_RANK["dev"], version.dev
    return None


def _format(epoch: int, release: tuple[int, int, int], pre: tuple[str, int] | None) -> Version:
    text = f"{epoch}!" if epoch else ""
    text += ".".join(str(n) for n in release)
    if pre is not None:
        text += f"{pre[0]}{pre[1]}"
    return Version(text)


def bump_version(
    current: Version | str, part: Part | str, *, pre: PreLabel | None = None
) -> Version:
    """The next version after ``current`` (see the module docstring for the rules).

    Args:
        current: The version now in pyproject.toml.
        part: ``"patch"``, ``"minor"`` or ``"major"``.
        pre: Make the new version a pre-release with this label (``"a"``, ``"b"`` or
            ``"rc"``); ``None`` for a final release.

    Returns:
        The new version, e.g. ``Version("0.2.0rc1")``.

    Raises:
        ReleaseError: ``current`` cannot be bumped, ``part`` or ``pre`` is unknown, or
            the pre-release label would go back a phase.
    """
    version = current if isinstance(current, Version) else parse_version(current)
    try:
        part = Part(part)
    except ValueError:
        raise ReleaseError(
            f"Unknown release part {part!r}: accepted {', '.join(p.value for p in Part)}."
        ) from None
    if pre is not None and (pre not in _PHASE_RANK or pre == "dev"):
        raise ReleaseError(f"Unknown pre-release label {pre!r}: accepted a, b, rc.")
    major, minor, patch = _base(version)
    phase = _phase(version)
    spent = phase is not None and (
        part is Part.PATCH
        or (part is Part.MINOR and patch == 0)
        or (part is Part.MAJOR and minor == 0 and patch == 0)
    )
    if spent:
        target = (major, minor, patch)
    elif part is Part.MAJOR:
        target = (major + 1, 0, 0)
    elif part is Part.MINOR:
        target = (major, minor + 1, 0)
    else:
        target = (major, minor, patch + 1)
    if pre is None:
        return _format(version.epoch, target, None)
    if not spent or phase is None:
        return _format(version.epoch, target, (pre, 1))
    rank, number = phase
    if _PHASE_RANK[pre] < rank:
        raise ReleaseError(
            f"Cannot go from {version} to an earlier pre-release phase {pre!r}: use "
            f"--pre {next(k for k, v in _PHASE_RANK.items() if v == rank)} (or a later "
            "phase), or leave out --pre to release the final version."
        )
    if _PHASE_RANK[pre] == rank:
        # 0.2.0rc1.dev3 comes before 0.2.0rc1, so its next rc is rc1 itself.
        step = 0 if version.pre is not None and version.dev is not None else 1
        return _format(version.epoch, target, (pre, number + step))
    return _format(version.epoch, target, (pre, 1))
