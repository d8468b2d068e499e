"""Report writers: ``report/summary.json`` (schema in docs/analyze-run.md) and ``report.md``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zk0cli.analysis.model import LossStats, Summary
from zk0cli.core.rundir import write_json

SUMMARY_JSON = "summary.json"
REPORT_MD = "report.md"


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for people: ``n/a`` for missing, ``nan``/``inf`` as such, 4 significant digits."""
    return "n/a" if value is None else f"{value:.{digits}g}"


def stats_cells(stats: LossStats) -> list[str]:
    """``[first, best (round), last]`` cells of a loss series."""
    def cell(p: object) -> str:
        return "n/a" if p is None else f"{fmt(p.value)} (r{p.round})"  # type: ignore[attr-defined]
    return [cell(stats.first), cell(stats.best), cell(stats.last)]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def render_markdown(summary: Summary, plots: Mapping[str, Path] | None = None) -> str:
    """The text of ``report.md``.

    Args:
        summary: The run summary.
        plots: Plot name -> PNG path (linked relative to the report folder).

    Returns:
        Markdown text.
    """
    s = summary
    lines = [f"# Run {s.run_name}", "", f"- **Status:** {s.status} — {s.status_note}",
             f"- **Format:** {s.format}", f"- **Directory:** `{s.run_dir}`",
             f"- **Rounds:** {s.rounds_completed}"
             + (f" of {s.rounds_planned} planned" if s.rounds_planned else ""),
             f"- **Clients:** {', '.join(s.expected_clients) or 'none seen'}; mean participation "
             + ("n/a" if s.participation_pct is None else f"{fmt(s.participation_pct, 3)}%"),
             f"- **Seconds per round (mean):** {fmt(s.seconds_per_round_mean, 3)}",
             f"- **Latest checkpoint:** {s.latest_checkpoint or 'none'}"]
    if s.privacy:
        lines.append(f"- **Differential privacy:** {privacy_line(s.privacy)}")
    for note in s.notes:
        lines.append(f"- _Note:_ {note}")
    if s.config_highlights:
        lines += ["", "## Configuration", ""]
        lines += _table(["key", "value"], [[k, str(v)] for k, v in s.config_highlights.items()])
    lines += ["", "## Server eval loss", ""]
    lines += _table(["series", "first", "best", "last"],
                    [[name, *stats_cells(st)] for name, st in s.server_eval.items()])
    lines += ["", "## Trends", ""]
    lines += _table(["metric", "first", "best", "last"],
                    [["client training loss (mean)", *stats_cells(s.client_loss)],
                     ["param update norm (mean)", *stats_cells(s.param_update_norm)]])
    lines += ["", "## Rounds", ""]
    lines += _table(
        ["round", "aggregated", "clients", "failures", "participation %", "composite",
         "client loss", "update norm", "mu", "lr", "seconds"],
        [[str(r.round), str(r.aggregated), str(r.clients), str(r.failures),
          fmt(r.participation_pct, 3), fmt(r.composite), fmt(r.client_loss_avg),
          fmt(r.param_update_norm_avg), fmt(r.proximal_mu), fmt(r.lr), fmt(r.seconds, 3)]
         for r in s.rounds])
    lines += _closed_loop_lines(s)
    lines += ["", f"## Findings ({len(s.findings)})", ""]
    if not s.findings:
        lines.append("No anomalies found.")
    for f in s.findings:
        rounds = f" — rounds {', '.join(map(str, f.rounds))}" if f.rounds else ""
        lines.append(f"- **{f.severity} · {f.kind}**: {f.message}{rounds}")
        lines += [f"  - {e}" for e in f.evidence[:20]]
        if len(f.evidence) > 20:
            lines.append(f"  - … {len(f.evidence) - 20} more")
    if s.comparison is not None:
        c = s.comparison
        lines += ["", f"## Comparison with {c.other_run_name}", "",
                  f"- Other run: `{c.other_run_dir}` ({c.other_status})",
                  f"- Rounds completed: {c.rounds_completed[0]} vs {c.rounds_completed[1]}",
                  f"- Client loss (last): {fmt(c.client_loss_last[0])} vs "
                  f"{fmt(c.client_loss_last[1])}",
                  f"- Findings: {c.findings_count[0]} vs {c.findings_count[1]}", ""]
        lines += _table(["series", "best", "other best", "diff", "last", "other last", "diff"],
                        [[n, fmt(v["best"]), fmt(v["other_best"]), fmt(v["best_diff"]),
                          fmt(v["last"]), fmt(v["other_last"]), fmt(v["last_diff"])]
                         for n, v in c.server_eval.items()])
        if c.config_differences:
            lines += ["", "Configuration differences:", ""]
            lines += _table(["key", "this run", "other run"],
                            [[k, str(a), str(b)] for k, (a, b) in c.config_differences.items()])
        if c.not_compared:
            lines += ["", "Not compared (only one run has them):", ""]
            lines += [f"- {line}" for line in c.not_compared]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({path.name})" for name, path in plots.items()]
    return "\n".join(lines) + "\n"


