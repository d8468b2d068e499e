"""What a user sees: every check before anything starts, plain text, the live counter."""

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zk0cli.cli.app import app


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    """A 12-episode and a 4-episode local LeRobotDataset."""
    from zk0cli.testing import write_synthetic_dataset

    base = tmp_path_factory.mktemp("ds")
    big = write_synthetic_dataset(base / "big", repo_id="zk0test/big", episodes=12, frames=4,
                                  size=16)
    small = write_synthetic_dataset(base / "small", repo_id="zk0test/small", episodes=4,
                                    frames=4, size=16)
    return big, small


def _config(tmp_path: Path, roots: list[Path], **data: object) -> Path:
    clients = "\n".join(f'[[data.clients]]\nsource = "local"\nname = "{r.name}"\n'
                        f'root = "{r}"\n' for r in roots)
    extra = "\n".join(f"{k} = {json.dumps(v)}" for k, v in data.items())
    text = (f'seed = 0\noutput_root = "{tmp_path / "outputs"}"\n[model]\nkind = "tiny"\n'
            f'[data]\n{extra}\n{clients}\n[federation]\nrounds = 1\nmin_clients = 1\n')
    path = tmp_path / "cfg.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _refused(args: list[str], tmp_path: Path, *needles: str) -> str:
    t0 = time.monotonic()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert time.monotonic() - t0 < 30, "the check ran late"
    assert "Traceback" not in res.output
    for needle in needles:
        assert needle in res.output, (needle, res.output)
    outputs = tmp_path / "outputs"
    assert not outputs.exists() or not any(outputs.iterdir()), "a run directory was left"
    return res.output


def test_heldout_larger_than_a_dataset_names_that_dataset(tmp_path, two_datasets):
    big, small = two_datasets
    cfg = _config(tmp_path, [big, small])
    out = _refused(["simulate", "--config", str(cfg), "--set", "data.heldout_episodes=10"],
                   tmp_path, "'small'", "data.heldout_episodes")
    assert "'big'" not in out  # the 12-episode dataset is fine


def test_more_clients_than_episodes_and_all_held_out(tmp_path, two_datasets):
    _, small = two_datasets
    cfg = _config(tmp_path, [small], partition="episodes")
    _refused(["simulate", "--config", str(cfg), "--clients", "5",
              "--set", "data.heldout_episodes=0"], tmp_path, "5 clients", "'small'")
    _refused(["simulate", "--config", str(cfg), "--clients", "1",
              "--set", "data.heldout_episodes=4"], tmp_path, "leaves none", "'small'")


def test_a_client_builds_only_its_own_partition(tmp_path, two_datasets):
    from zk0cli.core import data as D
    from zk0cli.core.config import load_config

    big, small = two_datasets
    cfg = load_config(config_file=_config(tmp_path, [big, small]),
                      overrides=["data.heldout_episodes=10", "federation.num_clients=2"])
    part = D.client_partition(cfg, 0)  # the small dataset's problem is not client 0's
    assert part.name == "big" and part.train_episodes == [0, 1] and len(part.heldout_episodes) == 10
    with pytest.raises(D.DatasetError, match="'small'"):
        D.client_partition(cfg, 1)


def test_push_with_a_bad_repo_id_is_refused_before_the_run(tmp_path):
    _refused(["tiny-run", "--push", "--repo-id", "bad", "--out", str(tmp_path / "outputs" / "r")],
             tmp_path, "--repo-id", "namespace/name")
    _refused(["tiny-run", "--push", "--out", str(tmp_path / "outputs" / "r")], tmp_path,
             "--repo-id")


def test_preset_and_config_together_are_refused(tmp_path):
    tiny = Path(__file__).parents[1] / "examples" / "tiny.toml"
    _refused(["simulate", "--preset", "so100", "--config", str(tiny)], tmp_path,
             "--preset so100", "--config", "zk0 config show --preset so100")


def test_torchcodec_without_ffmpeg_is_refused_up_front(tmp_path, two_datasets):
    try:
        import torchcodec.decoders  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("torchcodec loads here (system FFmpeg present)")
    big, _ = two_datasets
    cfg = _config(tmp_path, [big], video_backend="torchcodec")
    _refused(["simulate", "--config", str(cfg)], tmp_path, "torchcodec", "pyav", "FFmpeg")


def test_user_text_with_brackets_is_printed_as_is(capsys):
    import typer

    from zk0cli.cli.errors import handle_errors, make_console
    from zk0cli.errors import UsageError

    make_console().print("add the cameras under [data.rename_map] in [bold]your file")
    assert "under [data.rename_map] in [bold]your file" in capsys.readouterr().out
    with pytest.raises(typer.Exit), handle_errors():
        raise UsageError("set [data.rename_map] a = b")
    assert "set [data.rename_map] a = b" in capsys.readouterr().err


def _outcome(reports, note=None):
    from zk0cli.core.strategy import RoundOutcome

    return RoundOutcome(server_round=1, reports=reports, aggregated=False, note=note,
                        proximal_mu=0.0, lr=1e-3)


