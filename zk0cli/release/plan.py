"""``zk0 release`` as a library: validate the request, plan, then act.

:func:`plan_release` checks everything and changes nothing; :func:`perform_release`
runs the test command, writes pyproject.toml and CHANGELOG.md, commits, tags and
(optionally) pushes, exactly as the plan says. ``--dry-run`` stops after the plan.

Refusals (:class:`~zk0cli.errors.ReleaseError`, exit 2), checked in this order: not
a git repository, no commits, detached HEAD, dirty work tree (untracked files
count), missing/dynamic/unbumpable version, the new tag exists, disagreeing
versions (see :func:`check_versions`), ``--push`` without the remote.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from zk0cli.errors import GitError, ReleaseError, ReleaseTestsFailedError, field_problems
from zk0cli.log import logger
from zk0cli.release.changelog import CHANGELOG, prepend_section, read_changelog, render_section
from zk0cli.release.git import Git, tag_name
from zk0cli.release.pyproject import (
    PYPROJECT,
    installed_version_for,
    read_project,
    write_project_version,
)
from zk0cli.release.versioning import Part, PreLabel, bump_version

DEFAULT_TEST_COMMAND = "make test"
RELEASE_COMMIT = "chore(release): {tag}"


class ReleaseRequest(BaseModel):
    """What ``zk0 release`` was asked to do (validated before anything happens).

    Attributes:
        part: ``patch``, ``minor`` or ``major``.
        pre: Pre-release label (``a``, ``b``, ``rc``), or ``None`` for a final release.
        dry_run: Print the plan and change nothing.
        push: Push the release commit and tag to the branch's remote.
        skip_tests: Do not run ``test_command`` first.
        test_command: Run (without a shell, split like a POSIX shell would) in the
            repository root before releasing; a non-zero exit aborts the release.
        repo: A path inside the git repository to release.
        remote: Remote to push to (default: the branch's remote, else ``origin``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    part: Part
    pre: PreLabel | None = None
    dry_run: bool = False
    push: bool = False
    skip_tests: bool = False
    test_command: str = Field(default=DEFAULT_TEST_COMMAND, min_length=1)
    repo: Path = Path(".")
    remote: str | None = None

    @field_validator("test_command")
    @classmethod
    def _splittable(cls, value: str) -> str:
        try:
            if not shlex.split(value):
                raise ValueError("it names no program")
        except ValueError as exc:
            raise ValueError(f"cannot be split into a program and arguments ({exc})") from None
        return value


_ACCEPTED = {
    "part": "one of patch, minor, major",
    "pre": "one of a, b, rc",
    "test_command": "a command line such as 'make test' or 'pytest -q'",
}


def validate_request(**fields: object) -> ReleaseRequest:
    """Build a :class:`ReleaseRequest`, turning validation errors into :class:`ReleaseError`.

    Args:
        **fields: The request's fields as given on the command line.

    Returns:
        The validated request.

    Raises:
        ReleaseError: A field is invalid (e.g. an unknown part); exit code 2.
    """
    try:
        return ReleaseRequest.model_validate(fields)
    except ValidationError as err:
        problems = [replace(p, rule=f"accepted {_ACCEPTED.get(p.path, p.rule)}")
                    for p in field_problems(err, data=fields, model=ReleaseRequest)]
        raise ReleaseError(
            "Invalid zk0 release request: " + "; ".join(map(str, problems))
            + ". Example: zk0 release minor --pre rc --dry-run."
        ) from None


@dataclass(frozen=True)
class ReleasePlan:
    """Everything a release will do, computed without changing anything.

    Attributes:
        root: The repository root (pyproject.toml and CHANGELOG.md live there).
        branch: The checked-out branch.
        name: The ``[project] name``.
        current: The version in pyproject.toml now.
        new: The version being released.
        tag: The annotated tag to create, ``v<new>``.
        previous_tag: The nearest earlier version tag (changelog starts after it).
        section: The CHANGELOG.md section to prepend.
        test_command: The test command's argv, or ``None`` with ``--skip-tests``.
        git_commands: The git argument lists run after writing the files, in order.
        push_command: The ``git push`` arguments, or ``None`` without ``--push``.
        installed: The installed metadata version when installed from this repository.
    """

    root: Path
    branch: str
    name: str
    current: Version
    new: Version
    tag: str
    previous_tag: str | None
    section: str
    test_command: list[str] | None
    git_commands: list[list[str]] = field(default_factory=list)
    push_command: list[str] | None = None
    installed: Version | None = None

    def steps(self) -> list[str]:
        """The actions of the release in order, as a reader would run them."""
        steps = [shlex.join(self.test_command)] if self.test_command else []
        steps.append(f'(edit) {PYPROJECT}: version = "{self.current}" -> "{self.new}"')
        steps.append(f"(edit) {CHANGELOG}: prepend the section for {self.tag}")
        commands = self.git_commands + ([self.push_command] if self.push_command else [])
        steps.extend(shlex.join(["git", *c]) for c in commands)
        return steps


def check_versions(
    current: Version, tags: dict[str, Version], installed: Version | None
) -> None:
    """Refuse when the version sources disagree.

    pyproject.toml is the source of truth. It disagrees when (1) a ``v<version>`` tag
    is newer than it (a release was tagged but the file not bumped, or the file went
    back), or (2) the zk0 distribution installed from this same repository (PEP 610
    ``direct_url.json``) reports another version, so ``zk0 --version`` would lie.

    Args:
        current: The pyproject.toml version.
        tags: Version tags, name → version.
        installed: The installed metadata version, or ``None`` when not installed from
            this repository.

    Raises:
        ReleaseError: The versions disagree; the message says how to reconcile them.
    """
    if tags:
        latest_name, latest = max(tags.items(), key=lambda kv: kv[1])
        if latest > current:
            raise ReleaseError(
                f"Versions disagree: tag {latest_name} is newer than pyproject.toml's version "
                f"{current}. Set version = \"{latest}\" in pyproject.toml and commit (or delete "
                f"the stray tag with git tag -d {latest_name}), then run zk0 release again."
            )
    if installed is not None and installed != current:
        raise ReleaseError(
            f"Versions disagree: the package installed from this repository reports {installed} "
            f"but pyproject.toml says {current}. Reinstall it (pip install -e .) so that both "
            "agree, then run zk0 release again."
        )


def plan_release(request: ReleaseRequest, *, today: date | None = None) -> ReleasePlan:
    """Check the repository and compute the release; nothing is changed.

    Args:
        request: The validated request.
        today: The date in the changelog heading (default: today).

    Returns:
        The plan :func:`perform_release` carries out.

    Raises:
        ReleaseError: A refusal (see the module docstring); exit code 2.
    """
    root = Git(request.repo).toplevel()
    git = Git(root)
    if git.head_commit() is None:
        raise ReleaseError(f"{root} has no commits yet. Commit the project first.")
    branch = git.current_branch()
    if branch is None:
        raise ReleaseError(
            f"HEAD is detached in {root}. Check out the branch to release from "
            "(git switch main) and run zk0 release again."
        )
    dirty = git.status()
    if dirty:
        shown = "; ".join(dirty[:5]) + ("; ..." if len(dirty) > 5 else "")
        raise ReleaseError(
            f"The work tree of {root} is not clean ({len(dirty)} change"
            f"{'s' if len(dirty) != 1 else ''}: {shown}). Commit or stash them "
            "(git stash -u) and run zk0 release again."
        )
    name, current = read_project(root / PYPROJECT)
    new = bump_version(current, request.part, pre=request.pre)
    tag = tag_name(new)
    if git.tag_exists(tag):
        raise ReleaseError(
            f"Tag {tag} already exists, so {new} was released already. Make sure pyproject.toml "
            f"holds the latest released version (at least {new}) and run zk0 release again, "
            "or delete the tag (git tag -d) if it was a mistake."
        )
    installed = installed_version_for(root, name)
    check_versions(current, git.version_tags(), installed)
    push_command = None
    if request.push:
        remote = request.remote or git.remote_for(branch)
        if remote is None or git.run(["remote", "get-url", remote], check=False).returncode:
            raise ReleaseError(
                f"--push: remote {(request.remote or 'origin')!r} does not exist in {root}. "
                "Add it (git remote add origin URL), name another with --remote, or leave "
                "out --push."
            )
        push_command = ["push", "--atomic", remote, f"refs/heads/{branch}", f"refs/tags/{tag}"]
    previous = git.previous_tag()
    section = render_section(str(new), git.commits_since(previous), today=today)
    message = RELEASE_COMMIT.format(tag=tag)
    return ReleasePlan(
        root=root,
        branch=branch,
        name=name,
        current=current,
        new=new,
        tag=tag,
        previous_tag=previous,
        section=section,
        test_command=None if request.skip_tests else shlex.split(request.test_command),
        git_commands=[
            ["add", "--", PYPROJECT, CHANGELOG],
            ["commit", "-q", "-m", message],
            ["tag", "-a", tag, "-m", f"Release {tag}"],
        ],
        push_command=push_command,
        installed=installed,
    )


def run_test_command(plan: ReleasePlan) -> None:
    """Run the plan's test command in the repository root; output goes to the terminal.

    Raises:
        ReleaseError: The program does not exist (exit 2).
        ReleaseTestsFailedError: It exited non-zero (exit 1); nothing was changed.
    """
    if not plan.test_command:
        return
    shown = shlex.join(plan.test_command)
    logger.info("running the tests: %s", shown)
    try:
        code = subprocess.run(plan.test_command, cwd=plan.root, check=False).returncode
    except (FileNotFoundError, PermissionError) as exc:
        raise ReleaseError(
            f"Test command {shown!r} cannot start ({exc}). Pass --test-command with a program "
            "that exists, or --skip-tests."
        ) from None
    if code != 0:
        raise ReleaseTestsFailedError(
            f"The test command {shown!r} failed (exit {code}) in {plan.root}; nothing was "
            "changed. Fix the tests and run zk0 release again, or pass --skip-tests."
        )
    # A test run must not leave the release commit picking up stray files.
    left = Git(plan.root).status()
    if left:
        raise ReleaseError(
            f"The test command {shown!r} changed the work tree ({'; '.join(left[:5])}); "
            "nothing was released. Ignore those files in .gitignore or clean them up."
        )


def _write_files(plan: ReleasePlan) -> None:
    changelog = plan.root / CHANGELOG
    write_project_version(plan.root / PYPROJECT, plan.new)
    content = prepend_section(read_changelog(changelog), plan.section)
    changelog.write_bytes(content.encode("utf-8"))


def _roll_back(plan: ReleasePlan, pyproject: bytes, changelog: bytes | None) -> None:
    (plan.root / PYPROJECT).write_bytes(pyproject)
    if changelog is None:
        (plan.root / CHANGELOG).unlink(missing_ok=True)
    else:
        (plan.root / CHANGELOG).write_bytes(changelog)
    Git(plan.root).run(["reset", "-q", "--", PYPROJECT, CHANGELOG], check=False)


def perform_release(plan: ReleasePlan) -> None:
    """Carry out a plan: test, write, commit, tag, push.

    If writing or committing fails, pyproject.toml and CHANGELOG.md are put back as
    they were. A failed tag or push leaves the commit (and tag) in place and the
    error says how to finish by hand.

    Args:
        plan: From :func:`plan_release` on a repository that has not changed since.

    Raises:
        ReleaseError: The test command cannot start, or it left files behind.
        ReleaseTestsFailedError: The tests failed.
        GitError: A git command failed.
    """
    run_test_command(plan)
    git = Git(plan.root)
    saved_pyproject = (plan.root / PYPROJECT).read_bytes()
    saved_changelog = read_changelog(plan.root / CHANGELOG)
    add, commit, tag = plan.git_commands
    try:
        _write_files(plan)
        git.run(add)
        git.run(commit)
    except (GitError, ReleaseError, OSError):
        _roll_back(plan, saved_pyproject,
                   None if saved_changelog is None else saved_changelog.encode("utf-8"))
        raise
    logger.info("committed %s", RELEASE_COMMIT.format(tag=plan.tag))
    try:
        git.run(tag)
    except GitError as exc:
        raise GitError(
            f"{exc}. The release commit was made but not tagged: run 'git {shlex.join(tag)}' "
            "or undo the commit with 'git reset --hard HEAD~1'."
        ) from None
    if plan.push_command:
        try:
            git.run(plan.push_command)
        except GitError as exc:
            raise GitError(
                f"{exc}. The commit and tag {plan.tag} exist locally; push them with "
                f"'git {shlex.join(plan.push_command)}'."
            ) from None


def release(request: ReleaseRequest, *, today: date | None = None) -> ReleasePlan:
    """Plan a release and, unless ``request.dry_run``, perform it.

    Args:
        request: The validated request.
        today: The date in the changelog heading (default: today).

    Returns:
        The plan that was carried out (or would be, for a dry run).

    Raises:
        ReleaseError: A refusal; nothing was changed (exit 2).
        ReleaseTestsFailedError: The tests failed; nothing was changed (exit 1).
        GitError: A git command failed (exit 1).
    """
    plan = plan_release(request, today=today)
    if not request.dry_run:
        perform_release(plan)
    return plan
