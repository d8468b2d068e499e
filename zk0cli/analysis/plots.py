"""Matplotlib PNG plots of a run summary (Agg canvas; no window, no pyplot state).

Every plotting function draws from the summary's per-round rows and returns the series
it actually drew, read back from the axes' ``Line2D`` objects, as
``{label: (rounds, values)}``, so tests can check the plots against ``summary.json``.
Only finite values are drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zk0cli.analysis.model import RoundRow, Summary

Series = dict[str, tuple[list[float], list[float]]]
PLOT_FILES = {
    "server_eval_loss": "server_eval_loss.png",
    "client_loss": "client_loss.png",
    "param_update_norm": "param_update_norm.png",
    "participation": "participation.png",
    "schedule": "lr_mu_schedule.png",
    "compare": "compare.png",
    "closed_loop": "closed_loop_success.png",
}


def _figure(ncols: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4 * ncols, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _points(rows: Sequence[RoundRow], get: Callable[[RoundRow], float | None]
            ) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in rows:
        v = get(row)
        if v is not None and math.isfinite(v):
            xs.append(row.round)
            ys.append(v)
    return xs, ys


def _line(ax: Any, rows: Sequence[RoundRow], get: Callable[[RoundRow], float | None],
          label: str, **style: Any) -> None:
    xs, ys = _points(rows, get)
    if xs:
        ax.plot(xs, ys, label=label, **{"marker": "o", "markersize": 3, **style})


def _drawn(*axes: Any) -> Series:
    out: Series = {}
    for ax in axes:
        for line in ax.get_lines():
            out[str(line.get_label())] = ([float(x) for x in line.get_xdata()],
                                          [float(y) for y in line.get_ydata()])
    return out


def _finish(fig: Any, axes: Sequence[Any], path: Path, title: str, ylabel: str,
            *, twins: Sequence[Any] = ()) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel("round")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
        lines = [*ax.get_lines(), *(line for t in twins for line in t.get_lines())]
        rounds = sorted({float(x) for line in lines for x in line.get_xdata()})
        if rounds and rounds[-1] - rounds[0] < 2:  # one or two rounds: the locator cannot
            ax.set_xlim(rounds[0] - 0.5, rounds[-1] + 0.5)  # find integers in a tiny span
            ax.set_xticks([int(r) for r in rounds])
        if lines:  # one legend for the axis and its twins (lr and mu together)
            ax.legend(lines, [str(line.get_label()) for line in lines], fontsize="small")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title)
    fig.savefig(path)


def _eval_loss(name: str) -> Callable[[RoundRow], float | None]:
    return lambda r: r.eval_datasets.get(name)


def _client_loss(cid: str) -> Callable[[RoundRow], float | None]:
    return lambda r: r.client_losses.get(cid)


def plot_server_eval_loss(rows: Sequence[RoundRow], path: Path) -> Series:
    """Server eval loss per round: composite and one line per eval dataset."""
    fig, (ax,) = _figure()
    # The composite is a wide line below thin dashed dataset lines, so that it stays visible
    # when it equals the only eval dataset.
    _line(ax, rows, lambda r: r.composite, "composite", linewidth=4, color="black",
          alpha=0.45, zorder=2)
    for name in sorted({k for r in rows for k in r.eval_datasets}):
        _line(ax, rows, _eval_loss(name), name, linewidth=1.3, linestyle="--", zorder=3)
    _finish(fig, [ax], path, "Server eval loss (held-out)", "flow-matching loss")
    return _drawn(ax)


def plot_client_loss(rows: Sequence[RoundRow], path: Path) -> Series:
    """Client training loss per round: one line per client and the mean."""
    fig, (ax,) = _figure()
    for cid in sorted({k for r in rows for k in r.client_losses},
                      key=lambda c: (0, int(c)) if c.isdigit() else (1, c)):
        _line(ax, rows, _client_loss(cid), f"client {cid}")
    _line(ax, rows, lambda r: r.client_loss_avg, "mean", linewidth=2.5, color="black",
          linestyle="--")
    _finish(fig, [ax], path, "Client training loss", "loss")
    return _drawn(ax)


def plot_param_update_norm(rows: Sequence[RoundRow], path: Path) -> Series:
    """Mean client parameter-update L2 norm per round."""
    fig, (ax,) = _figure()
    _line(ax, [r for r in rows if r.round >= 1], lambda r: r.param_update_norm_avg,
          "param_update_norm (mean)")
    _finish(fig, [ax], path, "Parameter update norm", "||w_end - w_start||")
    return _drawn(ax)


def plot_participation(rows: Sequence[RoundRow], path: Path) -> Series:
    """Clients aggregated per round, as a percentage of the clients seen in the run."""
    fig, (ax,) = _figure()
    _line(ax, rows, lambda r: r.participation_pct, "participation %")
    ax.set_ylim(-5, 105)
    _finish(fig, [ax], path, "Client participation", "% of clients")
    return _drawn(ax)


def plot_schedule(rows: Sequence[RoundRow], path: Path) -> Series:
    """Learning rate (left axis) and FedProx mu (right axis) per round."""
    fig, (ax,) = _figure()
    _line(ax, rows, lambda r: r.lr, "lr", color="tab:blue")
    ax2 = ax.twinx()  # mu on its own scale (often 1e-2 against an lr of 1e-4)
    _line(ax2, rows, lambda r: r.proximal_mu, "proximal_mu", color="tab:orange",
          linestyle="--", marker="s")
    ax2.set_ylabel("proximal mu")
    _finish(fig, [ax], path, "LR and FedProx mu schedule", "learning rate", twins=[ax2])
    return _drawn(ax, ax2)


def _success_pct(task: str, key: str = "success_rate") -> Callable[[RoundRow], float | None]:
    def get(r: RoundRow) -> float | None:
        v = (r.closed_loop.get(task) or {}).get(key)
        return None if v is None else 100.0 * v
    return get


def plot_closed_loop(rows: Sequence[RoundRow], path: Path) -> Series:
    """Closed-loop success rate (%) per task and round, with its Wilson 95 % interval band."""
    fig, (ax,) = _figure()
    for task in sorted({k for r in rows for k in r.closed_loop}):
        _line(ax, rows, _success_pct(task), task)
        lo_x, lo = _points(rows, _success_pct(task, "ci_low"))
        hi_x, hi = _points(rows, _success_pct(task, "ci_high"))
        if lo_x and lo_x == hi_x:
            ax.fill_between(lo_x, lo, hi, alpha=0.2)
    ax.set_ylim(-5, 105)
    _finish(fig, [ax], path, "Closed-loop success (simulator, 95% Wilson interval)",
            "% of episodes solved")
    return _drawn(ax)


def plot_compare(this: Summary, path: Path) -> Series:
    """Overlay of this run and ``--compare`` OTHER: server composite and client mean loss."""
    assert this.comparison is not None
    other, name, oname = this.comparison.other_rounds, this.run_name, this.comparison.other_run_name
    fig, (left, right) = _figure(2)
    _line(left, this.rounds, lambda r: r.composite, f"{name} composite")
    _line(left, other, lambda r: r.composite, f"{oname} composite", linestyle="--")
    _line(right, this.rounds, lambda r: r.client_loss_avg, f"{name} client mean")
    _line(right, other, lambda r: r.client_loss_avg, f"{oname} client mean", linestyle="--")
    left.set_title("server composite eval loss", fontsize="medium")
    right.set_title("client training loss (mean)", fontsize="medium")
    _finish(fig, [left, right], path, "Run comparison", "loss")
    return _drawn(left, right)


def write_plots(summary: Summary, report_dir: Path) -> tuple[dict[str, Path], dict[str, Series]]:
    """Write every plot of ``summary`` into ``report_dir``.

    Returns:
        Plot name -> PNG path, and plot name -> the series drawn.
    """
    report_dir.mkdir(parents=True, exist_ok=True)
    makers: dict[str, Callable[[Path], Series]] = {
        "server_eval_loss": lambda p: plot_server_eval_loss(summary.rounds, p),
        "client_loss": lambda p: plot_client_loss(summary.rounds, p),
        "param_update_norm": lambda p: plot_param_update_norm(summary.rounds, p),
        "participation": lambda p: plot_participation(summary.rounds, p),
        "schedule": lambda p: plot_schedule(summary.rounds, p),
    }
    if any(r.closed_loop for r in summary.rounds):
        makers["closed_loop"] = lambda p: plot_closed_loop(summary.rounds, p)
    if summary.comparison is not None:
        makers["compare"] = lambda p: plot_compare(summary, p)
    paths, series = {}, {}
    for key, make in makers.items():
        path = report_dir / PLOT_FILES[key]
        series[key] = make(path)
        paths[key] = path
    return paths, series
