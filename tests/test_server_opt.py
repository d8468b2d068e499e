"""Server optimizers (FedAvgM/FedAdam/FedYogi/FedAdagrad) on real tiny-SmolVLA tensors."""

from __future__ import annotations

import math

import pytest
import torch

from zk0cli import constants as C
from zk0cli.core.contract import SERVER_OPTIMIZER_FILE
from zk0cli.core.server_opt import ServerOptimizer, load_state, save_state

KINDS = (C.STRATEGY_FEDAVGM, C.STRATEGY_FEDADAM, C.STRATEGY_FEDYOGI, C.STRATEGY_FEDADAGRAD)
LR, MOM, B1, B2, TAU = 0.5, 0.7, 0.9, 0.99, 1e-3


@pytest.fixture(scope="module")
def states(make_bundle):
    """Global model (seed 0) and two rounds' weighted means of real replies (seeds 1..4)."""
    from zk0cli.core.policy import get_trainable_state
    from zk0cli.core.transport import WeightedMean

    s = [get_trainable_state(make_bundle(seed=i).policy) for i in range(5)]
    means = []
    for a, b in ((s[1], s[2]), (s[3], s[4])):
        acc = WeightedMean()
        acc.add(a, 3.0)
        acc.add(b, 1.0)
        means.append({k: t.float() for k, t in acc.result().items()})
    return s[0], means


def _by_hand(kind, x, means):
    """The update rules of Reddi et al. 2021 / FedAvgM, elementwise in float64."""
    x = x.double()
    m = v = None
    for t, mean in enumerate(means, start=1):
        d = mean.double() - x
        if kind == C.STRATEGY_FEDAVGM:
            m = d if m is None else MOM * m + d
            x = x + LR * m
            continue
        m = (1 - B1) * d if m is None else B1 * m + (1 - B1) * d
        v0 = torch.zeros_like(d) if v is None else v
        if kind == C.STRATEGY_FEDADAGRAD:
            v = v0 + d * d
        elif kind == C.STRATEGY_FEDADAM:
            v = B2 * v0 + (1 - B2) * d * d
        else:
            v = v0 - (1 - B2) * d * d * torch.sign(v0 - d * d)
        eta = LR * math.sqrt(1 - B2**t) / (1 - B1**t) if kind == C.STRATEGY_FEDADAM else LR
        x = x + eta * m / (v.sqrt() + TAU)
    return x


@pytest.mark.parametrize("kind", KINDS)
def test_two_rounds_match_hand_computation(kind, states):
    glob, means = states
    opt = ServerOptimizer(kind, lr=LR, momentum=MOM, beta_1=B1, beta_2=B2, tau=TAU)
    x = dict(glob)
    for mean in means:
        x = opt.step(x, mean)
    assert opt.t == 2
    differ = moved = 0
    for name in glob:
        want = _by_hand(kind, glob[name], [m[name] for m in means])
        torch.testing.assert_close(x[name].double(), want, rtol=1e-5, atol=1e-6)
        if not torch.equal(means[0][name], glob[name].float()):
            differ += 1
            moved += int(not torch.equal(x[name], glob[name].float()))
    assert differ > 30 and moved == differ  # every tensor the replies changed moved


@pytest.mark.parametrize("kind", KINDS)
def test_state_round_trip_resumes_bitwise(kind, states, tmp_path):
    glob, means = states
    a = ServerOptimizer(kind, lr=LR, momentum=MOM)
    x = a.step(glob, means[0])
    save_state(a, tmp_path)
    assert (tmp_path / SERVER_OPTIMIZER_FILE).is_file()
    b = ServerOptimizer(kind, lr=LR, momentum=MOM)
    load_state(b, tmp_path)
    xa, xb = a.step(x, means[1]), b.step(x, means[1])
    assert all(torch.equal(xa[k], xb[k]) for k in xa)


