"""The few git operations a release needs, through ``subprocess`` and the ``git`` CLI.

Commands are argument lists (never a shell). Read-only queries are methods of
:class:`Git`; the commands that change the repository are built as lists by the
release plan, printed by ``--dry-run`` and run by :meth:`Git.run` as they are.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from zk0cli.errors import GitError, ReleaseError
from zk0cli.log import logger
from zk0cli.release.changelog import Commit, parse_commit

TAG_PREFIX = "v"
_RECORD = "\x1e"
_FIELD = "\x1f"


def tag_name(version: Version | str) -> str:
    """The tag of a version: ``"v" + version`` (``v0.2.0rc1``)."""
    return f"{TAG_PREFIX}{version}"


@dataclass(frozen=True)
class Git:
    """A git work tree, queried and changed through the ``git`` executable.

    Attributes:
        repo: A directory inside the work tree; every command runs with ``git -C repo``.
    """

    repo: Path

    def run(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``git -C repo ARGS`` and capture its output.

        Args:
            args: The git arguments, e.g. ``["status", "--porcelain"]``.
            check: Raise :class:`GitError` on a non-zero exit status.

        Returns:
            The finished process (text stdout/stderr).

        Raises:
            GitError: git is not installed, or it failed and ``check`` is set.
        """
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        logger.debug("git %s", " ".join(args))
        try:
            proc = subprocess.run(
                ["git", "-C", str(self.repo), *args],
                capture_output=True, text=True, env=env, check=False,
            )
        except FileNotFoundError:
            raise GitError("git is not installed or not on PATH; install git.") from None
        if check and proc.returncode != 0:
            raise GitError(
                f"'git {' '.join(args)}' failed in {self.repo} (exit {proc.returncode}): "
                f"{proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc

    def _out(self, args: list[str]) -> str:
        return self.run(args).stdout.strip()

    def toplevel(self) -> Path:
        """The root of the work tree.

        Raises:
            ReleaseError: ``repo`` is not inside a git work tree.
        """
        if not self.repo.is_dir():
            raise ReleaseError(
                f"--repo {self.repo} is not a directory; point it at a git repository."
            )
        proc = self.run(["rev-parse", "--show-toplevel"], check=False)
        if proc.returncode != 0:
            raise ReleaseError(
                f"{self.repo} is not a git repository ({proc.stderr.strip()}). Run zk0 release "
                "from the project's repository, or pass --repo PATH."
            )
        return Path(proc.stdout.strip())

    def head_commit(self) -> str | None:
        """The commit hash of HEAD, or ``None`` on an unborn branch (no commits yet)."""
        proc = self.run(["rev-parse", "--verify", "-q", "HEAD"], check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def current_branch(self) -> str | None:
        """The checked-out branch, or ``None`` for a detached HEAD."""
        proc = self.run(["symbolic-ref", "-q", "--short", "HEAD"], check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def status(self) -> list[str]:
        """``git status --porcelain`` lines, untracked files included (empty: clean)."""
        out = self.run(["status", "--porcelain", "--untracked-files=normal"]).stdout
        return [line for line in out.splitlines() if line]

    def tag_exists(self, name: str) -> bool:
        """Whether the tag ``name`` exists."""
        proc = self.run(["rev-parse", "-q", "--verify", f"refs/tags/{name}"], check=False)
        return proc.returncode == 0

    def version_tags(self) -> dict[str, Version]:
        """Every tag ``v<PEP 440 version>``, tag name → version (other tags are ignored)."""
        tags: dict[str, Version] = {}
        for name in self._out(["tag", "--list", f"{TAG_PREFIX}*"]).splitlines():
            try:
                tags[name] = Version(name[len(TAG_PREFIX):])
            except InvalidVersion:
                continue
        return tags

    def previous_tag(self) -> str | None:
        """The nearest version tag reachable from HEAD, or ``None`` when there is none."""
        proc = self.run(
            ["describe", "--tags", "--abbrev=0", "--match", f"{TAG_PREFIX}[0-9]*", "HEAD"],
            check=False,
        )
        return proc.stdout.strip() if proc.returncode == 0 else None

    def commits_since(self, tag: str | None) -> list[Commit]:
        """Non-merge commits after ``tag`` up to HEAD (all commits when ``tag`` is None).

        Returns:
            Parsed commits, newest first.
        """
        rev = f"{tag}..HEAD" if tag else "HEAD"
        out = self.run(["log", "--no-merges", f"--format=%H{_FIELD}%B{_RECORD}", rev]).stdout
        commits = []
        for record in out.split(_RECORD):
            sha, sep, message = record.strip("\n").partition(_FIELD)
            if sep:
                commits.append(parse_commit(sha.strip(), message))
        return commits

    def remote_for(self, branch: str) -> str | None:
        """The branch's configured remote (``branch.<name>.remote``), else ``origin``.

        Returns:
            The remote name, or ``None`` when that remote does not exist.
        """
        proc = self.run(["config", "--get", f"branch.{branch}.remote"], check=False)
        remote = proc.stdout.strip() or "origin"
        exists = self.run(["remote", "get-url", remote], check=False).returncode == 0
        return remote if exists else None
