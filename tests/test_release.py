"""zk0 release: version arithmetic, changelog, refusals and real releases in temp git repos."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from datetime import date
from pathlib import Path

import pytest
from packaging.version import Version
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.errors import ReleaseError
from zk0cli.release import bump_version, check_versions, group_commits, parse_commit
from zk0cli.release.changelog import prepend_section, render_section
from zk0cli.release.pyproject import installed_version_for, render_version_change

runner = CliRunner()

PYPROJECT = """\
# A project under test.
[build-system]
requires = ["setuptools>=69"]

[project]
name = "demo-pkg"
version = "{version}"  # bumped by zk0 release
dependencies = [
    "packaging>=23",
]

[tool.other]
version = "9.9.9"
"""


@pytest.fixture(autouse=True)
def _git_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Identity and config for git without any global configuration."""
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Release Tester")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "tester@example.com")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MUJOCO_GL", "egl")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def commit(repo: Path, message: str, *, name: str | None = None) -> None:
    path = repo / (name or f"f{len(list(repo.glob('f*')))}.txt")
    path.write_text(message)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def make_repo(tmp_path: Path, version: str = "0.1.0", messages: tuple[str, ...] = ()) -> Path:
    repo = tmp_path / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "pyproject.toml").write_text(PYPROJECT.format(version=version))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial commit")
    for message in messages:
        commit(repo, message)
    return repo


def snapshot(repo: Path) -> dict[str, object]:
    files = {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }
    refs = subprocess.run(["git", "-C", str(repo), "show-ref", "--head"],
                          capture_output=True, text=True).stdout
    return {
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "refs": refs,
        "head": subprocess.run(["git", "-C", str(repo), "symbolic-ref", "-q", "HEAD"],
                               capture_output=True, text=True).stdout,
        "files": files,
    }


def zk0_release(repo: Path, *args: str):
    return runner.invoke(app, ["release", *args, "--repo", str(repo)])


def project_version(repo: Path) -> str:
    import tomllib

    return tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]


# --- version arithmetic --------------------------------------------------------------------

BUMPS = [
    # current, part, pre, expected
    ("0.1.0", "patch", None, "0.1.1"),
    ("0.1.0", "minor", None, "0.2.0"),
    ("0.1.0", "major", None, "1.0.0"),
    ("1.2.3", "patch", None, "1.2.4"),
    ("1.2.3", "minor", None, "1.3.0"),
    ("1.2.3", "major", None, "2.0.0"),
    ("1.0", "patch", None, "1.0.1"),
    ("0.1.0.post2", "patch", None, "0.1.1"),
    ("1!1.0.0", "minor", None, "1!1.1.0"),
    # pre-releases are finalised when heading for that kind of release
    ("0.2.0rc1", "patch", None, "0.2.0"),
    ("0.2.0rc1", "minor", None, "0.2.0"),
    ("0.2.0rc1", "major", None, "1.0.0"),
    ("1.0.0rc2", "major", None, "1.0.0"),
    ("0.2.1rc1", "minor", None, "0.3.0"),
    ("0.2.1b1", "patch", None, "0.2.1"),
    ("0.2.0.dev3", "minor", None, "0.2.0"),
    # making pre-releases
    ("0.1.0", "minor", "rc", "0.2.0rc1"),
    ("1.2.3", "patch", "a", "1.2.4a1"),
    ("1.2.3", "major", "b", "2.0.0b1"),
    ("0.2.0rc1", "minor", "rc", "0.2.0rc2"),
    ("0.2.0b3", "minor", "rc", "0.2.0rc1"),
    ("0.2.0a1", "patch", "b", "0.2.0b1"),
    ("0.2.0rc1", "major", "rc", "1.0.0rc1"),
    ("0.2.1rc1", "minor", "a", "0.3.0a1"),
    ("0.2.0.dev3", "minor", "a", "0.2.0a1"),
    ("0.2.0rc1.dev2", "minor", "rc", "0.2.0rc1"),
]


