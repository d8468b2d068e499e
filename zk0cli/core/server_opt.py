"""Server optimizers: FedAvgM, FedAdam, FedYogi, FedAdagrad on the round's mean.

The strategy computes the clients' weighted mean ``x̄`` of one round; a server optimizer
turns it into the next global model from the previous global ``x``. With the
pseudo-gradient ``Δ = x̄ - x`` (the negative of Flower's FedAvgM ``pseudo_gradient``):

- FedAvgM (Hsu et al., 2019): ``v ← μ·v + Δ`` (``v = Δ`` at the first step),
  ``x ← x + η·v``; ``η = 1, μ = 0`` is FedAvg.
- FedAdagrad / FedAdam / FedYogi (Reddi et al., "Adaptive Federated Optimization",
  ICLR 2021, Algorithm 2): ``m ← β1·m + (1-β1)·Δ`` and

  - Adagrad: ``v ← v + Δ²``
  - Adam: ``v ← β2·v + (1-β2)·Δ²``
  - Yogi: ``v ← v - (1-β2)·Δ²·sign(v - Δ²)``

  then ``x ← x + η_t·m / (√v + τ)``, with ``m = v = 0`` at the start and, for Adam only,
  the bias-corrected rate ``η_t = η·√(1-β2^t) / (1-β1^t)`` (Kingma & Ba, 2014).

These are the update rules of Flower 1.42's ``flwr.serverapp.strategy`` FedAvgM /
FedAdam / FedYogi / FedAdagrad, written in torch on float32 tensors. One difference:
FedAdam's bias correction counts the optimizer's own steps ``t`` (1, 2, ...) where
Flower uses ``server_round + 1``; counting steps keeps a resumed run identical.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from zk0cli import constants as K
from zk0cli.core import contract as C

if TYPE_CHECKING:
    from zk0cli.core.config import FederationConfig

#: Strategies that run a server optimizer after the mean (fedavg/fedprox do not).
SERVER_OPTIMIZERS: tuple[str, ...] = (
    K.STRATEGY_FEDAVGM, K.STRATEGY_FEDADAM, K.STRATEGY_FEDYOGI, K.STRATEGY_FEDADAGRAD,
)


class ServerOptimizer:
    """One server optimizer's state and step (pure torch, CPU float32).

    Args:
        kind: One of :data:`SERVER_OPTIMIZERS`.
        lr: Server learning rate ``η`` (> 0).
        momentum: FedAvgM's ``μ`` in [0, 1).
        beta_1: First-moment decay ``β1`` in [0, 1) (Adam/Yogi/Adagrad).
        beta_2: Second-moment decay ``β2`` in [0, 1) (Adam/Yogi).
        tau: Adaptivity ``τ`` (> 0), added to ``√v``.

    Raises:
        ValueError: ``kind`` is unknown or a parameter is out of range.
    """

    def __init__(self, kind: str, *, lr: float, momentum: float = 0.0, beta_1: float = 0.9,
                 beta_2: float = 0.99, tau: float = 1e-3) -> None:
        if kind not in SERVER_OPTIMIZERS:
            raise ValueError(f"server optimizer {kind!r}: must be one of {SERVER_OPTIMIZERS}")
        if not lr > 0 or not 0 <= momentum < 1 or not 0 <= beta_1 < 1 \
                or not 0 <= beta_2 < 1 or not tau > 0:
            raise ValueError(f"server optimizer {kind!r}: lr > 0, momentum/beta_1/beta_2 in "
                             f"[0, 1), tau > 0 (got lr={lr}, momentum={momentum}, "
                             f"beta_1={beta_1}, beta_2={beta_2}, tau={tau})")
        self.kind, self.lr, self.momentum = kind, lr, momentum
        self.beta_1, self.beta_2, self.tau = beta_1, beta_2, tau
        self.t = 0
        self.m: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}

    def step(self, global_tensors: Mapping[str, torch.Tensor],
             mean_tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Return the next global model from the previous one and the round's mean.

        Args:
            global_tensors: Previous global model ``x`` (name -> tensor).
            mean_tensors: The clients' weighted mean ``x̄``, same names and shapes.

        Returns:
            New global tensors (float32, CPU), same names and shapes; ``x`` and ``x̄`` are
            not modified.

        Raises:
            ValueError: Names or shapes of the two mappings differ.
        """
        if set(global_tensors) != set(mean_tensors):
            raise ValueError("server optimizer: the mean's tensor names differ from the "
                             "global model's")
        self.t += 1
        out: dict[str, torch.Tensor] = {}
        for name, x_ in global_tensors.items():
            x = x_.detach().to("cpu", torch.float32)
            mean = mean_tensors[name].detach().to("cpu", torch.float32)
            if mean.shape != x.shape:
                raise ValueError(f"server optimizer: {name} has shape {tuple(mean.shape)}, "
                                 f"the global model {tuple(x.shape)}")
            delta = mean - x
            if self.kind == K.STRATEGY_FEDAVGM:
                prev = self.m.get(name)
                vel = delta.clone() if prev is None else self.momentum * prev + delta
                if self.momentum > 0:
                    self.m[name] = vel
                out[name] = x + self.lr * vel
                continue
            m = self.beta_1 * self.m.get(name, torch.zeros_like(x)) + (1 - self.beta_1) * delta
            v = self.v.get(name, torch.zeros_like(x))
            sq = delta * delta
            if self.kind == K.STRATEGY_FEDADAGRAD:
                v = v + sq
            elif self.kind == K.STRATEGY_FEDADAM:
                v = self.beta_2 * v + (1 - self.beta_2) * sq
            else:  # fedyogi
                v = v - (1 - self.beta_2) * sq * torch.sign(v - sq)
            self.m[name], self.v[name] = m, v
            eta = self.lr
            if self.kind == K.STRATEGY_FEDADAM:
                eta = self.lr * (1 - self.beta_2 ** self.t) ** 0.5 / (1 - self.beta_1 ** self.t)
            out[name] = x + eta * m / (v.sqrt() + self.tau)
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The state as flat tensors (for safetensors): ``m/<name>``, ``v/<name>``, ``t``."""
        state = {f"m/{k}": t.contiguous() for k, t in self.m.items()}
        state.update({f"v/{k}": t.contiguous() for k, t in self.v.items()})
        state["t"] = torch.tensor([self.t], dtype=torch.int64)
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`'s output exactly.

        Raises:
            ValueError: The step count ``t`` is missing.
        """
        if "t" not in state:
            raise ValueError("server optimizer state has no step count 't'")
        self.t = int(state["t"].item())
        self.m = {k[2:]: t.clone() for k, t in state.items() if k.startswith("m/")}
        self.v = {k[2:]: t.clone() for k, t in state.items() if k.startswith("v/")}


