"""Central differential privacy on real tiny-SmolVLA updates: clipping, the server's
noise, the accountant against dp-accounting computed here, resume of both, validation and
a site's own privacy limits."""

import json
import math

import pytest
import torch
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant as rdp
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict
from reply_fixtures import reply_metadata, train_reply

from zk0cli import constants as K
from zk0cli.core.config import PrivacyConfig, SiteConfig, TrainingConfig, load_config
from zk0cli.core.contract import PRIVACY_STATE_FILE, RoundPrivacy
from zk0cli.core.contract.instruction import (
    decode_train,
    encode,
    features_of,
    run_instruction,
)
from zk0cli.core.policy import get_trainable_state
from zk0cli.core.privacy import (
    RunAccountant,
    ServerPrivacy,
    clip_update,
    load_state,
    noise_std,
    planned_sample_size,
    save_state,
    site_limit_problems,
    update_norm,
)
from zk0cli.core.strategy import Zk0FedProx
from zk0cli.core.transport import from_array_record, specs_of, to_array_record
from zk0cli.errors import ConfigError
from zk0cli.flower import client_app

CONST = TrainingConfig(scheduler="constant", lr=1e-2)
DP = ["privacy.mode=central", "data.stats=local", "federation.min_clients=2"]


@pytest.fixture(scope="module")
def trained(make_bundle, fixed_batch):
    """A real local update: the tiny model before and after 3 steps of local training."""
    from zk0cli.core.trainer import train_round

    bundle = make_bundle(seed=0)
    start = {k: v.clone() for k, v in get_trainable_state(bundle.policy).items()}
    result = train_round(bundle, [fixed_batch], steps=3, lr=1e-2, mu=0.0, training=CONST,
                         dataset_name="so101", seed=0)
    return start, result.tensors


def test_every_clipped_update_norm_is_within_the_clip(trained):
    start, local = trained
    raw = update_norm(local, start)
    assert raw > 0
    for clip in (raw / 1000, raw / 3, raw * 0.999999, raw * 2):
        sent, before = clip_update(local, start, clip)
        assert before == pytest.approx(raw)
        assert update_norm(sent, start) <= clip  # in float64, no tolerance
        if clip >= raw:  # not scaled: the update travels as it was trained
            assert all(torch.equal(sent[k], local[k]) for k in local)
        else:  # scaled, not truncated: the direction is kept, the norm is the clip's
            assert update_norm(sent, start) == pytest.approx(clip, rel=1e-5)
    # the server's second clip sees the bf16-rounded wire tensors: still within the clip
    priv = ServerPrivacy(PrivacyConfig(mode="central", clipping_norm=raw / 3), seed=0,
                         population=2, planned_sample=2)
    sent, _ = clip_update(local, start, raw / 3)
    wire = from_array_record(to_array_record(sent, transport_dtype="bfloat16"))
    glob = from_array_record(to_array_record(start, transport_dtype="bfloat16"))
    delta, _ = priv.clip(wire, glob)
    zero = {k: torch.zeros_like(v) for k, v in delta.items()}
    assert update_norm(delta, zero) <= raw / 3


def test_noise_std_matches_the_formula_at_a_fixed_seed(trained):
    start, _ = trained
    n_values = sum(v.numel() for v in start.values())
    assert n_values > 10_000
    z, clip, n = 1.3, 0.7, 3
    expected = z * clip / n
    assert noise_std(z, clip, n) == pytest.approx(expected)
    priv = ServerPrivacy(PrivacyConfig(mode="central", clipping_norm=clip, noise_multiplier=z),
                         seed=5, population=3, planned_sample=3)
    zero = {k: torch.zeros_like(v) for k, v in start.items()}
    model, std = priv.release(start, zero, clients=n)
    noise = torch.cat([(model[k] - start[k]).reshape(-1).double() for k in sorted(start)])
    assert std == pytest.approx(expected)
    # sample std of N values: relative standard error 1/sqrt(2N); allow 5 of them
    assert abs(float(noise.std()) / expected - 1) < 5 / math.sqrt(2 * n_values)
    assert abs(float(noise.mean())) < 5 * expected / math.sqrt(n_values)
    again = ServerPrivacy(priv.settings, seed=5, population=3, planned_sample=3)
    model2, _ = again.release(start, zero, clients=n)
    assert all(torch.equal(model[k], model2[k]) for k in start)  # seeded
    other = ServerPrivacy(priv.settings, seed=6, population=3, planned_sample=3)
    model3, _ = other.release(start, zero, clients=n)
    assert not torch.equal(model[sorted(start)[0]], model3[sorted(start)[0]])


