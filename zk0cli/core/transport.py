"""Moving trainable tensors between the server and clients, and checking them.

Only the trainable tensors travel (SmolVLA's action expert and projections), keyed by
parameter name. Both ends check what they receive against what they expect: the same
names, shapes and dtypes, all values finite (:func:`tensor_problems`), after decoding.
Aggregation is a running weighted sum in float64 over replies, one reply at a time
(:class:`WeightedMean`), so server memory does not grow with the number of clients.

Wire format (``federation.transport_dtype``): with ``"bfloat16"`` (the default) every
floating tensor is rounded to bfloat16 and its 16-bit patterns are carried, unchanged,
as an ``int16`` NumPy array, because Flower's ``ArrayRecord`` rejects bfloat16; the
``Array``'s ``dtype`` field says ``"bfloat16"`` so the receiver reinterprets the bits
(bit-exact) and converts to float32 (:func:`from_array_record`). Half the bytes of
float32. The values themselves are rounded to bfloat16 (8 significant bits), so the
global model the server sends is bfloat16-rounded every round; aggregation itself stays
in float64. ``"float32"`` sends exact float32 values.

These are plain functions on ``dict[str, torch.Tensor]`` and Flower ``ArrayRecord``;
the Flower apps call them, and they are unit-tested directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from zk0cli.errors import TransportError

if TYPE_CHECKING:
    import torch
    from flwr.app import ArrayRecord


#: Wire dtypes of floating tensors (``federation.transport_dtype``).
TransportDtype = Literal["bfloat16", "float32"]
#: ``Array.dtype`` of a bfloat16 tensor carried as int16 bit patterns.
BF16_WIRE_TAG = "bfloat16"


@dataclass(frozen=True)
class TensorSpec:
    """Expected shape and dtype of one tensor.

    Attributes:
        shape: Tensor shape, e.g. ``(960, 720)``.
        dtype: Torch dtype name without the ``torch.`` prefix, e.g. ``"float32"``.
    """

    shape: tuple[int, ...]
    dtype: str


def specs_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, TensorSpec]:
    """Shapes and dtypes of a state dict, keyed by name."""
    return {
        k: TensorSpec(tuple(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in tensors.items()
    }


def tensor_problems(
    received: Mapping[str, torch.Tensor], expected: Mapping[str, TensorSpec]
) -> list[str]:
    """Every way ``received`` differs from ``expected``; an empty list means valid.

    Checks missing and unexpected names, shapes, dtypes and finiteness (NaN/Inf).

    Returns:
        One human-readable line per problem (at most a few names listed per kind).
    """
    import torch

    problems: list[str] = []
    missing = sorted(set(expected) - set(received))
    extra = sorted(set(received) - set(expected))
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_some(missing)}")
    if extra:
        problems.append(f"unexpected {len(extra)} tensor(s): {_some(extra)}")
    bad_shape, bad_dtype, non_finite = [], [], []
    for name, spec in expected.items():
        t = received.get(name)
        if t is None:
            continue
        if tuple(t.shape) != spec.shape:
            bad_shape.append(f"{name} {tuple(t.shape)} != {spec.shape}")
            continue
        dtype = str(t.dtype).removeprefix("torch.")
        if dtype != spec.dtype:
            bad_dtype.append(f"{name} {dtype} != {spec.dtype}")
            continue
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            non_finite.append(name)
    if bad_shape:
        problems.append(f"wrong shape: {_some(bad_shape)}")
    if bad_dtype:
        problems.append(f"wrong dtype: {_some(bad_dtype)}")
    if non_finite:
        problems.append(f"non-finite values in {len(non_finite)} tensor(s): {_some(non_finite)}")
    return problems


def validate_tensors(
    received: Mapping[str, torch.Tensor], expected: Mapping[str, TensorSpec], *, source: str
) -> None:
    """Raise if ``received`` does not match ``expected`` (see :func:`tensor_problems`).

    Args:
        received: Tensors that arrived.
        expected: Specs they must match.
        source: Who sent them, for the message (``"server"``, ``"client 3"``).

    Raises:
        TransportError: Listing every problem.
    """
    problems = tensor_problems(received, expected)
    if problems:
        raise TransportError(f"Tensors from {source} rejected: " + "; ".join(problems))


def _some(items: list[str], n: int = 3) -> str:
    head = ", ".join(items[:n])
    return head + (f", ... (+{len(items) - n})" if len(items) > n else "")


def to_array_record(
    tensors: Mapping[str, torch.Tensor], *, transport_dtype: TransportDtype = "float32"
) -> ArrayRecord:
    """Pack a state dict into a Flower ``ArrayRecord`` for the wire (CPU copies).

    Args:
        tensors: ``{name: tensor}``; names become the record's keys, unchanged.
        transport_dtype: ``"float32"``: tensors travel in their own dtype (bfloat16
            ones as float32, exactly); ``"bfloat16"``: floating tensors are
            rounded to bfloat16 and carried as ``int16`` arrays of their bit patterns,
            tagged ``Array.dtype == "bfloat16"`` (2 bytes per value). Integer tensors
            travel as they are either way.

    Returns:
        The record; decode it with :func:`from_array_record`.

    Raises:
        ValueError: Unknown ``transport_dtype``.
    """
    import torch
    from flwr.app import Array, ArrayRecord

    if transport_dtype not in ("bfloat16", "float32"):
        raise ValueError(
            f"transport_dtype must be 'bfloat16' or 'float32', got {transport_dtype!r}"
        )
    record = ArrayRecord()
    for name, t in tensors.items():
        t = t.detach().cpu()
        if t.is_floating_point() and transport_dtype == "bfloat16":
            bits = t.to(torch.bfloat16).contiguous().view(torch.int16).numpy()
            arr = Array(bits)
            record[name] = Array(dtype=BF16_WIRE_TAG, shape=tuple(t.shape),
                                 stype=arr.stype, data=arr.data)
        else:
            if t.dtype == torch.bfloat16:  # ArrayRecord rejects bfloat16
                t = t.to(torch.float32)
            record[name] = Array(t.contiguous().numpy())
    return record


def from_array_record(
    record: ArrayRecord, *, decode_to: str | None = "float32"
) -> dict[str, torch.Tensor]:
    """Unpack a Flower ``ArrayRecord`` into a CPU state dict (names preserved).

    Arrays tagged ``"bfloat16"`` (see :func:`to_array_record`) are reinterpreted as
    bfloat16, bit for bit, then converted to ``decode_to``; other arrays come back in
    the dtype they travelled in (so the receiver's dtype checks still see them).

    Args:
        record: The received record.
        decode_to: Torch dtype name for values that travelled as bfloat16
            (``"float32"``, exact); ``None`` keeps ``torch.bfloat16``.

    Returns:
        ``{name: tensor}`` in the record's order.

    Raises:
        TransportError: An array tagged bfloat16 does not hold int16 data.
    """
    import torch

    out: dict[str, torch.Tensor] = {}
    for name, arr in record.items():
        nd = arr.numpy()
        t = torch.from_numpy(nd)
        if arr.dtype == BF16_WIRE_TAG:
            if t.dtype != torch.int16:
                raise TransportError(
                    f"tensor {name!r} is tagged bfloat16 but carries {nd.dtype} data; "
                    "expected int16 bit patterns (zk0's bfloat16 wire format)"
                )
            t = t.view(torch.bfloat16)
            if decode_to is not None:
                t = t.to(getattr(torch, decode_to))
        out[name] = t
    return out


def record_nbytes(record: ArrayRecord) -> int:
    """Bytes of serialized tensor data in a record: the sum of ``Array.data`` lengths.

    NumPy headers are included; Flower's own framing and the key strings are not.
    """
    return sum(len(arr.data) for arr in record.values())


def tensor_hash(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and raw bytes, in sorted name order (hex, 64 chars).

    Identical tensors give identical hashes on every machine with the same byte order.
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(dtype=_byte_view_dtype()).numpy().tobytes())
    return h.hexdigest()


def _byte_view_dtype() -> torch.dtype:
    import torch

    return torch.uint8


class WeightedMean:
    """Running weighted mean of state dicts, one reply at a time.

    Keeps one float64 accumulator per tensor, so memory is about 2× the model in fp32
    whatever the number of replies. ``result()`` returns tensors in each name's original
    dtype. This is FedAvg's aggregation, ``Σ_k n_k w_k / Σ_k n_k`` (McMahan et al., 2017),
    with ``n_k`` the client's ``num-examples``.
    """

    def __init__(self) -> None:
        self._sum: dict[str, torch.Tensor] = {}
        self._dtypes: dict[str, torch.dtype] = {}
        self.total_weight = 0.0
        self.count = 0

    def add(self, tensors: Mapping[str, torch.Tensor], weight: float) -> None:
        """Accumulate one reply.

        Raises:
            ValueError: ``weight`` is not positive, or names differ from earlier replies.
        """
        import torch

        if not weight > 0:
            raise ValueError(f"weight must be > 0, got {weight}")
        if self._sum and set(tensors) != set(self._sum):
            raise ValueError("reply tensor names differ from earlier replies")
        for name, t in tensors.items():
            t64 = t.detach().to("cpu", torch.float64)
            if name in self._sum:
                self._sum[name].add_(t64, alpha=weight)
            else:
                self._sum[name] = t64.mul(weight)
                self._dtypes[name] = t.dtype
        self.total_weight += weight
        self.count += 1

    def result(self) -> dict[str, torch.Tensor]:
        """The weighted mean so far.

        Raises:
            ValueError: Nothing was added.
        """
        if not self.count:
            raise ValueError("no replies were added")
        return {
            k: (v / self.total_weight).to(self._dtypes[k]) for k, v in self._sum.items()
        }


def weighted_mean(
    replies: Iterable[tuple[Mapping[str, torch.Tensor], float]],
) -> dict[str, torch.Tensor]:
    """Weighted mean of ``(state_dict, weight)`` pairs (see :class:`WeightedMean`)."""
    acc = WeightedMean()
    for tensors, weight in replies:
        acc.add(tensors, weight)
    return acc.result()
