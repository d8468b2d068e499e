"""LeRobotDatasets: resolve, validate, partition across clients, open and batch.

A client's data is a LeRobotDataset v3.0 given by Hub repo id, local root, or generated
by zk0's SO-101 simulator (``source = "sim"``). Before training, everything that would
otherwise fail late (or silently) is checked here: the dataset exists, its codebase
version is v3.0, frame counts per episode match the metadata, episode ids are in range
and no client's split is empty. Action chunks come from LeRobot's ``delta_timestamps``
(``chunk_size`` future actions at the dataset's fps).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zk0cli.errors import DatasetError
from zk0cli.log import logger

if TYPE_CHECKING:
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    from zk0cli.core.checks import EpisodeProblem
    from zk0cli.core.config import DatasetSpec, RunConfig, SimConfig

#: The only LeRobotDataset format LeRobot 0.6 reads.
CODEBASE_VERSION = "v3.0"
#: LeRobot's converter for older datasets (``python -m <module> --repo-id=...``).
CONVERTER_MODULE = "lerobot.scripts.convert_dataset_v21_to_v30"


@dataclass(frozen=True)
class DatasetRef:
    """Where a dataset lives.

    Attributes:
        name: Display name (the simulator task for sim datasets, else the repo id).
        repo_id: LeRobot repo id.
        root: Local root directory, or ``None`` for the Hub (LeRobot's cache).
    """

    name: str
    repo_id: str
    root: Path | None


def resolve_dataset(spec: DatasetSpec, sim: SimConfig) -> DatasetRef:
    """Turn a configured dataset into a :class:`DatasetRef`.

    ``source="sim"`` generates the dataset on first use (cached) with
    ``spec.episodes or sim.episodes`` episodes.

    Args:
        spec: The configured dataset.
        sim: Simulator settings (episodes, image size, only_success).

    Returns:
        The reference; for ``hub`` the root is ``None``.
    """
    if spec.source == "sim":
        from zk0cli.core.sim import ensure_sim_dataset

        repo_id, root = ensure_sim_dataset(
            spec.name,
            episodes=spec.episodes or sim.episodes,
            seed=spec.seed,
            height=sim.height,
            width=sim.width,
            only_success=sim.only_success,
        )
        return DatasetRef(name=spec.name, repo_id=repo_id, root=Path(root))
    if spec.source == "local":
        return DatasetRef(name=spec.name, repo_id=spec.name, root=Path(spec.root or ""))
    return DatasetRef(name=spec.name, repo_id=spec.name, root=None)


def _converter_hint(ref: DatasetRef, version: str) -> str:
    where = f" --root={ref.root}" if ref.root else ""
    return (
        f"Dataset {ref.name!r} is in LeRobot format {version}; zk0 (LeRobot 0.6) reads "
        f"{CODEBASE_VERSION} only. Convert it with LeRobot's converter: "
        f"python -m {CONVERTER_MODULE} --repo-id={ref.repo_id}{where}"
    )


def _check_local_version(ref: DatasetRef) -> None:
    root = ref.root
    if root is None:
        from lerobot.utils.constants import HF_LEROBOT_HOME

        root = Path(HF_LEROBOT_HOME) / ref.repo_id
        if not (root / "meta" / "info.json").is_file():
            return  # not cached locally: LeRobot goes to the Hub
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise DatasetError(
            f"Dataset {ref.name!r}: {info_path} does not exist, so {root} is not a "
            "LeRobotDataset root. Point data.clients[].root at the folder holding meta/, "
            "data/ (and videos/)."
        )
    try:
        version = str(json.loads(info_path.read_text(encoding="utf-8"))["codebase_version"])
    except (OSError, ValueError, KeyError) as err:
        raise DatasetError(f"Dataset {ref.name!r}: cannot read {info_path} ({err}).") from None
    if version != CODEBASE_VERSION:
        raise DatasetError(_converter_hint(ref, version))


def load_metadata(ref: DatasetRef) -> LeRobotDatasetMetadata:
    """Load and validate a dataset's metadata.

    Args:
        ref: The dataset.

    Returns:
        LeRobot's metadata object (features, fps, stats, episodes).

    Raises:
        DatasetError: Missing local root; Hub dataset unreachable (e.g. offline); codebase
            version other than v3.0 (the message names LeRobot's converter); episode frame
            counts disagreeing with the metadata.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    if ref.root is not None and not ref.root.is_dir():
        raise DatasetError(
            f"Dataset {ref.name!r}: local root {ref.root} does not exist. Fix "
            "data.clients[].root, or use source = \"hub\" with a repo id."
        )
    _check_local_version(ref)
    try:
        meta = LeRobotDatasetMetadata(ref.repo_id, root=ref.root)
    except Exception as err:  # noqa: BLE001 - Hub, IO and compatibility errors differ
        from lerobot.datasets.utils import BackwardCompatibilityError

        if isinstance(err, BackwardCompatibilityError):
            raise DatasetError(_converter_hint(ref, "v2.x")) from None
        raise DatasetError(
            f"Dataset {ref.name!r} cannot be loaded ({type(err).__name__}: {err}). If the "
            "Hugging Face Hub is unreachable (offline or HF_HUB_OFFLINE=1), download the "
            'dataset once and set source = "local" with root = the dataset folder.'
        ) from None
    _check_episode_lengths(ref, meta)
    return meta


def _check_episode_lengths(ref: DatasetRef, meta: LeRobotDatasetMetadata) -> None:
    eps = meta.episodes
    if eps is None or meta.total_episodes == 0:
        raise DatasetError(f"Dataset {ref.name!r} has no episodes.")
    lengths = list(eps["length"])
    starts, ends = list(eps["dataset_from_index"]), list(eps["dataset_to_index"])
    bad = [
        f"episode {int(i)}: length {n} but frames {a}..{b}"
        for i, n, a, b in zip(eps["episode_index"], lengths, starts, ends, strict=True)
        if b - a != n or n <= 0
    ]
    if sum(lengths) != meta.total_frames:
        bad.append(f"episode lengths sum to {sum(lengths)}, info.json says {meta.total_frames}")
    if len(lengths) != meta.total_episodes:
        bad.append(f"{len(lengths)} episode rows, info.json says {meta.total_episodes}")
    if bad:
        raise DatasetError(
            f"Dataset {ref.name!r}: frame counts disagree with the metadata: "
            + "; ".join(bad[:5]) + ". The dataset is damaged; re-download or re-record it."
        )


@dataclass(frozen=True)
class ClientPartition:
    """One client's share of the data.

    Attributes:
        client_id: ``"0"``, ``"1"``, ... (the simulation partition id as text).
        name: Display name of the dataset.
        ref: The dataset.
        train_episodes: Episode indices this client trains on (never empty).
        heldout_episodes: Episode indices held out for evaluation (may be empty).
        skipped: Problems of the episodes dropped by ``data.skip_bad_episodes`` (in
            neither list).
    """

    client_id: str
    name: str
    ref: DatasetRef
    train_episodes: list[int]
    heldout_episodes: list[int]
    skipped: tuple[EpisodeProblem, ...] = field(default=())


def _split_heldout(name: str, episodes: list[int], k: int,
                   skipped: tuple[EpisodeProblem, ...] = ()) -> tuple[list[int], list[int]]:
    """The last ``k`` of ``episodes`` held out, the rest for training (never empty)."""
    from zk0cli.core.checks import problem_ids

    n = len(episodes)
    if n - k < 1:
        dropped = (f" after data.skip_bad_episodes dropped {len(problem_ids(skipped))} "
                   f"bad episode(s) {problem_ids(skipped)}") if skipped else ""
        raise DatasetError(
            f"Dataset {name!r} has {n} episode(s){dropped}; holding out the last "
            f"data.heldout_episodes = {k} leaves none to train on. Lower "
            "data.heldout_episodes or use a larger dataset."
        )
    return episodes[: n - k], episodes[n - k:]


def usable_episodes(ref: DatasetRef, meta: LeRobotDatasetMetadata, *, skip_bad: bool
                    ) -> tuple[list[int], tuple[EpisodeProblem, ...]]:
    """A dataset's episode ids, without the bad ones when ``skip_bad`` is set.

    Bad episodes are those :func:`zk0cli.core.checks.dataset_problems` finds: timestamps
    not spaced ``1 / fps`` (LeRobot's tolerance) or non-finite state/action values.

    Args:
        ref: The dataset.
        meta: Its metadata.
        skip_bad: ``data.skip_bad_episodes``.

    Returns:
        The kept episode ids in order, and the problems of the dropped ones.
    """
    from zk0cli.core.checks import dataset_problems, problem_ids

    total = int(meta.total_episodes)
    if not skip_bad:
        return list(range(total)), ()
    problems = tuple(dataset_problems(Path(meta.root), float(meta.fps)))
    bad = set(problem_ids(problems))
    if bad:
        logger.info("dataset %s: skipping %d bad episode(s) %s", ref.name, len(bad),
                    sorted(bad))
    return [e for e in range(total) if e not in bad], problems


def check_sim_shares(cfg: RunConfig) -> None:
    """Refuse held-out settings that would leave a simulator client nothing to train on.

    A ``source = "sim"`` dataset will have ``episodes or data.sim.episodes`` episodes, so
    this needs no generation: it runs before any dataset is made (with
    ``data.partition = "dataset"``; an episode split is checked once the data exists).

    Raises:
        DatasetError: Naming the dataset, its episode count and ``data.heldout_episodes``.
    """
    if cfg.data.partition != "dataset":
        return
    for spec in cfg.data.clients[: max(cfg.num_clients, 1)]:
        if spec.source == "sim":
            _split_heldout(spec.name, list(range(spec.episodes or cfg.data.sim.episodes)),
                           cfg.data.heldout_episodes)


def client_partition(cfg: RunConfig, index: int) -> ClientPartition:
    """Client ``index``'s share of the data; reads only the datasets that share needs.

    With ``data.partition = "dataset"`` only ``data.clients[index]`` is opened, so an error
    names the dataset that has the problem (not the first client's).

    Args:
        cfg: The run configuration.
        index: Client (partition) index, ``0 <= index < cfg.num_clients``.

    Returns:
        The partition; never empty.

    Raises:
        DatasetError: The dataset cannot be loaded, or it has too few episodes.
    """
    k = cfg.data.heldout_episodes
    if cfg.data.partition == "dataset":
        ref = resolve_dataset(cfg.data.clients[index], cfg.data.sim)
        meta = load_metadata(ref)
        episodes, skipped = usable_episodes(ref, meta, skip_bad=cfg.data.skip_bad_episodes)
        train, held = _split_heldout(ref.name, episodes, k, skipped)
        return ClientPartition(str(index), ref.name, ref, train, held, skipped)
    return _episode_partitions(cfg)[index]


def site_partition(client_id: str, ref: DatasetRef, meta: LeRobotDatasetMetadata, *,
                   heldout_episodes: int, skip_bad_episodes: bool = False) -> ClientPartition:
    """A deployed site's partition: its whole dataset minus the last held-out episodes.

    Args:
        client_id: The site's name in the run.
        ref: Its dataset.
        meta: The dataset's metadata.
        heldout_episodes: Episodes at the end kept out of training.
        skip_bad_episodes: Drop bad episodes first (:func:`usable_episodes`).

    Raises:
        DatasetError: Holding out ``heldout_episodes`` leaves no episode to train on.
    """
    episodes, skipped = usable_episodes(ref, meta, skip_bad=skip_bad_episodes)
    train, held = _split_heldout(ref.name, episodes, heldout_episodes, skipped)
    return ClientPartition(client_id, ref.name, ref, train, held, skipped)


def client_partitions(cfg: RunConfig) -> list[ClientPartition]:
    """Split the configured data across ``cfg.num_clients`` clients.

    ``data.partition = "dataset"``: client i gets ``data.clients[i]``, minus its last
    ``data.heldout_episodes`` episodes. ``"episodes"``: the last ``heldout_episodes``
    episodes of ``data.clients[0]`` are held out (shared by all clients) and the rest are
    split into contiguous, near-equal blocks, one per client.

    Args:
        cfg: The run configuration.

    Returns:
        One partition per client, in client order; no partition is empty.

    Raises:
        DatasetError: A dataset cannot be loaded, or there are too few episodes
            (e.g. "8 clients but only 5 episodes ...").
    """
    if cfg.data.partition == "dataset":
        return [client_partition(cfg, i) for i in range(cfg.num_clients)]
    return _episode_partitions(cfg)


def _episode_partitions(cfg: RunConfig) -> list[ClientPartition]:
    n = cfg.num_clients
    k = cfg.data.heldout_episodes
    out: list[ClientPartition] = []
    ref = resolve_dataset(cfg.data.clients[0], cfg.data.sim)
    meta = load_metadata(ref)
    from zk0cli.core.checks import problem_ids

    episodes, skipped = usable_episodes(ref, meta, skip_bad=cfg.data.skip_bad_episodes)
    total = len(episodes)
    train_all, held = _split_heldout(ref.name, episodes, k, skipped)
    if total - k < n:
        dropped = f", {len(problem_ids(skipped))} bad skipped" if skipped else ""
        raise DatasetError(
            f"{n} clients but only {total - k} episodes to train on in {ref.name!r} "
            f"({total} episodes{dropped}, last {k} held out by data.heldout_episodes); every "
            "client needs at least one. Lower federation.num_clients or data.heldout_episodes, or "
            "use more episodes."
        )
    base, extra = divmod(len(train_all), n)
    start = 0
    for i in range(n):
        size = base + (1 if i < extra else 0)
        out.append(ClientPartition(str(i), ref.name, ref, train_all[start:start + size], held,
                                   skipped))
        start += size
    return out


def check_video_backend(backend: str) -> None:
    """Check that LeRobot's video decoder ``backend`` can load, before a run starts.

    ``torchcodec`` needs the system FFmpeg libraries (4 to 8); ``pyav`` brings its own.

    Args:
        backend: ``data.video_backend``.

    Raises:
        DatasetError: ``torchcodec`` is not installed or cannot load its FFmpeg libraries.
    """
    if backend != "torchcodec":
        return
    try:
        import torchcodec.decoders  # noqa: F401  (loads libtorchcodec and FFmpeg)
    except Exception as err:  # ImportError, or RuntimeError("Could not load libtorchcodec")
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DatasetError(
            f"data.video_backend = 'torchcodec' cannot decode videos on this machine "
            f"({type(err).__name__}: {first}); torchcodec needs the system FFmpeg libraries "
            "(versions 4 to 8). Set data.video_backend = \"pyav\" (it brings its own FFmpeg) "
            "or install FFmpeg."
        ) from None


def open_dataset(
    ref: DatasetRef, *, episodes: list[int] | None, chunk_size: int, video_backend: str
) -> LeRobotDataset:
    """Open a dataset for training or evaluation, with action chunks.

    Args:
        ref: The dataset.
        episodes: Episode indices to read (``None``: all).
        chunk_size: Future actions per sample; ``action`` is ``(chunk_size, action_dim)``
            with ``action_is_pad`` marking steps past the episode end.
        video_backend: ``"pyav"`` (works without system FFmpeg) or ``"torchcodec"``.

    Returns:
        The dataset; items hold ``observation.*`` ``(C, H, W)`` images in [0, 1], state,
        ``action`` ``(chunk_size, D)``, ``action_is_pad`` and ``task``.

    Raises:
        DatasetError: Empty episode list or episode ids out of range, or load failures.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    meta = load_metadata(ref)
    if episodes is not None:
        if not episodes:
            raise DatasetError(f"Dataset {ref.name!r}: the episode list is empty.")
        bad = sorted(e for e in episodes if not 0 <= e < meta.total_episodes)
        if bad:
            raise DatasetError(
                f"Dataset {ref.name!r}: episode ids {bad[:10]} are out of range; it has "
                f"{meta.total_episodes} episodes (0..{meta.total_episodes - 1})."
            )
    delta = {"action": [i / meta.fps for i in range(chunk_size)]}
    try:
        ds = LeRobotDataset(
            ref.repo_id, root=ref.root, episodes=episodes, delta_timestamps=delta,
            video_backend=video_backend,
        )
    except DatasetError:
        raise
    except Exception as err:  # noqa: BLE001
        raise DatasetError(
            f"Dataset {ref.name!r} cannot be opened ({type(err).__name__}: {err})."
        ) from None
    logger.debug("opened %s: %s episodes, %s frames", ref.name, ds.num_episodes, ds.num_frames)
    return ds


#: Batches each DataLoader worker keeps ready (``prefetch_factor``).
PREFETCH_BATCHES = 4


def make_loader(
    dataset: Any, *, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0
) -> torch.utils.data.DataLoader:
    """A DataLoader whose order depends only on ``seed``.

    Args:
        dataset: A map-style dataset (e.g. :func:`open_dataset`'s).
        batch_size: Frames per batch.
        shuffle: Random order (seeded) or dataset order.
        seed: Seed of the shuffling generator.
        num_workers: Worker processes (0 = in-process). With workers, they persist
            across epochs and rounds (the client keeps its loader) and each prefetches
            :data:`PREFETCH_BATCHES` batches, so decoding overlaps training.

    Returns:
        The loader (last partial batch kept).
    """
    import torch

    gen = torch.Generator()
    gen.manual_seed(seed)
    extra: dict[str, Any] = ({"persistent_workers": True, "prefetch_factor": PREFETCH_BATCHES}
                             if num_workers > 0 else {})
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=gen,
        num_workers=num_workers, **extra,
    )


def dataset_stats(
    meta: LeRobotDatasetMetadata, rename_map: Mapping[str, str], *,
    episodes: list[int] | None = None,
) -> dict[str, dict[str, Any]]:
    """The dataset's normalisation statistics, keyed by (renamed) feature key.

    With ``episodes`` (the episodes actually used, after ``data.skip_bad_episodes``), a
    feature whose recorded statistics are not finite — LeRobot computed them over the
    dropped NaN episodes — is recomputed from those episodes' parquet values instead.

    Args:
        meta: The dataset's metadata (``meta/stats.json``).
        rename_map: Dataset key -> policy key.
        episodes: The episode ids used, or ``None`` to take ``meta/stats.json`` as it is.

    Returns:
        ``{feature: {"mean": array, "std": array, "min": ..., "max": ..., ...}}``.
    """
    import numpy as np

    stats = {k: dict(v) for k, v in (meta.stats or {}).items()}
    if episodes:
        bad = [k for k, v in stats.items()
               if str(meta.features.get(k, {}).get("dtype")) in ("float32", "float64")
               and not all(np.isfinite(np.asarray(x, dtype=np.float64)).all()
                           for x in v.values())]
        if bad:
            from zk0cli.core.stats import vector_stats

            logger.info("statistics of %s are not finite in meta/stats.json; recomputed "
                        "from the %d episodes used", ", ".join(bad), len(episodes))
            stats.update(vector_stats(Path(meta.root), bad, episodes))
    return {rename_map.get(k, k): v for k, v in stats.items()}
