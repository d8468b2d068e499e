"""The train instruction (what travels to the sites) and the join report, without Flower."""

import json

import pytest

from zk0cli import constants as K
from zk0cli.core.config import load_config
from zk0cli.core.contract.instruction import (
    FeatureSpec,
    decode_run,
    decode_train,
    encode,
    run_instruction,
)
from zk0cli.core.site import join_report
from zk0cli.errors import InstructionError

FEATURES = {"observation.state": FeatureSpec(type="STATE", shape=(6,)),
            "observation.images.camera1": FeatureSpec(type="VISUAL", shape=(3, 96, 128)),
            "observation.images.camera2": FeatureSpec(type="VISUAL", shape=(3, 96, 128))}


def _record(**round_values):
    cfg = load_config(preset="tiny", overrides=["seed=7", "training.batch_size=3",
                                                "federation.transport_dtype=bfloat16"])
    instr = run_instruction(cfg, input_features=FEATURES, stats='{"x": 1}', simulation=False)
    values = {K.ROUND_KEY: 4, K.LR_KEY: 2e-4, K.STEPS_KEY: 5, K.PROXIMAL_MU_KEY: 0.05,
              K.SERVER_ROUND_KEY: 4, **round_values}
    return {**encode(instr), **{k: v for k, v in values.items() if v is not None}}, instr


def test_round_trip_keeps_every_value():
    record, sent = _record()
    got = decode_train(record)
    assert (got.round, got.lr, got.steps, got.mu) == (4, 2e-4, 5, 0.05)
    assert got.seed == 7 and got.training.batch_size == 3
    assert got.transport_dtype == "bfloat16" and got.stats == '{"x": 1}'
    assert got.model == sent.model and got.model.kind == "tiny"
    assert got.input_features == FEATURES and got.simulation is None
    assert decode_run(record) == sent


def test_missing_mu_is_refused_not_zero():
    record, _ = _record(**{K.PROXIMAL_MU_KEY: None})
    with pytest.raises(InstructionError) as err:
        decode_train(record)
    assert err.value.field == K.PROXIMAL_MU_KEY and "no default" in str(err.value)


def test_unknown_version_and_unknown_fields_are_refused_by_name():
    record, _ = _record()
    data = json.loads(record[K.INSTRUCTION_KEY])
    with pytest.raises(InstructionError) as err:
        decode_run({K.INSTRUCTION_KEY: json.dumps({**data, "schema_version": 2})})
    assert err.value.field == "schema_version" and err.value.value == 2
    with pytest.raises(InstructionError) as err:
        decode_run({K.INSTRUCTION_KEY: json.dumps({**data, "secure_aggregation": {"k": 1}})})
    assert err.value.field == "secure_aggregation" and "unknown field" in str(err.value)
    with pytest.raises(InstructionError) as err:  # a DP setting this site does not know
        decode_run({K.INSTRUCTION_KEY: json.dumps({**data, "privacy": {"eps": 1}})})
    assert err.value.field.startswith("privacy.")
    data["training"]["momentum"] = 0.9
    with pytest.raises(InstructionError) as err:
        decode_run({K.INSTRUCTION_KEY: json.dumps(data)})
    assert err.value.field == "training.momentum"
    with pytest.raises(InstructionError) as err:
        decode_train({**record, "zk0-config": "/coordinator/run/config.json"})
    assert err.value.field == "zk0-config"
    with pytest.raises(InstructionError) as err:
        decode_train({K.LR_KEY: 1e-4})
    assert err.value.field == K.INSTRUCTION_KEY


def _shapes(*cams, state=6):
    return {"observation.state": (state,), "action": (6,),
            **{f"observation.images.{c}": (3, 64, 64) for c in cams}}


def test_join_report_names_the_rename_map_fix():
    rep = join_report("1", "site-b", _shapes("top", "wrist"), {}, FEATURES,
                      allow_missing_cameras=False)
    assert not rep.ok
    assert rep.missing == ["observation.images.camera1", "observation.images.camera2"]
    assert rep.extra == ["observation.images.top", "observation.images.wrist"]
    assert rep.rename_fix == {"observation.images.top": "observation.images.camera1",
                              "observation.images.wrist": "observation.images.camera2"}
    assert '"observation.images.top" = "observation.images.camera1"' in rep.describe()
    fixed = join_report("1", "site-b", _shapes("top", "wrist"), rep.rename_fix, FEATURES,
                        allow_missing_cameras=False)
    assert fixed.ok and fixed.missing == fixed.extra == [] and fixed.rename_fix == {}


def test_join_report_missing_camera_and_state_shape():
    rep = join_report("2", "one-cam", _shapes("camera1"), {}, FEATURES,
                      allow_missing_cameras=False)
    assert not rep.ok and rep.allow_missing_cameras and rep.rename_fix == {}
    assert "model.allow_missing_cameras = true" in rep.describe()
    assert join_report("2", "one-cam", _shapes("camera1"), {}, FEATURES,
                       allow_missing_cameras=True).ok
    bad = join_report("3", "arm7", _shapes("camera1", "camera2", state=7), {}, FEATURES,
                      allow_missing_cameras=False)
    assert not bad.ok and "observation.state: shape [7], the policy expects [6]" in bad.problems