@pytest.mark.parametrize(("current", "part", "pre", "expected"), BUMPS)
def test_bump_version_table(current: str, part: str, pre: str | None, expected: str) -> None:
    new = bump_version(current, part, pre=pre)
    assert str(new) == expected
    assert new > Version(current)


@pytest.mark.parametrize(
    ("current", "part", "pre", "needle"),
    [
        ("0.2.0rc1", "minor", "a", "earlier pre-release phase"),
        ("1.2.3+local", "patch", None, "local"),
        ("1.2.3.4", "patch", None, "MAJOR.MINOR.PATCH"),
        ("not-a-version", "patch", None, "not a PEP 440 version"),
        ("1.2.3", "micro", None, "accepted patch, minor, major"),
        ("1.2.3", "patch", "dev", "accepted a, b, rc"),
    ],
)
def test_bump_version_refuses(current: str, part: str, pre: str | None, needle: str) -> None:
    with pytest.raises(ReleaseError, match=needle):
        bump_version(current, part, pre=pre)  # type: ignore[arg-type]


# whole releases through the CLI for a representative subset of the table
@pytest.mark.parametrize(
    ("current", "args", "expected"),
    [
        ("0.1.0", ["patch"], "0.1.1"),
        ("0.1.0", ["minor"], "0.2.0"),
        ("0.9.4", ["major"], "1.0.0"),
        ("0.1.0", ["minor", "--pre", "rc"], "0.2.0rc1"),
        ("0.2.0rc1", ["minor", "--pre", "rc"], "0.2.0rc2"),
        ("0.2.0rc2", ["minor"], "0.2.0"),
        ("1.0.0b1", ["major", "--pre", "rc"], "1.0.0rc1"),
    ],
)
def test_release_end_to_end(tmp_path: Path, current: str, args: list[str], expected: str) -> None:
    repo = make_repo(tmp_path, current, ("feat: add a thing", "fix: repair it"))
    result = zk0_release(repo, *args, "--test-command", "true")
    assert result.exit_code == 0, result.output
    assert f"{current} -> {expected}" in result.output
    assert project_version(repo) == expected
    # only the version value changed in pyproject.toml
    assert (repo / "pyproject.toml").read_text() == PYPROJECT.format(version=expected)
    assert git(repo, "log", "-1", "--format=%s") == f"chore(release): v{expected}"
    assert git(repo, "cat-file", "-t", f"v{expected}") == "tag"  # annotated
    assert git(repo, "rev-parse", f"v{expected}^{{commit}}") == git(repo, "rev-parse", "HEAD")
    assert git(repo, "status", "--porcelain") == ""
    assert set(git(repo, "show", "--name-only", "--format=", "HEAD").split()) == {
        "CHANGELOG.md", "pyproject.toml"}
    changelog = (repo / "CHANGELOG.md").read_text()
    assert changelog.startswith(f"# Changelog\n\n## v{expected} (")
    assert "### Features\n\n- add a thing (" in changelog


# --- changelog ------------------------------------------------------------------------------


def test_parse_commit_forms() -> None:
    c = parse_commit("a" * 40, "feat(cli): add zk0 release\n\nbody text\n")
    assert (c.type, c.scope, c.description, c.breaking, c.group) == (
        "feat", "cli", "add zk0 release", False, "Features")
    bang = parse_commit("b" * 40, "refactor(core)!: rename run.json fields")
    assert bang.breaking and bang.group == "Breaking changes" and bang.type == "refactor"
    footer = parse_commit("c" * 40, "fix: parse dates\n\nBREAKING CHANGE: dates are UTC now\n")
    assert footer.breaking and footer.breaking_note == "dates are UTC now"
    dash = parse_commit("d" * 40, "docs: x\n\nBREAKING-CHANGE: y")
    assert dash.group == "Breaking changes"
    plain = parse_commit("e" * 40, "Update README")
    assert (plain.type, plain.group, plain.description) == (None, "Other", "Update README")
    assert parse_commit("f" * 40, "Docs: capitalised type").group == "Documentation"
    # "BREAKING CHANGE" in the subject is not a footer
    assert not parse_commit("0" * 40, "chore: mention BREAKING CHANGE: here").breaking


