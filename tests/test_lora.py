"""LoRA fine-tuning (``model.peft``) on the real tiny SmolVLA: what travels, the exact
aggregate, merged checkpoints that plain LeRobot runs, and refused settings."""

import pytest
import torch
from reply_fixtures import train_reply
from safetensors.torch import load_file
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.core.config import ModelConfig, PeftConfig
from zk0cli.core.contract import ADAPTER_CONFIG_FILE, ADAPTER_DIR, ADAPTER_WEIGHTS_FILE
from zk0cli.core.data import dataset_stats
from zk0cli.core.policy import (
    adapter_file_key,
    build_policy,
    get_trainable_state,
    merged_policy,
    save_bundle,
    set_trainable_state,
    trainable_parameter_names,
)
from zk0cli.core.resume import load_global_tensors
from zk0cli.core.strategy import Zk0FedProx
from zk0cli.core.transport import from_array_record, specs_of, to_array_record

PREFIX = "base_model.model."
RANK = 4
# LeRobot's SmolVLA PEFT defaults, written out by hand: the action expert's q and v
# projections in every layer and the five state/action projections.
PROJECTIONS = ("state_proj", "action_in_proj", "action_out_proj", "action_time_mlp_in",
               "action_time_mlp_out")


@pytest.fixture(scope="module")
def make_lora(so101_meta):
    """Factory: the tiny SmolVLA with rank-4 LoRA adapters (``aggregation``, ``seed``)."""

    def make(aggregation="ffa", seed=0):
        model = ModelConfig(kind="tiny", path=None, device="cpu",
                            peft=PeftConfig(rank=RANK, aggregation=aggregation))
        return build_policy(model, meta=so101_meta, rename_map={},
                            stats=dataset_stats(so101_meta, {}), seed=seed)

    return make


def _default_targets(policy):
    layers = len(policy.model.vlm_with_expert.lm_expert.layers)
    expert = {f"model.vlm_with_expert.lm_expert.layers.{i}.self_attn.{p}_proj"
              for i in range(layers) for p in ("q", "v")}
    return expert | {f"model.{p}" for p in PROJECTIONS}


def _modules(names, matrix):
    """Adapted module names of the ``lora_A`` / ``lora_B`` parameter names."""
    tail = f".{matrix}.default.weight"
    return {n[len(PREFIX):-len(tail)] for n in names if n.endswith(tail)}


def _random_b(policy, seed, scale=0.05):
    """The policy's trainable tensors with every ``lora_B`` drawn at random (seeded)."""
    g = torch.Generator().manual_seed(seed)
    return {n: scale * torch.randn(t.shape, generator=g) if ".lora_B." in n else t
            for n, t in get_trainable_state(policy).items()}


def test_the_wire_carries_only_the_trained_adapter_matrices(make_lora, make_bundle):
    targets = _default_targets(make_bundle(seed=0).policy)
    ffa = make_lora("ffa").policy
    names = trainable_parameter_names(ffa)
    # FFA-LoRA: one B per adapted module and nothing else (A is frozen, the base too).
    assert _modules(names, "lora_B") == targets and len(names) == len(targets)
    wire = to_array_record(get_trainable_state(ffa), transport_dtype="bfloat16")
    assert set(wire) == set(names)
    sent = sum(t.numel() for t in get_trainable_state(ffa).values())
    full = sum(p.numel() for p in make_bundle(seed=0).policy.parameters() if p.requires_grad)
    assert sent < full / 50  # 2,400 of 191,112 for the tiny expert at rank 4

    naive = trainable_parameter_names(make_lora("naive").policy)
    assert _modules(naive, "lora_A") == _modules(naive, "lora_B") == targets
    assert len(naive) == 2 * len(targets)