@pytest.mark.parametrize(("z", "sample", "population", "rounds"),
                         [(1.0, 2, 2, 6), (0.8, 2, 5, 3), (2.5, 1, 10, 4)])
def test_epsilon_after_k_rounds_equals_dp_accounting(z, sample, population, rounds):
    acc = RunAccountant(delta=1e-5, population=population, noise_multiplier=z)
    projected = acc.projected(sample)
    eps = [acc.charge(sample) for _ in range(rounds)]
    assert projected == eps[0]  # the budget stop's look-ahead is the charge's value
    # independently: dp-accounting's RDP accountant, Poisson-sampled Gaussian, k rounds
    ref = rdp.RdpAccountant()
    event = dp_event.PoissonSampledDpEvent(sample / population, dp_event.GaussianDpEvent(z))
    ref.compose(dp_event.SelfComposedDpEvent(event, rounds))
    assert eps[-1] == pytest.approx(ref.get_epsilon(1e-5), rel=1e-9)
    assert all(a < b for a, b in zip(eps, eps[1:], strict=False))  # it only grows
    one = rdp.RdpAccountant()
    one.compose(event)
    assert eps[0] == pytest.approx(one.get_epsilon(1e-5), rel=1e-9)


def test_no_noise_means_infinite_epsilon():
    acc = RunAccountant(delta=1e-5, population=2, noise_multiplier=0.0)
    assert acc.epsilon == 0.0 and math.isinf(acc.projected(2))
    assert math.isinf(acc.charge(2))


def test_checkpointed_state_resumes_the_same_epsilon_and_noise_stream(tmp_path, trained):
    start, _ = trained
    settings = PrivacyConfig(mode="central", clipping_norm=0.5, noise_multiplier=1.1)
    zero = {k: torch.zeros_like(v) for k, v in start.items()}

    def fresh():
        return ServerPrivacy(settings, seed=42, population=4, planned_sample=2)

    full = fresh()
    for _ in range(2):
        full.release(start, zero, clients=2)
        full.charge(2)
    save_state(full, tmp_path)  # what a checkpoint after round 2 holds
    saved = json.loads((tmp_path / PRIVACY_STATE_FILE).read_text())
    assert saved["epsilon"] == pytest.approx(full.accountant.epsilon)
    after_full, _ = full.release(start, zero, clients=2)
    eps_full = full.charge(2)

    resumed = fresh()
    load_state(resumed, tmp_path)
    assert resumed.accountant.epsilon == saved["epsilon"]
    after_resumed, _ = resumed.release(start, zero, clients=2)
    assert resumed.charge(2) == eps_full
    assert all(torch.equal(after_full[k], after_resumed[k]) for k in start)  # bitwise
    with pytest.raises(FileNotFoundError, match="no accountant"):
        load_state(fresh(), tmp_path / "nowhere")


def test_strategy_averages_clipped_updates_equally_and_adds_the_noise(trained):
    start, local = trained
    clip = update_norm(local, start) / 4  # the unclipped reply gets clipped by the server
    settings = PrivacyConfig(mode="central", clipping_norm=clip, noise_multiplier=0.9)
    priv = ServerPrivacy(settings, seed=3, population=3, planned_sample=3)
    strategy = Zk0FedProx(expected=specs_of(start), proximal_mu=0.0, steps=1,
                          lr_for_round=lambda r: 1e-3, min_train_nodes=2, privacy=priv)
    strategy._remember_global(to_array_record(start, transport_dtype="float32"))
    small, _ = clip_update(local, start, clip / 2)
    replies = [train_reply(local, 1000, client_id="0", node_id=1),
               train_reply(small, 1, client_id="1", node_id=2)]  # weights ignored
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    got = from_array_record(arrays)
    # the same computation by hand: clip, equal-weight mean, noise from the same seed
    ref = ServerPrivacy(settings, seed=3, population=3, planned_sample=3)
    d0, scaled0 = ref.clip(local, start)
    d1, scaled1 = ref.clip(small, start)
    assert scaled0 and not scaled1
    noise = ref.noise.draw(start, 0.9 * clip / 2)
    for k in start:
        want = start[k] + ((d0[k].double() + d1[k].double()) / 2).float() + noise[k]
        torch.testing.assert_close(got[k], want, rtol=0, atol=1e-6)
    rec = RoundPrivacy.model_validate(strategy.outcomes[1].privacy)
    assert rec.clients == 2 and rec.server_clipped == 1 and rec.sample_size == 3
    assert rec.noise_std == pytest.approx(0.9 * clip / 2)
    ref.charge(3)
    assert rec.epsilon == pytest.approx(ref.accountant.epsilon) and rec.epsilon > 0