def test_no_aggregation_says_whether_clients_failed_or_min_clients_was_not_met():
    from zk0cli.core.rounds import no_aggregation_cause
    from zk0cli.core.strategy import ClientReport

    failed = _outcome([ClientReport("0", 1, False, reason="NaN loss")])
    assert no_aggregation_cause(failed, 2).startswith("every client failed (client 0: NaN loss")
    waited = _outcome([], note="waiting for 2 nodes, 1 connected after 5 s; round skipped")
    text = no_aggregation_cause(waited, 2)
    assert "federation.min_clients = 2 was not met" in text and "1 connected" in text
    assert "every client failed" not in text
    few = _outcome([ClientReport("0", 1, True)], note="only 1 valid reply, fewer than "
                   "federation.min_clients = 2; previous global model kept")
    assert "fewer than federation.min_clients = 2" in no_aggregation_cause(few, 2)
    assert "min_clients = 3" in no_aggregation_cause(None, 3)


class _Grid:
    """Flower's Grid surface used by StreamingGrid: replies arrive one per pull."""

    def __init__(self, n: int, seen: list) -> None:
        self.n, self.seen, self.pending = n, seen, []

    def push_messages(self, messages):
        self.pending = [f"m{i}" for i in range(len(messages))]
        return list(self.pending)

    def pull_messages(self, ids):
        from types import SimpleNamespace as NS

        self.seen.append(self.progress())  # what the display reads before this reply
        if not self.pending:
            return []
        mid = self.pending.pop(0)
        return [NS(metadata=NS(reply_to_message_id=mid))]


def test_live_counter_moves_as_each_reply_arrives(tmp_path, monkeypatch):
    from types import SimpleNamespace as NS

    from zk0cli import constants as K
    from zk0cli.core.rundir import RunDir
    from zk0cli.engine.runs import progress_of
    from zk0cli.flower import progress as P
    from zk0cli.flower.streaming import StreamingGrid

    rd = RunDir.create(tmp_path, name="run")
    rd.update_run(status="running", rounds_completed=1)
    seen: list = []
    grid = _Grid(3, seen)
    grid.progress = lambda: progress_of(rd, 3, time.monotonic()).clients_reported
    msgs = [NS(content=NS(config_records={K.CONFIG_KEY: {K.ROUND_KEY: 2}}),
               metadata=NS(message_type="train"))] * 3
    streaming = StreamingGrid(grid, pull_interval_s=0.0)
    replies = P.ProgressGrid(streaming, rd.server_dir).send_and_receive(msgs, timeout=10)
    assert len(list(replies)) == 3
    assert seen[:3] == [0, 1, 2]  # no client file of round 2 exists: the replies count
    prog = progress_of(rd, 3, time.monotonic())
    assert prog.clients_reported == 3 and prog.phase == "round 2 training"
    P.write_phase(rd.server_dir, phase="round 2 server evaluation", server_round=2)
    prog = progress_of(rd, 3, time.monotonic())  # evaluating: still 3 of 3 finished
    assert prog.clients_reported == 3 and prog.phase == "round 2 server evaluation"
    rd.update_run(rounds_completed=2)  # round 2 recorded: round 3 starts from zero
    assert progress_of(rd, 3, time.monotonic()).clients_reported == 0


def test_eta_is_steady_between_rounds():
    from zk0cli.cli.run import EtaClock
    from zk0cli.engine.runs import RunProgress

    clock = EtaClock()

    def at(done, phase, now):
        return clock.update(RunProgress(done, 4, 0, None, now, "running", phase), now)

    assert at(0, "round 0 evaluation", 0.0) is None  # set-up is not a round
    assert at(0, "round 1 training", 50.0) is None
    assert at(1, "round 2 training", 60.0) == pytest.approx(30.0)  # 10 s a round, 3 left
    assert at(1, "round 2 training", 65.0) == pytest.approx(25.0)  # counts down, no climb
    assert at(2, "round 3 training", 72.0) == pytest.approx(22.0)  # mean 11 s, 2 left


def test_release_help_lists_the_parts():
    res = CliRunner().invoke(app, ["release", "--help"])
    assert res.exit_code == 0
    for part in ("patch", "minor", "major"):
        assert part in res.output


def test_readme_says_how_to_get_zk0_on_the_path_and_docs_use_real_configs():
    root = Path(__file__).parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "source .venv/bin/activate" in readme and ".venv/bin/zk0" in readme
    import re

    deployment = (root / "docs" / "deployment.md").read_text(encoding="utf-8")
    trial = re.findall(r"zk0 train --local-nodes .*--config (\S+)", deployment)
    lifecycle = re.findall(r"^zk0 .*--config (\S+)", readme, flags=re.M)
    assert trial and lifecycle
    for cfg in trial + lifecycle:
        assert (root / cfg).is_file(), cfg


