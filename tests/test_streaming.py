"""Streamed aggregation: bounded replies in memory, arrival order irrelevant, Grid streaming."""

import random
import weakref

import torch
from flwr.app import ConfigRecord, Message, Metadata, MetricRecord, RecordDict

from zk0cli import constants as K
from zk0cli.core import strategy as strategy_mod
from zk0cli.core.aggregation import SpilledReplies, fixed_order_mean
from zk0cli.core.strategy import Zk0FedProx
from zk0cli.core.transport import from_array_record, specs_of, tensor_hash, to_array_record
from zk0cli.flower.streaming import StreamingGrid

N_CLIENTS = 12


def state(seed):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(64, 32, generator=g), "b.bias": torch.randn(17, generator=g)}


def reply(seed, n, client_id, node_id):
    content = {
        K.METRICS_KEY: MetricRecord({K.NUM_EXAMPLES_KEY: n, K.LOSS: 1.0}),
        K.INFO_KEY: ConfigRecord({K.CLIENT_ID: client_id}),
        K.ARRAYS_KEY: to_array_record(state(seed)),
    }
    meta = Metadata(run_id=1, message_id=f"r{node_id}", src_node_id=node_id, dst_node_id=0,
                    reply_to_message_id=f"q{node_id}", group_id="1", created_at=0.0,
                    ttl=60.0, message_type="train")
    return Message(RecordDict(content), metadata=meta)


def make_strategy():
    return Zk0FedProx(expected=specs_of(state(0)), proximal_mu=0.1,
                      lr_for_round=lambda r: 1e-3, steps=1)


class Alive:
    """Counts objects still alive (weakref finalizers) and the most alive at once."""

    def __init__(self):
        self.now = 0
        self.peak = 0

    def track(self, obj):
        self.now += 1
        self.peak = max(self.peak, self.now)
        weakref.finalize(obj, self._gone)
        return obj

    def _gone(self):
        self.now -= 1


def test_aggregation_holds_a_bounded_number_of_replies(monkeypatch):
    """Neither encoded replies nor decoded tensors pile up with the number of clients."""
    messages, decoded = Alive(), Alive()
    real_decode = strategy_mod.from_array_record
    import safetensors.torch as st

    real_load = st.load_file

    def decode(record):
        tensors = real_decode(record)
        decoded.track(tensors["a.weight"])
        return tensors

    def load(path, *args, **kwargs):
        tensors = real_load(path, *args, **kwargs)
        decoded.track(tensors["a.weight"])
        return tensors

    monkeypatch.setattr(strategy_mod, "from_array_record", decode)
    monkeypatch.setattr(st, "load_file", load)

    def arriving():  # a lazy stream, as StreamingGrid hands replies over
        for i in random.Random(0).sample(range(N_CLIENTS), N_CLIENTS):
            yield messages.track(reply(i, 10 + i, str(i), 100 + i))

    arrays, _ = make_strategy().aggregate_train(1, arriving())
    assert arrays is not None
    assert messages.peak <= 2, f"{messages.peak} replies alive at once"
    assert decoded.peak <= 2, f"{decoded.peak} decoded replies alive at once"
    assert messages.now == 0 and decoded.now == 0


def test_mean_and_records_do_not_depend_on_arrival_order():
    orders = [list(range(N_CLIENTS)), list(reversed(range(N_CLIENTS))),
              random.Random(1).sample(range(N_CLIENTS), N_CLIENTS)]
    hashes, ids = set(), set()
    for order in orders:
        strategy = make_strategy()
        arrays, _ = strategy.aggregate_train(
            1, (reply(i, 3 + i, str(i), 100 + i) for i in order))
        assert arrays is not None
        hashes.add(tensor_hash(from_array_record(arrays)))
        ids.add(tuple(r.client_id for r in strategy.outcomes[1].reports))
    assert len(hashes) == 1
    assert ids == {tuple(str(i) for i in range(N_CLIENTS))}


def test_fixed_order_mean_is_the_weighted_mean():
    weights = [5.0, 1.0, 7.0]
    with SpilledReplies() as spilled:
        for i, w in enumerate(weights):
            spilled.add((str(2 - i).zfill(12), i), state(i), w)
        root = spilled.root
        assert len(list(root.iterdir())) == 3
        mean = fixed_order_mean(spilled)
    assert not root.exists()
    assert mean is not None
    for name in mean:
        ref = sum(w * state(i)[name].double() for i, w in enumerate(weights)) / sum(weights)
        torch.testing.assert_close(mean[name], ref.float(), rtol=0, atol=1e-6)
    assert fixed_order_mean(SpilledReplies()) is None


class FakeGrid:
    """push/pull like Flower's grids; a reply becomes available after ``ready`` pulls."""

    def __init__(self, ready):
        self.ready = ready  # message id -> number of polls before its reply is there
        self.pushed: list[str] = []
        self.pulls: list[list[str]] = []

    def push_messages(self, messages):
        self.pushed = [f"q{m}" for m in messages]
        return list(self.pushed)

    def pull_messages(self, message_ids):
        ids = list(message_ids)
        self.pulls.append(ids)
        out = []
        for i in ids:
            self.ready[i] -= 1
            if self.ready[i] == 0:
                out.append(reply(int(i[1:]), 1, i[1:], int(i[1:])))
        return out

    def get_node_ids(self):
        return [1, 2, 3]


def test_streaming_grid_pushes_first_pulls_one_at_a_time_and_honours_the_timeout():
    fake = FakeGrid({"q1": 2, "q2": 1, "q3": 10**6})
    grid = StreamingGrid(fake, pull_interval_s=0.01)
    stream = grid.send_and_receive([1, 2, 3], timeout=0.3)
    assert fake.pushed == ["q1", "q2", "q3"] and fake.pulls == []  # pushed, nothing pulled
    got = [m.metadata.reply_to_message_id for m in stream]
    assert got == ["q2", "q1"]  # arrival order; q3 never replied, given up at the timeout
    assert all(len(p) == 1 for p in fake.pulls)
    assert grid.get_node_ids() == [1, 2, 3]
    assert list(StreamingGrid(FakeGrid({})).send_and_receive([], timeout=1.0)) == []


def test_http_grid_pulls_reply_objects_with_a_short_backoff(monkeypatch):
    """Deployment: the SuperLink lists a reply before its objects arrive; Flower's default
    backoff (1 s, doubling) would cost seconds per reply."""
    from flwr.superlink.grid import http_grid

    from zk0cli.flower.streaming import PULL_BACKOFF_S, short_pull_backoff

    calls = []

    def recorder(*args, **kwargs):
        calls.append(kwargs)
        return {}

    monkeypatch.setattr(http_grid, "pull_objects", recorder)
    assert short_pull_backoff(object()) is False  # not an HttpGrid: nothing changes
    assert http_grid.pull_objects is recorder
    grid = object.__new__(http_grid.HttpGrid)  # no connection needed
    assert short_pull_backoff(grid) and short_pull_backoff(grid)  # idempotent
    assert http_grid.pull_objects.__wrapped__ is recorder
    http_grid.pull_objects(["a"], None)
    http_grid.pull_objects(["a"], None, initial_backoff=2.0)  # an explicit value is kept
    assert [c["initial_backoff"] for c in calls] == [PULL_BACKOFF_S, 2.0]
    assert calls[0]["backoff_cap"] <= 0.25
