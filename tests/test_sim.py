"""The MuJoCo SO-101 simulator: expert, determinism, evaluator, datasets, cache, CLI."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.core.sim import (
    SIM_TASKS,
    TASK_INSTRUCTIONS,
    RandomPolicy,
    ScriptedExpert,
    ensure_sim_dataset,
    evaluate_policy,
    generate_dataset,
)
from zk0cli.core.sim.env import SimEnv
from zk0cli.core.sim.expert import run_expert_episode
from zk0cli.core.sim.recorder import MAX_EPISODE_STEPS, episode_seed
from zk0cli.errors import UsageError

runner = CliRunner()


def _output(result) -> str:
    try:
        return result.output + (result.stderr or "")
    except ValueError:  # older Click: stderr not captured separately
        return result.output


def test_tasks_match_config_and_have_instructions():
    from zk0cli.core import config

    assert SIM_TASKS == config.SIM_TASKS
    assert set(TASK_INSTRUCTIONS) == set(SIM_TASKS)
    assert len(set(TASK_INSTRUCTIONS.values())) == len(SIM_TASKS)


@pytest.mark.parametrize("task", SIM_TASKS)
def test_expert_solves_at_least_90_percent(task):
    env = SimEnv(task, render=False)
    expert = ScriptedExpert()
    solved = 0
    for i in range(10):
        _, actions, success = run_expert_episode(env, episode_seed(0, i),
                                                 max_steps=MAX_EPISODE_STEPS[task], expert=expert)
        solved += success
        assert len(actions) < MAX_EPISODE_STEPS[task]  # the plan ends before the cap
    assert solved >= 9, f"{task}: expert solved {solved}/10"


def test_same_seed_same_arrays_different_seed_different():
    def rollout(seed):
        env = SimEnv("pick_place", render=False)
        obs, actions, _ = run_expert_episode(env, seed)
        return np.stack([o["observation.state"] for o in obs]), np.stack(actions)

    s1, a1 = rollout(7)
    s2, a2 = rollout(7)
    s3, _ = rollout(8)
    assert s1.dtype == np.float32 and s1.shape[1] == 6 and a1.shape == s1.shape
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(a1, a2)
    assert s1.shape != s3.shape or not np.array_equal(s1, s3)


def test_observation_units_and_images():
    env = SimEnv("lift", height=48, width=64)
    obs = env.reset(0)
    assert obs["task"] == TASK_INSTRUCTIONS["lift"]
    state = obs["observation.state"]
    assert state.shape == (6,) and state.dtype == np.float32
    np.testing.assert_allclose(state, [0, -60, 60, 75, 0, 30], atol=0.5)  # home pose, degrees
    for cam in ("top", "wrist"):
        img = obs[f"observation.images.{cam}"]
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8
        assert img.std() > 5  # not a blank frame


def test_evaluator_expert_high_random_zero():
    """The closed-loop evaluator on the expert: >= 90 % on each task, with its numbers."""
    from zk0cli.core.sim.closed_loop import evaluate_closed_loop

    results = evaluate_closed_loop(ScriptedExpert(), tasks=SIM_TASKS, episodes=5, seed=3)
    assert list(results) == list(SIM_TASKS)
    for task, r in results.items():
        assert r.success_rate >= 0.9, (task, r.summary())
        assert r.ci_low <= r.success_rate <= r.ci_high and r.ci_high == 1.0
        assert 0 < r.mean_steps_to_success <= r.max_steps
        assert r.mean_final_distance is not None and r.mean_final_distance >= 0
        assert [e.index for e in r.episode_results] == list(range(5))
    random = evaluate_policy(RandomPolicy(0), tasks=SIM_TASKS, episodes=3, seed=3, max_steps=60)
    assert all(rate == 0.0 for rate in random.values()), random


def test_generate_refuses_existing_root(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="already exists"):
        generate_dataset("lift", root=root, repo_id="zk0/x", episodes=1, seed=0)
    assert (root / "keep.txt").read_text() == "mine"


def test_generate_unknown_task_lists_valid_ones(tmp_path):
    with pytest.raises(UsageError) as info:
        generate_dataset("fly", root=tmp_path / "ds", repo_id="zk0/x", episodes=1, seed=0)
    assert all(t in str(info.value) for t in SIM_TASKS)
    assert not (tmp_path / "ds").exists()


def test_cli_unknown_task_exits_2_listing_valid(tmp_path):
    result = runner.invoke(app, ["data", "sim", "--tasks", "lift,fly", "--out", str(tmp_path)])
    assert result.exit_code == 2
    out = _output(result)
    assert "fly" in out and all(t in out for t in SIM_TASKS)
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_overwrite(tmp_path):
    (tmp_path / "push").mkdir()
    result = runner.invoke(app, ["data", "sim", "--tasks", "lift,push", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--overwrite" in _output(result)
    assert not (tmp_path / "lift").exists()  # nothing written


def test_cli_writes_datasets_lerobot_loads_with_action_chunks(tmp_path):
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out = tmp_path / "X"
    result = runner.invoke(app, ["data", "sim", "--tasks", "pick_place,push", "--episodes", "3",
                                 "--out", str(out)])
    assert result.exit_code == 0, _output(result)
    for task in ("pick_place", "push"):
        ds = LeRobotDataset(f"zk0/sim_{task}", root=out / task, video_backend="pyav",
                            delta_timestamps={"action": [i / 30 for i in range(10)]})
        assert ds.meta.robot_type == "so_follower" and ds.fps == 30
        assert ds.num_episodes == 3 and ds.meta.total_frames > 150
        assert ds.meta.features["action"]["names"][0] == "shoulder_pan.pos"
        batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)))
        assert batch["action"].shape == (4, 10, 6)
        assert batch["action_is_pad"].shape == (4, 10)
        assert batch["observation.state"].shape == (4, 6)
        assert batch["observation.images.top"].shape == (4, 3, 96, 128)
        assert batch["observation.images.wrist"].shape == (4, 3, 96, 128)
        assert batch["task"][0] == TASK_INSTRUCTIONS[task]
    # the recorded actions are the expert's: regenerating the first episode gives them back
    ds = LeRobotDataset("zk0/sim_push", root=out / "push", video_backend="pyav")
    first = ds.hf_dataset.filter(lambda row: row["episode_index"] == 0)
    _, actions, _ = run_expert_episode(SimEnv("push", render=False), episode_seed(0, 0),
                                       max_steps=MAX_EPISODE_STEPS["push"])
    np.testing.assert_allclose(np.stack([np.asarray(a) for a in first["action"]]),
                               np.stack(actions), atol=1e-5)


def test_ensure_sim_dataset_generates_once(tmp_path):
    repo_id, root = ensure_sim_dataset("lift", episodes=1, seed=0, height=32, width=48,
                                       cache_dir=tmp_path)
    assert repo_id == "zk0/sim_lift_s0_e1_32x48"
    assert (root / "meta" / "info.json").is_file()
    stamp = (root / "meta" / "info.json").stat().st_mtime_ns
    again = ensure_sim_dataset("lift", episodes=1, seed=0, height=32, width=48,
                               cache_dir=tmp_path)
    assert again == (repo_id, root)
    assert (root / "meta" / "info.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_cli_preview_contact_sheet(tmp_path):
    from PIL import Image

    sheet = tmp_path / "sheet.png"
    result = runner.invoke(app, ["data", "sim", "--tasks", "lift,push", "--preview", str(sheet),
                                 "--height", "48", "--width", "64"])
    assert result.exit_code == 0, _output(result)
    import numpy as np

    from zk0cli.core.sim.preview import LABEL_MARGIN_LEFT, LABEL_MARGIN_TOP

    image = Image.open(sheet)
    # 4 frames x 2 cameras, 2 tasks, plus the label margins
    assert image.size == (4 * 2 * 64 + 3 * 4 + LABEL_MARGIN_LEFT, 2 * 48 + 4 + LABEL_MARGIN_TOP)
    pixels = np.asarray(image.convert("L"))
    for row in range(2):  # each task's name is written left of its row
        band = pixels[LABEL_MARGIN_TOP + row * 52: LABEL_MARGIN_TOP + row * 52 + 48,
                      :LABEL_MARGIN_LEFT]
        assert (band < 128).any(), row
    assert (pixels[:LABEL_MARGIN_TOP, LABEL_MARGIN_LEFT:] < 128).any()  # camera names on top
    assert not (tmp_path / "lift").exists()


def test_lerobot_policy_wrapper_runs_closed_loop(tmp_path):
    """A real LeRobot policy (a tiny ACT) through select_action and its processors."""
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.factory import make_policy, make_pre_post_processors

    from zk0cli.core.sim import LeRobotPolicyFn

    repo_id, root = ensure_sim_dataset("lift", episodes=1, seed=0, height=32, width=48,
                                       cache_dir=tmp_path)
    meta = LeRobotDatasetMetadata(repo_id, root=root)
    cfg = ACTConfig(pretrained_backbone_weights=None, dim_model=32, n_heads=2,
                    dim_feedforward=64, n_encoder_layers=1, n_decoder_layers=1, chunk_size=5,
                    n_action_steps=5, use_vae=False, device="cpu")
    policy = make_policy(cfg, ds_meta=meta).eval()
    pre, post = make_pre_post_processors(cfg, dataset_stats=meta.stats)
    wrapped = LeRobotPolicyFn(policy, pre, post)
    actions = []

    def recording(obs):
        action = wrapped(obs)
        actions.append(action)
        return action

    recording.start_episode = wrapped.start_episode  # type: ignore[attr-defined]
    rates = evaluate_policy(recording, tasks=["lift"], episodes=1, seed=0, height=32, width=48,
                            max_steps=12)
    assert set(rates) == {"lift"} and 0.0 <= rates["lift"] <= 1.0
    assert len(actions) == 12
    assert all(a.shape == (6,) and np.isfinite(a).all() for a in actions)
    # un-normalised back to degrees: within a few standard deviations of the data
    assert np.abs(np.stack(actions)).max() < 400


def test_ensure_sim_dataset_waits_for_a_concurrent_generator(tmp_path):
    """A second caller blocks on the lock and reuses what the first one finished."""
    import fcntl
    import threading
    import time

    from zk0cli.core.sim.cache import _COMPLETE, cached_dataset_path

    repo_id, root = cached_dataset_path("push", episodes=2, seed=5, cache_dir=tmp_path)
    lock = open(tmp_path / f"{root.name}.lock", "w")  # held while the thread waits
    fcntl.flock(lock, fcntl.LOCK_EX)  # "another process" is generating
    result = {}
    worker = threading.Thread(target=lambda: result.update(
        out=ensure_sim_dataset("push", episodes=2, seed=5, cache_dir=tmp_path)))
    worker.start()
    time.sleep(0.5)
    assert worker.is_alive()  # waiting for the lock, not generating
    root.mkdir()
    (root / _COMPLETE).write_text("{}")  # the other process finished
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()
    worker.join(timeout=30)
    assert result["out"] == (repo_id, root)
    assert sorted(p.name for p in root.iterdir()) == [_COMPLETE]  # nothing regenerated
