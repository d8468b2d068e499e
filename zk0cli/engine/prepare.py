"""Before a federation starts: resolve every dataset once, in this process.

Simulator datasets are generated (or taken from the cache) here, not inside the
Flower clients, so that parallel clients never race to generate the same data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from zk0cli.core.config import RunConfig
from zk0cli.core.contract import SkippedEpisodes
from zk0cli.errors import DatasetError
from zk0cli.log import logger

if TYPE_CHECKING:
    from zk0cli.core.checks import EpisodeProblem


@dataclass(frozen=True)
class PreparedData:
    """What :func:`prepare_datasets` resolved and checked.

    Attributes:
        names: Display names of the datasets, in configuration order.
        skipped: Per dataset, the episodes ``data.skip_bad_episodes`` drops (empty when
            it is off or every episode is good).
    """

    names: list[str]
    skipped: list[SkippedEpisodes] = field(default_factory=list)

    def describe_skipped(self) -> str | None:
        """One line per dataset with skipped episodes (their count and ids), or ``None``."""
        if not self.skipped:
            return None
        return "\n".join(f"data.skip_bad_episodes: dataset {s.dataset}: skipping "
                         f"{len(s.episodes)} bad episode(s) {s.episodes}" for s in self.skipped)


def prepare_datasets(config: RunConfig, *, on_dataset: Callable[[str], None] | None = None
                     ) -> PreparedData:
    """Resolve (and for ``source = "sim"`` generate) every client and eval dataset.

    Returns:
        The datasets' names and the episodes ``data.skip_bad_episodes`` drops.

    Raises:
        DatasetError: A dataset cannot be opened (missing root, wrong version, offline Hub),
            a client's partition would be empty (``data.heldout_episodes`` too large, more
            clients than episodes, every episode bad), ``data.video_backend`` cannot load,
            its frames are unusable and ``data.skip_bad_episodes`` is off
            (:func:`check_local_dataset`), or a client's dataset does not fit the policy's
            inputs (the join check).
    """
    from zk0cli.core import data as D

    D.check_video_backend(config.data.video_backend)
    D.check_sim_shares(config)  # before minutes of generating simulator datasets
    names: list[str] = []
    skipped: list[SkippedEpisodes] = []
    specs = [*config.data.clients[: max(config.num_clients, 1)], *config.data.eval]
    if config.data.partition == "episodes":
        specs = [config.data.clients[0], *config.data.eval]
    for spec in specs:
        if on_dataset:
            on_dataset(spec.name)
        ref = D.resolve_dataset(spec, config.data.sim)
        meta = D.load_metadata(ref)
        problems = check_local_dataset(ref.name, Path(meta.root), float(meta.fps),
                                       skip=config.data.skip_bad_episodes)
        if problems and ref.name not in {s.dataset for s in skipped}:
            record = skipped_record(ref.name, problems)
            if len(record.episodes) >= int(meta.total_episodes):
                from zk0cli.core.checks import describe

                raise DatasetError(f"every episode is bad; nothing is left to train or "
                                   f"evaluate on. {describe(ref.name, problems)}")
            skipped.append(record)
        names.append(ref.name)
        logger.info("dataset ready: %s (%s)", ref.name, ref.root or ref.repo_id)
    D.client_partitions(config)  # every client's share is non-empty, before any process starts
    from zk0cli.core.site import check_all_clients

    check_all_clients(config)  # every client's inputs fit the policy, before any process
    return PreparedData(names, skipped)


def skipped_record(name: str, problems: Sequence[EpisodeProblem]) -> SkippedEpisodes:
    """The ``run.json`` entry of the episodes of dataset ``name`` that are dropped."""
    from zk0cli.core.checks import problem_ids

    return SkippedEpisodes(dataset=name, episodes=problem_ids(problems),
                           problems=[f"episode {p.episode}: {p.detail}" for p in problems])


def check_local_dataset(name: str, root: Path, fps: float, *, skip: bool = False
                        ) -> list[EpisodeProblem]:
    """Check the frames of a dataset present on this machine before round 1.

    Timestamps must increase by ``1 / fps`` within LeRobot's tolerance in every episode,
    and state/action values must be finite (:func:`zk0cli.core.checks.check_dataset`).
    A dataset whose frames are not downloaded yet (Hub metadata only) is skipped; its
    site checks it as it joins.

    Args:
        name: The dataset's display name.
        root: Its folder.
        fps: Its frames per second.
        skip: ``data.skip_bad_episodes``: return the problems instead of raising.

    Returns:
        The problems of the bad episodes (only with ``skip``; else always ``[]``).

    Raises:
        DatasetError: Naming the dataset and every offending episode id (exit 2), when
            ``skip`` is off.
    """
    from zk0cli.core.checks import dataset_problems, describe

    problems = dataset_problems(root, fps)
    if problems and not skip:
        raise DatasetError(describe(name, problems))
    return problems