def test_strategy_applies_the_server_step(states):
    from zk0cli.core.strategy import Zk0FedProx
    from zk0cli.core.transport import specs_of, to_array_record

    glob, means = states
    opt = ServerOptimizer(C.STRATEGY_FEDAVGM, lr=2.0)
    s = Zk0FedProx(expected=specs_of(glob), proximal_mu=0.0, lr_for_round=lambda r: 1e-3,
                   steps=1, server_optimizer=opt)
    s._remember_global(to_array_record(glob, transport_dtype="float32"))
    out = s._server_update(means[0])
    name = next(iter(glob))
    torch.testing.assert_close(out[name], glob[name] + 2.0 * (means[0][name] - glob[name]))
    plain = Zk0FedProx(expected=specs_of(glob), proximal_mu=0.0, lr_for_round=lambda r: 1e-3,
                       steps=1)
    assert plain._server_update(means[0]) is means[0]


def test_parameters_are_validated():
    from pydantic import ValidationError

    from zk0cli.core.config import FederationConfig

    for bad in ({"server_lr": 0}, {"server_momentum": 1.0}, {"server_beta_1": -0.1},
                {"server_beta_2": 1.0}, {"server_tau": 0}, {"strategy": "fedsgd"}):
        with pytest.raises(ValidationError):
            FederationConfig(**bad)
    with pytest.raises(ValueError, match="tau > 0"):
        ServerOptimizer(C.STRATEGY_FEDADAM, lr=1.0, tau=0.0)


def test_strategy_choice_from_config(tmp_path):
    from zk0cli.core.config import FederationConfig
    from zk0cli.core.server_opt import client_mu, from_federation

    assert from_federation(FederationConfig(strategy="fedprox")) is None
    assert client_mu(FederationConfig(strategy="fedavg", proximal_mu=0.3)) == 0.0
    assert client_mu(FederationConfig(strategy="fedprox", proximal_mu=0.3)) == 0.3
    opt = from_federation(FederationConfig(strategy="fedyogi", server_lr=0.02,
                                           server_tau=1e-4))
    assert opt is not None and (opt.kind, opt.lr, opt.tau) == ("fedyogi", 0.02, 1e-4)
    with pytest.raises(FileNotFoundError, match="fedyogi server optimizer"):
        load_state(opt, tmp_path)  # a checkpoint written without optimizer state
    load_state(None, tmp_path)  # fedavg/fedprox: nothing to restore


def _run_with_checkpoint(tmp_path, strategy):
    from zk0cli.core.checkpoint import write_checkpoint
    from zk0cli.core.config import load_config
    from zk0cli.core.rundir import RunDir, write_json

    cfg = load_config(preset="tiny", overrides=[f"federation.strategy={strategy}"])
    rd = RunDir.create(tmp_path, name="run")
    rd.config_json.write_text(cfg.model_dump_json(indent=2), encoding="utf-8")
    rd.update_run(status="interrupted", rounds_completed=1)
    for r in range(2):
        write_json(rd.server_eval(r), {"round": r})

    def policy(directory):
        (directory / "config.json").write_text('{"type": "smolvla"}', encoding="utf-8")

    write_checkpoint(rd, 1, save_policy=policy, metrics={})
    return rd


def test_resume_refuses_a_changed_strategy_or_missing_state(tmp_path):
    from zk0cli.core.config import load_config
    from zk0cli.core.resume import prepare_resume
    from zk0cli.errors import UsageError

    rd = _run_with_checkpoint(tmp_path / "a", "fedprox")
    with pytest.raises(UsageError, match="federation.strategy was 'fedprox' and is now"):
        prepare_resume(rd, load_config(preset="tiny", overrides=["federation.strategy=fedadam"]))
    rd = _run_with_checkpoint(tmp_path / "b", "fedadam")
    with pytest.raises(UsageError, match="server_optimizer.safetensors"):
        prepare_resume(rd, load_config(preset="tiny", overrides=["federation.strategy=fedadam"]))
    assert rd.read_run()["status"] == "interrupted"  # nothing changed
