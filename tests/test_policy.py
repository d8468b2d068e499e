"""The SmolVLA factory: tiny offline preset, features, stats, trainable state, save/reload."""

import json
import shutil

import pytest
import torch

from zk0cli.errors import CheckpointError, DatasetError, FeatureMismatchError, TransportError

EXPERT_PREFIXES = ("model.vlm_with_expert.lm_expert.", "model.state_proj", "model.action_in_proj",
                   "model.action_out_proj", "model.action_time_mlp_in", "model.action_time_mlp_out")


def test_tiny_vlm_dir_is_deterministic_and_complete(tmp_path):
    from zk0cli.core.policy import tiny_vlm_dir

    a, b = tiny_vlm_dir(tmp_path / "a"), tiny_vlm_dir(tmp_path / "b")
    names = sorted(p.name for p in a.iterdir())
    assert names == ["config.json", "preprocessor_config.json", "processor_config.json",
                     "tokenizer.json", "tokenizer_config.json"]
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes()
    assert tiny_vlm_dir(tmp_path / "a") == a  # cached, no error on the second call
    cfg = json.loads((a / "config.json").read_text())
    assert cfg["model_type"] == "smolvlm"
    assert cfg["text_config"]["model_type"] == "llama"
    assert cfg["vision_config"]["model_type"] == "smolvlm_vision"
    assert not list(tmp_path.glob("a/.tiny-vlm-*"))  # no temp dirs left behind


def test_tiny_tokenizer_has_smolvlm_image_tokens():
    from transformers import AutoTokenizer

    from zk0cli.core.policy import tiny_vlm_dir

    tok = AutoTokenizer.from_pretrained(str(tiny_vlm_dir()))
    assert tok.fake_image_token_id == tok.convert_tokens_to_ids("<fake_token_around_image>")
    assert tok.global_image_token_id == tok.convert_tokens_to_ids("<global-img>")
    ids = tok("pick up the cube")["input_ids"]
    assert tok.decode(ids) == "pick up the cube"


def test_same_seed_same_weights_other_seed_differs(make_bundle):
    a, b, c = make_bundle(seed=3), make_bundle(seed=3), make_bundle(seed=4)
    sa, sb, sc = (x.policy.state_dict() for x in (a, b, c))
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_features_come_from_the_dataset(make_bundle):
    cfg = make_bundle().policy.config
    assert set(cfg.input_features) == {"observation.state", "observation.images.top",
                                       "observation.images.wrist"}
    assert cfg.input_features["observation.images.top"].shape == (3, 32, 32)
    assert set(cfg.output_features) == {"action"}
    assert cfg.load_vlm_weights is False


def test_trainable_names_are_expert_and_projections(make_bundle):
    from zk0cli.core.policy import get_trainable_state, trainable_parameter_names

    policy = make_bundle().policy
    names = trainable_parameter_names(policy)
    assert names and all(n.startswith(EXPERT_PREFIXES) for n in names)
    assert not any(".vlm." in n for n in names)
    state = get_trainable_state(policy)
    assert list(state) == names
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in state.values())
    assert sum(t.numel() for t in state.values()) == sum(
        p.numel() for p in policy.parameters() if p.requires_grad)


def test_set_trainable_state_roundtrip_and_rejects_bad_tensors(make_bundle):
    from zk0cli.core.policy import get_trainable_state, set_trainable_state

    a, b = make_bundle(seed=0).policy, make_bundle(seed=1).policy
    set_trainable_state(b, get_trainable_state(a), source="test")
    sb = get_trainable_state(b)
    assert all(torch.equal(v, sb[k]) for k, v in get_trainable_state(a).items())

    bad = get_trainable_state(a)
    name = next(iter(bad))
    bad[name] = torch.zeros(3)
    with pytest.raises(TransportError, match="wrong shape"):
        set_trainable_state(b, bad, source="client 7")
    bad = get_trainable_state(a)
    bad[name][0] = float("nan")
    with pytest.raises(TransportError, match="client 7.*non-finite"):
        set_trainable_state(b, bad, source="client 7")


def test_missing_stats_raise_instead_of_skipping_normalisation(so101_meta):
    from zk0cli.core.config import ModelConfig
    from zk0cli.core.data import dataset_stats
    from zk0cli.core.policy import build_policy

    stats = dataset_stats(so101_meta, {})
    del stats["action"]
    with pytest.raises(DatasetError, match="action"):
        build_policy(ModelConfig(kind="tiny", path=None, device="cpu"), meta=so101_meta,
                     rename_map={}, stats=stats, seed=0)
    with pytest.raises(DatasetError, match="observation.state"):
        build_policy(ModelConfig(kind="tiny", path=None, device="cpu"), meta=so101_meta,
                     rename_map={}, stats=None, seed=0)


def test_preprocessor_normalises_with_the_data_stats(make_bundle, fixed_batch, so101_meta):
    out = make_bundle().preprocessor(dict(fixed_batch))
    mean = torch.as_tensor(so101_meta.stats["observation.state"]["mean"], dtype=torch.float32)
    std = torch.as_tensor(so101_meta.stats["observation.state"]["std"], dtype=torch.float32)
    expected = (fixed_batch["observation.state"] - mean) / (std + 1e-8)
    torch.testing.assert_close(out["observation.state"], expected, rtol=1e-4, atol=1e-4)
    assert out["observation.language.tokens"].shape[0] == 4


