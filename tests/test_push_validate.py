"""zk0 push: checkpoint resolution and validation catch every kind of broken checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from push_fixtures import make_checkpoint, make_run_dir, rewrite_json, write_manifest
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.errors import CheckpointError
from zk0cli.hub import resolve_checkpoint, validate_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")

STATE_PRE = "policy_preprocessor_step_0_normalizer_processor.safetensors"
STATE_POST = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return make_run_dir(tmp_path / "outputs").checkpoint(3)


def problems_of(path: Path, repo_id: str | None = "alice/zk0-model") -> list[str]:
    with pytest.raises(CheckpointError) as info:
        validate_checkpoint(path, repo_id=repo_id)
    return info.value.problems


def test_valid_checkpoint_lists_every_file_with_its_size(ckpt: Path) -> None:
    files = validate_checkpoint(ckpt, repo_id="alice/zk0-model")
    names = [f.relpath for f in files]
    assert names == sorted(["README.md", "config.json", "metrics.json", "model.safetensors",
                            "policy_preprocessor.json", "policy_postprocessor.json",
                            STATE_PRE, STATE_POST])
    assert all(f.size == (ckpt / f.relpath).stat().st_size for f in files)


def test_missing_processor_state_file_is_named(ckpt: Path) -> None:
    (ckpt / STATE_POST).unlink()
    assert problems_of(ckpt) == [f"{STATE_POST}: missing (LeRobot needs it to load the policy)"]


def test_missing_card_points_at_regenerate(ckpt: Path) -> None:
    (ckpt / "README.md").unlink()
    (problem,) = problems_of(ckpt)
    assert problem.startswith("README.md: missing") and "--regenerate-card" in problem
    # When the card is rebuilt, the checkpoint's own README.md is not needed.
    assert "README.md" not in {f.relpath for f in validate_checkpoint(ckpt, require_card=False)}


def test_truncated_safetensors_is_caught_even_with_a_matching_manifest(ckpt: Path) -> None:
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[:-100])
    write_manifest(ckpt, 3)  # the manifest agrees: only the safetensors check can see it
    (problem,) = problems_of(ckpt)
    assert problem.startswith("model.safetensors: unreadable safetensors")


def test_truncated_safetensors_against_the_manifest(ckpt: Path) -> None:
    data = (ckpt / STATE_PRE).read_bytes()
    (ckpt / STATE_PRE).write_bytes(data[:-8])
    problems = problems_of(ckpt)
    assert f"{STATE_PRE}: size {len(data) - 8} bytes, manifest says {len(data)}" in problems
    assert any(p.startswith(f"{STATE_PRE}: unreadable safetensors") for p in problems)


def test_hash_mismatch_with_same_size(ckpt: Path) -> None:
    text = (ckpt / "metrics.json").read_text()
    (ckpt / "metrics.json").write_text(text.replace('"round": 3', '"round": 4'))
    (problem,) = problems_of(ckpt)
    assert problem.startswith("metrics.json: SHA-256") and "does not match" in problem


def test_file_missing_from_manifest(ckpt: Path) -> None:
    manifest = json.loads((ckpt / "manifest.json").read_text())
    del manifest["files"]["policy_preprocessor.json"]
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    assert problems_of(ckpt) == ["policy_preprocessor.json: not listed in manifest.json"]


def test_wrong_config_type(ckpt: Path) -> None:
    rewrite_json(ckpt / "config.json", type="act")
    write_manifest(ckpt, 3)
    (problem,) = problems_of(ckpt)
    assert problem == ("config.json: policy type = 'act'; push uploads SmolVLA policies only "
                       "(type 'smolvla')")


def test_smolvla_config_that_does_not_load(ckpt: Path) -> None:
    rewrite_json(ckpt / "config.json", chunk_size="fifty")
    write_manifest(ckpt, 3)
    (problem,) = problems_of(ckpt)
    assert problem.startswith("config.json: does not load as a LeRobot SmolVLA config")


@pytest.mark.parametrize("repo_id", ["zk0-model", "alice/zk0/model", "alice/bad name", "a/b--c"])
def test_bad_repo_id(ckpt: Path, repo_id: str) -> None:
    (problem,) = problems_of(ckpt, repo_id=repo_id)
    assert problem.startswith(f"repo id {repo_id!r}")


def test_all_problems_are_reported_together(ckpt: Path) -> None:
    (ckpt / "policy_preprocessor.json").unlink()
    (ckpt / "metrics.json").write_text("{}" + " " * ((ckpt / "metrics.json").stat().st_size - 2))
    problems = problems_of(ckpt, repo_id="nonamespace")
    assert len(problems) == 3
    assert problems[0].startswith("repo id 'nonamespace'")
    assert "policy_preprocessor.json: missing (LeRobot needs it to load the policy)" in problems
    assert any(p.startswith("metrics.json: SHA-256") for p in problems)


def test_run_dir_resolves_to_the_checkpoint_named_by_latest(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "outputs", checkpoints=(2, 3))
    resolved = resolve_checkpoint(run.root)
    assert (resolved.path, resolved.round, resolved.run_dir) == (run.checkpoint(3), 3, run.root)
    assert resolved.from_run_dir
    run.set_latest(run.checkpoint(2))  # e.g. round 3 was not complete
    assert resolve_checkpoint(run.root).round == 2
    direct = resolve_checkpoint(run.checkpoint(3))
    assert (direct.round, direct.run_dir, direct.from_run_dir) == (3, run.root, False)


def test_run_dir_without_complete_checkpoint(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "outputs", checkpoints=())
    make_checkpoint(run, 1, latest=False)
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(run.root)
    assert "checkpoint directories present: checkpoint_round_1" in info.value.problems[0]


def test_cli_exits_2_and_lists_problems(ckpt: Path) -> None:
    (ckpt / STATE_PRE).unlink()
    result = CliRunner().invoke(app, ["push", str(ckpt), "--repo-id", "bad", "--dry-run"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "Nothing was sent (2 problems)" in said
    assert f"checkpoint {ckpt}: {STATE_PRE}: missing" in said
    assert "--repo-id: repo id 'bad' must be 'namespace/name'" in said


def test_a_bad_repo_id_is_named_with_an_unusable_checkpoint_or_alone(ckpt: Path,
                                                                     tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["push", str(tmp_path), "--repo-id", "bad", "--dry-run"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "--repo-id: repo id 'bad'" in said
    assert f"checkpoint {tmp_path}: not a checkpoint: no manifest.json" in said
    result = CliRunner().invoke(app, ["push", str(ckpt), "--repo-id", "bad", "--dry-run"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "--repo-id: repo id 'bad' must be 'namespace/name'" in said
    assert "cannot be used" not in said and "Nothing was sent" in said


@pytest.mark.parametrize(("flag", "value"), [("--endpoint", "ftp://hub"), ("--tag", "v 1"),
                                              ("--revision", "../main")])
def test_cli_rejects_bad_flags(ckpt: Path, flag: str, value: str) -> None:
    result = CliRunner().invoke(app, ["push", str(ckpt), "--repo-id", "a/b", flag, value])
    assert result.exit_code == 2, result.output
    assert f"{flag} = {value!r}" in result.output


def test_cli_not_a_checkpoint(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["push", str(tmp_path / "nope"), "--repo-id", "a/b"])
    assert result.exit_code == 2
    assert "not a directory" in result.output
