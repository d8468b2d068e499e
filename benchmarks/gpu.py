"""(f) Full-size SmolVLA training on a GPU: optimizer steps/s and peak memory.

The full-size architecture (random weights, :mod:`fullsize`) on cuda, zk0's processors,
a synthetic SO-100-like batch (two 480×640 cameras, 6-D state, 50-step action chunks)
preprocessed once, then ``forward`` under bf16 autocast (``model.dtype = "bfloat16"``,
zk0's :func:`~zk0cli.core.trainer.autocast_for`), backward, clipping and AdamW on the
trainable tensors, as zk0's client trainer does. Data loading is excluded on purpose.
"""

from __future__ import annotations

import time
from typing import Any


def synthetic_batch(batch_size: int, chunk: int = 50) -> dict[str, Any]:
    """A raw dataset batch: state (B,6), two cameras (B,3,480,640) in [0,1], actions."""
    import torch

    g = torch.Generator().manual_seed(0)
    return {
        "observation.state": torch.randn(batch_size, 6, generator=g),
        "observation.images.camera1": torch.rand(batch_size, 3, 480, 640, generator=g),
        "observation.images.camera2": torch.rand(batch_size, 3, 480, 640, generator=g),
        "action": torch.randn(batch_size, chunk, 6, generator=g),
        "action_is_pad": torch.zeros(batch_size, chunk, dtype=torch.bool),
        "task": ["pick up the red cube"] * batch_size,
    }


def measure_gpu(*, batch_sizes: list[int], steps: int, device: str = "cuda",
                autocast: str = "bfloat16") -> dict[str, Any]:
    """Steps/s and peak GPU memory of full-size SmolVLA training per batch size.

    Args:
        batch_sizes: E.g. ``[16, 64]``.
        steps: Timed optimizer steps per batch size (after 2 warm-up steps).
        device: ``cuda`` (``cpu`` only to smoke-test this script, with autocast off).
        autocast: ``"bfloat16"`` or ``"float32"`` (no autocast).

    Returns:
        ``{"measured": True, "runs": [{"batch_size", "steps_per_s", "peak_gpu_bytes"}]}``,
        or ``{"measured": False, "reason": ...}`` without a GPU.
    """
    import torch
    from fullsize import build_full_policy, full_smolvla_config, unit_stats

    from zk0cli.core.policy import PolicyBundle, make_processors
    from zk0cli.core.trainer import autocast_for

    if device == "cuda" and not torch.cuda.is_available():
        return {"measured": False, "reason": "no cuda device on this machine"}
    policy = build_full_policy(device=device)
    pre, post = make_processors(full_smolvla_config(device), stats=unit_stats(),
                                rename_map={})
    bundle = PolicyBundle(policy=policy, preprocessor=pre, postprocessor=post,
                          device=torch.device(device), autocast_dtype=autocast)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=1e-10)
    policy.train()
    runs = []
    for bs in batch_sizes:
        batch = pre(synthetic_batch(bs))
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

        def step(batch: dict[str, Any] = batch) -> float:
            with autocast_for(bundle):
                loss, _ = policy.forward(batch)
            opt.zero_grad(set_to_none=True)
            loss.float().backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            return float(loss.detach())

        for _ in range(2):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
        runs.append({"batch_size": bs, "steps_per_s": steps / dt,
                     "frames_per_s": steps * bs / dt, "peak_gpu_bytes": peak,
                     "last_loss": loss})
        del batch
    return {"measured": True, "device": device, "autocast": autocast, "steps": steps,
            "runs": runs}
