"""Federated normalisation statistics: per-client sufficient statistics and their exact merge.

A client never shares raw data: it reports, per feature, the number of values ``count``,
their ``sum``, their sum of squares ``sumsq`` and their element-wise ``min``/``max``
(:class:`FeatureSums`). The server adds these up (:func:`merge_sums`) and turns the total
into LeRobot statistics (:func:`to_lerobot_stats`): mean = Σx / n and the population
variance Σx² / n − mean² (the same ``np.std`` definition LeRobot's ``compute_stats``
uses), min of mins and max of maxes. The merge is exact: merging the sums of several
datasets gives the statistics of their union, up to float64 rounding.

What is counted (:func:`compute_sums`), over the client's *training* episodes only:

* state/action features (``observation.*`` and ``action`` columns with a float dtype):
  every frame, read from the dataset's parquet files; ``count`` is the number of frames
  and the arrays have the feature's shape ``(D,)``;
* camera features (``image``/``video``): a bounded sample of ``image_frames`` frames
  evenly spaced over the training frames (decoding video is the expensive part), every
  pixel of those frames, per channel, in [0, 1] as LeRobot returns them; ``count`` is
  frames × H × W and the arrays have shape ``(C,)``; :func:`to_lerobot_stats` reshapes
  them to ``(C, 1, 1)`` as LeRobot's normaliser expects.

Feature keys are the policy's keys (after ``data.rename_map``). Statistics travel as
JSON (:func:`sums_to_json` / :func:`sums_from_json`): a few hundred numbers; Python's
float repr round-trips float64 exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from zk0cli.errors import DatasetError

if TYPE_CHECKING:
    from zk0cli.core.data import DatasetRef

VECTOR: Literal["vector"] = "vector"
IMAGE: Literal["image"] = "image"
DEFAULT_IMAGE_FRAMES = 64
"""Frames sampled per client for camera statistics (evenly spaced)."""


@dataclass
class FeatureSums:
    """Sufficient statistics of one feature.

    Attributes:
        kind: ``"vector"`` (state/action, per element) or ``"image"`` (per channel).
        count: Number of values summed per element (frames, or frames × H × W pixels).
        sum: Σx, float64, shape ``(D,)`` or ``(C,)``.
        sumsq: Σx², float64, same shape.
        min: Element-wise minimum, float64, same shape.
        max: Element-wise maximum, float64, same shape.
    """

    kind: Literal["vector", "image"]
    count: int
    sum: np.ndarray
    sumsq: np.ndarray
    min: np.ndarray
    max: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray, kind: Literal["vector", "image"]) -> FeatureSums:
        """Sums of ``values`` of shape ``(N, D)`` (vectors) or ``(N, C, H, W)`` (images)."""
        x = np.asarray(values, dtype=np.float64)
        if kind == IMAGE:
            x = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])  # (N*H*W, C)
        else:
            x = x.reshape(len(x), -1)
        if len(x) == 0:
            raise ValueError("cannot compute statistics of zero values")
        return cls(kind, int(len(x)), x.sum(0), (x * x).sum(0), x.min(0), x.max(0))

    def __add__(self, other: FeatureSums) -> FeatureSums:
        """The sums of the union of both value sets."""
        if self.kind != other.kind or self.sum.shape != other.sum.shape:
            raise ValueError(f"cannot merge {self.kind} {self.sum.shape} with "
                             f"{other.kind} {other.sum.shape}")
        return FeatureSums(self.kind, self.count + other.count, self.sum + other.sum,
                           self.sumsq + other.sumsq, np.minimum(self.min, other.min),
                           np.maximum(self.max, other.max))


Sums = dict[str, FeatureSums]


def _vector_keys(features: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [k for k, f in features.items()
            if (k == "action" or k.startswith("observation."))
            and str(f.get("dtype")) in ("float32", "float64")]


def _image_keys(features: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [k for k, f in features.items() if str(f.get("dtype")) in ("image", "video")]


def _read_columns(root: Any, keys: list[str], episodes: list[int]) -> dict[str, np.ndarray]:
    """State/action columns of ``episodes`` from the dataset's parquet files, ``(N, D)``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    paths = sorted(str(p) for p in (root / "data").glob("*/*.parquet"))
    if not paths:
        raise DatasetError(f"no parquet files under {root / 'data'}")
    table = pq.ParquetDataset(paths, filters=[("episode_index", "in", list(episodes))]).read(
        columns=keys)
    out = {}
    for key in keys:
        col = table.column(key).combine_chunks()
        flat = pc.list_flatten(col).to_numpy(zero_copy_only=False) if \
            str(col.type).startswith(("list", "fixed_size_list", "large_list")) else \
            col.to_numpy(zero_copy_only=False)
        out[key] = np.asarray(flat, dtype=np.float64).reshape(len(col), -1)
    return out


def vector_stats(root: Any, keys: Sequence[str], episodes: Sequence[int]
                 ) -> dict[str, dict[str, np.ndarray]]:
    """LeRobot statistics of state/action ``keys`` over ``episodes``, from parquet only.

    Args:
        root: Dataset folder.
        keys: Vector feature keys (dataset names, e.g. ``action``).
        episodes: Episode ids to count (never empty).

    Returns:
        ``{key: {"mean", "std", "min", "max", "count"}}`` as :func:`to_lerobot_stats`.

    Raises:
        DatasetError: No parquet files under ``root / "data"``.
    """
    from pathlib import Path

    cols = _read_columns(Path(root), list(keys), list(episodes))
    return to_lerobot_stats({k: FeatureSums.of(v, VECTOR) for k, v in cols.items()})