def _closed_loop_lines(s: Summary) -> list[str]:
    """The report's closed-loop table (``eval.closed_loop``); nothing when never rolled out."""
    rows = []
    for r in s.rounds:
        for task, t in sorted(r.closed_loop.items()):
            def pct(key: str, t: dict[str, float | None] = t) -> str:
                v = t.get(key)
                return "n/a" if v is None else f"{100 * v:.0f}%"
            dist = t.get("mean_final_distance")
            rows.append([str(r.round), task,
                         f"{fmt(t.get('successes'), 6)}/{fmt(t.get('episodes'), 6)}",
                         pct("success_rate"), f"{pct('ci_low')}–{pct('ci_high')}",
                         fmt(t.get("mean_steps_to_success"), 3),
                         "n/a" if dist is None else f"{100 * dist:.1f} cm"])
    if not rows:
        return []
    return ["", "## Closed-loop success (simulator)", "",
            "Rollouts of the global model on seeded layouts no client trained on "
            "(`eval.closed_loop`); interval: Wilson 95 %.", "",
            *_table(["round", "task", "solved", "success", "95 % interval",
                     "mean steps to success", "mean final distance"], rows)]


def _strings_for_non_finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _strings_for_non_finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strings_for_non_finite(v) for v in obj]
    return obj


def summary_jsonable(summary: Summary) -> dict[str, Any]:
    """The summary as ``summary.json`` holds it: JSON types, NaN/Inf as ``"nan"``/``"inf"``."""
    return _strings_for_non_finite(summary.model_dump(mode="json"))


def write_report(summary: Summary, report_dir: Path, markdown: str) -> None:
    """Write ``summary.json`` and ``report.md`` into ``report_dir`` (atomically for the JSON).

    Raises:
        OSError: The folder is not writable.
    """
    report_dir.mkdir(parents=True, exist_ok=True)
    write_json(report_dir / SUMMARY_JSON, summary_jsonable(summary))
    (report_dir / REPORT_MD).write_text(markdown, encoding="utf-8")


def privacy_line(privacy: dict[str, Any]) -> str:
    """run.json's ``privacy`` in words: ε at δ after the rounds charged, and the settings."""
    eps = privacy.get("epsilon")
    try:
        eps_f = float(str(eps))  # "inf" is written as a string
        eps_text = "infinite (no noise)" if eps_f == float("inf") else f"{eps_f:.4g}"
    except (TypeError, ValueError):
        eps_text = "not recorded"
    limit = privacy.get("max_epsilon")
    return (f"epsilon {eps_text} at delta {privacy.get('delta')} after "
            f"{privacy.get('rounds_charged')} noised round(s); clipping norm "
            f"{privacy.get('clipping_norm')}, noise multiplier {privacy.get('noise_multiplier')}"
            f", {privacy.get('sample_size')} of {privacy.get('population')} clients a round"
            + (f"; budget {limit}" if limit is not None else ""))