def test_adapter_initialisation_is_shared_through_the_seed(make_lora):
    def a_matrices(bundle):
        return {n: p.detach() for n, p in bundle.policy.named_parameters() if ".lora_A." in n}

    a, b, other = a_matrices(make_lora(seed=3)), a_matrices(make_lora(seed=3)), \
        a_matrices(make_lora(seed=4))
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], other[n]) for n in a)
    # LoRA starts at the base model: every B is zero.
    assert all(not t.any() for n, t in get_trainable_state(make_lora(seed=3).policy).items())


def _delta_w(policy, b_state, module):
    """``(alpha / r) · B · A`` of one adapted module, in float64."""
    layer = policy.get_submodule(PREFIX + module)
    a = layer.lora_A["default"].weight.detach().double()
    b = b_state[f"{PREFIX}{module}.lora_B.default.weight"].double()
    return layer.scaling["default"] * (b @ a)


def _aggregate(global_state, sites):
    strategy = Zk0FedProx(expected=specs_of(global_state), proximal_mu=0.0,
                          lr_for_round=lambda r: 1e-3, steps=2)
    replies = [train_reply(state, n, client_id=str(i), node_id=i + 1)
               for i, (state, n) in enumerate(sites)]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    return from_array_record(arrays)


def test_ffa_aggregate_is_the_exact_mean_of_the_sites_weight_updates(make_lora, make_bundle):
    bundle = make_lora("ffa")
    policy = bundle.policy
    sites = [(_random_b(policy, seed=1), 10), (_random_b(policy, seed=2), 30)]
    mean = _aggregate(get_trainable_state(policy), sites)
    total = sum(n for _, n in sites)
    for module in _modules(mean, "lora_B"):
        by_hand = sum(n * _delta_w(policy, state, module) for state, n in sites) / total
        # exact but for the float32 rounding of the mean B (|ΔW| ~ 1e-2 here)
        torch.testing.assert_close(_delta_w(policy, mean, module), by_hand, rtol=0, atol=1e-8)
    # ... and the merged global policy is the base plus that mean, weight by weight.
    set_trainable_state(policy, mean, source="server")
    merged = dict(merged_policy(policy).named_parameters())
    base = dict(make_bundle(seed=0).policy.named_parameters())
    for module in _modules(mean, "lora_B"):
        by_hand = sum(n * _delta_w(policy, state, module) for state, n in sites) / total
        got = merged[f"{module}.weight"].double() - base[f"{module}.weight"].double()
        torch.testing.assert_close(got, by_hand, rtol=0, atol=1e-6)  # float32 weights


def test_naive_per_matrix_mean_is_biased(make_lora):
    """The comparison option: mean(B)·mean(A) differs from mean(B·A) once A trains."""
    policy = make_lora("naive").policy
    sites = []
    for seed in (1, 2):
        g = torch.Generator().manual_seed(100 + seed)
        state = _random_b(policy, seed)
        sites.append(({n: t + 0.5 * torch.randn(t.shape, generator=g) if ".lora_A." in n else t
                       for n, t in state.items()}, 20))
    mean = _aggregate(get_trainable_state(policy), sites)
    gaps = []
    for module in _modules(mean, "lora_B"):
        a = {i: s[f"{PREFIX}{module}.lora_A.default.weight"].double()
             for i, (s, _) in enumerate(sites)}
        b = {i: s[f"{PREFIX}{module}.lora_B.default.weight"].double()
             for i, (s, _) in enumerate(sites)}
        exact = (b[0] @ a[0] + b[1] @ a[1]) / 2
        naive = (mean[f"{PREFIX}{module}.lora_B.default.weight"].double()
                 @ mean[f"{PREFIX}{module}.lora_A.default.weight"].double())
        # (B0 - B1)(A0 - A1) / 4 is the bias; with independent draws it is never near zero
        torch.testing.assert_close(exact - naive, (b[0] - b[1]) @ (a[0] - a[1]) / 4)
        gaps.append(float((exact - naive).norm() / exact.norm()))
    assert min(gaps) > 0.1


