"""The model card says what was computed, what the policy takes and gives, and no paths."""

from __future__ import annotations

import json
from pathlib import Path

from push_fixtures import make_checkpoint, make_run_dir

from zk0cli.core.card import build_model_card
from zk0cli.core.rundir import write_json


def test_card_has_features_robot_tasks_and_the_lerobot_commands(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "outputs", checkpoints=())
    ckpt = make_checkpoint(run, 3)
    text = str(build_model_card(run.root, checkpoint_round=3, repo_id="alice/fl-smolvla"))
    assert "| `observation.state` (input) | STATE | 6 |" in text
    assert "| `action` (output) | ACTION | 6 |" in text
    assert "--policy.path=alice/fl-smolvla" in text and "lerobot-rollout" in text
    assert "--robot.type=so101_follower" in text
    assert "Replace `alice/fl-smolvla`" not in text  # the repo id is known
    placeholder = (ckpt / "README.md").read_text(encoding="utf-8")  # written at checkpoint time
    assert "Replace `<user>/<model>` with the repository" in placeholder


def test_card_composite_names_what_it_averages(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "outputs", checkpoints=())
    cfg = json.loads(run.config_json.read_text(encoding="utf-8"))
    cfg["data"]["eval"] = []  # no eval datasets: the held-out client episodes are the composite
    write_json(run.config_json, cfg)
    write_json(run.server_eval(3), {"round": 3, "server_eval": {
        "datasets": {"heldout/alice/so101-lift": 0.5, "heldout/bob/so100-pick": 0.7},
        "composite": 0.6}})
    text = str(build_model_card(run.root, checkpoint_round=3))
    assert "losses on\nheldout/alice/so101-lift, heldout/bob/so100-pick." in text
    assert "not in the composite" not in text
    cfg["data"]["eval"] = [{"source": "hub", "name": "carol/eval"}]
    write_json(run.config_json, cfg)
    write_json(run.server_eval(3), {"round": 3, "server_eval": {
        "datasets": {"carol/eval": 0.4, "heldout/alice/so101-lift": 0.5}, "composite": 0.4}})
    text = str(build_model_card(run.root, checkpoint_round=3))
    assert "losses on\ncarol/eval. Also evaluated, not in the composite: " \
           "heldout/alice/so101-lift." in text


def test_no_local_path_ever_appears_in_a_card(tmp_path: Path) -> None:
    from zk0cli.testing import write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "private" / "site-a", episodes=2, frames=3, size=8)
    run = make_run_dir(tmp_path / "outputs", checkpoints=())
    cfg = json.loads(run.config_json.read_text(encoding="utf-8"))
    cfg["model"]["path"] = str(tmp_path / "private" / "my-smolvla")
    cfg["data"]["clients"] = [{"source": "local", "name": "site-a", "root": str(root)},
                              {"source": "sim", "name": "lift"}]
    cfg["data"]["eval"] = [{"source": "local", "name": "eval-a", "root": str(root)}]
    write_json(run.config_json, cfg)
    ckpt = make_checkpoint(run, 3)
    cards = [str(build_model_card(run.root, checkpoint_round=3)),
             str(build_model_card(run.root, checkpoint_round=3, repo_id="a/b")),
             (ckpt / "README.md").read_text(encoding="utf-8")]
    for text in cards:
        assert str(tmp_path) not in text and "/private/" not in text
        assert "/tmp" not in text and str(Path.home()) not in text
        # what the datasets say, read from their metadata, is there instead
        assert "`so101_follower`" in text and "`so_follower`" in text
        assert '"pick up the red cube"' in text and '"Pick up the red cube and lift it."' in text
        assert "a local SmolVLA checkpoint" in text


def test_checkpoint_config_does_not_push_to_hub(make_bundle, tmp_path: Path) -> None:
    from lerobot.configs.policies import PreTrainedConfig

    from zk0cli.core.policy import save_bundle

    save_bundle(make_bundle(seed=0), tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text(encoding="utf-8"))
    assert saved["push_to_hub"] is False
    assert PreTrainedConfig.from_pretrained(str(tmp_path / "ckpt")).push_to_hub is False


def test_card_states_the_lora_settings(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "outputs", checkpoints=())
    make_checkpoint(run, 3)
    text = str(build_model_card(run.root, checkpoint_round=3))
    assert "| fine-tuning | full action expert (no LoRA) |" in text
    cfg = json.loads(run.config_json.read_text(encoding="utf-8"))
    cfg["model"]["peft"] = {"method": "lora", "rank": 8, "alpha": 32.0, "dropout": 0.05,
                            "target_modules": None, "aggregation": "ffa"}
    write_json(run.config_json, cfg)
    text = str(build_model_card(run.root, checkpoint_round=3))
    assert "| fine-tuning | LoRA rank 8, alpha 32, dropout 0.05, on LeRobot's SmolVLA " \
           "default modules; FFA-LoRA: A frozen at its seeded initialisation, B trained " \
           "and averaged (exact); merged into the weights of this checkpoint (the adapter " \
           "is in `adapter/`) |" in text
