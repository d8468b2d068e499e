"""Run analysis: summary, anomaly findings, report and plots for a run directory.

Public API::

    analyze_run(run_dir, *, compare=None, thresholds=None, write_report=True) -> RunAnalysis
    resolve_run(arg, *, outputs_root=Path("outputs")) -> ResolvedRun
    AnalysisThresholds, RunAnalysis, Summary, Finding

Reads zk0 run directories (docs/run-directory.md) and the upstream zk0 project's; writes
only into the run's ``report/`` folder.
"""

from __future__ import annotations

from pathlib import Path

from zk0cli.analysis.findings import detect_all
from zk0cli.analysis.load import ResolvedRun, load_run, resolve_run
from zk0cli.analysis.model import Finding, RunAnalysis, Summary
from zk0cli.analysis.report import render_markdown
from zk0cli.analysis.report import write_report as _write_report
from zk0cli.analysis.summary import compare as _compare
from zk0cli.analysis.summary import summarize
from zk0cli.analysis.thresholds import AnalysisThresholds
from zk0cli.core.rundir import RunDir
from zk0cli.errors import RunDirError
from zk0cli.log import logger

__all__ = [
    "AnalysisThresholds", "Finding", "ResolvedRun", "RunAnalysis", "Summary", "analyze_run",
    "resolve_run",
]


def analyze_run(
    run_dir: Path,
    *,
    compare: Path | None = None,
    thresholds: AnalysisThresholds | None = None,
    write_report: bool = True,
) -> RunAnalysis:
    """Analyse a run directory: summary, findings and (optionally) ``report/``.

    Args:
        run_dir: A zk0 or upstream-zk0 run directory (running, failed and interrupted runs
            included).
        compare: Another run directory to compare with (overlay plot, differences).
        thresholds: Detector thresholds; defaults documented in docs/analyze-run.md.
        write_report: Write ``report/summary.json``, ``report/report.md`` and the PNG plots
            into ``run_dir`` (replacing an earlier report there).

    Returns:
        The analysis: summary (with findings and comparison), report paths and the plotted
        series.

    Raises:
        RunDirError: ``run_dir`` or ``compare`` is not a run directory, or ``report/``
            cannot be written.
    """
    th = thresholds or AnalysisThresholds()
    run = load_run(Path(run_dir), verify_checksums=th.verify_checksums)
    summary = summarize(run, detect_all(run, th))
    if compare is not None:
        other = load_run(Path(compare), verify_checksums=th.verify_checksums)
        other_summary = summarize(other, detect_all(other, th))
        summary = summary.model_copy(
            update={"comparison": _compare(summary, other_summary, run, other)})
    logger.debug("analysed %s: %s rounds, %s findings", run.root, summary.rounds_completed,
                len(summary.findings))
    if not write_report:
        return RunAnalysis(summary=summary, markdown=render_markdown(summary))
    from zk0cli.analysis.plots import write_plots

    report_dir = RunDir(run.root).report_dir
    try:
        plots, series = write_plots(summary, report_dir)
        markdown = render_markdown(summary, plots)
        _write_report(summary, report_dir, markdown)
    except OSError as err:
        raise RunDirError(
            f"Cannot write the report into {report_dir} ({err}). Make the run directory "
            "writable, or pass --no-write-report to only print the summary."
        ) from None
    return RunAnalysis(summary=summary, report_dir=report_dir, plots=plots,
                       plot_series=series, markdown=markdown)
