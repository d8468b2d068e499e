"""Closed-loop evaluation: the evaluator's numbers, determinism, and `zk0 eval`."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.core.sim.closed_loop import evaluate_closed_loop, wilson_interval


def test_wilson_interval_matches_the_published_values():
    # statsmodels proportion_confint(k, n, method="wilson")
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(20, 20) == pytest.approx((0.8389, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


class _NoisyPolicy:
    """Images in, torch-random actions out: identical only if the evaluator seeds torch."""

    uses_images = True

    def __call__(self, obs):
        import torch

        assert obs["observation.images.top"].shape == (24, 32, 3)
        home = np.array([0.0, -60.0, 60.0, 75.0, 0.0, 30.0], dtype=np.float32)
        return home + 20 * torch.randn(6).numpy() + obs["observation.images.top"].mean() / 255


def test_two_rollouts_with_the_same_seed_are_identical():
    kwargs = dict(tasks=["reach"], episodes=2, height=24, width=32, max_steps=12)
    first = evaluate_closed_loop(_NoisyPolicy(), seed=3, **kwargs)
    again = evaluate_closed_loop(_NoisyPolicy(), seed=3, **kwargs)
    other = evaluate_closed_loop(_NoisyPolicy(), seed=4, **kwargs)

    def strip(results):
        return {t: [(e.seed, e.success, e.steps, e.final_distance) for e in r.episode_results]
                for t, r in results.items()}

    assert strip(first) == strip(again)
    assert strip(first) != strip(other)


@pytest.fixture(scope="module")
def checkpoint(make_bundle, tmp_path_factory):
    """A tiny SmolVLA checkpoint on the simulator's cameras (top/wrist, 32x32)."""
    from zk0cli.core.policy import save_bundle

    path = tmp_path_factory.mktemp("ckpt") / "checkpoint_round_1"
    save_bundle(make_bundle(seed=0), path)
    return path


def test_zk0_eval_checkpoint_writes_json_and_videos(checkpoint, tmp_path):
    out, videos = tmp_path / "r.json", tmp_path / "videos"
    res = CliRunner().invoke(app, ["eval", str(checkpoint), "--task", "reach", "--episodes",
                                   "2", "--max-steps", "12", "--seed", "5", "--out", str(out),
                                   "--video", str(videos)])
    assert res.exit_code == 0, res.output
    assert "reach: success" in res.output and "95% CI" in res.output
    result = json.loads(out.read_text())
    r = result["tasks"]["reach"]
    assert result["checkpoint"] == str(checkpoint) and result["seed"] == 5
    assert r["episodes"] == 2 and 0 <= r["ci_low"] <= r["success_rate"] <= r["ci_high"] <= 1
    assert len(r["episode_results"]) == 2
    mp4 = sorted(p.name for p in (videos / "reach").iterdir())
    assert mp4 == ["eval_episode_0.mp4", "eval_episode_1.mp4"]
    import av

    with av.open(str(videos / "reach" / mp4[0])) as container:
        frames = [f for f in container.decode(video=0)]
    assert len(frames) == r["episode_results"][0]["steps"] + 1  # first observation + steps
    assert frames[0].width == 64 and frames[0].height == 32  # both 32x32 cameras side by side


def test_zk0_eval_expert_reference(tmp_path):
    out = tmp_path / "e.json"
    res = CliRunner().invoke(app, ["eval", "--expert", "--task", "reach,lift", "--episodes",
                                   "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["policy"] == "expert"
    assert {t: r["successes"] for t, r in result["tasks"].items()} == {"reach": 2, "lift": 2}


def test_zk0_eval_bad_inputs_exit_2(checkpoint, make_bundle, tmp_path):
    from zk0cli.core.policy import save_bundle

    runner = CliRunner()
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["eval", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "not a policy directory" in res.output, res.output
    res = runner.invoke(app, ["eval", str(checkpoint), "--task", "fly"])
    assert res.exit_code == 2 and "Valid tasks" in res.output and "reach" in res.output
    res = runner.invoke(app, ["eval", str(checkpoint), "--episodes", "0"])
    assert res.exit_code == 2 and "at least 1 episode" in res.output
    res = runner.invoke(app, ["eval"])
    assert res.exit_code == 2 and "--expert" in res.output
    # Options that would fail after the rollouts are refused before any episode runs.
    (tmp_path / "a-file").write_text("keep", encoding="utf-8")
    (tmp_path / "a-dir").mkdir()
    for args, said in ([["--video", str(tmp_path / "a-file" / "sub")], "is a file"],
                       [["--out", str(tmp_path / "a-dir")], "is a directory"],
                       [["--device", "tpu"], "cpu, cuda, cuda:N or auto"],
                       [["--seed", "-1"], "must be >= 0"],
                       [["--episodes", "100000"], "at most 10,000"]):
        res = runner.invoke(app, ["eval", "--expert", "--task", "reach", *args])
        assert res.exit_code == 2 and said in " ".join(res.output.split()), (args, res.output)
    assert (tmp_path / "a-file").read_text(encoding="utf-8") == "keep"
    assert list((tmp_path / "a-dir").iterdir()) == []
    # A policy trained on other cameras (front/wrist) cannot see the simulator's top camera.
    rename = {"observation.images.top": "observation.images.front"}
    bundle = make_bundle(seed=0, rename_map=rename)
    from lerobot.processor import RenameObservationsProcessorStep

    for step in bundle.preprocessor.steps:
        if isinstance(step, RenameObservationsProcessorStep):
            step.rename_map = {}
    save_bundle(bundle, tmp_path / "front")
    res = runner.invoke(app, ["eval", str(tmp_path / "front"), "--episodes", "1"])
    assert res.exit_code == 2, res.output
    assert "observation.images.front" in res.output and "do not match" in res.output


def test_closed_loop_config_refuses_unknown_tasks():
    from zk0cli.core.config import load_config
    from zk0cli.errors import ConfigError

    cfg = load_config(preset="tiny", overrides=['eval.closed_loop.tasks=["reach"]'])
    assert cfg.eval.closed_loop.tasks == ["reach"] and cfg.eval.closed_loop.episodes == 10
    with pytest.raises(ConfigError, match="eval.closed_loop.tasks"):
        load_config(preset="tiny", overrides=['eval.closed_loop.tasks=["fly"]'])
