"""Conventional-commit parsing and the CHANGELOG.md section of a release.

A commit subject ``type(scope)!: description`` (https://www.conventionalcommits.org)
is grouped by type: ``feat`` → Features, ``fix`` → Fixes, ``docs`` → Documentation;
a ``!`` after the type/scope or a ``BREAKING CHANGE:`` / ``BREAKING-CHANGE:`` footer
→ Breaking changes (only there); everything else, including subjects that are not
conventional, → Other. Earlier release commits (``chore(release): ...``) are left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

CHANGELOG = "CHANGELOG.md"
CHANGELOG_TITLE = "# Changelog\n"
RELEASE_COMMIT_PREFIX = "chore(release):"

BREAKING = "Breaking changes"
FEATURES = "Features"
FIXES = "Fixes"
DOCS = "Documentation"
OTHER = "Other"
GROUP_ORDER: tuple[str, ...] = (BREAKING, FEATURES, FIXES, DOCS, OTHER)
_GROUP_OF_TYPE = {"feat": FEATURES, "fix": FIXES, "docs": DOCS}
# The Conventional Commits types (with the Angular convention's extras); a subject such as
# "README: fix a link" is not conventional and keeps its prefix in the changelog.
CONVENTIONAL_TYPES: frozenset[str] = frozenset({
    "feat", "fix", "docs", "style", "refactor", "perf", "test", "build", "ci", "chore",
    "revert",
})

_SUBJECT = re.compile(
    r"^(?P<type>[A-Za-z][\w-]*)(?:\((?P<scope>[^()]*)\))?(?P<bang>!)?: +(?P<desc>\S.*)$"
)
_BREAKING_FOOTER = re.compile(r"^BREAKING[ -]CHANGE: *(?P<text>.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Commit:
    """One commit message, parsed.

    Attributes:
        sha: The full commit hash.
        subject: The first line of the message.
        type: The conventional type in lower case (``"feat"``), or ``None`` when the
            subject is not conventional.
        scope: The scope in parentheses, or ``None``.
        description: The subject after ``type(scope): ``, or the whole subject.
        breaking: ``True`` for a ``!`` or a ``BREAKING CHANGE`` footer.
        breaking_note: The footer's text (may be empty).
    """

    sha: str
    subject: str
    type: str | None
    scope: str | None
    description: str
    breaking: bool
    breaking_note: str

    @property
    def group(self) -> str:
        """The changelog group this commit belongs to (one of :data:`GROUP_ORDER`)."""
        if self.breaking:
            return BREAKING
        return _GROUP_OF_TYPE.get(self.type or "", OTHER)


def parse_commit(sha: str, message: str) -> Commit:
    """Parse one commit message.

    Args:
        sha: The commit hash.
        message: The full message (subject, body, footers).

    Returns:
        The parsed commit.
    """
    subject, _, body = message.strip().partition("\n")
    subject = subject.strip()
    match = _SUBJECT.match(subject)
    footer = _BREAKING_FOOTER.search(body)
    note = footer.group("text").strip() if footer else ""
    if match is None or match.group("type").lower() not in CONVENTIONAL_TYPES:
        return Commit(sha, subject, None, None, subject, footer is not None, note)
    return Commit(
        sha=sha,
        subject=subject,
        type=match.group("type").lower(),
        scope=(match.group("scope") or "").strip() or None,
        description=match.group("desc").strip(),
        breaking=bool(match.group("bang")) or footer is not None,
        breaking_note=note,
    )


def is_release_commit(commit: Commit) -> bool:
    """Whether ``commit`` is an earlier ``chore(release): ...`` commit."""
    return commit.subject.startswith(RELEASE_COMMIT_PREFIX)


def group_commits(commits: list[Commit]) -> dict[str, list[Commit]]:
    """Group commits by changelog section, keeping their order; release commits dropped.

    Args:
        commits: Commits, newest first (as ``git log`` lists them).

    Returns:
        Non-empty groups only, keyed by group name in :data:`GROUP_ORDER` order.
    """
    groups: dict[str, list[Commit]] = {name: [] for name in GROUP_ORDER}
    for commit in commits:
        if not is_release_commit(commit):
            groups[commit.group].append(commit)
    return {name: items for name, items in groups.items() if items}


def _entry(commit: Commit) -> str:
    scope = f"**{commit.scope}:** " if commit.scope else ""
    text = f"- {scope}{commit.description} ({commit.sha[:7]})"
    if commit.breaking_note and commit.breaking_note != commit.description:
        text += f"\n  {commit.breaking_note}"
    return text + "\n"


def render_section(version: str, commits: list[Commit], *, today: date | None = None) -> str:
    """The Markdown section for one release.

    Args:
        version: The new version, e.g. ``"0.2.0"`` (the heading shows ``v0.2.0``).
        commits: The commits since the previous release, newest first.
        today: The release date (default: today, local time).

    Returns:
        ``## vX.Y.Z (YYYY-MM-DD)`` followed by one ``###`` sub-section per non-empty
        group, ending with one blank line.
    """
    day = (today or date.today()).isoformat()
    parts = [f"## v{version} ({day})\n\n"]
    groups = group_commits(commits)
    if not groups:
        parts.append("No changes since the previous release.\n\n")
    for name, items in groups.items():
        parts.append(f"### {name}\n\n")
        parts.extend(_entry(c) for c in items)
        parts.append("\n")
    return "".join(parts)


def prepend_section(existing: str | None, section: str) -> str:
    """CHANGELOG.md content with ``section`` placed above the previous releases.

    The section goes before the first ``## `` heading, so a title and an
    introduction at the top stay on top; a changelog without release headings gets
    the section at its end; a missing one is created with a ``# Changelog`` title.

    Args:
        existing: The current content, or ``None`` when there is no file.
        section: The text of :func:`render_section`.

    Returns:
        The new content.
    """
    if existing is None or not existing.strip():
        return f"{CHANGELOG_TITLE}\n{section}"
    lines = existing.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("## "):
            return "".join(lines[:i]) + section + "".join(lines[i:])
    head = existing if existing.endswith("\n") else existing + "\n"
    if not head.endswith("\n\n"):
        head += "\n"
    return head + section


def read_changelog(path: Path) -> str | None:
    """The content of a changelog file, or ``None`` when it does not exist."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
