"""Central differential privacy: clipped client updates, seeded Gaussian noise, an accountant.

With ``privacy.mode = "central"`` (DP-FedAvg, McMahan et al. 2018, "Learning
Differentially Private Recurrent Language Models", ICLR 2018, Algorithm 1 with a fixed
denominator; the same estimator as Flower 1.42's ``DifferentialPrivacyServerSideFixedClipping``
/ ``compute_stdv``):

1. each client clips its update ``Δ_k = w_local − w_global`` to L2 norm ``C``
   (``privacy.clipping_norm``), over all trainable tensors together, *before* it is
   encoded (:func:`clip_update`); zk0's bf16 transport carries int16 bit patterns, so
   Flower's DP mods, which clip the arrays as they travel, cannot be used;
2. the server decodes each reply and clips ``Δ_k`` again against the global model it sent
   (the bfloat16 rounding of the wire may move a clipped update by a few ulps, and a site
   running other code may not clip at all), so every summand has norm <= ``C``;
3. the server averages the ``n`` clipped updates with equal weights (``num-examples`` is not
   used: weights would change the sensitivity) and adds Gaussian noise
   ``N(0, σ²)`` per coordinate with ``σ = z·C / n`` (``z = privacy.noise_multiplier``),
   drawn from a seeded generator whose state is saved with every checkpoint
   (:class:`NoiseSource`);
4. the server optimizer (FedAvgM/FedAdam/...) may then step on the noised mean: that is
   post-processing and costs no privacy.

Each released round is one sampled Gaussian mechanism of noise multiplier ``z`` (the sum's
sensitivity is ``C``, its noise std ``z·C``). The run's ε at ``privacy.delta`` is computed by
Flower's :class:`flwr.serverapp.RdpAccountant` (which wraps Google's ``dp-accounting`` RDP
accountant) with Poisson sampling at rate ``q = sampled clients / clients`` and the
add-or-remove-one-client relation (:class:`RunAccountant`). Flower's accountant is used on
its own: its DP strategy wrappers accept only unweighted FedAvg with exactly the configured
number of replies, while zk0 streams, validates and drops replies.

Limits of the analysis (docs/privacy.md): Flower samples a fixed number of clients without
replacement, not Poisson; with every client sampled every round (``q = 1``) the two agree and
no amplification is claimed. The client metrics (losses, norms) travel without noise.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zk0cli.core import contract as C

#: ``1 - 2**-20``: a clipped update is scaled a hair below ``C`` so that float32 rounding of
#: the scaled tensors never leaves its norm above ``C``.
_CLIP_MARGIN = 1.0 - 2.0 ** -20


def update_norm(tensors: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]
                ) -> float:
    """L2 norm of ``tensors − reference`` over every tensor together (float64 sum).

    Args:
        tensors: Name -> tensor (any float dtype, any shape).
        reference: Same names and shapes.

    Returns:
        ``sqrt(Σ_name Σ (t − r)²)``, in the tensors' units.

    Raises:
        KeyError: ``reference`` lacks a name of ``tensors``.
    """
    total = 0.0
    for name, t in tensors.items():
        d = t.detach().to("cpu", torch.float64) - reference[name].detach().to("cpu", torch.float64)
        total += float(d.pow(2).sum())
    return math.sqrt(total)


def clip_delta(delta: Mapping[str, torch.Tensor], clipping_norm: float
               ) -> tuple[dict[str, torch.Tensor], float]:
    """Scale an update so that its L2 norm over all tensors is at most ``clipping_norm``.

    ``Δ ← Δ · min(1, C / ‖Δ‖)`` (McMahan et al. 2018, flat clipping), with a relative margin
    of 2⁻²⁰ when scaling so that rounding never leaves the norm above ``C``.

    Args:
        delta: Name -> float32 update tensor.
        clipping_norm: ``C`` > 0.

    Returns:
        The clipped update (float32 CPU tensors, new objects) and ``‖Δ‖`` before clipping.

    Raises:
        ValueError: ``clipping_norm`` is not positive, or the update is not finite.
    """
    if not clipping_norm > 0:
        raise ValueError(f"clipping_norm must be > 0, got {clipping_norm}")
    cast = {k: v.detach().to("cpu", torch.float32) for k, v in delta.items()}
    norm = math.sqrt(sum(float(v.to(torch.float64).pow(2).sum()) for v in cast.values()))
    if not math.isfinite(norm):
        raise ValueError("the update is not finite; it cannot be clipped")
    if norm <= clipping_norm:
        return {k: v.clone() for k, v in cast.items()}, norm
    scale = clipping_norm / norm * _CLIP_MARGIN
    return {k: v * scale for k, v in cast.items()}, norm


def clip_update(local: Mapping[str, torch.Tensor], global_: Mapping[str, torch.Tensor],
                clipping_norm: float) -> tuple[dict[str, torch.Tensor], float]:
    """The client's clipped model: ``w_global + clip(w_local − w_global, C)``.

    Args:
        local: Trained tensors (name -> float32 tensor).
        global_: The round's global tensors the client started from (same names, shapes).
        clipping_norm: ``C`` > 0 (``privacy.clipping_norm``).

    Returns:
        The tensors to send (float32, CPU) and the update's norm before clipping.

    Raises:
        ValueError: As :func:`clip_delta`.
    """
    g = {k: global_[k].detach().to("cpu", torch.float32) for k in local}
    delta = {k: local[k].detach().to("cpu", torch.float32) - g[k] for k in local}
    clipped, norm = clip_delta(delta, clipping_norm)
    if norm <= clipping_norm:  # not scaled: send the trained tensors as they are
        return {k: local[k].detach().to("cpu", torch.float32).clone() for k in local}, norm
    return {k: g[k] + clipped[k] for k in local}, norm


def noise_std(noise_multiplier: float, clipping_norm: float, num_clients: int) -> float:
    """Std of the Gaussian noise added to the equal-weight mean: ``z · C / n``.

    Source: McMahan et al. 2018 (DP-FedAvg, fixed denominator); Flower 1.42's
    ``flwr.common.differential_privacy.compute_stdv``.

    Raises:
        ValueError: ``num_clients`` < 1.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    return float(noise_multiplier) * float(clipping_norm) / int(num_clients)


