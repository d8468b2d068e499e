"""analyze-run on other people's runs, and what its report, plots and tables show."""

from pathlib import Path

import pytest
from analysis_fixtures import write_run, write_upstream_sparse_run
from typer.testing import CliRunner

from zk0cli.analysis import analyze_run
from zk0cli.cli.app import app


def test_upstream_history_keyed_by_position_and_sparse_evaluation(tmp_path: Path) -> None:
    root = write_upstream_sparse_run(tmp_path)
    s = analyze_run(root, write_report=False).summary
    composite = {r.round: r.composite for r in s.rounds if r.composite is not None}
    assert composite == pytest.approx({0: 0.9, 2: 0.8, 4: 0.7, 6: 0.6})
    assert [f.kind for f in s.findings if f.kind == "history_gap"] == []  # 1, 3, 5: by design
    assert any("keyed by position" in n for n in s.notes)
    assert s.latest_checkpoint == "checkpoint_round_6"
    assert s.rounds_planned == 6


def test_compare_zk0_with_upstream_compares_only_shared_fields(tmp_path: Path) -> None:
    other = write_upstream_sparse_run(tmp_path)
    this = write_run(tmp_path, rounds=3).root
    c = analyze_run(this, compare=other, write_report=False).summary.comparison
    assert c is not None
    assert c.config_differences == {}  # no key is in both configurations
    assert set(c.server_eval) == {"composite"}
    listed = "\n".join(c.not_compared)
    assert "config keys only in this run" in listed and "federation.rounds" in listed
    assert "num-server-rounds" in listed and "lerobot/svla_so100_stacking" in listed
    res = CliRunner().invoke(app, ["analyze-run", str(this), "--compare", str(other),
                                   "--no-write-report"])
    assert res.exit_code == 0, res.output
    assert " vs None" not in res.output and "not compared:" in res.output


def test_corrupted_client_file_is_named_in_the_notes(tmp_path: Path) -> None:
    rd = write_run(tmp_path, rounds=2)
    bad = rd.client_round("1", 2)
    bad.write_text('{"client_id": "1", "loss": ', encoding="utf-8")
    s = analyze_run(rd.root, write_report=False).summary
    assert any("clients/1/round_2.json could not be read" in n for n in s.notes), s.notes


def test_a_folder_without_server_is_not_a_run(tmp_path: Path) -> None:
    rd = write_run(tmp_path, rounds=1)
    import shutil

    shutil.rmtree(rd.server_dir)
    res = CliRunner().invoke(app, ["analyze-run", str(rd.root), "--no-write-report"])
    assert res.exit_code == 2, res.output
    assert "no server/ folder" in res.output and "No anomalies found" not in res.output


def test_seconds_per_round_excludes_round_0(tmp_path: Path) -> None:
    rd = write_run(tmp_path, rounds=3, overrides=[(0, ("seconds",), 95.0)])
    assert analyze_run(rd.root, write_report=False).summary.seconds_per_round_mean == \
        pytest.approx(10.0)


def test_rounds_table_fits_80_columns(tmp_path: Path) -> None:
    from rich.console import Console

    from zk0cli.cli.analyze import render_analysis

    rd = write_run(tmp_path, rounds=12, failures={3: ["1"]})
    console = Console(width=80, record=True, markup=False)
    render_analysis(analyze_run(rd.root, write_report=False), console)
    text = console.export_text()
    block = text[text.index("Rounds"):text.index("clients: aggregated/failed")]
    rows = [line for line in block.splitlines() if line.strip()[:2].strip().isdigit()]
    assert len(rows) == 13  # rounds 0-12, one line each (nothing wrapped)
    assert all(len(line) <= 80 for line in block.splitlines())
    assert any(" 2/1 " in line for line in rows)  # round 3: 2 aggregated, 1 failed


def test_plots_integer_rounds_lr_and_mu_legend_and_visible_composite(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    from zk0cli.analysis import plots

    made: list = []
    real = plots._figure

    def keep(ncols: int = 1):
        fig, axes = real(ncols)
        made.append(fig)
        return fig, axes

    rd = write_run(tmp_path, rounds=3)
    summary = analyze_run(rd.root, write_report=False).summary
    one = [r.model_copy(update={"eval_datasets": {"only": r.composite}}) for r in summary.rounds]
    import unittest.mock as mock

    with mock.patch.object(plots, "_figure", keep):
        plots.plot_server_eval_loss(one, tmp_path / "a.png")
        plots.plot_schedule(summary.rounds, tmp_path / "b.png")
    loss_fig, sched_fig = made
    assert isinstance(loss_fig, Figure)
    ax = loss_fig.axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    comp, only = {str(line.get_label()): line for line in ax.get_lines()}.values()
    assert list(comp.get_ydata()) == list(only.get_ydata())  # the case that hid it
    assert comp.get_linewidth() > only.get_linewidth() and only.get_linestyle() == "--"
    legend = [t.get_text() for t in sched_fig.axes[0].get_legend().get_texts()]
    assert legend == ["lr", "proximal_mu"]
    lr_ax, mu_ax = sched_fig.axes
    assert lr_ax.get_lines()[0].get_label() == "lr"
    assert mu_ax.get_lines()[0].get_label() == "proximal_mu"  # its own y axis


def test_a_one_round_run_has_whole_round_ticks(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from zk0cli.analysis import plots

    rd = write_run(tmp_path, rounds=1)
    summary = analyze_run(rd.root, write_report=False).summary
    before = set(plt.get_fignums())
    for plot in (plots.plot_client_loss, plots.plot_param_update_norm,
                 plots.plot_participation, plots.plot_schedule):
        fig, axes = plots._figure()
        real = plots._figure
        plots._figure = lambda ncols=1, f=fig, a=axes: (f, a)  # type: ignore[assignment]
        try:
            plot(summary.rounds, tmp_path / f"{plot.__name__}.png")
        finally:
            plots._figure = real  # type: ignore[assignment]
        ax = fig.axes[0]
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), (plot.__name__, ticks)
    assert set(plt.get_fignums()) >= before


def test_header_names_the_clients_that_ran_and_what_was_left_out(tmp_path: Path) -> None:
    """`--clients 2` of three data.clients shows two; dropped episodes and statistics left
    out (run.json) are noted in the summary and the printed header."""
    import json

    rd = write_run(tmp_path, rounds=2, clients=2)
    cfg = json.loads(rd.config_json.read_text())
    cfg["data"]["clients"] = [{"source": "sim", "name": n}
                              for n in ("lift", "pick_place", "stack")]
    rd.config_json.write_text(json.dumps(cfg))
    rd.update_run(skipped_episodes=[{"dataset": "pick_place", "episodes": [0, 3],
                                     "problems": ["episode 0: timestamps drift"]}],
                  stats_left_out=["stack: observation.state is not finite"])
    s = analyze_run(rd.root, write_report=False).summary
    assert s.config_highlights["data.clients"] == ["lift", "pick_place"]
    assert "data.skip_bad_episodes dropped episodes [0, 3] of pick_place" in s.notes
    assert "left out of the merged statistics: stack: observation.state is not finite" \
        in s.notes
    res = CliRunner().invoke(app, ["analyze-run", str(rd.root), "--no-write-report"])
    assert res.exit_code == 0, res.output
    assert "dropped episodes [0, 3]" in res.output