def sample_frame_indices(num_frames: int, image_frames: int) -> list[int]:
    """At most ``image_frames`` frame positions, evenly spaced over ``num_frames``."""
    if num_frames <= 0 or image_frames <= 0:
        return []
    k = min(num_frames, image_frames)
    return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, k)})


def compute_sums(
    ref: DatasetRef,
    episodes: Sequence[int],
    *,
    rename_map: Mapping[str, str],
    image_frames: int = DEFAULT_IMAGE_FRAMES,
    video_backend: str = "pyav",
) -> Sums:
    """Sufficient statistics of one client's training episodes.

    Args:
        ref: The client's dataset.
        episodes: Episode indices to count (the client's training episodes).
        rename_map: Dataset key -> policy key; the result is keyed by policy key.
        image_frames: Frames sampled (evenly spaced) for camera statistics; 0 skips cameras.
        video_backend: LeRobot video decoder for the sampled frames.

    Returns:
        ``{feature: FeatureSums}`` for every float ``observation.*``/``action`` feature
        and every camera.

    Raises:
        DatasetError: The dataset cannot be read or ``episodes`` is empty.
    """
    from zk0cli.core.data import load_metadata, open_dataset

    if not episodes:
        raise DatasetError(f"Dataset {ref.name!r}: no episodes to compute statistics on.")
    meta = load_metadata(ref)
    features = meta.features
    out: Sums = {}
    for key, values in _read_columns(meta.root, _vector_keys(features), list(episodes)).items():
        out[rename_map.get(key, key)] = FeatureSums.of(values, VECTOR)
    cams = _image_keys(features)
    if cams and image_frames > 0:
        import torch

        ds = open_dataset(ref, episodes=list(episodes), chunk_size=1,
                          video_backend=video_backend)
        picks = sample_frame_indices(len(ds), image_frames)
        frames: dict[str, list[Any]] = {k: [] for k in cams}
        for i in picks:
            item = ds[i]
            for k in cams:
                frames[k].append(item[k])
        for k in cams:
            out[rename_map.get(k, k)] = FeatureSums.of(torch.stack(frames[k]).numpy(), IMAGE)
    return out


def merge_sums(parts: Iterable[Mapping[str, FeatureSums]]) -> Sums:
    """Add up the sufficient statistics of several clients (exact).

    Only features every client reported are kept.

    Raises:
        ValueError: No parts, or a feature whose kind or shape differs between clients.
    """
    parts = list(parts)
    if not parts:
        raise ValueError("no statistics to merge")
    common = set(parts[0]).intersection(*parts[1:])
    out: Sums = {}
    for key in sorted(common):
        total = parts[0][key]
        for p in parts[1:]:
            try:
                total = total + p[key]
            except ValueError as err:
                raise ValueError(f"feature {key!r}: {err}") from None
        out[key] = total
    return out


def to_lerobot_stats(sums: Mapping[str, FeatureSums]) -> dict[str, dict[str, np.ndarray]]:
    """LeRobot normalisation statistics from sufficient statistics.

    Returns:
        ``{feature: {"mean", "std", "min", "max", "count"}}`` as float32 arrays: shape
        ``(D,)`` for vectors, ``(C, 1, 1)`` for cameras (LeRobot's layout), ``count``
        shape ``(1,)``. ``std`` is the population standard deviation.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, s in sums.items():
        mean = s.sum / s.count
        var = np.maximum(s.sumsq / s.count - mean * mean, 0.0)
        shape = (-1, 1, 1) if s.kind == IMAGE else (-1,)
        out[key] = {
            "mean": mean.reshape(shape).astype(np.float32),
            "std": np.sqrt(var).reshape(shape).astype(np.float32),
            "min": s.min.reshape(shape).astype(np.float32),
            "max": s.max.reshape(shape).astype(np.float32),
            "count": np.array([s.count], dtype=np.int64),
        }
    return out


def sums_to_json(sums: Mapping[str, FeatureSums]) -> str:
    """Serialise sufficient statistics (exact float64 round trip)."""
    return json.dumps({k: {"kind": s.kind, "count": s.count, "sum": s.sum.tolist(),
                           "sumsq": s.sumsq.tolist(), "min": s.min.tolist(),
                           "max": s.max.tolist()} for k, s in sorted(sums.items())},
                      sort_keys=True)


def sums_from_json(text: str) -> Sums:
    """Parse :func:`sums_to_json`'s output.

    Raises:
        ValueError: Malformed text.
    """
    try:
        raw = json.loads(text)
        return {k: FeatureSums(v["kind"], int(v["count"]),
                               *(np.asarray(v[n], dtype=np.float64)
                                 for n in ("sum", "sumsq", "min", "max")))
                for k, v in raw.items()}
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"malformed statistics: {err}") from None


def stats_digest(text: str) -> str:
    """Short SHA-256 of serialised statistics (tells clients when they changed)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]