def test_validation_of_privacy_settings():
    cfg = load_config(preset="tiny", overrides=DP)
    assert cfg.privacy.mode == "central"
    assert load_config(preset="tiny").privacy.mode == "off"  # off by default
    bad = {
        "privacy.noise_multiplier=-0.1": "noise_multiplier",
        "privacy.clipping_norm=0": "clipping_norm",
        "privacy.delta=1": "delta",
        "privacy.delta=0": "delta",
        "federation.min_clients=1": "min_clients >= 2",
        "schedule.mu=adaptive": "schedule.mu = 'adaptive'",
        "data.stats=federated": "data.stats = 'federated'",
    }
    for override, named in bad.items():
        with pytest.raises(ConfigError) as err:
            load_config(preset="tiny", overrides=[*DP, override])
        assert named in str(err.value), (override, str(err.value))
    # server optimizers are post-processing of the noised mean: supported
    cfg = load_config(preset="tiny", overrides=[*DP, "federation.strategy=fedadam"])
    assert cfg.federation.strategy == "fedadam"
    assert planned_sample_size(10, 0.3, 2) == 3 and planned_sample_size(2, 1.0, 2) == 2


def test_site_limits_name_the_limit_and_the_value():
    cfg = load_config(preset="tiny", overrides=[*DP, "privacy.clipping_norm=2",
                                                "privacy.noise_multiplier=0.5"])
    sent = run_instruction(cfg, input_features={}, stats=None, simulation=False).privacy
    limits = SiteConfig.model_validate({"dataset": "x", "privacy": {
        "max_clipping_norm": 1.0, "min_noise_multiplier": 0.8, "max_epsilon": 3.0}}).privacy
    problems = site_limit_problems(limits, sent, epsilon=4.5)
    assert problems == [
        "site limit privacy.max_clipping_norm = 1: the run's privacy.clipping_norm is 2",
        "site limit privacy.min_noise_multiplier = 0.8: the run's privacy.noise_multiplier is 0.5",
        "site limit privacy.max_epsilon = 3: epsilon after this round would be 4.5 "
        "(delta = 1e-05)",
    ]
    assert site_limit_problems(limits, sent, epsilon=2.0)[2:] == []
    assert "privacy.mode = 'off'" in site_limit_problems(limits, None)[0]
    assert site_limit_problems(SiteConfig(dataset="x").privacy, None) == []