def from_federation(fed: FederationConfig) -> ServerOptimizer | None:
    """The server optimizer of ``federation.strategy`` (``None`` for fedavg/fedprox)."""
    if fed.strategy not in SERVER_OPTIMIZERS:
        return None
    return ServerOptimizer(fed.strategy, lr=fed.server_lr, momentum=fed.server_momentum,
                           beta_1=fed.server_beta_1, beta_2=fed.server_beta_2,
                           tau=fed.server_tau)


def client_mu(fed: FederationConfig) -> float:
    """The proximal mu sent to clients: 0 for ``fedavg``, else ``proximal_mu``."""
    return 0.0 if fed.strategy == K.STRATEGY_FEDAVG else fed.proximal_mu


def save_state(optimizer: ServerOptimizer | None, directory: Path) -> None:
    """Write the optimizer's state to ``directory / SERVER_OPTIMIZER_FILE`` (no-op if None)."""
    if optimizer is not None:
        from safetensors.torch import save_file

        save_file(optimizer.state_dict(), str(directory / C.SERVER_OPTIMIZER_FILE))


def load_state(optimizer: ServerOptimizer | None, directory: Path) -> None:
    """Restore the optimizer's state saved by :func:`save_state` in a checkpoint folder.

    Raises:
        FileNotFoundError: The checkpoint has no server optimizer state (it was written
            by a run with another ``federation.strategy``).
    """
    if optimizer is None:
        return
    path = directory / C.SERVER_OPTIMIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the checkpoint holds no state of the {optimizer.kind} server "
            "optimizer, so the run cannot resume identically; resume with the strategy it "
            "was started with")
    from safetensors.torch import load_file

    optimizer.load_state_dict(load_file(str(path)))
