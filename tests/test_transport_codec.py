"""The wire codec: bfloat16 values carried as int16 bits, float32, and what travels."""

import pytest
import torch
from flwr.app import Array
from reply_fixtures import train_reply

from zk0cli.core.strategy import Zk0FedProx, read_train_reply
from zk0cli.core.transport import (
    BF16_WIRE_TAG,
    WeightedMean,
    from_array_record,
    record_nbytes,
    specs_of,
    tensor_hash,
    to_array_record,
)
from zk0cli.errors import TransportError


@pytest.fixture(scope="module")
def bundle(make_bundle):
    return make_bundle(seed=3)


@pytest.fixture(scope="module")
def trainable(bundle):
    from zk0cli.core.policy import get_trainable_state

    return get_trainable_state(bundle.policy)


def _bits(t):
    return t.contiguous().view(torch.int16)


def test_bf16_values_travel_bit_identical(trainable):
    bf16 = {k: v.to(torch.bfloat16) for k, v in trainable.items()}
    # Special values too: signed zero, infinities, NaN, the smallest subnormal.
    name = next(iter(bf16))
    special = bf16[name].clone().view(-1)
    special[:5] = torch.tensor([-0.0, float("inf"), float("-inf"), float("nan"), 9.2e-41],
                               dtype=torch.bfloat16)
    bf16[name] = special.view(bf16[name].shape)
    record = to_array_record(bf16, transport_dtype="bfloat16")
    for k, arr in record.items():
        assert arr.dtype == BF16_WIRE_TAG
        assert arr.numpy().dtype.name == "int16"
        assert tuple(arr.shape) == tuple(bf16[k].shape)
    back = from_array_record(record, decode_to=None)
    assert list(back) == list(bf16)
    for k in bf16:
        assert back[k].dtype == torch.bfloat16
        assert torch.equal(_bits(back[k]), _bits(bf16[k])), k


def test_bf16_wire_decodes_to_float32_rounded_once(trainable):
    record = to_array_record(trainable, transport_dtype="bfloat16")
    back = from_array_record(record)
    for k, v in trainable.items():
        assert back[k].dtype == torch.float32
        assert torch.equal(back[k], v.to(torch.bfloat16).float())
    # Sending the decoded tensors again changes nothing: rounding happens once.
    again = from_array_record(to_array_record(back, transport_dtype="bfloat16"))
    assert tensor_hash(again) == tensor_hash(back)
    # Half the bytes of float32 (plus one NumPy header per tensor).
    n32 = record_nbytes(to_array_record(trainable, transport_dtype="float32"))
    n16 = record_nbytes(record)
    values = sum(v.numel() for v in trainable.values())
    assert n32 - 4 * values == n16 - 2 * values  # same headers
    assert 0 < n16 - 2 * values < 200 * len(trainable)


def test_bf16_tag_survives_flower_serialization(trainable):
    name, t = next(iter(trainable.items()))
    arr = to_array_record({name: t}, transport_dtype="bfloat16")[name]
    inflated = Array.inflate(arr.deflate(), children=arr.children)
    assert inflated.dtype == BF16_WIRE_TAG
    assert inflated.data == arr.data


def test_float32_option_is_exact(trainable):
    record = to_array_record(trainable, transport_dtype="float32")
    assert {arr.dtype for arr in record.values()} == {"float32"}
    back = from_array_record(record)
    assert tensor_hash(back) == tensor_hash(trainable)


def test_bad_wire_data_and_dtype_are_rejected(trainable):
    name, t = next(iter(trainable.items()))
    arr = Array(t.numpy())
    forged = {name: Array(dtype=BF16_WIRE_TAG, shape=arr.shape, stype=arr.stype, data=arr.data)}
    from flwr.app import ArrayRecord

    with pytest.raises(TransportError, match="int16"):
        from_array_record(ArrayRecord(forged))
    with pytest.raises(ValueError, match="transport_dtype"):
        to_array_record(trainable, transport_dtype="float16")


def test_streaming_aggregation_of_bf16_replies_equals_reference_mean(trainable):
    expected = specs_of(trainable)
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    states = [{k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in trainable.items()}
              for g in gens]
    weights = [12, 30, 7]
    replies = [train_reply(st, w, client_id=str(i + 1), node_id=i + 1,
                           transport_dtype="bfloat16")
               for i, (st, w) in enumerate(zip(states, weights, strict=True))]
    strategy = Zk0FedProx(expected=expected, proximal_mu=0.01, lr_for_round=lambda r: 1e-4,
                          steps=1, transport_dtype="bfloat16")
    arrays, _metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and strategy.outcomes[1].aggregated
    assert {a.dtype for a in arrays.values()} == {BF16_WIRE_TAG}
    got = from_array_record(arrays)
    # The reference: weighted mean (float64) of what the server received, then bf16.
    received = [{k: v.to(torch.bfloat16).double() for k, v in st.items()} for st in states]
    for k in trainable:
        ref = sum(w * r[k] for r, w in zip(received, weights, strict=True)) / sum(weights)
        assert torch.equal(got[k], ref.float().to(torch.bfloat16).float()), k
    # And the float32 accumulator path on its own matches the reference to fp32 precision.
    acc = WeightedMean()
    for r, w in zip(received, weights, strict=True):
        acc.add({k: v.float() for k, v in r.items()}, w)
    mean = acc.result()
    for k in trainable:
        ref = sum(w * r[k] for r, w in zip(received, weights, strict=True)) / sum(weights)
        torch.testing.assert_close(mean[k], ref.float(), rtol=0, atol=1e-7)


def test_checks_apply_after_decoding(trainable):
    expected = specs_of(trainable)
    report, tensors = read_train_reply(
        train_reply(trainable, 4, client_id="1", node_id=1, transport_dtype="bfloat16"), expected)
    assert report.ok and tensors is not None
    assert all(t.dtype == torch.float32 for t in tensors.values())
    bad = dict(trainable)
    name = sorted(bad)[0]
    bad[name] = torch.full_like(bad[name], float("nan"))
    report, tensors = read_train_reply(
        train_reply(bad, 4, client_id="2", node_id=2, transport_dtype="bfloat16"), expected)
    assert not report.ok and tensors is None
    assert "non-finite" in report.reason and name in report.reason


def test_only_trainable_tensors_travel_but_checkpoint_holds_whole_policy(bundle, tmp_path):
    from safetensors import safe_open

    from zk0cli.core.policy import get_trainable_state, save_bundle, trainable_parameter_names

    policy = bundle.policy
    names = trainable_parameter_names(policy)
    record = to_array_record(get_trainable_state(policy), transport_dtype="bfloat16")
    assert list(record.keys()) == names
    all_keys = set(policy.state_dict())
    assert set(names) < all_keys and len(names) < len(all_keys)
    save_bundle(bundle, tmp_path / "ckpt")
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), framework="pt") as f:
        saved = set(f.keys())
    assert saved == all_keys
