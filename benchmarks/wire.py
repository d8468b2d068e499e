"""(a) Bytes on the wire per client per round for the full-size SmolVLA architecture.

Measured on real serialized Flower ``ArrayRecord`` s (the sum of ``Array.data``, NumPy
headers included) built by zk0's codec: the trainable tensors in bfloat16 (the default),
the trainable tensors in float32, and, for comparison, the whole policy in float32 (what
the upstream project sent; serialized tensor by tensor so it is never all in memory).
With LoRA (``model.peft``, LeRobot's default SmolVLA targets) the same count for ranks
8, 16 and 64, for FFA-LoRA (only B travels, zk0's default) and the naive A-and-B scheme.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Any

GB = 1e9


def measure_wire(shapes_out: Path | None = None) -> dict[str, Any]:
    """Build the full-size policy, encode its tensors, return the byte counts.

    Args:
        shapes_out: Where to write ``{name: shape}`` of the trainable tensors (for the
            aggregation benchmark's worker processes), or ``None``.

    Returns:
        ``parameters``, ``trainable_parameters``, ``trainable_tensors``, bytes of
        ``trainable_bf16`` / ``trainable_fp32`` / ``whole_fp32`` records, the ratio
        ``whole_fp32 / trainable_bf16``, and encode/decode seconds of the bf16 record.
    """
    import torch
    from flwr.app import Array
    from fullsize import build_full_policy

    from zk0cli.core.policy import get_trainable_state
    from zk0cli.core.transport import from_array_record, record_nbytes, to_array_record

    t0 = time.perf_counter()
    policy = build_full_policy()
    build_s = time.perf_counter() - t0
    state = get_trainable_state(policy)
    if shapes_out is not None:
        shapes_out.write_text(json.dumps({k: list(v.shape) for k, v in state.items()}))
    t0 = time.perf_counter()
    rec16 = to_array_record(state, transport_dtype="bfloat16")
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    back = from_array_record(rec16)
    decode_s = time.perf_counter() - t0
    assert all(torch.equal(back[k], v.to(torch.bfloat16).float()) for k, v in state.items())
    del back
    bf16 = record_nbytes(rec16)
    del rec16
    rec32 = to_array_record(state, transport_dtype="float32")
    fp32 = record_nbytes(rec32)
    del rec32
    whole = sum(len(Array(t.detach().cpu().contiguous().numpy()).data)
                for t in policy.state_dict().values())
    out = {
        "parameters": sum(p.numel() for p in policy.parameters()),
        "trainable_parameters": sum(v.numel() for v in state.values()),
        "trainable_tensors": len(state),
        "state_dict_tensors": len(policy.state_dict()),
        "build_seconds": build_s,
        "bytes_trainable_bf16": bf16,
        "bytes_trainable_fp32": fp32,
        "bytes_whole_fp32": whole,
        "reduction_vs_whole_fp32": whole / bf16,
        "encode_bf16_seconds": encode_s,
        "decode_bf16_seconds": decode_s,
        "target_bytes": 0.21 * GB,
        "target_reduction": 8.0,
    }
    out["pass"] = bf16 <= out["target_bytes"] and out["reduction_vs_whole_fp32"] >= 8.0
    del state
    out["lora"] = measure_lora(policy, full_bytes=bf16)
    out["pass"] = out["pass"] and out["lora"]["pass"]
    del policy
    gc.collect()
    return out


LORA_RANKS = (8, 16, 64)


def measure_lora(policy: Any, *, full_bytes: int) -> dict[str, Any]:
    """Bytes per client per round with LoRA adapters on the full-size policy.

    The policy is wrapped as a LoRA run wraps it (:func:`zk0cli.core.policy.apply_peft`,
    LeRobot's default targets), its travelling tensors encoded in bfloat16 and counted,
    and the adapters removed again (``unload``), for each rank and both aggregations.
    Leaves every base parameter frozen: call it after the full-expert figures.

    Returns:
        ``adapted_modules``, ``by_rank`` (rank -> ``ffa`` / ``naive`` ->
        ``parameters``, ``tensors``, ``bytes_bf16``), ``target_bytes`` (0.02 GB at the
        default rank 16), ``reduction_vs_full_expert`` at rank 16 (FFA) and ``pass``.
    """
    from zk0cli.core.config import PeftConfig
    from zk0cli.core.policy import apply_peft, get_trainable_state
    from zk0cli.core.transport import record_nbytes, to_array_record

    by_rank: dict[str, dict[str, Any]] = {}
    adapted = 0
    for rank in LORA_RANKS:
        by_rank[str(rank)] = {}
        for aggregation in ("ffa", "naive"):
            wrapped = apply_peft(policy, PeftConfig(rank=rank, aggregation=aggregation), seed=0)
            state = get_trainable_state(wrapped)
            record = to_array_record(state, transport_dtype="bfloat16")
            adapted = sum(1 for n, _ in wrapped.named_modules() if n.endswith(".lora_B"))
            by_rank[str(rank)][aggregation] = {
                "parameters": sum(t.numel() for t in state.values()),
                "tensors": len(state),
                "bytes_bf16": record_nbytes(record),
            }
            del record, state
            policy = wrapped.unload()
    default = by_rank["16"]["ffa"]["bytes_bf16"]
    return {
        "adapted_modules": adapted,
        "by_rank": by_rank,
        "target_bytes": 0.02 * GB,
        "reduction_vs_full_expert": full_bytes / default,
        "pass": default <= 0.02 * GB,
    }
