"""Dataset checks before round 1, as plain functions (one machine, or each site as it joins).

A LeRobotDataset can be readable and still unusable for training:

* timestamps that drift: LeRobot raises ``FrameTimestampError`` while loading frames whose
  timestamps are not spaced ``1 / fps`` apart (within ``tolerance_s``, LeRobot's default
  1e-4 s), so the client fails every round;
* non-finite state or action values: training diverges, and with
  ``data.stats = "federated"`` the merged normalisation statistics of every site become NaN.

:func:`check_dataset` finds both, per episode, from the dataset's parquet files (no video
decoding). :func:`non_finite_stats` names the features of a client's statistics that are
not finite, so the server can leave that client out of the merge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from zk0cli.errors import DatasetError

#: LeRobot's default ``tolerance_s`` for frame timestamps (``LeRobotDataset``), seconds.
TIMESTAMP_TOLERANCE_S = 1e-4
#: Columns checked for non-finite values.
VALUE_COLUMNS: tuple[str, ...] = ("observation.state", "action")


@dataclass(frozen=True)
class EpisodeProblem:
    """One problem of one episode.

    Attributes:
        episode: ``episode_index``.
        kind: ``timestamps`` or ``non_finite``.
        detail: What is wrong (frame, value seen, expectation).
    """

    episode: int
    kind: Literal["timestamps", "non_finite"]
    detail: str


def _table(root: Path, columns: Sequence[str]) -> Any:
    import pyarrow.parquet as pq

    paths = sorted(str(p) for p in (Path(root) / "data").glob("*/*.parquet"))
    if not paths:
        raise DatasetError(f"no parquet files under {Path(root) / 'data'}")
    names = set(pq.read_schema(paths[0]).names)
    return pq.ParquetDataset(paths).read(columns=[c for c in columns if c in names])


def timestamp_problems(episodes: np.ndarray, timestamps: np.ndarray, fps: float, *,
                       tolerance_s: float = TIMESTAMP_TOLERANCE_S) -> list[EpisodeProblem]:
    """Episodes whose timestamps are not increasing by ``1 / fps`` (within tolerance).

    Args:
        episodes: ``episode_index`` per frame, shape ``(N,)``, in file order.
        timestamps: ``timestamp`` per frame in seconds, shape ``(N,)``.
        fps: The dataset's frames per second.
        tolerance_s: Allowed deviation of each step from ``1 / fps``, seconds.

    Returns:
        One problem per offending episode (its first bad frame), sorted by episode.
    """
    out = []
    period = 1.0 / fps
    for ep in np.unique(episodes):
        ts = np.asarray(timestamps[episodes == ep], dtype=np.float64)
        steps = np.diff(ts)
        bad = np.flatnonzero(np.abs(steps - period) > tolerance_s)
        back = np.flatnonzero(steps <= 0)  # not monotonic: reported before any drift
        if bad.size:
            i = int(back[0]) if back.size else int(bad[0])
            what = "not increasing" if back.size else "drift"
            out.append(EpisodeProblem(int(ep), "timestamps",
                                      f"timestamps {what} at frame {i + 1}: step "
                                      f"{steps[i]:.6f} s, expected {period:.6f} s "
                                      f"± {tolerance_s:g} s ({bad.size} bad step(s))"))
    return out


def non_finite_problems(episodes: np.ndarray, values: Mapping[str, np.ndarray]
                        ) -> list[EpisodeProblem]:
    """Episodes with NaN or infinite values in any of ``values``.

    Args:
        episodes: ``episode_index`` per frame, shape ``(N,)``.
        values: Column name to values, shape ``(N, D)``.
    """
    out = []
    for key, arr in values.items():
        bad_rows = ~np.isfinite(arr).all(axis=1)
        for ep in np.unique(episodes[bad_rows]):
            n = int((bad_rows & (episodes == ep)).sum())
            out.append(EpisodeProblem(int(ep), "non_finite",
                                      f"{key}: {n} frame(s) with NaN or infinite values"))
    return sorted(out, key=lambda p: p.episode)


def check_dataset(root: Path, fps: float, *, tolerance_s: float = TIMESTAMP_TOLERANCE_S,
                  columns: Sequence[str] = VALUE_COLUMNS) -> list[EpisodeProblem]:
    """Every timestamp and non-finite-value problem of a local LeRobotDataset.

    Args:
        root: Dataset folder (with ``data/*/*.parquet``).
        fps: The dataset's frames per second (``meta/info.json``).
        tolerance_s: See :func:`timestamp_problems`.
        columns: Value columns to check (missing ones are skipped).

    Raises:
        DatasetError: No parquet files under ``root / "data"``.
    """
    import pyarrow.compute as pc

    table = _table(root, ["episode_index", "timestamp", *columns])
    episodes = table.column("episode_index").to_numpy()
    problems = []
    if "timestamp" in table.column_names:
        problems += timestamp_problems(episodes, table.column("timestamp").to_numpy(), fps,
                                       tolerance_s=tolerance_s)
    values = {}
    for key in columns:
        if key in table.column_names:
            col = table.column(key).combine_chunks()
            flat = pc.list_flatten(col).to_numpy(zero_copy_only=False) \
                if str(col.type).startswith(("list", "fixed_size_list", "large_list")) \
                else col.to_numpy(zero_copy_only=False)
            values[key] = np.asarray(flat, dtype=np.float64).reshape(len(col), -1)
    problems += non_finite_problems(episodes, values)
    return sorted(problems, key=lambda p: (p.episode, p.kind))


def describe(name: str, problems: Sequence[EpisodeProblem]) -> str:
    """One paragraph naming the offending episode ids of dataset ``name``."""
    ids = sorted({p.episode for p in problems})
    lines = "\n".join(f"  - episode {p.episode}: {p.detail}" for p in problems[:20])
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    return (f"dataset {name}: {len(ids)} bad episode(s) {ids}:\n{lines}{more}\n"
            "Fix or re-record these episodes, or set data.skip_bad_episodes = true to "
            "train without them.")


def non_finite_stats(sums: Mapping[str, Any]) -> list[str]:
    """Features of a client's sufficient statistics (``FeatureSums``) that are not finite.

    Returns:
        ``"feature (field)"`` for each non-finite ``sum``/``sumsq``/``min``/``max``.
    """
    bad = []
    for key, s in sums.items():
        for field in ("sum", "sumsq", "min", "max"):
            if not np.isfinite(np.asarray(getattr(s, field), dtype=np.float64)).all():
                bad.append(f"{key} ({field})")
    return bad


_PROBLEMS: dict[tuple[str, float, tuple[tuple[str, int, int], ...]], list[EpisodeProblem]] = {}


def dataset_problems(root: Path, fps: float) -> list[EpisodeProblem]:
    """:func:`check_dataset` of a local dataset, cached while its parquet files are unchanged.

    Every process that splits a dataset (the coordinator, each simulated client, each site)
    asks this once per dataset; it reads only the parquet columns (tens of ms for a few
    thousand frames).

    Args:
        root: Dataset folder.
        fps: The dataset's frames per second.

    Returns:
        The problems, or ``[]`` when no frames are on disk yet (a Hub dataset whose parquet
        files are not downloaded: its frames are checked where they are downloaded).
    """
    paths = sorted((Path(root) / "data").glob("*/*.parquet"))
    if not paths:
        return []
    key = (str(Path(root).absolute()), float(fps),
           tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths))
    if key not in _PROBLEMS:
        if len(_PROBLEMS) >= 64:  # a few datasets per process is the common case
            _PROBLEMS.clear()
        _PROBLEMS[key] = check_dataset(root, fps)
    return list(_PROBLEMS[key])


def problem_ids(problems: Sequence[EpisodeProblem]) -> list[int]:
    """The sorted, distinct episode ids of ``problems``."""
    return sorted({p.episode for p in problems})
