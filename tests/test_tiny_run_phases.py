"""The phases of zk0 tiny-run after the federation count what analyze-run found."""

from __future__ import annotations

from pathlib import Path

from analysis_fixtures import write_run
from rich.console import Console

from zk0cli.analysis import analyze_run
from zk0cli.engine import tiny_run


def test_findings_are_counted_from_the_summary(tmp_path: Path) -> None:
    rd = write_run(tmp_path, failures={2: ["2"]}, checkpoint_tamper=[6])
    analysis = analyze_run(rd.root, write_report=False)
    expected = len(analysis.summary.findings)
    assert expected >= 2  # a client dropout and an incomplete checkpoint at least
    assert tiny_run.count_findings(analysis) == expected
    console = Console(record=True, width=200)
    assert tiny_run.analyze(rd, console.print) == expected
    assert f"{expected} finding(s)" in console.export_text()


def test_clean_run_reports_zero_findings(tmp_path: Path) -> None:
    rd = write_run(tmp_path)
    assert tiny_run.analyze(rd, Console(record=True).print) == 0