def test_merged_checkpoint_acts_like_the_adapter_model(make_lora, make_bundle, fixed_batch,
                                                      tmp_path, monkeypatch):
    """Tolerance: float32 merging reorders the sums, so actions agree to 1e-5, not bitwise."""
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from peft import PeftModel

    bundle = make_lora("ffa")
    trained = _random_b(bundle.policy, seed=7, scale=0.2)
    set_trainable_state(bundle.policy, trained, source="test")
    ckpt = tmp_path / "ckpt"
    save_bundle(bundle, ckpt)

    batch = bundle.preprocessor(dict(fixed_batch))
    cfg = bundle.policy.config
    noise = torch.randn(4, cfg.chunk_size, cfg.max_action_dim,
                        generator=torch.Generator().manual_seed(0))

    def actions(policy):
        return policy.predict_action_chunk(dict(batch), noise=noise.clone())

    with_adapters = actions(bundle.policy)
    monkeypatch.chdir(ckpt)  # the checkpoint names its VLM folder "vlm"
    plain = SmolVLAPolicy.from_pretrained(str(ckpt))  # plain LeRobot: no zk0, no peft
    assert type(plain) is SmolVLAPolicy and plain.config.use_peft is False
    torch.testing.assert_close(actions(plain), with_adapters, rtol=0, atol=1e-5)
    base_actions = actions(make_bundle(seed=0).policy)
    assert (with_adapters - base_actions).abs().max() > 1e-2  # the adapters matter

    # The adapter in PEFT's own layout, A and B of every module, loads onto the base policy.
    files = load_file(ckpt / ADAPTER_DIR / ADAPTER_WEIGHTS_FILE)
    a_names = [n for n, _ in bundle.policy.named_parameters() if ".lora_A." in n]
    assert set(files) == {adapter_file_key(n) for n in [*trained, *a_names]}
    assert (ckpt / ADAPTER_DIR / ADAPTER_CONFIG_FILE).is_file()
    reloaded = PeftModel.from_pretrained(make_bundle(seed=0).policy, str(ckpt / ADAPTER_DIR))
    torch.testing.assert_close(actions(reloaded), with_adapters, rtol=0, atol=1e-6)

    # Resume reads the adapter back bitwise.
    back = load_global_tensors(ckpt, list(trained))
    assert back.keys() == trained.keys()
    assert all(torch.equal(back[n], trained[n]) for n in trained)


@pytest.mark.parametrize(("setting", "expected"), [
    ("model.peft.rank=0", "model.peft.rank = 0"),
    ("model.peft.aggregation=mean", "model.peft.aggregation = 'mean'"),
    ("model.peft.target_modules=nomatch", "it matches no module of the policy"),
    ("model.peft.target_modules=model.vlm_with_expert", "LoRA cannot adapt"),
    ("model.peft.target_modules=[\"\"]", "a list of non-empty module names"),
    ("model.peft.alpha=inf", "model.peft.alpha = inf"),
])
def test_bad_peft_settings_exit_2_before_anything_starts(setting, expected, tmp_path):
    out = tmp_path / "runs"
    res = CliRunner().invoke(app, ["simulate", "--preset", "tiny", "--rounds", "1",
                                   "--out", str(out), "--set", setting])
    said = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert expected in said, res.output
    assert not out.exists() or not any(out.iterdir())  # no run directory was made


def test_verbose_console_survives_the_lora_check(tmp_path):
    """`zk0 -v`: the LoRA check builds a policy inside `library_prints` (stdout -> log);
    the -v console handler once wrote back into it and recursed without end."""
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "zk0cli", "-v", "simulate", "--preset", "tiny", "--rounds", "1",
         "--out", str(tmp_path / "run"), "--set", "model.peft.target_modules=nomatch"],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "RecursionError" not in res.stdout + res.stderr
    assert "matches no module" in " ".join(res.stdout.split())
    assert len(res.stdout) + len(res.stderr) < 50_000
