"""End-to-end ``zk0 push`` against a local Hub on 127.0.0.1 (tests/hub_server.py).

huggingface_hub refuses every request while ``HF_HUB_OFFLINE=1`` (even to a custom
endpoint), so these tests switch offline mode off in-process for the duration of a
test; the endpoint is always the local server, so nothing can reach the real Hub.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
from hub_server import LocalHub
from push_fixtures import make_run_dir
from typer.testing import CliRunner, Result

from zk0cli.cli.app import app
from zk0cli.core.rundir import RunDir

TOKEN = "hf_zk0TestTokenDoNotLeak0123456789"
REPO = "alice/zk0-smolvla"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs() -> Iterator[_Capture]:
    """Every log record of zk0, huggingface_hub and the root logger, at DEBUG."""
    handler = _Capture()
    loggers = [logging.getLogger(n) for n in ("", "zk0", "huggingface_hub")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline mode off, a token in HF_TOKEN, no stored login, no xet override."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    return make_run_dir(tmp_path / "outputs")


def push(*args: str) -> Result:
    return CliRunner().invoke(app, ["push", *args])


def assert_no_token_anywhere(result: Result, logs: _Capture, root: Path) -> None:
    assert TOKEN not in result.output
    assert not any(TOKEN in line for line in logs.lines)
    for path in root.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def manifest_files(checkpoint: Path, repo_id: str | None = None) -> dict[str, bytes]:
    """The checkpoint's files; with ``repo_id`` as pushed: the card's placeholder filled in
    (and the manifest listing that card), every other file byte-identical."""
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    names = [*manifest["files"], "manifest.json"]
    files = {name: (checkpoint / name).read_bytes() for name in names}
    if repo_id is not None:
        from zk0cli.core.card import with_repo_id
        from zk0cli.hub.upload import _manifest_with_card

        card = with_repo_id(files["README.md"].decode("utf-8"), repo_id)
        assert "<user>/<model>" not in card and f"--policy.path={repo_id}" in card
        files["README.md"] = card.encode("utf-8")
        files["manifest.json"] = _manifest_with_card(checkpoint, card).encode("utf-8")
    return files


@pytest.mark.parametrize("lfs", [False, True], ids=["inline", "lfs"])
def test_push_uploads_identical_files_with_the_token_in_the_header(
    online: None, run: RunDir, logs: _Capture, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, lfs: bool,
) -> None:
    if lfs:  # huggingface_hub uses the plain LFS protocol only without hf_xet
        monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
    with LocalHub(lfs_suffixes=(".safetensors",) if lfs else ()) as hub:
        result = push(str(run.root), "--repo-id", REPO, "--endpoint", hub.url, "--private")
    assert result.exit_code == 0, result.output
    repo = hub.state.repos[REPO]
    expected = manifest_files(run.checkpoint(3), REPO)
    assert repo.files == expected  # byte-identical (the card names the repo), nothing more
    if lfs:
        assert hashlib.sha256(expected["model.safetensors"]).hexdigest() in hub.state.lfs_objects
    (commit,) = repo.commits
    assert repo.tags == {"fl-round-3": commit["oid"]}
    assert commit["header"]["summary"] == "zk0: federated SmolVLA checkpoint, round 3"
    assert repo.private
    api_requests = [r for r in hub.state.requests if r.path.startswith(("/api/", f"/{REPO}"))]
    assert {r.path for r in api_requests} >= {"/api/repos/create",
                                              f"/api/models/{REPO}/preupload/main",
                                              f"/api/models/{REPO}/commit/main"}
    for request in api_requests:
        assert request.headers.get("authorization") == f"Bearer {TOKEN}", request.path
    assert "Newest complete checkpoint of" in result.output
    assert f"Commit: {hub.url}/{REPO}/commit/{commit['oid']}" in result.output
    assert_no_token_anywhere(result, logs, tmp_path)


def test_push_regenerated_card_to_a_branch_with_a_tag(
    online: None, run: RunDir, logs: _Capture, tmp_path: Path
) -> None:
    ckpt = run.checkpoint(3)
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    with LocalHub() as hub:
        result = push(str(ckpt), "--repo-id", REPO, "--endpoint", hub.url, "--revision", "fl",
                      "--tag", "v0.1-fl", "--commit-message", "Round three", "--regenerate-card")
    assert result.exit_code == 0, result.output
    repo = hub.state.repos[REPO]
    card = repo.files["README.md"].decode()
    assert f'SmolVLAPolicy.from_pretrained("{REPO}")' in card
    manifest = json.loads(repo.files["manifest.json"])
    assert manifest["files"]["README.md"]["sha256"] == hashlib.sha256(card.encode()).hexdigest()
    assert repo.files["model.safetensors"] == before["model.safetensors"]
    (commit,) = repo.commits
    assert commit["revision"] == "fl" and commit["header"]["summary"] == "Round three"
    assert repo.branches["fl"] == commit["oid"] and repo.branches["main"] == "0" * 40
    assert repo.tags == {"v0.1-fl": commit["oid"]}
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before  # checkpoint untouched
    assert_no_token_anywhere(result, logs, tmp_path)


def test_missing_token_fails_before_any_request(
    online: None, run: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN")
    with LocalHub() as hub:
        result = push(str(run.root), "--repo-id", REPO, "--endpoint", hub.url)
    assert result.exit_code == 2, result.output
    assert "No Hugging Face token found" in result.output
    assert hub.state.requests == []


def test_dry_run_needs_no_token_and_sends_nothing(
    online: None, run: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN")
    with LocalHub() as hub:
        result = push(str(run.root), "--repo-id", REPO, "--endpoint", hub.url, "--dry-run")
    assert result.exit_code == 0, result.output
    assert hub.state.requests == []
    assert "Would upload 9 files" in result.output and f"{hub.url}/{REPO}" in result.output
    size = (run.checkpoint(3) / "model.safetensors").stat().st_size
    assert "model.safetensors" in result.output and f"{size / 1000:.1f} kB" in result.output
    assert "library_name: lerobot" in result.output  # the card is printed
    assert "tag fl-round-3" in result.output


def test_failed_push_exits_1_and_names_the_step(online: None, run: RunDir, logs: _Capture,
                                                tmp_path: Path) -> None:
    with LocalHub(fail={"commit": 403}) as hub:
        result = push(str(run.root), "--repo-id", REPO, "--endpoint", hub.url)
    assert result.exit_code == 1, result.output
    assert "Could not upload the checkpoint for alice/zk0-smolvla" in result.output
    assert "write token" in result.output
    assert hub.state.repos[REPO].tags == {}
    assert_no_token_anywhere(result, logs, tmp_path)


def test_existing_tag_is_refused_before_uploading(online: None, run: RunDir) -> None:
    with LocalHub() as hub:
        assert push(str(run.root), "--repo-id", REPO, "--endpoint", hub.url).exit_code == 0
        again = push(str(run.root), "--repo-id", REPO, "--endpoint", hub.url)
    assert again.exit_code == 1
    assert "Tag 'fl-round-3' already exists" in again.output
    assert len(hub.state.repos[REPO].commits) == 1


def test_offline_mode_is_an_error_not_a_silent_success(
    online: None, run: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline mode is a precondition like the token (exit 2, nothing sent); without a
    token both problems are named at once."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with LocalHub() as hub:
        result = push(str(run.root), "--repo-id", REPO, "--endpoint", hub.url)
        monkeypatch.delenv("HF_TOKEN")  # and no stored login (the `online` fixture)
        both = push(str(run.root), "--repo-id", REPO, "--endpoint", hub.url)
    assert result.exit_code == 2, result.output
    assert "HF_HUB_OFFLINE" in result.output and "Nothing was uploaded" in result.output
    assert both.exit_code == 2, both.output
    assert "No Hugging Face token" in both.output and "HF_HUB_OFFLINE" in both.output
    assert hub.state.requests == []


def test_tiny_run_push_phase_uploads_through_the_same_path(
    online: None, run: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tiny-run's --push phase: validated upload with the token; none without one."""
    from rich.console import Console

    from zk0cli.engine import tiny_run
    from zk0cli.errors import HubAuthError

    ckpt = run.checkpoint(3)
    with LocalHub() as hub:
        tiny_run.push(ckpt, repo_id=REPO, say=Console().print, endpoint=hub.url)
        assert hub.state.repos[REPO].files == manifest_files(ckpt, REPO)
    monkeypatch.delenv("HF_TOKEN")
    with LocalHub() as hub:
        with pytest.raises(HubAuthError):
            tiny_run.push(ckpt, repo_id=REPO, say=Console().print, endpoint=hub.url)
        assert hub.state.requests == []
