"""The model card renders with the real numbers of a run directory."""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path

from huggingface_hub import ModelCard
from push_fixtures import CLIENT_DATASETS, make_run_dir

from zk0cli.core.card import TEMPLATE_PATH, build_model_card
from zk0cli.core.rundir import RunDir, write_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = "alice/zk0-smolvla-so100"


def run_dir(tmp_path: Path) -> RunDir:
    return make_run_dir(tmp_path / "outputs", checkpoints=())


def test_card_metadata(tmp_path: Path) -> None:
    card = build_model_card(run_dir(tmp_path).root, checkpoint_round=3, repo_id=REPO)
    meta = ModelCard(str(card)).data.to_dict()  # the YAML header parses back
    assert meta["library_name"] == "lerobot"
    assert meta["pipeline_tag"] == "robotics"
    assert meta["license"] == "apache-2.0"
    assert meta["base_model"] == "lerobot/smolvla_base"
    assert meta["datasets"] == list(CLIENT_DATASETS)
    assert meta["model_name"] == "smolvla"
    assert meta["tags"] == ["robotics", "lerobot", "smolvla", "federated-learning", "flower",
                            "fedprox", "so100", "so101"]


def test_card_body_has_the_run_numbers(tmp_path: Path) -> None:
    text = str(build_model_card(run_dir(tmp_path).root, checkpoint_round=3, repo_id=REPO))
    for line in [
        "| rounds | 3 of 3 planned |",
        "| clients | 2 |",
        "| local steps per round | 7 |",
        "| batch size | 12 |",
        "| learning rate | 0.0003 (cosine schedule within a round) |",
        "| FedProx mu | 0.05 |",
        "| 0 | alice/so101-lift | hub |",
        "| 1 | bob/so100-pick | hub |",
        "| first | 0 | 0.9312 |",
        "| best | 2 | 0.5521 |",
        "| last | 3 | 0.6034 |",
        "| 0 | 0.9312 | – | 0 |",
        "| 2 | 0.5521 | 0.6422 | 2 |",
        "| 3 | 0.6034 | 0.5977 | 2 |",
        f'policy = SmolVLAPolicy.from_pretrained("{REPO}")',
        "| zk0 | 0.1.0 |",
        "| flwr | 1.42.0 |",
        "| lerobot | 0.6.1 |",
        "| torch | 2.11.0 |",
    ]:
        assert line in text, line
    assert "unweighted mean of the losses on\nHupy440/Two_Cubes_and_Two_Buckets_v2." in text
    assert text.startswith("---\n") and "# zk0-smolvla-so100" in text


def test_card_of_an_earlier_round_stops_there(tmp_path: Path) -> None:
    text = str(build_model_card(run_dir(tmp_path).root, checkpoint_round=1))
    assert "| last | 1 | 0.7105 |" in text
    assert "| best | 1 | 0.7105 |" in text
    assert "0.6034" not in text  # round 3 is after this checkpoint
    assert 'from_pretrained("<user>/<model>")' in text


def test_card_of_a_run_still_running_without_server_files(tmp_path: Path) -> None:
    run = run_dir(tmp_path)
    shutil.rmtree(run.server_dir)
    write_json(run.run_json, {"status": "running"})
    text = str(build_model_card(run.root, checkpoint_round=1))
    assert "No server evaluation was recorded up to this round." in text
    # A checkpoint is written while its run is running: that is no news for the card.
    assert "when this card was written" not in text
    assert "| batch size | 12 |" in text  # config.json still read


def test_card_of_an_interrupted_run_says_so(tmp_path: Path) -> None:
    run = run_dir(tmp_path)
    write_json(run.run_json, {"status": "interrupted"})
    text = str(build_model_card(run.root, checkpoint_round=1))
    assert "The run was `interrupted` when this card was written." in text


def test_card_of_an_empty_directory(tmp_path: Path) -> None:
    text = str(build_model_card(tmp_path, checkpoint_round=0))
    assert ModelCard(text).data.to_dict()["library_name"] == "lerobot"


def test_non_finite_losses_are_shown_but_never_best(tmp_path: Path) -> None:
    run = run_dir(tmp_path)
    write_json(run.policy_loss_history, {"0": 0.9, "1": "nan", "2": 0.8})
    text = str(build_model_card(run.root, checkpoint_round=2))
    assert "| best | 2 | 0.8 |" in text
    assert "| 1 | nan |" in text


def test_long_histories_are_thinned_but_keep_first_best_last(tmp_path: Path) -> None:
    run = run_dir(tmp_path)
    losses = {str(r): 1.0 / (1 + r) for r in range(301)}
    losses["137"] = 0.0001
    write_json(run.policy_loss_history, losses)
    write_json(run.federated_metrics, [])
    text = str(build_model_card(run.root, checkpoint_round=300))
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.endswith("| – |")]
    assert len(rows) == 43 + 2  # every 7th of 301 rounds, plus best (137) and last (300)
    for r in ("0", "137", "300"):
        assert any(row.startswith(f"| {r} |") for row in rows), r
    assert "(every 7th evaluated round, plus first, best and last)" in text


def test_template_ships_with_the_package() -> None:
    assert TEMPLATE_PATH.is_file()
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["zk0cli"]
    assert "core/templates/*.md" in patterns
