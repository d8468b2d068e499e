"""Per-round lr and mu schedules: exact values at given rounds."""

import math

import pytest

from zk0cli.core.config import load_config
from zk0cli.core.schedules import (
    adaptive_mu,
    constant_lr,
    cosine_lr,
    cosine_restarts_lr,
    lr_schedule,
    mu_schedule,
    step_mu,
)
from zk0cli.errors import ConfigError


def test_constant_and_cosine():
    assert [constant_lr(0.1)(r) for r in (1, 7, 100)] == [0.1, 0.1, 0.1]
    f = cosine_lr(1.0, lr_min=0.0, rounds=5)
    assert [f(r) for r in (1, 2, 3, 4, 5)] == pytest.approx(
        [1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5, 0.5 - 0.5 * math.cos(math.pi / 4), 0.0])
    assert f(9) == 0.0  # past the last round: stays at lr_min
    g = cosine_lr(1e-3, lr_min=1e-4, rounds=3)
    assert [g(1), g(2), g(3)] == pytest.approx([1e-3, 5.5e-4, 1e-4])
    assert cosine_lr(0.2, lr_min=0.0, rounds=1)(1) == 0.2


def test_cosine_restarts_values_and_torch():
    f = cosine_restarts_lr(1.0, lr_min=0.0, t0=2, t_mult=2)
    # cycles: rounds 1-2 (T=2), 3-6 (T=4), 7-14 (T=8)
    assert [f(r) for r in (1, 2, 3, 4, 5, 6, 7)] == pytest.approx(
        [1.0, 0.5, 1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5,
         0.5 - 0.5 * math.cos(math.pi / 4), 1.0])
    import torch

    for t0, mult, eta in ((3, 1, 0.01), (2, 2, 0.0), (1, 3, 0.05)):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
        sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            opt, T_0=t0, T_mult=mult, eta_min=eta)
        ours = cosine_restarts_lr(0.5, lr_min=eta, t0=t0, t_mult=mult)
        for r in range(1, 30):
            assert ours(r) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
            opt.step()
            sched.step()


def test_step_mu():
    f = step_mu(0.1, at_rounds=[3, 6], factor=0.5)
    assert [f(r) for r in (1, 2, 3, 5, 6, 10)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_adaptive_mu():
    f = adaptive_mu(0.1, threshold=0.05, factor=2.0, mu_min=0.01, mu_max=0.3)
    history = {1: [0.1, 0.3],    # std 0.1 > 0.05 -> 0.2
               2: [0.1, 0.3],    # -> 0.4, capped at 0.3
               3: [0.2, 0.21],   # std 0.005 -> 0.15
               4: [0.5],         # one client: unchanged
               5: [0.2, 0.2]}    # -> 0.075
    assert [f(r, history) for r in range(1, 7)] == pytest.approx(
        [0.1, 0.2, 0.3, 0.15, 0.15, 0.075])
    assert f(50, {r: [0.0, 0.0] for r in range(1, 50)}) == 0.01  # floor


def _cfg(*sets):
    return load_config(preset="tiny", overrides=["training.lr=0.001", *sets])


def test_from_config():
    cfg = _cfg("schedule.lr=\"cosine\"", "schedule.lr_min=0.0001", "federation.rounds=3")
    assert [lr_schedule(cfg)(r) for r in (1, 2, 3)] == pytest.approx([1e-3, 5.5e-4, 1e-4])
    assert lr_schedule(_cfg())(5) == 0.001
    cfg = _cfg("schedule.lr=\"cosine_restarts\"", "schedule.lr_t0=2")
    assert lr_schedule(cfg)(3) == 0.001
    cfg = _cfg("federation.proximal_mu=0.2", "schedule.mu=\"step\"",
               "schedule.mu_step_rounds=[2]", "schedule.mu_step_factor=0.1")
    assert [mu_schedule(cfg)(r, {}) for r in (1, 2)] == pytest.approx([0.2, 0.02])
    cfg = _cfg("federation.proximal_mu=0.2", "schedule.mu=\"adaptive\"")
    assert mu_schedule(cfg)(2, {1: [0.0, 1.0]}) == pytest.approx(0.4)


@pytest.mark.parametrize("sets, field", [
    (["schedule.lr=\"cosine\"", "schedule.lr_min=0.01"], "lr_min"),
    (["schedule.mu=\"adaptive\"", "federation.proximal_mu=0.0"], "adaptive"),
    (["schedule.mu_step_rounds=[0]"], "mu_step_rounds"),
    (["schedule.lr=\"linear\""], "schedule.lr"),
])
def test_bad_schedule_config(sets, field):
    with pytest.raises(ConfigError) as err:
        _cfg(*sets)
    assert field in str(err.value)
