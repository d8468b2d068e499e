"""The run contract: names, records, adapters for older runs, and the generated docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zk0cli.core import contract as C
from zk0cli.core.checkpoint import check_manifest, write_checkpoint
from zk0cli.core.rundir import RunDir, read_json


def test_round_file_names_round_trip():
    assert C.server_eval_name(12) == "round_12_server_eval.json"
    assert C.round_of_server_eval(C.server_eval_name(12)) == 12
    assert C.round_of_client_file(C.client_round_name(3)) == 3
    assert C.round_of_checkpoint(C.checkpoint_name(7)) == 7
    assert C.round_of_server_eval("round_x_server_eval.json") is None
    assert C.round_of_checkpoint("checkpoint_round_") is None


def test_run_json_gets_a_schema_version_and_rejects_unknown_fields(tmp_path):
    rd = RunDir.create(tmp_path)
    rd.update_run(status="running", seed=3)
    assert read_json(rd.run_json)["schema_version"] == C.SCHEMA_VERSION
    with pytest.raises(TypeError, match="not run.json fields: colour"):
        rd.update_run(colour="blue")


def test_an_older_run_json_reads_as_version_0_and_keeps_unknown_keys(tmp_path):
    rd = RunDir.create(tmp_path)
    rd.run_json.write_text(json.dumps({"status": "completed", "rounds_completed": 4,
                                       "custom": {"a": 1}}))
    run = rd.run_record()
    assert (run.schema_version, run.status, run.rounds_completed) == (0, "completed", 4)
    rd.update_run(error=None)  # a rewrite upgrades the version and keeps the extra key
    raw = read_json(rd.run_json)
    assert raw["schema_version"] == C.SCHEMA_VERSION and raw["custom"] == {"a": 1}


def test_one_manifest_check_names_each_problem(tmp_path):
    rd = RunDir.create(tmp_path)

    def policy(d: Path) -> None:
        (d / C.WEIGHTS_FILE).write_bytes(b"\0" * 8)
        (d / C.POLICY_CONFIG_FILE).write_text("{}")

    ckpt = write_checkpoint(rd, 1, save_policy=policy, metrics=C.CheckpointMetrics(round=1))
    assert check_manifest(ckpt).problems == []
    assert C.CheckpointManifest.model_validate(read_json(ckpt / C.MANIFEST_JSON)).round == 1
    (ckpt / C.WEIGHTS_FILE).write_bytes(b"\1" * 8)
    (ckpt / "extra.txt").write_text("x")
    check = check_manifest(ckpt)
    assert [p.split(":")[0] for p in check.problems] == [C.WEIGHTS_FILE]
    assert "SHA-256" in check.problems[0] and check.unlisted == ["extra.txt"]
    assert set(check_manifest(ckpt, verify_checksums=False).verified) == {
        C.WEIGHTS_FILE, C.POLICY_CONFIG_FILE, C.METRICS_JSON}
    (ckpt / C.MANIFEST_JSON).unlink()
    (problem,) = check_manifest(ckpt).problems
    assert problem.startswith("manifest.json: missing") and "LeRobot" not in problem


def test_run_directory_reference_is_current():
    """docs/run-directory.md's record tables are generated from the contract's models."""
    doc = Path(__file__).resolve().parent.parent / "docs" / "run-directory.md"
    text = doc.read_text(encoding="utf-8")
    assert C.DOC_BEGIN in text and C.DOC_END in text
    generated = text[text.index(C.DOC_BEGIN):text.index(C.DOC_END) + len(C.DOC_END)]
    assert generated == C.render_record_tables(), (
        "docs/run-directory.md is stale: run `python scripts/gen_run_dir_docs.py`")