def test_group_and_render_section() -> None:
    messages = [
        "feat(data): sim datasets",
        "fix: off-by-one in rounds",
        "docs: releasing guide",
        "feat!: new config layout",
        "chore: bump ruff",
        "fix(io): atomic writes\n\nBREAKING CHANGE: checkpoints move to models/",
        "chore(release): v0.1.0",
        "Merge-free plain message",
    ]
    commits = [parse_commit(f"{i:040x}", m) for i, m in enumerate(messages)]
    groups = group_commits(commits)
    assert list(groups) == ["Breaking changes", "Features", "Fixes", "Documentation", "Other"]
    assert [c.description for c in groups["Breaking changes"]] == [
        "new config layout", "atomic writes"]
    assert [c.description for c in groups["Other"]] == ["bump ruff", "Merge-free plain message"]
    text = render_section("0.2.0", commits, today=date(2025, 3, 4))
    assert text == (
        "## v0.2.0 (2025-03-04)\n\n"
        "### Breaking changes\n\n"
        "- new config layout (0000000)\n"
        "- **io:** atomic writes (0000000)\n  checkpoints move to models/\n\n"
        "### Features\n\n- **data:** sim datasets (0000000)\n\n"
        "### Fixes\n\n- off-by-one in rounds (0000000)\n\n"
        "### Documentation\n\n- releasing guide (0000000)\n\n"
        "### Other\n\n- bump ruff (0000000)\n- Merge-free plain message (0000000)\n\n"
    )
    assert render_section("0.2.1", [], today=date(2025, 3, 4)).endswith(
        "No changes since the previous release.\n\n")


def test_prepend_section_keeps_title_and_history() -> None:
    old = "# Changelog\n\nAll notable changes.\n\n## v0.1.0 (2024-01-01)\n\n- first\n"
    new = prepend_section(old, "## v0.2.0 (2025-01-01)\n\n- second\n\n")
    assert new == ("# Changelog\n\nAll notable changes.\n\n## v0.2.0 (2025-01-01)\n\n- second\n\n"
                   "## v0.1.0 (2024-01-01)\n\n- first\n")
    assert prepend_section(None, "## v1\n") == "# Changelog\n\n## v1\n"
    assert prepend_section("# Notes\nintro", "## v1\n") == "# Notes\nintro\n\n## v1\n"


