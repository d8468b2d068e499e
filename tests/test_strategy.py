"""Transport checks and the FedProx strategy's aggregation, with real tiny-SmolVLA tensors."""

import math

import pytest
import torch
from flwr.app import ConfigRecord, Message, Metadata, RecordDict
from flwr.app import Error as FlwrError
from reply_fixtures import reply_metadata as _metadata
from reply_fixtures import train_reply as reply

from zk0cli import constants as K
from zk0cli.core.strategy import Zk0FedProx, aggregate_client_metrics, read_train_reply
from zk0cli.core.transport import (
    WeightedMean,
    from_array_record,
    specs_of,
    tensor_hash,
    tensor_problems,
    to_array_record,
    validate_tensors,
)
from zk0cli.errors import TransportError


@pytest.fixture(scope="module")
def global_state(make_bundle):
    from zk0cli.core.policy import get_trainable_state

    return get_trainable_state(make_bundle(seed=0).policy)


def perturbed(state, seed, scale=0.01):
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g) for k, v in state.items()}


def test_weighted_mean_matches_reference(global_state):
    states = [perturbed(global_state, s) for s in range(3)]
    weights = [12, 30, 7]
    acc = WeightedMean()
    for st, w in zip(states, weights, strict=True):
        acc.add(st, w)
    got = acc.result()
    for name in global_state:
        ref = sum(w * st[name].double() for st, w in zip(states, weights, strict=True)) / 49
        torch.testing.assert_close(got[name], ref.float(), rtol=0, atol=1e-7)
        assert got[name].dtype == global_state[name].dtype


def test_array_record_round_trip_is_exact(global_state):
    back = from_array_record(to_array_record(global_state))
    assert tensor_hash(back) == tensor_hash(global_state)
    assert list(back) == list(global_state)


def test_tensor_problems_cover_every_kind(global_state):
    spec = specs_of(global_state)
    names = sorted(global_state)
    bad = dict(global_state)
    bad.pop(names[0])
    bad["intruder"] = torch.zeros(1)
    bad[names[1]] = torch.zeros(3)
    bad[names[2]] = global_state[names[2]].double()
    nan = global_state[names[3]].clone()
    nan.view(-1)[0] = math.nan
    bad[names[3]] = nan
    problems = " | ".join(tensor_problems(bad, spec))
    for needle in ("missing 1", "unexpected 1", "wrong shape", "wrong dtype", "non-finite"):
        assert needle in problems
    with pytest.raises(TransportError, match="client 7"):
        validate_tensors(bad, spec, source="client 7")
    assert tensor_problems(global_state, spec) == []


def test_strategy_aggregates_valid_and_records_the_rest(global_state):
    strategy = Zk0FedProx(expected=specs_of(global_state), proximal_mu=0.1,
                          lr_for_round=lambda r: 1e-3, steps=2)
    good = [perturbed(global_state, 1), perturbed(global_state, 2)]
    nan_state = perturbed(global_state, 3)
    first = sorted(nan_state)[0]
    nan_state[first] = torch.full_like(nan_state[first], math.nan)
    replies = [
        reply(good[0], 10, client_id="0", node_id=1),
        reply(good[1], 30, client_id="1", node_id=2),
        reply(nan_state, 10, client_id="2", node_id=3),
        reply(None, 0, client_id="3", node_id=4, failed=True, error="RuntimeError: injected"),
        reply(good[0], 0, client_id="4", node_id=5),
    ]
    err = Message(FlwrError(code=0, reason="node died"), metadata=_metadata(6))
    arrays, metrics = strategy.aggregate_train(1, [*replies, err])
    assert arrays is not None and metrics is not None
    got = from_array_record(arrays)
    for name in global_state:
        torch.testing.assert_close(got[name], (10 * good[0][name] + 30 * good[1][name]) / 40)
    outcome = strategy.outcomes[1]
    assert [r.client_id for r in outcome.ok_reports] == ["0", "1"]
    reasons = {r.client_id: r.reason for r in outcome.failures}
    assert "non-finite" in reasons["2"]
    assert reasons["3"] == "RuntimeError: injected"
    assert "num-examples" in reasons["4"]
    assert "node died" in reasons["6"]
    assert metrics["num_clients"] == 2 and metrics["num_failures"] == 4


def test_no_valid_reply_keeps_previous_model(global_state):
    strategy = Zk0FedProx(expected=specs_of(global_state), proximal_mu=0.0,
                          lr_for_round=lambda r: 1e-3, steps=2)
    arrays, metrics = strategy.aggregate_train(
        2, [reply(None, 0, client_id="0", failed=True)])
    assert arrays is None and metrics is None
    assert strategy.outcomes[2].aggregated is False
    assert "previous global model kept" in strategy.outcomes[2].note


def test_read_reply_rejects_wrong_shapes(global_state):
    bad = dict(global_state)
    name = sorted(bad)[0]
    bad[name] = torch.zeros(2, 2)
    report, tensors = read_train_reply(reply(bad, 5), specs_of(global_state))
    assert tensors is None and "wrong shape" in report.reason