class NoiseSource:
    """A seeded CPU ``torch.Generator`` drawing the server's Gaussian noise, resumable.

    The noise of a round is drawn name by name in sorted order as float32
    ``randn(shape) · σ``, so the stream depends only on the seed and the rounds drawn before.

    Args:
        seed: The run's seed (``seed``); the generator uses a value derived from it.
    """

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed((int(seed) * 1_000_003 + 0xD1FF) % 2**63)

    def draw(self, like: Mapping[str, torch.Tensor], std: float) -> dict[str, torch.Tensor]:
        """Noise tensors of std ``std`` (float32, CPU) with the names and shapes of ``like``."""
        out: dict[str, torch.Tensor] = {}
        for name in sorted(like):
            shape = tuple(like[name].shape)
            out[name] = torch.randn(shape, generator=self.generator, dtype=torch.float32) * std
        return out

    def state(self) -> str:
        """The generator's state, base64 text (for the checkpoint's JSON)."""
        return base64.b64encode(bytes(self.generator.get_state().tolist())).decode("ascii")

    def load(self, state: str) -> None:
        """Restore :meth:`state`'s output exactly."""
        raw = base64.b64decode(state.encode("ascii"))
        self.generator.set_state(torch.tensor(list(raw), dtype=torch.uint8))


def planned_sample_size(num_clients: int, fraction_train: float, min_clients: int) -> int:
    """Clients Flower samples per round: ``max(int(N · fraction), min_clients)``, at most N."""
    return min(num_clients, max(int(num_clients * fraction_train), min_clients))


