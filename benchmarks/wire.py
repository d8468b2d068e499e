"""(a) Bytes on the wire per client per round for the full-size SmolVLA architecture.

Measured on real serialized Flower ``ArrayRecord`` s (the sum of ``Array.data``, NumPy
headers included) built by zk0's codec: the trainable tensors in bfloat16 (the default),
the trainable tensors in float32, and, for comparison, the whole policy in float32 (what
the upstream project sent; serialized tensor by tensor so it is never all in memory).
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
    del policy, state
    gc.collect()
    return out
