"""Configuration: presets, files, overrides and the errors users see."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.core.config import apply_overrides, load_config, parse_override
from zk0cli.core.presets import PRESET_NAMES, get_preset
from zk0cli.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_validate(name):
    cfg = load_config(preset=name)
    assert cfg.federation.rounds >= 1
    assert cfg.num_clients == len(cfg.data.clients)


def test_tiny_preset_is_offline_and_small():
    cfg = load_config(preset="tiny")
    assert cfg.model.kind == "tiny"
    assert all(s.source == "sim" for s in [*cfg.data.clients, *cfg.data.eval])


def test_so100_preset_matches_upstream_defaults():
    cfg = load_config(preset="so100")
    assert cfg.model.path == "lerobot/smolvla_base"
    assert cfg.training.steps_per_round == 20
    assert cfg.training.lr == pytest.approx(1e-4)
    assert cfg.federation.proximal_mu == pytest.approx(0.01)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_examples_equal_presets(name):
    """examples/<preset>.toml are commented copies of the built-in presets."""
    from_file = load_config(config_file=EXAMPLES / f"{name}.toml")
    assert from_file == load_config(preset=name)


def test_overrides_and_flags_apply_in_order():
    cfg = load_config(preset="tiny", overrides=["training.lr=3e-4", "federation.rounds=7"],
                      flags={"federation.rounds": 9, "federation.num_clients": None})
    assert cfg.training.lr == pytest.approx(3e-4)
    assert cfg.federation.rounds == 9  # flags win over --set


def test_a_bad_flag_value_names_the_flag_not_the_preset():
    with pytest.raises(ConfigError) as info:
        load_config(preset="tiny", flags={"federation.rounds": 0})
    text = str(info.value)
    assert "--rounds = 0: Input should be greater than or equal to 1" in text
    assert "preset" not in text and "command-line flags" in text
    with pytest.raises(ConfigError) as info:  # a flag and a field of the preset
        load_config(preset="tiny", overrides=["training.lr=-1"],
                    flags={"federation.rounds": 2, "federation.num_clients": 0})
    assert [p.path for p in info.value.problems] == ["training.lr", "--clients"]
    assert "in preset 'tiny' and the command-line flags" in str(info.value)


def test_a_bad_set_value_names_the_overrides_and_min_clients_says_how_to_lower_it():
    with pytest.raises(ConfigError) as info:
        load_config(preset="tiny", overrides=["federation.early_stop.patience=0"])
    assert "in the --set overrides" in str(info.value) and "preset" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(preset="tiny", flags={"federation.num_clients": 1})
    assert "--set federation.min_clients=1" in str(info.value)


def test_parse_override_types():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a.b=true") == (["a", "b"], True)
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a.b=hello world") == (["a", "b"], "hello world")
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("novalue")


def test_override_into_value_is_an_error():
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


BAD = [
    (["federation.rounds=0"], "federation.rounds"),
    (["federation.min_clients=9"], "min_clients"),
    (["federation.proximal_mu=-0.1"], "federation.proximal_mu"),
    (["federation.fraction_train=0"], "federation.fraction_train"),
    (["federation.fraction_train=1.5"], "federation.fraction_train"),
    (["training.batch_size=0"], "training.batch_size"),
    (["training.lr=-1"], "training.lr"),
    (["checkpoint.interval=0"], "checkpoint.interval"),
    (["eval.frequency=0"], "eval.frequency"),
    (["training.steps_per_round=abc"], "training.steps_per_round"),
    (["federation.num_clients=9"], "num_clients"),
    (["model.kind=huge"], "model.kind"),
    (["training.scheduler=linear"], "training.scheduler"),
    (["training.bogus=1"], "training.bogus"),
    (["data.partition=random"], "data.partition"),
    (["training.min_lr=1"], "min_lr"),
]


@pytest.mark.parametrize(("sets", "field"), BAD)
def test_bad_config_exits_2_naming_the_field(sets, field, tmp_path):
    args = ["simulate", "--preset", "tiny", "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert field in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "run").exists()  # nothing was created


def test_every_problem_is_listed():
    with pytest.raises(ConfigError) as info:
        load_config(preset="tiny", overrides=["training.batch_size=0", "eval.batches=0"])
    paths = {p.path for p in info.value.problems}
    assert {"training.batch_size", "eval.batches"} <= paths
    assert "2 problems" in str(info.value)


def test_unknown_preset_and_missing_file(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["simulate", "--preset", "nope"])
    assert res.exit_code == 2 and "so100" in res.output and "tiny" in res.output
    res = runner.invoke(app, ["simulate", "--config", str(tmp_path / "missing.toml")])
    assert res.exit_code == 2 and "missing.toml" in res.output


def test_invalid_toml_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[training\nlr = 1", encoding="utf-8")
    res = CliRunner().invoke(app, ["simulate", "--config", str(bad)])
    assert res.exit_code == 2 and "bad.toml" in res.output


def test_sim_task_must_be_known():
    data = get_preset("tiny")
    data["data"]["clients"][0]["name"] = "juggle"
    with pytest.raises(ConfigError, match="pick_place"):
        load_config(preset="tiny", overrides=['data.clients=[{source="sim", name="juggle"}]'])


def test_local_source_needs_root():
    with pytest.raises(ConfigError, match="root is required"):
        load_config(preset="tiny", overrides=['data.clients=[{source="local", name="x"}]'])


def test_configuration_reference_is_current():
    """docs/configuration.md is generated from the models; regenerate when this fails."""
    from zk0cli.core.config import render_config_reference

    doc = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    assert doc.read_text(encoding="utf-8") == render_config_reference(), (
        "docs/configuration.md is stale: run `python scripts/gen_config_docs.py`")