def test_check_features_lists_both_sets():
    from zk0cli.core.policy import check_features

    check_features("d", ["observation.state", "observation.images.a", "action"],
                   ["observation.images.a", "observation.state"])
    with pytest.raises(FeatureMismatchError) as err:
        check_features("lerobot/x", ["observation.state", "observation.images.top"],
                       ["observation.state", "observation.images.camera1"])
    msg = str(err.value)
    assert "observation.images.top" in msg and "observation.images.camera1" in msg
    assert "rename_map" in msg
    assert err.value.dataset_keys == ["observation.images.top", "observation.state"]
    # smolvla_base-style: three policy cameras, the dataset renamed onto two of them
    policy3 = ["observation.state"] + [f"observation.images.camera{i}" for i in (1, 2, 3)]
    ds2 = ["observation.state", "observation.images.camera1", "observation.images.camera2"]
    with pytest.raises(FeatureMismatchError, match="missing: observation.images.camera3"):
        check_features("d", ds2, policy3)
    check_features("d", ds2, policy3, allow_missing_cameras=True)
    with pytest.raises(FeatureMismatchError):  # an extra key is never allowed
        check_features("d", [*ds2, "observation.images.top"], policy3, allow_missing_cameras=True)
    with pytest.raises(FeatureMismatchError):  # nor a missing state
        check_features("d", ds2[1:], policy3, allow_missing_cameras=True)


def test_save_reload_offline_identical(make_bundle, fixed_batch, tmp_path, monkeypatch):
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    from zk0cli.core.policy import load_bundle, save_bundle

    bundle = make_bundle(seed=5)
    save_bundle(bundle, tmp_path / "ckpt")
    ref = bundle.policy.state_dict()

    monkeypatch.chdir(tmp_path / "ckpt")  # the checkpoint names its VLM folder "vlm"
    plain = SmolVLAPolicy.from_pretrained(str(tmp_path / "ckpt"))
    got = plain.state_dict()
    assert got.keys() == ref.keys()
    assert all(torch.equal(got[k], ref[k]) for k in ref)

    loaded = load_bundle(tmp_path / "ckpt")
    got = loaded.policy.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    a, b = bundle.preprocessor(dict(fixed_batch)), loaded.preprocessor(dict(fixed_batch))
    for key in ("observation.state", "action", "observation.language.tokens"):
        assert torch.equal(a[key], b[key]), key
    act = torch.randn(2, 6)
    assert torch.equal(bundle.postprocessor(act), loaded.postprocessor(act))


def test_reload_when_the_stored_vlm_dir_is_gone(make_bundle, tmp_path):
    from zk0cli.core.policy import load_bundle, save_bundle, tiny_vlm_dir

    bundle = make_bundle(seed=6)
    save_bundle(bundle, tmp_path / "ckpt")
    cfg_path = tmp_path / "ckpt" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["vlm_model_name"] = "/elsewhere/.cache/zk0/tiny-vlm-1"  # another machine's path
    cfg_path.write_text(json.dumps(cfg))
    pre = tmp_path / "ckpt" / "policy_preprocessor.json"
    pre.write_text(pre.read_text().replace(str(tiny_vlm_dir()), "/elsewhere/.cache/zk0/tiny-vlm-1"))
    loaded = load_bundle(tmp_path / "ckpt")
    assert loaded.policy.config.vlm_model_name == str(tiny_vlm_dir())
    ref = bundle.policy.state_dict()
    assert all(torch.equal(loaded.policy.state_dict()[k], ref[k]) for k in ref)


def test_load_bundle_names_missing_files(tmp_path):
    from zk0cli.core.policy import load_bundle

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_bundle(tmp_path)


def test_pretrained_checks_cameras_and_accepts_a_rename_map(make_bundle, so101_meta, tmp_path):
    from zk0cli.core.config import ModelConfig
    from zk0cli.core.data import dataset_stats
    from zk0cli.core.policy import build_policy, save_bundle

    # A checkpoint trained on cameras camera1/camera2 (renamed from top/wrist).
    rename = {"observation.images.top": "observation.images.camera1",
              "observation.images.wrist": "observation.images.camera2"}
    save_bundle(make_bundle(seed=0, rename_map=rename), tmp_path / "ckpt")
    model = ModelConfig(kind="pretrained", path=str(tmp_path / "ckpt"), device="cpu")
    with pytest.raises(FeatureMismatchError) as err:
        build_policy(model, meta=so101_meta, rename_map={},
                     stats=dataset_stats(so101_meta, {}), seed=0)
    msg = str(err.value)
    for key in ("observation.images.top", "observation.images.wrist",
                "observation.images.camera1", "observation.images.camera2"):
        assert key in msg
    bundle = build_policy(model, meta=so101_meta, rename_map=rename,
                          stats=dataset_stats(so101_meta, rename), seed=0)
    assert set(bundle.policy.config.image_features) == set(rename.values())


def test_pretrained_missing_dir_is_a_checkpoint_error(so101_meta, tmp_path):
    from zk0cli.core.config import ModelConfig
    from zk0cli.core.data import dataset_stats
    from zk0cli.core.policy import build_policy

    (tmp_path / "empty").mkdir()
    model = ModelConfig(kind="pretrained", path=str(tmp_path / "empty"), device="cpu")
    with pytest.raises(CheckpointError, match="config.json"):
        build_policy(model, meta=so101_meta, rename_map={},
                     stats=dataset_stats(so101_meta, {}), seed=0)
    shutil.rmtree(tmp_path / "empty")
