"""Fixed-order weighted mean of replies that arrive in any order, one reply in memory.

Float sums depend on the order of the terms, and replies arrive in whatever order the
clients finish. For the global model to be bitwise reproducible (a resumed run equals an
uninterrupted one), replies are summed in a fixed order (by client id). Holding every
reply until the last one arrived would make the server's memory grow with the number of
clients; :class:`SpilledReplies` instead writes each checked reply's tensors to a private
temporary folder (safetensors) as it arrives and :func:`fixed_order_mean` reads them back
one at a time in key order into a :class:`~zk0cli.core.transport.WeightedMean`. Memory is
then about the float64 accumulator (2× the trainable set in fp32) plus one reply,
whatever the number of clients; disk use is one reply per client for the round.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zk0cli.core.transport import WeightedMean

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class _Spilled:
    key: tuple[str, int]
    path: Path
    weight: float


class SpilledReplies:
    """Decoded reply tensors parked on disk until they can be summed in a fixed order.

    Use as a context manager (the folder is removed on exit) or call :meth:`close`.

    Args:
        parent: Folder to create the private temporary folder in (the system's temporary
            folder when ``None``).
    """

    def __init__(self, parent: Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="zk0-replies-", dir=parent))  # mode 0700
        self._items: list[_Spilled] = []

    def __enter__(self) -> SpilledReplies:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, key: tuple[str, int], tensors: Mapping[str, torch.Tensor],
            weight: float) -> None:
        """Write one reply's tensors to disk.

        Args:
            key: Sort key of the reply (``(zero-padded client id, node id)``); replies
                with equal keys (not expected: one message per node) keep arrival order.
            tensors: Name -> CPU tensor (any dtype safetensors stores).
            weight: Aggregation weight (``num-examples``), > 0.
        """
        from safetensors.torch import save_file

        path = self.root / f"{len(self._items):06d}.safetensors"
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path))
        self._items.append(_Spilled(key, path, float(weight)))

    def in_order(self) -> Iterator[tuple[dict[str, torch.Tensor], float]]:
        """Yield ``(tensors, weight)`` for each reply in key order, loading one at a time."""
        from safetensors.torch import load_file

        for item in sorted(self._items, key=lambda i: i.key):  # stable
            yield load_file(str(item.path)), item.weight

    def close(self) -> None:
        """Remove the folder and everything in it."""
        shutil.rmtree(self.root, ignore_errors=True)
        self._items.clear()


def fixed_order_mean(spilled: SpilledReplies) -> dict[str, torch.Tensor] | None:
    """``Σ_k n_k w_k / Σ_k n_k`` over the spilled replies, summed in key order.

    FedAvg's aggregation (McMahan et al., 2017) with ``n_k`` the reply's weight,
    accumulated in float64 (:class:`~zk0cli.core.transport.WeightedMean`), one reply in
    memory at a time.

    Returns:
        Name -> mean tensor in each name's original dtype, or ``None`` when nothing was
        spilled.
    """
    if not len(spilled):
        return None
    acc = WeightedMean()
    for tensors, weight in spilled.in_order():
        acc.add(tensors, weight)
        del tensors  # one reply in memory at a time
    return acc.result()