class RunAccountant:
    """The run's privacy ledger over Flower's :class:`~flwr.serverapp.RdpAccountant`.

    Every released round composes one ``GaussianPrivacyEvent(z, sample_size, N)``; Flower
    turns it into dp-accounting's ``PoissonSampledDpEvent(sample_size / N,
    GaussianDpEvent(z))`` under the add-or-remove-one relation. With ``z = 0`` a release
    has no privacy: ε is infinite from the first one (Flower refuses ``z = 0`` events).

    Args:
        delta: ``privacy.delta`` in (0, 1).
        population: ``N``, the run's clients (``federation.num_clients``).
        noise_multiplier: ``z`` >= 0.
    """

    def __init__(self, *, delta: float, population: int, noise_multiplier: float) -> None:
        from flwr.serverapp import (
            NeighboringRelation,
            PrivacyConfig,
            RdpAccountant,
            SamplingMethod,
        )

        self.delta, self.population = float(delta), int(population)
        self.noise_multiplier = float(noise_multiplier)
        self._config = PrivacyConfig(target_delta=self.delta, population_size=self.population,
                                     neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                     sampling_method=SamplingMethod.POISSON)
        self._new = lambda: RdpAccountant(self._config)
        self.accountant = self._new()
        self.releases = 0  # rounds charged (also those with z = 0)
        self._ledger: list[tuple[int, int]] = []  # (sample size, rounds) runs, for projections

    def _remember(self, sample_size: int, count: int) -> None:
        if self._ledger and self._ledger[-1][0] == sample_size:
            self._ledger[-1] = (sample_size, self._ledger[-1][1] + count)
        else:
            self._ledger.append((sample_size, count))

    def _event(self, sample_size: int) -> Any:
        from flwr.serverapp import GaussianPrivacyEvent

        size = max(1, min(int(sample_size), self.population))
        return GaussianPrivacyEvent(noise_multiplier=self.noise_multiplier,
                                    sample_size=size, population_size=self.population)

    @property
    def epsilon(self) -> float:
        """ε at ``delta`` after the rounds charged (0 before the first, ``inf`` with z = 0)."""
        if self.releases == 0:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        return self.accountant.get_epsilon(self.delta)

    def projected(self, sample_size: int) -> float:
        """ε after one more round of ``sample_size`` clients (nothing is charged)."""
        if self.noise_multiplier == 0:
            return math.inf
        trial = self._new()  # the ledger's runs of equal rounds, one composition each
        for size, count in [*self._ledger, (int(sample_size), 1)]:
            trial.compose(self._event(size), count)
        return float(trial.get_epsilon(self.delta))

    def charge(self, sample_size: int) -> float:
        """Compose one released round of ``sample_size`` sampled clients; return the new ε."""
        if self.noise_multiplier > 0:
            self.accountant.compose(self._event(sample_size))
            self._remember(int(sample_size), 1)
        self.releases += 1
        return self.epsilon

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: Flower's accountant ledger plus the release count."""
        return {"releases": self.releases, "flower": self.accountant.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output.

        Raises:
            ValueError: The state was written with another delta or number of clients.
        """
        self.accountant = self._new()
        flower = dict(state["flower"])
        self.accountant.load_state_dict(flower)
        self.releases = int(state["releases"])
        self._ledger = []
        for item in flower.get("compositions", []):  # type: ignore[union-attr]
            self._remember(int(item["event"]["sample_size"]), int(item["count"]))


@dataclass
class RoundRelease:
    """What the server's DP step did in one round (``privacy`` of the round file).

    Attributes:
        clients: ``n``, clipped updates averaged.
        sample_size: Clients sampled (the accountant's event).
        noise_std: ``σ = z·C/n`` added per coordinate to the mean.
        clipped: How many of the ``n`` updates the server had to scale down.
        epsilon: ε at ``delta`` after this round.
    """

    clients: int
    sample_size: int
    noise_std: float
    clipped: int
    epsilon: float


class ServerPrivacy:
    """The server's DP state of one run: clipping, noise source and accountant.

    Args:
        settings: ``privacy`` of the run (:class:`~zk0cli.core.config.PrivacyConfig`).
        seed: The run's seed (the noise generator's).
        population: ``N``, the run's clients.
        planned_sample: Clients sampled per round (:func:`planned_sample_size`).
    """

    def __init__(self, settings: Any, *, seed: int, population: int, planned_sample: int
                 ) -> None:
        self.settings = settings
        self.clipping_norm = float(settings.clipping_norm)
        self.noise_multiplier = float(settings.noise_multiplier)
        self.planned_sample = int(planned_sample)
        self.noise = NoiseSource(seed)
        self.accountant = RunAccountant(delta=settings.delta, population=population,
                                        noise_multiplier=self.noise_multiplier)

    def clip(self, tensors: Mapping[str, torch.Tensor], global_: Mapping[str, torch.Tensor]
             ) -> tuple[dict[str, torch.Tensor], bool]:
        """A reply's update ``w − w_global`` clipped to ``C``; whether it had to be scaled."""
        delta = {k: tensors[k].detach().to("cpu", torch.float32)
                 - global_[k].detach().to("cpu", torch.float32) for k in tensors}
        clipped, norm = clip_delta(delta, self.clipping_norm)
        return clipped, norm > self.clipping_norm

    def release(self, global_: Mapping[str, torch.Tensor], mean_delta: Mapping[str, torch.Tensor],
                *, clients: int) -> tuple[dict[str, torch.Tensor], float]:
        """``w_global + mean(clipped Δ) + N(0, σ²)``, σ = z·C/n; the model and σ.

        Nothing is charged here (:meth:`charge` once the model is accepted).
        """
        std = noise_std(self.noise_multiplier, self.clipping_norm, clients)
        noise = self.noise.draw(mean_delta, std)
        out = {k: global_[k].detach().to("cpu", torch.float32)
               + mean_delta[k].detach().to("cpu", torch.float32) + noise[k] for k in mean_delta}
        return out, std

    def charge(self, sample_size: int) -> float:
        """Charge one released round to the accountant; ε after it."""
        return self.accountant.charge(sample_size)

    def budget_stop(self, run_round: int) -> str | None:
        """Why the run stops after ``run_round`` (``privacy.max_epsilon``), or ``None``.

        The next round is charged at the planned sample size; when its ε would exceed the
        budget, the run ends before it (``run_round = 0``: before round 1).
        """
        limit = self.settings.max_epsilon
        if limit is None:
            return None
        nxt = self.accountant.projected(self.planned_sample)
        if nxt <= limit:
            return None
        return (f"privacy budget: epsilon after round {run_round + 1} would be {nxt:.4g} > "
                f"privacy.max_epsilon = {limit:g} (delta = {self.accountant.delta:g}); "
                f"stopped after round {run_round} at epsilon {self.accountant.epsilon:.4g}")

    def summary(self) -> dict[str, Any]:
        """run.json's ``privacy``: settings, releases and ε so far."""
        return {"mode": self.settings.mode, "clipping_norm": self.clipping_norm,
                "noise_multiplier": self.noise_multiplier, "delta": self.accountant.delta,
                "max_epsilon": self.settings.max_epsilon,
                "population": self.accountant.population,
                "sample_size": self.planned_sample, "rounds_charged": self.accountant.releases,
                "epsilon": self.accountant.epsilon,
                "accountant": "flwr.serverapp.RdpAccountant (dp-accounting RDP, Poisson "
                              "sampling, add-or-remove-one client)"}

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's privacy state: the accountant's ledger and the noise generator."""
        return {"accountant": self.accountant.state_dict(), "noise_generator": self.noise.state(),
                "epsilon": self.accountant.epsilon}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (same ε and the same noise stream after it)."""
        self.accountant.load_state_dict(state["accountant"])
        self.noise.load(str(state["noise_generator"]))


def save_state(privacy: ServerPrivacy | None, directory: Path) -> None:
    """Write the privacy state to ``directory / PRIVACY_STATE_FILE`` (no-op if None)."""
    if privacy is not None:
        text = json.dumps(privacy.state_dict(), indent=1, allow_nan=True)
        (directory / C.PRIVACY_STATE_FILE).write_text(text, encoding="utf-8")


def load_state(privacy: ServerPrivacy | None, directory: Path) -> None:
    """Restore the privacy state saved by :func:`save_state` in a checkpoint folder.

    Raises:
        FileNotFoundError: The checkpoint has no privacy state (written without DP).
    """
    if privacy is None:
        return
    path = directory / C.PRIVACY_STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the checkpoint holds no accountant or noise state, so the "
            "run cannot resume with the same privacy budget; resume with the privacy "
            "settings it was started with")
    privacy.load_state_dict(json.loads(path.read_text(encoding="utf-8")))