def test_changelog_covers_commits_since_last_tag(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "0.1.0", ("feat: first feature",))
    (repo / "CHANGELOG.md").write_text("# Changelog\n\nHand-written intro.\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "docs: start a changelog")
    assert zk0_release(repo, "minor", "--skip-tests").exit_code == 0
    commit(repo, "fix(cli): exit code 2 on bad flags")
    commit(repo, "feat!: drop python 3.11\n\nBREAKING CHANGE: needs 3.12")
    result = zk0_release(repo, "minor", "--skip-tests")
    assert result.exit_code == 0, result.output
    text = (repo / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n\nHand-written intro.\n\n## v0.3.0 (")
    newest, _, older = text.partition("## v0.2.0 (")
    assert "exit code 2 on bad flags" in newest and "drop python 3.11" in newest
    assert "first feature" not in newest and "chore(release)" not in newest
    assert "### Breaking changes\n\n- drop python 3.11" in newest
    assert "first feature" in older and "start a changelog" in older


def test_render_version_change_keeps_formatting() -> None:
    text = PYPROJECT.format(version="0.1.0").replace('"0.1.0"', "'0.1.0'")
    out = render_version_change(text, "0.2.0rc1")
    assert out == text.replace("'0.1.0'", "'0.2.0rc1'")
    assert 'version = "9.9.9"' in out  # other tables untouched
    with pytest.raises(ReleaseError, match="0 'version"):
        render_version_change('[project]\nname = "x"\n', "1.0.0")


# --- dry run --------------------------------------------------------------------------------


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "0.1.0", ("feat(sim): pick-and-place task", "fix: seed"))
    git(repo, "tag", "-a", "v0.1.0", "-m", "Release v0.1.0", "HEAD~2")
    (repo / "CHANGELOG.md").write_text("# Changelog\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "docs: changelog")
    before = snapshot(repo)
    result = zk0_release(repo, "minor", "--dry-run", "--pre", "rc")
    assert result.exit_code == 0, result.output
    assert snapshot(repo) == before
    out = result.output
    assert "Would release demo-pkg 0.1.0 -> 0.2.0rc1 (tag v0.2.0rc1)" in out
    assert "## v0.2.0rc1 (" in out
    assert "- **sim:** pick-and-place task" in out and "### Fixes" in out
    assert "  make test\n" in out  # default test command listed, not run
    assert "git add -- pyproject.toml CHANGELOG.md" in out
    assert "git commit -q -m 'chore(release): v0.2.0rc1'" in out
    assert "git tag -a v0.2.0rc1 -m 'Release v0.2.0rc1'" in out
    assert "git push" not in out


# --- refusals (exit 2 unless said otherwise; the repository is left as it was) --------------


def test_refuses_outside_git(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.format(version="0.1.0"))
    result = zk0_release(tmp_path, "patch", "--skip-tests")
    assert result.exit_code == 2
    assert "not a git repository" in result.output


def test_refuses_repo_without_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    result = zk0_release(tmp_path, "patch", "--skip-tests")
    assert result.exit_code == 2 and "no commits yet" in result.output


def _refusal(repo: Path, *args: str) -> str:
    before = snapshot(repo)
    result = zk0_release(repo, *args)
    assert result.exit_code == 2, result.output
    assert snapshot(repo) == before
    return " ".join(result.output.split())


def test_refuses_detached_head(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, messages=("feat: x",))
    git(repo, "checkout", "-q", "--detach")
    assert "HEAD is detached" in _refusal(repo, "patch", "--skip-tests")


@pytest.mark.parametrize("kind", ["modified", "untracked", "staged"])
def test_refuses_dirty_tree(tmp_path: Path, kind: str) -> None:
    repo = make_repo(tmp_path)
    if kind == "modified":
        (repo / "pyproject.toml").write_text(PYPROJECT.format(version="0.1.0") + "\n")
    else:
        (repo / "notes.txt").write_text("x")
        if kind == "staged":
            git(repo, "add", "notes.txt")
    out = _refusal(repo, "patch", "--skip-tests")
    assert "not clean" in out and "git stash -u" in out


def test_refuses_existing_tag(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "0.1.0")
    git(repo, "tag", "v0.1.1")
    out = _refusal(repo, "patch", "--skip-tests")
    assert "Tag v0.1.1 already exists" in out


def test_refuses_when_a_tag_is_newer_than_pyproject(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "0.1.0")
    git(repo, "tag", "-a", "v0.3.0", "-m", "x")
    git(repo, "tag", "not-a-version-tag")
    out = _refusal(repo, "patch", "--skip-tests")
    assert "Versions disagree: tag v0.3.0 is newer" in out and 'version = "0.3.0"' in out


def test_refuses_when_installed_metadata_disagrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path, "0.1.0")
    site = tmp_path / "site"
    info = site / "demo_pkg-0.0.9.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-pkg\nVersion: 0.0.9\n")
    (info / "direct_url.json").write_text(
        json.dumps({"url": repo.resolve().as_uri(), "dir_info": {"editable": True}}))
    assert installed_version_for(repo, "demo-pkg", search_path=[str(site)]) == Version("0.0.9")
    assert installed_version_for(tmp_path, "demo-pkg", search_path=[str(site)]) is None
    monkeypatch.syspath_prepend(str(site))
    out = _refusal(repo, "patch", "--skip-tests")
    assert "installed from this repository reports 0.0.9" in out and "pip install -e ." in out


