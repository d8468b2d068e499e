"""FedProx client training and deterministic evaluation on the real tiny SmolVLA."""

import math

import pytest
import torch

from zk0cli import constants as C
from zk0cli.core.config import TrainingConfig
from zk0cli.errors import TrainingDivergedError

CONST = TrainingConfig(scheduler="constant", lr=1e-3)


def _fixed_loss(bundle, raw, seed=0):
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loss, _ = bundle.policy.forward(bundle.preprocessor(dict(raw)))
    return float(loss)


def _flat(tensors):
    return torch.cat([tensors[k].reshape(-1) for k in sorted(tensors)])


def test_proximal_term_formula():
    from zk0cli.core.trainer import proximal_term

    w = {"a": torch.tensor([1.0, 2.0], requires_grad=True), "b": torch.tensor([[3.0]])}
    g = {"a": torch.tensor([0.0, 0.0]), "b": torch.tensor([[1.0]])}
    term = proximal_term(w, g, 0.5)
    assert float(term.detach()) == pytest.approx(0.25 * (1 + 4 + 4))
    term.backward()
    assert w["a"].grad.tolist() == [0.5, 1.0]  # mu·(w − w_g)
    assert float(proximal_term(g, g, 0.5)) == 0.0
    assert float(proximal_term(w, g, 0.0)) == 0.0


def test_lr_schedule_warmup_and_cosine():
    from zk0cli.core.trainer import _lr_at

    t = TrainingConfig(scheduler="cosine", warmup_steps=2, min_lr=1e-5)
    lrs = [_lr_at(s, steps=7, lr=1e-3, training=t) for s in range(7)]
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-5)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    assert _lr_at(3, steps=7, lr=1e-3, training=CONST) == 1e-3


def test_loss_falls_on_a_fixed_batch(make_bundle, fixed_batch):
    from zk0cli.core.trainer import train_round

    bundle = make_bundle(seed=0)
    before = _fixed_loss(bundle, fixed_batch)
    result = train_round(bundle, [fixed_batch], steps=30, lr=1e-3, mu=0.0, training=CONST,
                         dataset_name="so101", seed=0)
    after = _fixed_loss(bundle, fixed_batch)
    assert after < before
    m = result.metrics
    assert m[C.NUM_STEPS] == 30 and m[C.NUM_EXAMPLES] == 120
    assert m[C.FEDPROX_LOSS] == 0.0
    assert m[C.LOSS] == pytest.approx(m[C.POLICY_LOSS])
    assert m[C.DATASET_NAME] == "so101" and m[C.LR_KEY] == 1e-3
    assert m[C.GRAD_NORM] > 0 and m[C.SECONDS] > 0


def test_proximal_term_zero_at_start_then_mu_half_delta_squared(make_bundle, train_dataset):
    from zk0cli.core.data import make_loader
    from zk0cli.core.policy import get_trainable_state
    from zk0cli.core.trainer import proximal_term, train_round
    from zk0cli.core.transport import tensor_hash

    mu = 0.5
    bundle = make_bundle(seed=1)
    w_global = get_trainable_state(bundle.policy)
    assert float(proximal_term(get_trainable_state(bundle.policy), w_global, mu)) == 0.0
    loader = make_loader(train_dataset, batch_size=4, shuffle=True, seed=0)
    result = train_round(bundle, loader, steps=5, lr=1e-3, mu=mu, training=CONST,
                         dataset_name="so101", seed=0)
    delta = _flat(result.tensors) - _flat(w_global)
    direct = mu / 2 * float(delta.double().pow(2).sum())
    assert direct > 0
    assert float(proximal_term(result.tensors, w_global, mu)) == pytest.approx(direct, rel=1e-5)
    assert result.metrics[C.PARAM_UPDATE_NORM] == pytest.approx(
        math.sqrt(direct * 2 / mu), rel=1e-5)
    # the first step's proximal term is 0, later ones are not: the mean is in (0, final]
    assert 0 < result.metrics[C.FEDPROX_LOSS] < direct
    assert result.metrics[C.LOSS] == pytest.approx(
        result.metrics[C.POLICY_LOSS] + result.metrics[C.FEDPROX_LOSS], rel=1e-6)
    assert result.metrics[C.PARAM_HASH] == tensor_hash(result.tensors)
    live = get_trainable_state(bundle.policy)
    assert all(torch.equal(live[k], result.tensors[k]) for k in live)


def test_mu_keeps_weights_closer_to_global(make_bundle, fixed_batch):
    from zk0cli.core.policy import get_trainable_state
    from zk0cli.core.trainer import train_round

    dist = {}
    for mu in (0.0, 50.0):
        bundle = make_bundle(seed=2)
        w_global = _flat(get_trainable_state(bundle.policy))
        result = train_round(bundle, [fixed_batch], steps=10, lr=1e-3, mu=mu, training=CONST,
                             dataset_name="so101", seed=0)
        dist[mu] = float((_flat(result.tensors) - w_global).norm())
    assert dist[50.0] < dist[0.0]


