"""Loading, summary and anomaly detection of zk0analyze-run on synthetic run directories."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from analysis_fixtures import clean_client_loss, clean_composite, write_run, write_upstream_run

from zk0cli.analysis import AnalysisThresholds, analyze_run, resolve_run
from zk0cli.analysis.load import load_run
from zk0cli.errors import RunDirError, UsageError


def _analyze(root: Path, **kw):
    return analyze_run(root, write_report=False, **kw).summary


def _kinds(summary) -> set[str]:
    return {f.kind for f in summary.findings}


def test_clean_run_has_no_findings(tmp_path: Path) -> None:
    rd = write_run(tmp_path)
    s = _analyze(rd.root)
    assert s.findings == []
    assert s.format == "zk0" and s.status == "completed"
    assert s.rounds_completed == 6 and s.rounds_planned == 6
    assert s.expected_clients == ["0", "1", "2"]
    assert s.participation_pct == pytest.approx(100.0)
    comp = s.server_eval["composite"]
    assert (comp.first.round, comp.first.value) == (0, pytest.approx(1.0))
    assert (comp.best.round, comp.best.value) == (6, pytest.approx(0.85**6))
    assert s.server_eval["heldout/push"].last.value == pytest.approx(0.85**6 * 1.05)
    mean_r1 = sum(clean_client_loss(c, 1) for c in "012") / 3
    assert s.client_loss.first.value == pytest.approx(mean_r1)
    assert s.seconds_per_round_mean == pytest.approx(10.0)
    assert s.latest_checkpoint == "checkpoint_round_6"
    assert [c["complete"] for c in s.checkpoints] == [True, True]
    assert s.config_highlights["federation.proximal_mu"] == 0.01


def _composite(values):
    return lambda n: values[n]


SEEDED = {
    "dropout": (dict(dropouts={3: ["1"]}), "client_dropout", [3], "1"),
    "client_failure": (dict(failures={2: ["2"]}), "client_dropout", [2], "2"),
    "no_aggregation": (dict(no_aggregation=[4]), "no_aggregation", [4], None),
    "nan_aggregated": (dict(overrides=[(3, ("client_aggregated_training_metrics", "loss_avg"),
                                        math.nan)]), "non_finite", [3], None),
    "inf_server_eval": (dict(overrides=[(5, ("server_eval", "datasets", "heldout/lift"),
                                         -math.inf)]), "non_finite", [5], None),
    "zeroed": (dict(overrides=[(2, ("client_aggregated_training_metrics",
                                    "param_update_norm_avg"), 0.0)]), "zeroed_metric", [2], None),
    "divergence_rises": (dict(composite=_composite([1.0, 0.9, 0.8, 0.85, 0.9, 0.95, 1.0])),
                         "divergence", [2, 3, 4, 5, 6], None),
    "divergence_ratio": (dict(composite=_composite([1.0, 0.5, 0.45, 1.2, 0.4, 0.35, 0.3])),
                         "divergence", [3], None),
    "stall": (dict(composite=_composite([1.0, 0.8, 0.8, 0.799, 0.8, 0.81, 0.8])), "stall",
              [2, 3, 4, 5, 6], None),
    "outlier": (dict(client_loss=lambda c, n: clean_client_loss(c, n) * (3 if c == "2" and n in
                                                                         (3, 4) else 1)),
                "outlier_client", [3, 4], "2"),
    "missing_round": (dict(missing_rounds=[3]), "history_gap", [3], None),
    "history_skip": (dict(history_skip=[4]), "history_gap", [4], None),
    "no_manifest": (dict(checkpoint_no_manifest=[5]), "incomplete_checkpoint", [5], None),
    "tampered": (dict(checkpoint_tamper=[6]), "incomplete_checkpoint", [6], None),
    "dangling_latest": (dict(latest="checkpoint_round_9"), "incomplete_checkpoint", [], None),
    "generalization_gap": (dict(composite=_composite([1.0, 0.9, 0.8, 0.84, 0.9, 0.8, 0.7])),
                           "generalization_gap", [2, 3, 4], None),
}


@pytest.mark.parametrize("case", sorted(SEEDED))
def test_seeded_anomaly_is_found(tmp_path: Path, case: str) -> None:
    kwargs, kind, rounds, client = SEEDED[case]
    s = _analyze(write_run(tmp_path, **kwargs).root)
    matching = [f for f in s.findings if f.kind == kind and f.rounds == rounds
                and f.client_id == client]
    assert matching, f"{case}: no {kind} finding with rounds {rounds}: {s.findings}"
    assert all(f.evidence for f in matching)


def test_zeroed_client_loss_is_no_generalization_gap(tmp_path: Path) -> None:
    # 0 -> 0 is no fall, and the relative change from 0 is undefined (was ZeroDivisionError).
    rd = write_run(tmp_path, composite=_composite([1.0, 0.9, 0.8, 0.84, 0.9, 0.8, 0.7]),
                   client_loss=lambda c, n: 0.0)
    s = _analyze(rd.root)
    assert "generalization_gap" not in _kinds(s)
    assert "zeroed_metric" in _kinds(s)


def test_seeded_evidence_names_the_cause(tmp_path: Path) -> None:
    s = _analyze(write_run(tmp_path, failures={2: ["2"]}, checkpoint_tamper=[6],
                           overrides=[(3, ("client_aggregated_training_metrics", "loss_avg"),
                                       math.nan)]).root)
    by_kind = {f.kind: f for f in s.findings}
    assert "TrainingDivergedError" in by_kind["client_dropout"].evidence[0]
    assert by_kind["non_finite"].evidence == [
        "server/round_3_server_eval.json: loss_avg = nan"]
    ckpt = [f for f in s.findings if f.kind == "incomplete_checkpoint"]
    assert any("SHA-256" in e for f in ckpt for e in f.evidence)
    assert any("models/latest names an incomplete" in f.message for f in ckpt)


def test_round_without_clients_is_no_aggregation_not_nan(tmp_path: Path) -> None:
    rd = write_run(tmp_path, no_aggregation=[4])
    raw = json.loads(rd.server_eval(4).read_text())
    assert raw["client_aggregated_training_metrics"]["loss_avg"] == "nan"  # as zk0 writes it
    s = _analyze(rd.root)
    assert "non_finite" not in _kinds(s)
    (f,) = [f for f in s.findings if f.kind == "no_aggregation"]
    assert "no client update to aggregate" in f.evidence[0]
    assert "TrainingDivergedError" in f.evidence[0]


def test_nan_is_stored_as_string_and_read_back(tmp_path: Path) -> None:
    rd = write_run(tmp_path, overrides=[(3, ("server_eval", "composite"), math.nan)])
    raw = json.loads(rd.server_eval(3).read_text())
    assert raw["server_eval"]["composite"] == "nan"
    run = load_run(rd.root)
    assert math.isnan(run.rounds[3].composite)
    assert ("server/round_3_server_eval.json", "server_eval.composite", "nan") in run.non_finite


def test_thresholds_change_what_is_found(tmp_path: Path) -> None:
    root = write_run(tmp_path, composite=_composite([1.0, 0.9, 0.8, 0.85, 0.9, 0.8, 0.7])).root
    assert "divergence" not in _kinds(_analyze(root))
    assert "divergence" in _kinds(_analyze(root, thresholds=AnalysisThresholds(
        divergence_rises=2)))
    with pytest.raises(ValueError):
        AnalysisThresholds(stall_window=1)


def test_checksums_can_be_skipped(tmp_path: Path) -> None:
    root = write_run(tmp_path, checkpoint_tamper=[6]).root
    assert "incomplete_checkpoint" not in _kinds(
        _analyze(root, thresholds=AnalysisThresholds(verify_checksums=False)))


@pytest.mark.parametrize("status,text", [("running", "still running"), ("failed", "failed after"),
                                         ("interrupted", "interrupted after")])
def test_unfinished_runs_say_so(tmp_path: Path, status: str, text: str) -> None:
    rd = write_run(tmp_path, status=status, rounds=3, checkpoints=(), latest=None)
    s = _analyze(rd.root)
    assert s.status == status and text in s.status_note
    assert s.findings == []


def test_running_run_with_last_round_half_written(tmp_path: Path) -> None:
    rd = write_run(tmp_path, status="running", rounds=4, checkpoints=(), latest=None)
    rows = json.loads(rd.federated_metrics.read_text())
    rd.federated_metrics.write_text(json.dumps(rows[:-1]))  # round 4 row not yet written
    assert _analyze(rd.root).findings == []


def test_upstream_format(tmp_path: Path) -> None:
    root = write_upstream_run(tmp_path)
    s = _analyze(root)
    assert s.format == "upstream" and s.status == "unknown"
    assert any("No run.json" in n for n in s.notes)
    assert any("No config.json" in n for n in s.notes)
    assert "no run.json" in s.status_note
    assert [r.round for r in s.rounds] == [1, 2, 3, 4]
    assert [r.composite for r in s.rounds] == pytest.approx([0.75, None, 0.65, 0.6])
    assert s.rounds[0].eval_datasets == {"lerobot/svla_so100_stacking": pytest.approx(0.75)}
    assert s.rounds[0].client_loss_avg == pytest.approx(0.91)  # avg_client_loss alias
    assert s.rounds[0].client_losses == {"0": pytest.approx(0.9), "1": pytest.approx(0.91),
                                         "2": pytest.approx(0.92)}
    assert s.rounds[3].client_loss_avg is None  # the upstream's 0.0 is not a loss
    found = {(f.kind, tuple(f.rounds), f.client_id) for f in s.findings}
    assert ("client_dropout", (3, 4), "2") in found
    assert ("no_aggregation", (4,), None) in found
    assert ("zeroed_metric", (4,), None) in found
    assert [r.participation_pct for r in s.rounds] == pytest.approx([100, 100, 200 / 3, 0])


# --- resolving RUN ------------------------------------------------------------------------


def test_resolve_latest_prefix_and_path(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    for name in ("2025-10-16_10-00-00", "2025-10-17_08-00-00", "2025-10-17_09-30-00"):
        write_run(out, name=name, rounds=1, checkpoints=(), latest=None)
    latest = resolve_run("latest", outputs_root=out)
    assert latest.path.name == "2025-10-17_09-30-00" and latest.how == "latest"
    assert [p.name for p in latest.others] == ["2025-10-17_08-00-00", "2025-10-16_10-00-00"]
    day = resolve_run(str(out / "2025-10-17"), outputs_root=tmp_path / "elsewhere")
    assert (day.path.name, day.how) == ("2025-10-17_09-30-00", "prefix")
    assert [p.name for p in day.others] == ["2025-10-17_08-00-00"]
    assert resolve_run("2025-10-16", outputs_root=out).path.name == "2025-10-16_10-00-00"
    exact = resolve_run(str(out / "2025-10-17_08-00-00"))
    assert (exact.path.name, exact.how, exact.others) == ("2025-10-17_08-00-00", "path", [])


@pytest.mark.parametrize("arg", ["nothing-here", "latest", "."])
def test_resolve_rejects_non_runs(tmp_path: Path, arg: str, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunDirError, match="Expected a run directory") as err:
        resolve_run(arg, outputs_root=tmp_path / "outputs")
    assert isinstance(err.value, UsageError)


def test_not_a_run_directory(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(RunDirError, match="not a zk0 run directory"):
        analyze_run(tmp_path / "plain")


def test_clean_composite_is_strictly_falling() -> None:  # guards the fixture itself
    values = [clean_composite(n) for n in range(7)]
    assert all(b < a * 0.99 for a, b in zip(values, values[1:], strict=False))


def test_small_early_rise_is_a_warning_not_an_error(tmp_path: Path) -> None:
    # Noisy but fine: three small rises (+4.5 % in all) in the first rounds, then learning.
    noisy = write_run(tmp_path / "noisy",
                      composite=_composite([1.0, 1.01, 1.03, 1.045, 0.95, 0.9, 0.85])).root
    (f,) = [f for f in _analyze(noisy).findings if f.kind == "divergence"]
    assert f.severity == "warning" and f.rounds == [0, 1, 2, 3]
    assert "+4.5%" in f.evidence[0] and "divergence_min_rise" in f.message
    assert not [f for f in _analyze(noisy).findings if f.severity == "error"]


def test_real_divergence_is_still_an_error(tmp_path: Path) -> None:
    # A run that blows up: rises of +10 %, +18 %, +23 % (+60 % from round 2), then 2.6x best.
    diverging = write_run(tmp_path / "div",
                          composite=_composite([1.0, 0.9, 0.8, 0.88, 1.04, 1.28, 2.1])).root
    found = [f for f in _analyze(diverging).findings if f.kind == "divergence"]
    assert {f.severity for f in found} == {"error"}
    assert [f.rounds for f in found] == [[2, 3, 4, 5, 6], [6]]
    assert "+162.5%" in found[0].evidence[0]
    # The same rise counts as small once divergence_min_rise is above it.
    lax = _analyze(diverging, thresholds=AnalysisThresholds(divergence_min_rise=2.0))
    severities = sorted(f.severity for f in lax.findings if f.kind == "divergence")
    assert severities == ["error", "warning"]


def test_early_stopped_run_names_its_stop_reason(tmp_path: Path) -> None:
    rd = write_run(tmp_path, rounds=3)
    rd.update_run(stop_reason="early stop at round 3: ...", best_round=1)
    s = _analyze(rd.root)
    assert s.status == "completed" and "(early stop at round 3: ...)" in s.status_note