def test_check_versions_accepts_equal_or_older_tags() -> None:
    check_versions(Version("0.2.0"), {"v0.1.0": Version("0.1.0"), "v0.2.0": Version("0.2.0")},
                   Version("0.2.0"))
    check_versions(Version("0.2.0rc1"), {"v0.1.9": Version("0.1.9")}, None)
    with pytest.raises(ReleaseError):
        check_versions(Version("0.2.0rc1"), {"v0.2.0": Version("0.2.0")}, None)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["micro"], "part = 'micro': accepted one of patch, minor, major"),
        (["patch", "--pre", "beta"], "pre = 'beta': accepted one of a, b, rc"),
        (["patch", "--test-command", "  "], "test_command"),
    ],
)
def test_refuses_bad_arguments(tmp_path: Path, args: list[str], needle: str) -> None:
    repo = make_repo(tmp_path)
    assert needle in _refusal(repo, *args)


def test_refuses_dynamic_version(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    (repo / "pyproject.toml").write_text('[project]\nname = "x"\ndynamic = ["version"]\n')
    git(repo, "commit", "-q", "-am", "dynamic")
    assert "no static [project] version" in _refusal(repo, "patch", "--skip-tests")


def test_refuses_push_without_remote(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    out = _refusal(repo, "patch", "--skip-tests", "--push")
    assert "remote 'origin' does not exist" in out


def test_failing_tests_exit_1_and_change_nothing(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, messages=("feat: x",))
    before = snapshot(repo)
    result = zk0_release(repo, "patch", "--test-command", "false")
    assert result.exit_code == 1, result.output
    assert "failed (exit 1)" in result.output and "--skip-tests" in result.output
    assert snapshot(repo) == before


def test_missing_test_program_exits_2(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    out = _refusal(repo, "patch", "--test-command", "zk0-no-such-program --flag")
    assert "cannot start" in out


def test_failed_commit_restores_files(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, messages=("feat: x",))
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'hook says no' >&2\nexit 1\n")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    before = snapshot(repo)
    result = zk0_release(repo, "patch", "--skip-tests")
    assert result.exit_code == 1, result.output
    assert "hook says no" in result.output
    assert snapshot(repo) == before
    assert not (repo / "CHANGELOG.md").exists()


# --- push -----------------------------------------------------------------------------------


def test_push_to_bare_remote(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "0.1.0", ("feat: ship it",))
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "-u", "origin", "main")
    result = zk0_release(repo, "minor", "--push", "--test-command", "true")
    assert result.exit_code == 0, result.output
    assert "Pushed main and v0.2.0 to origin" in result.output
    head = git(repo, "rev-parse", "HEAD")
    assert git(remote, "rev-parse", "refs/heads/main") == head
    assert git(remote, "cat-file", "-t", "refs/tags/v0.2.0") == "tag"
    assert git(remote, "rev-parse", "v0.2.0^{commit}") == head


def test_test_command_that_leaves_files_is_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    result = zk0_release(repo, "patch", "--test-command", "touch stray.txt")
    assert result.exit_code == 2, result.output
    assert "changed the work tree" in result.output
    assert project_version(repo) == "0.1.0" and git(repo, "tag") == ""


def test_non_conventional_prefix_is_kept_in_the_subject():
    from zk0cli.release.changelog import OTHER, parse_commit

    c = parse_commit("abc", "README: performance section")
    assert c.type is None and c.description == "README: performance section"
    assert c.group == OTHER
    assert parse_commit("abd", "Fix(cli): typo").type == "fix"