def test_evaluation_is_deterministic(make_bundle, heldout_dataset):
    from zk0cli.core.trainer import evaluate

    bundle = make_bundle(seed=0)
    rng = torch.get_rng_state()
    a = evaluate(bundle, heldout_dataset, batches=2, batch_size=4, seed=7)
    b = evaluate(bundle, heldout_dataset, batches=2, batch_size=4, seed=7)
    c = evaluate(bundle, heldout_dataset, batches=2, batch_size=4, seed=8)
    assert a == b
    assert a != c
    assert math.isfinite(a) and a > 0
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is untouched
    assert bundle.policy.training  # mode restored


def test_evaluation_frames_are_spread_over_the_whole_dataset(make_bundle, heldout_dataset):
    from torch.utils.data import Subset

    from zk0cli.core.trainer import evaluate, evaluation_frames

    assert evaluation_frames(100, 4) == [12, 37, 62, 87]  # centres of 4 slices of 25
    assert evaluation_frames(3, 8) == [0, 1, 2]  # shorter than asked: every frame
    idx = evaluation_frames(248, 32)
    assert len(set(idx)) == 32 and idx == sorted(idx) and idx[0] < 8 and idx[-1] > 240
    # evaluate() reads exactly those frames (not the first batches of the dataset)
    bundle = make_bundle(seed=0)
    frames = evaluation_frames(len(heldout_dataset), 8)
    assert frames != list(range(8))
    picked = Subset(heldout_dataset, frames)
    spread = evaluate(bundle, heldout_dataset, batches=2, batch_size=4, seed=7)
    assert spread == evaluate(bundle, picked, batches=2, batch_size=4, seed=7)


def test_decoded_evaluation_frames_score_bitwise_as_the_dataset(make_bundle, heldout_dataset):
    """The server decodes its evaluation frames once: every later round scores them to the
    same bits as reading the dataset again, with the cameras kept as exact uint8."""
    from zk0cli.core.trainer import EvalFrames, evaluate

    bundle = make_bundle(seed=0)
    frames = EvalFrames.read(heldout_dataset, batches=2, batch_size=4)
    cams = {k for k in frames.raw[0] if k.startswith("observation.images.")}
    assert cams and frames.packed == cams
    assert all(frames.raw[0][k].dtype == torch.uint8 for k in cams)
    fresh = evaluate(bundle, heldout_dataset, batches=2, batch_size=4, seed=7)
    for _ in range(2):  # reused: processors never see (or change) the kept copies
        assert evaluate(bundle, None, batches=2, batch_size=4, seed=7, frames=frames) == fresh
    first = next(iter(heldout_dataset_loader(heldout_dataset)))
    unpacked = next(frames.batches())
    for k in cams:  # the float32 images LeRobot gave, exactly
        assert torch.equal(unpacked[k], first[k])


def heldout_dataset_loader(dataset):
    from torch.utils.data import DataLoader, Subset

    from zk0cli.core.trainer import evaluation_frames

    return DataLoader(Subset(dataset, evaluation_frames(len(dataset), 8)), batch_size=4)


def test_non_finite_weight_stops_at_step_zero(make_bundle, fixed_batch):
    from zk0cli.core.policy import trainable_parameter_names
    from zk0cli.core.trainer import train_round

    bundle = make_bundle(seed=0)
    name = trainable_parameter_names(bundle.policy)[-1]
    with torch.no_grad():
        dict(bundle.policy.named_parameters())[name].view(-1)[0] = float("inf")
    with pytest.raises(TrainingDivergedError) as err:
        train_round(bundle, [fixed_batch], steps=3, lr=1e-3, mu=0.0, training=CONST,
                    dataset_name="so101", seed=0)
    assert err.value.step == 0
    assert "local step 0" in str(err.value)


def test_huge_lr_stops_and_restores_weights(make_bundle, fixed_batch):
    from zk0cli.core.policy import get_trainable_state
    from zk0cli.core.trainer import train_round

    bundle = make_bundle(seed=0)
    start = get_trainable_state(bundle.policy)
    big = TrainingConfig(scheduler="constant", grad_clip_norm=1e30)
    with pytest.raises(TrainingDivergedError) as err:
        train_round(bundle, [fixed_batch], steps=20, lr=1e30, mu=0.0,
                    training=big, dataset_name="so101", seed=0)
    assert err.value.step >= 1
    now = get_trainable_state(bundle.policy)
    assert all(torch.equal(now[k], start[k]) for k in start)
