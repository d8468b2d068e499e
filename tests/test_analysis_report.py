"""report/ of zk0 analyze-run: summary.json, report.md, PNG plots checked against the summary,
and the ``zk0 analyze-run`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from analysis_fixtures import write_run, write_upstream_run
from typer.testing import CliRunner

from zk0cli.analysis import analyze_run
from zk0cli.cli.app import app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """A run with a NaN and a dropout, compared with a clean run; report written once."""
    out = tmp_path_factory.mktemp("outputs")
    other = write_run(out, name="2025-10-17_07-00-00")
    rd = write_run(out, name="2025-10-17_08-00-00", dropouts={2: ["1"]},
                   overrides=[(4, ("server_eval", "datasets", "heldout/push"), math.nan)])
    return rd, other, analyze_run(rd.root, compare=other.root)


def _finite_points(rows, get):
    pts = [(r["round"], get(r)) for r in rows]
    return ([float(n) for n, v in pts if isinstance(v, float) and math.isfinite(v)],
            [v for _, v in pts if isinstance(v, float) and math.isfinite(v)])


def test_report_files(analysed) -> None:
    rd, _, analysis = analysed
    assert analysis.report_dir == rd.report_dir
    names = {p.name for p in rd.report_dir.iterdir()}
    assert {"summary.json", "report.md", "server_eval_loss.png", "client_loss.png",
            "param_update_norm.png", "participation.png", "lr_mu_schedule.png",
            "compare.png"} <= names
    for path in analysis.plots.values():
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    md = (rd.report_dir / "report.md").read_text()
    assert md == analysis.markdown
    assert "# Run 2025-10-17_08-00-00" in md and "client_dropout" in md
    assert "## Comparison with 2025-10-17_07-00-00" in md
    assert "![server_eval_loss](server_eval_loss.png)" in md


def test_summary_json_schema(analysed) -> None:
    rd, other, _ = analysed
    summary = json.loads((rd.report_dir / "summary.json").read_text())
    assert summary["schema_version"] == 1
    assert summary["status"] == "completed" and summary["format"] == "zk0"
    assert summary["rounds"][4]["eval_datasets"]["heldout/push"] == "nan"
    assert {f["kind"] for f in summary["findings"]} == {"client_dropout", "non_finite"}
    drop = next(f for f in summary["findings"] if f["kind"] == "client_dropout")
    assert (drop["client_id"], drop["rounds"]) == ("1", [2])
    assert summary["server_eval"]["composite"]["best"] == {"round": 6,
                                                           "value": pytest.approx(0.85**6)}
    comp = summary["comparison"]
    assert comp["other_run_name"] == other.root.name
    assert comp["server_eval"]["composite"]["best_diff"] == pytest.approx(0.0)
    assert comp["findings_count"] == [2, 0]


def test_plotted_series_match_summary_json(analysed) -> None:
    rd, _, analysis = analysed
    rows = json.loads((rd.report_dir / "summary.json").read_text())["rounds"]
    s = analysis.plot_series
    assert s["server_eval_loss"]["composite"] == _finite_points(rows, lambda r: r["composite"])
    push = _finite_points(rows, lambda r: r["eval_datasets"]["heldout/push"])
    assert s["server_eval_loss"]["heldout/push"] == push
    assert 4.0 not in push[0]  # the NaN is not drawn
    for cid in ("0", "1", "2"):
        assert s["client_loss"][f"client {cid}"] == _finite_points(
            rows, lambda r, c=cid: r["client_losses"].get(c))
    assert 2.0 not in s["client_loss"]["client 1"][0]  # dropped out in round 2
    assert s["client_loss"]["mean"] == _finite_points(rows, lambda r: r["client_loss_avg"])
    assert s["participation"]["participation %"] == _finite_points(
        rows, lambda r: r["participation_pct"])
    assert s["participation"]["participation %"][1][1] == pytest.approx(200 / 3)
    assert s["param_update_norm"]["param_update_norm (mean)"] == _finite_points(
        [r for r in rows if r["round"] >= 1], lambda r: r["param_update_norm_avg"])
    assert s["schedule"]["lr"] == _finite_points(rows, lambda r: r["lr"])
    assert s["schedule"]["proximal_mu"] == _finite_points(rows, lambda r: r["proximal_mu"])
    other_rows = json.loads((rd.report_dir / "summary.json").read_text())["comparison"][
        "other_rounds"]
    assert s["compare"]["2025-10-17_07-00-00 composite"] == _finite_points(
        other_rows, lambda r: r["composite"])


# --- the command ---------------------------------------------------------------------------

runner = CliRunner()


def test_cli_text_prefix_lists_other_runs(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    write_run(out, name="2025-10-17_07-00-00", rounds=2, checkpoints=(), latest=None)
    write_run(out, name="2025-10-17_08-00-00", rounds=2, checkpoints=(), latest=None,
              failures={2: ["0"]})
    res = runner.invoke(app, ["analyze-run", str(out / "2025-10-17"), "--no-write-report"])
    assert res.exit_code == 0, res.output
    assert "2025-10-17_08-00-00" in res.stderr and "also: 2025-10-17_07-00-00" in res.stderr
    assert "Findings (1)" in res.stdout and "client_dropout" in res.stdout
    assert not (out / "2025-10-17_08-00-00" / "report").exists()


def test_cli_json_equals_summary_json(tmp_path: Path) -> None:
    root = write_upstream_run(tmp_path / "outputs")
    res = runner.invoke(app, ["analyze-run", "latest", "--outputs-root", str(tmp_path / "outputs"),
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout)
    assert printed == json.loads((root / "report" / "summary.json").read_text())
    assert printed["format"] == "upstream"


def test_cli_markdown(tmp_path: Path) -> None:
    rd = write_run(tmp_path, rounds=2, checkpoints=(), latest=None)
    res = runner.invoke(app, ["analyze-run", str(rd.root), "--format", "md", "--no-write-report"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("# Run ") and "No anomalies found." in res.stdout


@pytest.mark.parametrize("args,needle", [
    (["analyze-run", "{tmp}"], "is not a zk0 run directory"),
    (["analyze-run", "{tmp}/2031"], "neither a directory nor a prefix"),
    (["analyze-run", "{run}", "--format", "html"], "--format"),
    (["analyze-run", "{run}", "--compare", "{tmp}/nope"], "neither a directory nor a prefix"),
])
def test_cli_bad_input_exits_2(tmp_path: Path, args: list[str], needle: str) -> None:
    rd = write_run(tmp_path / "outputs", rounds=1, checkpoints=(), latest=None)
    argv = [a.format(tmp=tmp_path, run=rd.root) for a in args]
    res = runner.invoke(app, argv)
    assert res.exit_code == 2, res.output
    assert needle in res.stderr
