"""``zk0 analyze-run``: report, plots and anomalies for a run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.text import Text

from zk0cli.cli.errors import err_console, handle_errors, make_console
from zk0cli.errors import ConfigError, field_problems

if TYPE_CHECKING:  # pydantic models; imported when the command runs, so --help stays fast
    from zk0cli.analysis.model import LossStats, RunAnalysis

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _rounds_text(rounds: list[int]) -> str:
    """``[1, 2, 3, 7]`` as ``1-3, 7``."""
    parts: list[str] = []
    for r in rounds:
        if parts and parts[-1].split("-")[-1].isdigit() and int(parts[-1].split("-")[-1]) == r - 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{r}"
        else:
            parts.append(str(r))
    return ", ".join(parts)


def _stats(stats: LossStats) -> list[str]:
    return ["n/a" if p is None else f"{_fmt(p.value)} (r{p.round})"
            for p in (stats.first, stats.best, stats.last)]


def render_analysis(analysis: RunAnalysis, console: Console, *, max_rounds: int = 30) -> None:
    """Print an analysis as rich tables: overview, losses, rounds, findings, comparison.

    Args:
        analysis: The result of :func:`zk0cli.analysis.analyze_run`.
        console: Where to print.
        max_rounds: Show at most this many rounds (the last ones) in the rounds table.
    """
    from rich.table import Table

    s = analysis.summary
    status_style = {"completed": "green", "failed": "red", "running": "cyan"}.get(s.status,
                                                                                    "yellow")
    over = Table(title=f"Run {s.run_name}", show_header=False, title_justify="left")
    over.add_column(style="bold")
    over.add_column()
    over.add_row("status", Text.assemble((s.status, status_style), f" — {s.status_note}"))
    over.add_row("format", s.format)
    over.add_row("rounds", f"{s.rounds_completed}"
                 + (f" of {s.rounds_planned}" if s.rounds_planned else ""))
    over.add_row("clients", f"{', '.join(s.expected_clients) or 'none seen'} "
                 "(mean participation " + ("n/a)" if s.participation_pct is None
                                          else f"{_fmt(s.participation_pct, 3)}%)"))
    over.add_row("seconds/round", _fmt(s.seconds_per_round_mean, 3))
    over.add_row("latest checkpoint", s.latest_checkpoint or "none")
    for key, value in s.config_highlights.items():
        over.add_row(key, str(value))
    for note in s.notes:
        over.add_row("note", note)
    console.print(over)

    losses = Table(title="Losses (first / best / last)", title_justify="left")
    for col in ("series", "first", "best", "last"):
        losses.add_column(col)
    for name, st in s.server_eval.items():
        losses.add_row(f"server {name}", *_stats(st))
    losses.add_row("client training (mean)", *_stats(s.client_loss))
    losses.add_row("param update norm", *_stats(s.param_update_norm))
    console.print(losses)

    rows = s.rounds[-max_rounds:]
    shown = f" (last {max_rounds})" if len(s.rounds) > max_rounds else ""
    # Fits an 80-column terminal: no vertical rules, one space of padding, short headers.
    from rich import box

    rt = Table(title=f"Rounds{shown}", title_justify="left", box=box.SIMPLE_HEAD,
               padding=(0, 1), caption="clients: aggregated/failed; s: seconds",
               caption_justify="left")
    for col in ("round", "agg", "clients", "composite", "client loss", "update", "mu", "lr",
                "s"):
        rt.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        rt.add_row(str(r.round), {True: Text("yes"), False: Text("no", style="red"),
                                    None: Text("-")}[r.aggregated],
                   f"{r.clients}/{r.failures}", _fmt(r.composite), _fmt(r.client_loss_avg),
                   _fmt(r.param_update_norm_avg, 3), _fmt(r.proximal_mu, 3), _fmt(r.lr, 3),
                   _fmt(r.seconds, 3))
    console.print(rt)

    if not s.findings:
        console.print(Text("No anomalies found.", style="green"))
    else:
        ft = Table(title=f"Findings ({len(s.findings)})", title_justify="left")
        for col in ("severity", "kind", "rounds", "finding", "evidence"):
            ft.add_column(col)
        for f in s.findings:
            more = f" (+{len(f.evidence) - 3} more)" if len(f.evidence) > 3 else ""
            ft.add_row(Text(f.severity, style=_SEVERITY_STYLE[f.severity]), f.kind,
                       _rounds_text(f.rounds), f.message, "\n".join(f.evidence[:3]) + more)
        console.print(ft)

    if s.comparison is not None:
        c = s.comparison
        ct = Table(title=f"Compared with {c.other_run_name} ({c.other_status})",
                   title_justify="left")
        for col in ("series", "best", "other", "diff", "last", "other", "diff"):
            ct.add_column(col, justify="right")
        for name, v in c.server_eval.items():
            ct.add_row(name, _fmt(v["best"]), _fmt(v["other_best"]), _fmt(v["best_diff"]),
                       _fmt(v["last"]), _fmt(v["other_last"]), _fmt(v["last_diff"]))
        ct.add_row("client loss (last)", "", "", "", _fmt(c.client_loss_last[0]),
                   _fmt(c.client_loss_last[1]), "")
        console.print(ct)
        for key, (a, b) in c.config_differences.items():
            console.print(f"  config {key}: {a!r} vs {b!r}")
        for line in c.not_compared:
            console.print(f"  not compared: {line}")
    if analysis.report_dir is not None:
        console.print(f"Report written to {analysis.report_dir}")


def analyze_run(
    run: Annotated[str, typer.Argument(
        help="Run directory, 'latest' (newest under --outputs-root), or a prefix such as "
        "outputs/2025-10-17 (newest run of that day).", show_default=False)],
    compare: Annotated[str | None, typer.Option(
        "--compare", help="Another run (same forms as RUN) to overlay and compare.",
        show_default=False)] = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="Console output: text (tables), md (report.md) or json (summary.json).",
    )] = "text",
    outputs_root: Annotated[Path, typer.Option(
        "--outputs-root", help="Folder holding run directories (for 'latest' and prefixes).",
    )] = Path("outputs"),
    write_report: Annotated[bool, typer.Option(
        "--write-report/--no-write-report",
        help="Write report/ (summary.json, report.md, PNG plots) into the run directory.",
    )] = True,
) -> None:
    """Report, plots and anomalies for a run directory (also upstream zk0 runs).

    RUN is a run directory, 'latest' (the newest run under --outputs-root) or a prefix
    such as outputs/2025-10-17 (the newest run of that day; the others are listed).
    Writes report/ (summary.json, report.md, PNG plots) into the run directory.
    """
    with handle_errors("analyze-run"):
        from pydantic import ValidationError

        from zk0cli.analysis import analyze_run as run_analysis
        from zk0cli.analysis import resolve_run
        from zk0cli.analysis.model import AnalyzeRunOptions
        from zk0cli.analysis.report import summary_jsonable

        try:
            opts = AnalyzeRunOptions(run=run, compare=compare, format=fmt,  # type: ignore[arg-type]
                                     outputs_root=outputs_root, write_report=write_report)
        except ValidationError as err:
            raise ConfigError(field_problems(err, model=AnalyzeRunOptions,
                                             names={"run": "RUN", "fmt": "--format"},
                                             flags=True),
                              source="zk0 analyze-run",
                              hint="See `zk0 analyze-run --help` for the accepted values."
                              ) from None
        target = resolve_run(opts.run, outputs_root=opts.outputs_root)
        if target.how != "path":
            err_console.print(f"Analysing {target.path} (newest of {1 + len(target.others)} "
                              f"run(s) matching {opts.run!r}).")
            for other in target.others:
                err_console.print(f"  also: {other.name}")
        compare_path = (resolve_run(opts.compare, outputs_root=opts.outputs_root).path
                        if opts.compare else None)
        analysis = run_analysis(target.path, compare=compare_path,
                                write_report=opts.write_report)
        if opts.format == "json":
            typer.echo(json.dumps(summary_jsonable(analysis.summary), indent=2))
        elif opts.format == "md":
            typer.echo(analysis.markdown, nl=False)
        else:
            render_analysis(analysis, make_console())