def from_run_config(cfg: Any) -> ServerPrivacy | None:
    """The server's DP state for ``cfg`` (``None`` unless ``privacy.mode = "central"``)."""
    if cfg.privacy.mode != "central":
        return None
    fed = cfg.federation
    n = cfg.num_clients
    return ServerPrivacy(cfg.privacy, seed=cfg.seed, population=n,
                         planned_sample=planned_sample_size(n, fed.fraction_train,
                                                            fed.min_clients))


def site_limit_problems(limits: Any, privacy: Any, *, epsilon: float | None = None) -> list[str]:
    """How the run's privacy settings break a site's limits (empty list: none broken).

    Args:
        limits: The site's :class:`~zk0cli.core.config.SitePrivacyLimits`.
        privacy: The run's privacy settings as sent (``mode``, ``clipping_norm``,
            ``noise_multiplier``, ``delta``), or ``None`` when the run sent none.
        epsilon: ε after this round if it is released (``None``: not known yet, e.g. at
            the join check).

    Returns:
        One line per broken limit, naming the limit, its value and the run's value.
    """
    if limits is None or not limits.any:
        return []
    mode = getattr(privacy, "mode", "off") if privacy is not None else "off"
    if mode != "central":
        return [f"site privacy limits are set (privacy.max_clipping_norm = "
                f"{limits.max_clipping_norm}, privacy.min_noise_multiplier = "
                f"{limits.min_noise_multiplier}, privacy.max_epsilon = {limits.max_epsilon}) "
                f"and the run has no differential privacy (privacy.mode = {mode!r})"]
    out: list[str] = []
    if limits.max_clipping_norm is not None and privacy.clipping_norm > limits.max_clipping_norm:
        out.append(f"site limit privacy.max_clipping_norm = {limits.max_clipping_norm:g}: "
                   f"the run's privacy.clipping_norm is {privacy.clipping_norm:g}")
    if limits.min_noise_multiplier is not None \
            and privacy.noise_multiplier < limits.min_noise_multiplier:
        out.append(f"site limit privacy.min_noise_multiplier = {limits.min_noise_multiplier:g}: "
                   f"the run's privacy.noise_multiplier is {privacy.noise_multiplier:g}")
    if limits.max_epsilon is not None and epsilon is not None and epsilon > limits.max_epsilon:
        out.append(f"site limit privacy.max_epsilon = {limits.max_epsilon:g}: epsilon after "
                   f"this round would be {epsilon:.4g} (delta = {privacy.delta:g})")
    return out
