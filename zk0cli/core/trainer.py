"""One client's local training round (FedProx) and deterministic evaluation.

A round is ``K`` optimizer steps (steps, not epochs) of AdamW on the trainable tensors
(:func:`zk0cli.core.policy.trainable_parameter_names`), cycling the loader, with gradient
clipping and an LR schedule within the round. FedProx (Li et al., 2020, "Federated
Optimization in Heterogeneous Networks") adds the proximal term
``(mu/2)·Σ‖w − w_global‖²`` to the loss before backward, where ``w_global`` is the
policy's trainable state when the round starts (the weights the server sent). The first
non-finite loss or gradient norm stops the round with :class:`TrainingDivergedError`;
the policy's weights are then restored to ``w_global``.

Evaluation is the mean SmolVLA flow-matching loss over the first ``N`` batches in dataset
order, with the flow-matching noise and time drawn from a RNG seeded per batch, so the
same weights always give the same number.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zk0cli import constants as C
from zk0cli.errors import TrainingDivergedError
from zk0cli.log import logger

if TYPE_CHECKING:
    import torch
    from torch import Tensor
    from torch.utils.data import DataLoader

    from zk0cli.core.config import TrainingConfig
    from zk0cli.core.policy import PolicyBundle


@dataclass
class TrainResult:
    """What one local round produced.

    Attributes:
        tensors: Trainable tensors after training, ``{name: CPU float32 tensor}``.
        metrics: Keys from :mod:`zk0cli.constants`: ``loss``, ``policy_loss``,
            ``fedprox_loss`` (means over steps), ``grad_norm`` (before clipping, mean over
            steps), ``param_update_norm`` (‖w_end − w_start‖), ``param_hash``,
            ``num_steps``, ``num_examples`` (frames seen), ``lr`` (last), ``seconds``,
            ``dataset_name``.
    """

    tensors: dict[str, torch.Tensor]
    metrics: dict[str, float | int | str]


def proximal_term(
    params: Mapping[str, Tensor], global_params: Mapping[str, Tensor], mu: float
) -> Tensor:
    """FedProx proximal term ``(mu/2)·Σ_k ‖w_k − w_global,k‖²`` (Li et al., 2020).

    Args:
        params: Current tensors (may require grad), keyed by name.
        global_params: The round's starting tensors, same names/shapes, no grad.
        mu: Proximal coefficient (>= 0).

    Returns:
        A scalar tensor (0 when ``mu == 0``), differentiable w.r.t. ``params``.
    """
    import torch

    first = next(iter(params.values()))
    total = torch.zeros((), dtype=torch.float32, device=first.device)
    if mu == 0:
        return total
    for name, w in params.items():
        total = total + (w.float() - global_params[name].float()).pow(2).sum()
    return 0.5 * mu * total


def _lr_at(step: int, *, steps: int, lr: float, training: TrainingConfig) -> float:
    """Learning rate of ``step`` (0-based): linear warm-up, then constant or cosine."""
    warm = min(training.warmup_steps, steps)
    if step < warm:
        return lr * (step + 1) / (warm + 1)
    if training.scheduler == "constant":
        return lr
    floor = min(training.min_lr, lr)
    span = max(1, steps - warm - 1)
    progress = min(1.0, (step - warm) / span)
    from zk0cli.core.schedules import cosine_anneal

    return cosine_anneal(lr, floor, progress)


def _cycle(loader: DataLoader) -> Iterator[dict[str, Any]]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the training loader yielded no batches")


def _batch_size(batch: Mapping[str, Any]) -> int:
    return int(len(batch["action"]))


def autocast_for(bundle: PolicyBundle) -> Any:
    """The forward pass's autocast context (``model.dtype``).

    ``torch.autocast("cuda", dtype=torch.bfloat16)`` when ``bundle.autocast_dtype`` is
    ``"bfloat16"`` and the policy is on cuda, else a no-op context.
    Weights, gradients and the optimizer state stay float32; the loss is cast to float32.
    """
    import contextlib

    import torch

    if bundle.autocast_dtype == "bfloat16" and bundle.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_round(
    bundle: PolicyBundle,
    loader: DataLoader,
    *,
    steps: int,
    lr: float,
    mu: float,
    training: TrainingConfig,
    dataset_name: str,
    seed: int,
) -> TrainResult:
    """Run one round of local FedProx training in place on ``bundle.policy``.

    Args:
        bundle: Policy and processors; the policy's current trainable state is
            ``w_global`` (load the server's tensors before calling).
        loader: Raw dataset batches (cycled when shorter than ``steps``).
        steps: Optimizer steps ``K``.
        lr: Peak learning rate of this round.
        mu: FedProx coefficient; 0 gives plain local SGD (FedAvg).
        training: AdamW betas/eps/weight_decay, ``grad_clip_norm``, ``scheduler``,
            ``warmup_steps``, ``min_lr``.
        dataset_name: Reported in the metrics.
        seed: Seeds the flow-matching noise and time of the round.

    Returns:
        The trainable tensors after the round and the round's metrics.

    Raises:
        TrainingDivergedError: At the first non-finite loss or gradient norm (with the
            0-based step); the policy's weights are restored to ``w_global``.
    """
    import torch

    from zk0cli.core.policy import get_trainable_state, trainable_parameter_names
    from zk0cli.core.transport import tensor_hash

    t0 = time.perf_counter()
    policy = bundle.policy
    policy.train()
    named = dict(policy.named_parameters())
    names = trainable_parameter_names(policy)
    params = {n: named[n] for n in names}
    w_start = get_trainable_state(policy)
    w_global = {n: p.detach().clone() for n, p in params.items()}
    opt = torch.optim.AdamW(
        list(params.values()), lr=lr, betas=(training.betas[0], training.betas[1]),
        eps=training.eps, weight_decay=training.weight_decay,
    )
    sums = {C.LOSS: 0.0, C.POLICY_LOSS: 0.0, C.FEDPROX_LOSS: 0.0, C.GRAD_NORM: 0.0}
    examples = 0
    step_lr = lr
    batches = _cycle(loader)
    devices = [bundle.device.index or 0] if bundle.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for step in range(steps):
                step_lr = _lr_at(step, steps=steps, lr=lr, training=training)
                for group in opt.param_groups:
                    group["lr"] = step_lr
                raw = next(batches)
                examples += _batch_size(raw)
                batch = bundle.preprocessor(raw)
                with autocast_for(bundle):
                    policy_loss, _ = policy.forward(batch)
                policy_loss = policy_loss.float()
                prox = proximal_term(params, w_global, mu)
                loss = policy_loss + prox
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(step, C.LOSS, float(loss.detach()))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    list(params.values()), training.grad_clip_norm
                )
                if not torch.isfinite(grad_norm):
                    raise TrainingDivergedError(step, C.GRAD_NORM, float(grad_norm))
                opt.step()
                sums[C.LOSS] += float(loss.detach())
                sums[C.POLICY_LOSS] += float(policy_loss.detach())
                sums[C.FEDPROX_LOSS] += float(prox.detach())
                sums[C.GRAD_NORM] += float(grad_norm)
    except TrainingDivergedError:
        with torch.no_grad():  # no validation: w_start itself may be what was non-finite
            for n, p in params.items():
                p.copy_(w_global[n])
        raise
    finally:
        opt.zero_grad(set_to_none=True)
    tensors = get_trainable_state(policy)
    update = math.sqrt(sum(float((tensors[n] - w_start[n]).pow(2).sum()) for n in names))
    metrics: dict[str, float | int | str] = {k: v / steps for k, v in sums.items()}
    metrics.update({
        C.PARAM_UPDATE_NORM: update,
        C.PARAM_HASH: tensor_hash(tensors),
        C.NUM_STEPS: steps,
        C.NUM_EXAMPLES: examples,
        C.LR_KEY: step_lr,
        C.SECONDS: time.perf_counter() - t0,
        C.DATASET_NAME: dataset_name,
    })
    logger.info(
        "trained %s steps on %s: loss %.4f (policy %.4f, fedprox %.2e), update %.3e",
        steps, dataset_name, metrics[C.LOSS], metrics[C.POLICY_LOSS], metrics[C.FEDPROX_LOSS],
        update,
    )
    return TrainResult(tensors=tensors, metrics=metrics)


def evaluate(
    bundle: PolicyBundle, dataset: Any, *, batches: int, batch_size: int, seed: int,
    frames: EvalFrames | None = None,
) -> float:
    """Mean policy loss over ``batches`` x ``batch_size`` frames spread over the dataset.

    The frames are :func:`evaluation_frames`: evenly spaced over the whole dataset (every
    episode, start to end), not its first frames — consecutive frames at the start of
    one episode are nearly the same observation and say little about the rest. They are
    batched in dataset order (no shuffle). For batch ``i`` the flow-matching noise and
    time come from the global RNG seeded with ``seed + i`` inside ``torch.random.fork_rng``
    (the caller's RNG state is untouched), so the same weights and data give the same
    number every time.

    Args:
        bundle: Policy and processors; the policy is put in eval mode, then its previous
            mode is restored.
        dataset: A map-style dataset (e.g. :func:`zk0cli.core.data.open_dataset`); not
            read when ``frames`` is given.
        batches: Number of batches (fewer if the dataset is shorter: then every frame).
        batch_size: Frames per batch.
        seed: Base seed of the noise and time.
        frames: The same frames already decoded (:class:`EvalFrames`, e.g. kept by the
            server between rounds); the loss is bitwise the one read from ``dataset``.

    Returns:
        The frame-weighted mean flow-matching loss (MSE in normalised action units).

    Raises:
        ValueError: The dataset yields no batch.
    """
    import torch

    policy = bundle.policy
    was_training = policy.training
    policy.eval()
    if frames is None:
        frames = EvalFrames.read(dataset, batches=batches, batch_size=batch_size)
    devices = [bundle.device.index or 0] if bundle.device.type == "cuda" else []
    total, count = 0.0, 0
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            for i, raw in enumerate(frames.batches()):
                n = _batch_size(raw)
                batch = bundle.preprocessor(raw)
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed + i)
                    with autocast_for(bundle):
                        loss, _ = policy.forward(batch)
                total += float(loss) * n
                count += n
    finally:
        policy.train(was_training)
    if count == 0:
        raise ValueError("evaluation dataset yielded no batches")
    return total / count


class EvalFrames:
    """The decoded evaluation batches of one dataset, kept to score every round on.

    Video decoding of frames spread over a dataset costs a seek per frame, paid once
    here instead of once per round. Camera images (``(B, C, H, W)`` float32 in ``[0, 1]``
    decoded from
    8-bit video, as LeRobot returns them) are kept as ``uint8`` and turned back into the
    identical float32 values (``u / 255``) on use, a quarter of the memory; a camera
    whose values are not exactly ``u / 255`` is kept as it is. Each use gets fresh copies,
    so processors may change them freely.

    Attributes:
        raw: The raw batches as collated by the DataLoader, images possibly as uint8.
        packed: Keys of ``raw`` whose tensors are uint8 images to unpack.
    """

    def __init__(self, raw: list[dict[str, Any]], packed: set[str]) -> None:
        self.raw = raw
        self.packed = packed

    @classmethod
    def read(cls, dataset: Any, *, batches: int, batch_size: int) -> EvalFrames:
        """Decode the :func:`evaluation_frames` of ``dataset`` as ``batches`` batches.

        Args:
            dataset: A map-style dataset (e.g. :func:`zk0cli.core.data.open_dataset`).
            batches: Number of batches (fewer if the dataset is shorter).
            batch_size: Frames per batch.
        """
        import torch
        from torch.utils.data import DataLoader, Subset

        idx = evaluation_frames(len(dataset), batches * batch_size)
        loader = DataLoader(Subset(dataset, idx), batch_size=batch_size, shuffle=False,
                            num_workers=0)
        raw: list[dict[str, Any]] = []
        packed: set[str] = set()
        with torch.random.fork_rng():  # iterating a DataLoader draws a seed from the RNG
            for i, batch in enumerate(loader):
                if i >= batches:
                    break
                raw.append(dict(batch))
        images = {k for b in raw for k, v in b.items()
                  if isinstance(v, torch.Tensor) and v.dim() == 4}  # (B, C, H, W) cameras
        for key in sorted(images):
            as_u8 = [_as_uint8(b[key]) for b in raw]
            if all(u is not None for u in as_u8):
                for b, u in zip(raw, as_u8, strict=True):
                    b[key] = u
                packed.add(key)
        return cls(raw, packed)

    def batches(self) -> Iterator[dict[str, Any]]:
        """Fresh copies of the raw batches, images back in float32."""
        import torch

        for b in self.raw:
            yield {k: (v.float().div_(255) if k in self.packed else v.clone())
                   if isinstance(v, torch.Tensor) else (list(v) if isinstance(v, list) else v)
                   for k, v in b.items()}


def _as_uint8(x: Any) -> Any:
    """``x`` as uint8 when ``x.float() / 255`` gives ``x`` back exactly, else ``None``."""
    import torch

    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        return None
    u = (x * 255).round_()
    if u.min() < 0 or u.max() > 255:
        return None
    u8 = u.to(torch.uint8)
    return u8 if torch.equal(u8.float().div_(255), x) else None


def evaluation_frames(num_frames: int, count: int) -> list[int]:
    """Indices of ``count`` frames evenly spaced over ``num_frames`` (all when fewer).

    Frame ``i`` is the centre of the ``i``-th of ``count`` equal slices of the dataset:
    ``(2 i + 1) num_frames // (2 count)``, strictly increasing, so every episode of a
    multi-episode dataset is sampled in proportion to its length.

    Args:
        num_frames: Frames in the dataset (>= 0).
        count: Frames wanted (>= 1).

    Returns:
        ``min(count, num_frames)`` distinct indices in ``[0, num_frames)``, ascending.
    """
    if count >= num_frames:
        return list(range(num_frames))
    return [(2 * i + 1) * num_frames // (2 * count) for i in range(count)]