def test_sim_data_merges_with_real_so101_data_in_lerobot(tmp_path):
    """LeRobot's own merge accepts zk0 simulator data next to data lerobot-record wrote."""
    from lerobot.datasets.aggregate import aggregate_datasets
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    from zk0cli.core.sim import generate_dataset
    from zk0cli.testing import write_synthetic_dataset

    sim = generate_dataset("lift", root=tmp_path / "sim", repo_id="zk0/sim_lift", episodes=1,
                           seed=0, height=64, width=64, native_log=tmp_path / "enc.log")
    real = write_synthetic_dataset(tmp_path / "real", repo_id="alice/so101", episodes=1,
                                   frames=5, size=64, use_videos=True, fps=30,
                                   robot_type="so_follower")  # as lerobot-record 0.6.1 writes
    aggregate_datasets(["zk0/sim_lift", "alice/so101"], "alice/merged", roots=[sim, real],
                       aggr_root=tmp_path / "merged")
    merged = LeRobotDatasetMetadata("alice/merged", root=tmp_path / "merged")
    assert merged.robot_type == "so_follower" and merged.total_episodes == 2


def test_ctrl_c_prints_the_summary_what_was_kept_and_the_resume_command(tmp_path, capsys):
    from analysis_fixtures import write_run

    from zk0cli.cli.run import RichDisplay
    from zk0cli.core.config import load_config

    rd = write_run(tmp_path / "outputs", rounds=2, checkpoints=(2,),
                   latest="checkpoint_round_2")
    rd.update_run(status="interrupted", rounds_planned=5)

    def runner(on_progress):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        RichDisplay().follow(load_config(preset="tiny"), rd, runner)
    out = capsys.readouterr().out
    assert "zk0 run summary" in out
    assert "interrupted after 2 of 5 round(s)" in out and "checkpoint_round_2" in out
    assert f"continue with: zk0 simulate --resume {rd.root}" in out


def test_library_prints_go_to_the_run_log_not_the_console(tmp_path, capsys):
    import logging

    from analysis_fixtures import write_run

    from zk0cli.cli.run import RichDisplay
    from zk0cli.core.config import load_config
    from zk0cli.log import library_prints, logger

    rd = write_run(tmp_path / "outputs", rounds=1)
    logging.getLogger("zk0").setLevel(logging.INFO)

    def runner(on_progress):
        with library_prints("lerobot"):
            print("Reducing the number of VLM layers to 4 ...")
        logger.info("starting: flower-superlink --simulation")
        return "completed"

    RichDisplay().follow(load_config(preset="tiny"), rd, runner)
    out = capsys.readouterr()
    assert "Reducing the number" not in out.out + out.err
    log = (rd.root / "logs" / "zk0.log").read_text(encoding="utf-8")
    assert "lerobot: Reducing the number of VLM layers to 4 ..." in log
    assert "starting: flower-superlink --simulation" in log


@pytest.mark.parametrize("verbose", [False, True])
def test_console_shows_info_lines_only_with_verbose(verbose):
    import os
    import subprocess
    import sys

    code = ("from zk0cli.cli.app import _root; from zk0cli.log import logger; "
            f"_root(version=False, verbose={verbose}); "
            "logger.info('starting: flower-superlink --insecure'); logger.warning('careful')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"}, check=True, timeout=60)
    shown = res.stdout + res.stderr
    assert "careful" in shown
    assert ("starting: flower-superlink" in shown) is verbose


def test_heldout_larger_than_a_simulator_dataset_is_refused_before_generating(tmp_path,
                                                                             monkeypatch):
    from zk0cli.core import sim

    def never(*args, **kwargs):
        raise AssertionError("a simulator dataset was generated before the check")

    monkeypatch.setattr(sim, "ensure_sim_dataset", never)
    monkeypatch.chdir(tmp_path)
    _refused(["simulate", "--preset", "tiny", "--set", "data.heldout_episodes=100"], tmp_path,
             "data.heldout_episodes = 100", "leaves none")


def test_a_run_flower_failed_names_the_cause_from_the_server_log(tmp_path):
    """Ray's start-up failure (only in server.log) reaches run.json's error, in words the
    suite's one targeted rerun (pyproject's --only-rerun) matches."""
    import re
    import tomllib
    from pathlib import Path

    from zk0cli.engine.runs import last_exception

    log = tmp_path / "server.log"
    log.write_text(
        "2026-12-02 20:40:53,859 ERROR flwr: An exception occured!! The current node timed "
        "out during startup.\nTraceback (most recent call last):\n  File \"node.py\"\n"
        "Exception: The current node timed out during startup. This could happen because "
        "some of the raylet failed to startup or the GCS has become overloaded.\n\n"
        "RuntimeError: Simulation Runtime crashed.\n"
        "RuntimeError: An error was encountered. Ending simulation.\n")
    cause = last_exception(log)
    assert cause is not None and cause.startswith("Exception: The current node timed out")
    assert last_exception(tmp_path / "missing.log") is None
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    opts = project["tool"]["pytest"]["ini_options"]
    pattern = re.search(r'--only-rerun "([^"]+)"', opts["addopts"]).group(1)
    assert re.search(pattern, cause) and re.search(pattern, cause.replace(" ", "\n  "))
    assert not re.search(pattern, "AssertionError: run failed: injected client failure")