def test_a_site_refuses_a_round_that_breaks_its_limit_and_the_server_records_why(
        tmp_path, make_bundle, so101_root):
    bundle = make_bundle(seed=1)
    cfg = load_config(preset="tiny", overrides=[*DP, "privacy.noise_multiplier=0.5",
                                                "model.device=cpu"])
    instr = run_instruction(cfg, input_features=features_of(bundle.policy.config), stats=None,
                            simulation=False)
    state = get_trainable_state(bundle.policy)
    conf = ConfigRecord({**encode(instr), K.ROUND_KEY: 1, K.LR_KEY: 1e-3, K.STEPS_KEY: 1,
                         K.PROXIMAL_MU_KEY: 0.0, K.SERVER_ROUND_KEY: 1,
                         K.DP_EPSILON_KEY: 12.5})
    assert decode_train(conf).epsilon == 12.5
    msg = Message(RecordDict({K.ARRAYS_KEY: to_array_record(state, transport_dtype="float32"),
                              K.CONFIG_KEY: conf}),
                  metadata=Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=7,
                                    reply_to_message_id="", group_id="1", created_at=0.0,
                                    ttl=600.0, message_type="train"))
    context = _site_context(tmp_path, so101_root, "lab-a", {"max_epsilon": 8.0})
    client_app._CACHE.clear()
    answer = client_app.train(msg, context)
    info = answer.content.config_records[K.INFO_KEY]
    assert answer.content.metric_records[K.METRICS_KEY][K.FAILED] == 1
    assert K.ARRAYS_KEY not in answer.content.array_records
    assert "site limit privacy.max_epsilon = 8: epsilon after this round would be 12.5" \
        in str(info[K.ERROR])
    assert client_app._CACHE == {}  # refused before building anything
    # the server records the refusal with its reason
    strategy = Zk0FedProx(expected=specs_of(state), proximal_mu=0.0, steps=1,
                          lr_for_round=lambda r: 1e-3, min_train_nodes=2)
    strategy.aggregate_train(1, [Message(answer.content, metadata=reply_metadata(7))])
    (report,) = strategy.outcomes[1].failures
    assert report.client_id == "lab-a" and "privacy.max_epsilon = 8" in report.reason


def test_budget_stop_comes_before_the_round_that_would_exceed_it():
    acc = RunAccountant(delta=1e-5, population=2, noise_multiplier=2.0)
    values = [acc.charge(2) for _ in range(3)]  # epsilon after rounds 1, 2, 3
    budget = (values[1] + values[2]) / 2  # rounds 1 and 2 fit, round 3 does not
    priv = ServerPrivacy(PrivacyConfig(mode="central", noise_multiplier=2.0,
                                       max_epsilon=budget), seed=0, population=2,
                         planned_sample=2)
    assert priv.budget_stop(0) is None
    priv.charge(2)
    assert priv.budget_stop(1) is None
    priv.charge(2)
    reason = priv.budget_stop(2)
    assert reason is not None and "epsilon after round 3 would be" in reason
    assert f"privacy.max_epsilon = {budget:g}" in reason and "stopped after round 2" in reason
    tight = ServerPrivacy(PrivacyConfig(mode="central", noise_multiplier=2.0,
                                        max_epsilon=values[0] / 2), seed=0, population=2,
                          planned_sample=2)
    assert "after round 1 would be" in tight.budget_stop(0)  # refused before round 1
    assert priv.summary()["rounds_charged"] == 2
    assert priv.summary()["epsilon"] == pytest.approx(values[1])


def test_the_join_check_reports_a_site_limit_before_round_1(tmp_path, make_bundle,
                                                            so101_root):
    from zk0cli.core.site import JoinReport

    bundle = make_bundle(seed=1)
    cfg = load_config(preset="tiny", overrides=[*DP, "privacy.clipping_norm=3",
                                                "model.device=cpu"])
    instr = run_instruction(cfg, input_features=features_of(bundle.policy.config), stats=None,
                            simulation=False)
    context = _site_context(tmp_path, so101_root, "lab-b", {"max_clipping_norm": 1.0})
    query = Message(RecordDict({K.CONFIG_KEY: ConfigRecord(encode(instr))}),
                    metadata=Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=7,
                                      reply_to_message_id="", group_id="1", created_at=0.0,
                                      ttl=600.0, message_type="query.join"))
    client_app._CACHE.clear()
    reply = client_app.join(query, context)
    report = JoinReport.model_validate_json(
        str(reply.content.config_records[K.INFO_KEY][K.JOIN_REPORT_KEY]))
    assert not report.ok and report.missing == []  # the dataset fits; the limit refuses
    assert report.problems == [
        "refused by the site's privacy limits: site limit privacy.max_clipping_norm = 1: "
        "the run's privacy.clipping_norm is 3"]


def _site_context(tmp_path, root, client_id, limits):
    """A deployed client's Flower context: its site file (node 7) with these privacy limits."""
    site = SiteConfig.model_validate({"dataset": "zk0test/so101", "dataset_root": root,
                                      "device": "cpu", "client_id": client_id,
                                      "privacy": limits})
    path = tmp_path / "site.json"
    path.write_text(site.model_dump_json())
    return Context(run_id=1, node_id=7, node_config={K.NODE_SITE_CONFIG_KEY: str(path)},
                   state=RecordDict(), run_config={})