def test_aggregate_client_metrics_mean_and_std():
    from zk0cli.core.strategy import ClientReport

    reports = [ClientReport("0", 1, True, {K.LOSS: 1.0}, weight=2),
               ClientReport("1", 2, True, {K.LOSS: 3.0}, weight=4),
               ClientReport("2", 3, False, reason="x")]
    agg = aggregate_client_metrics(reports)
    assert agg["loss_avg"] == pytest.approx(2.0)
    assert agg["loss_std"] == pytest.approx(1.0)
    assert agg["num_clients"] == 2 and agg["num_failures"] == 1 and agg["num_examples"] == 6
    assert math.isnan(agg["grad_norm_avg"])


def test_fewer_valid_replies_than_min_clients_keeps_previous_model(global_state):
    strategy = Zk0FedProx(expected=specs_of(global_state), proximal_mu=0.1,
                          lr_for_round=lambda r: 1e-3, steps=2, min_train_nodes=3)
    replies = [reply(perturbed(global_state, i), 10, client_id=str(i), node_id=i + 1)
               for i in range(2)]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is None
    assert "fewer than federation.min_clients = 3" in strategy.outcomes[1].note


def test_error_reply_is_attributed_to_the_node_it_was_sent_to(global_state):
    """Flower answers for a dead node from the SuperLink; the reply_to id names the node."""
    strategy = Zk0FedProx(expected=specs_of(global_state), proximal_mu=0.1,
                          lr_for_round=lambda r: 1e-3, steps=2)
    # Round 1: node 42 reports as client "5".
    strategy.aggregate_train(1, [reply(global_state, 4, client_id="5", node_id=42)])
    # Round 2: the message to node 42 gets an error reply that comes from node 1.
    sent = Message(RecordDict({}), metadata=Metadata(
        run_id=1, message_id="to-42", src_node_id=1, dst_node_id=42, reply_to_message_id="",
        group_id="2", created_at=0.0, ttl=60.0, message_type="train"))
    strategy._sent[2] = [sent]
    err_meta = _metadata(1)
    err_meta.__dict__["_reply_to_message_id"] = "to-42"
    err = Message(FlwrError(code=0, reason="Node Unavailable"), metadata=err_meta)
    strategy.aggregate_train(2, [err])
    [failure] = strategy.outcomes[2].failures
    assert failure.client_id == "5" and failure.node_id == 42
    assert "Node Unavailable" in failure.reason


class _Nodes:
    """The part of a Flower Grid that FedAvg's sampling reads: the connected node ids."""

    def __init__(self, ids):
        self.ids = ids

    def get_node_ids(self):
        return list(self.ids)


def test_scheduled_lr_and_adaptive_mu_reach_the_train_config(global_state, monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    from zk0cli.core.schedules import adaptive_mu, cosine_lr

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)  # what a ServerApp process has set
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)

    strategy = Zk0FedProx(expected=specs_of(global_state), proximal_mu=0.1, steps=2,
                          lr_for_round=cosine_lr(1e-3, lr_min=1e-4, rounds=3),
                          mu_for_round=adaptive_mu(0.1, threshold=0.05, factor=2.0,
                                                   mu_min=0.01, mu_max=1.0))
    arrays = to_array_record(global_state)
    grid = _Nodes([1, 2])
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord(), grid))
    assert [m.content[K.CONFIG_KEY][K.PROXIMAL_MU_KEY] for m in msgs] == [0.1, 0.1]
    assert msgs[0].content[K.CONFIG_KEY][K.LR_KEY] == pytest.approx(1e-3)
    # round 1: client policy losses 0.1 and 0.5 (std 0.2 > 0.05): mu doubles for round 2
    strategy.aggregate_train(1, [
        reply(global_state, 4, client_id="0", node_id=1, metrics={K.POLICY_LOSS: 0.1}),
        reply(global_state, 4, client_id="1", node_id=2, metrics={K.POLICY_LOSS: 0.5})])
    assert strategy.outcomes[1].proximal_mu == pytest.approx(0.1)
    assert strategy.loss_history() == {1: [0.1, 0.5]}
    msgs = list(strategy.configure_train(2, arrays, ConfigRecord(), grid))
    conf = msgs[0].content[K.CONFIG_KEY]
    assert conf[K.PROXIMAL_MU_KEY] == pytest.approx(0.2)
    assert conf[K.LR_KEY] == pytest.approx(5.5e-4)
    strategy.aggregate_train(2, [
        reply(global_state, 4, client_id="0", node_id=1, metrics={K.POLICY_LOSS: 0.3}),
        reply(global_state, 4, client_id="1", node_id=2, metrics={K.POLICY_LOSS: 0.31})])
    assert (strategy.outcomes[2].proximal_mu, strategy.outcomes[2].lr) == pytest.approx(
        (0.2, 5.5e-4))
    msgs = list(strategy.configure_train(3, arrays, ConfigRecord(), grid))
    assert msgs[0].content[K.CONFIG_KEY][K.PROXIMAL_MU_KEY] == pytest.approx(0.1)
