"""Before a federation starts: resolve every dataset once, in this process.

Simulator datasets are generated (or taken from the cache) here, not inside the
Flower clients, so that parallel clients never race to generate the same data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from zk0cli.core.config import RunConfig
from zk0cli.errors import DatasetError
from zk0cli.log import logger


def prepare_datasets(config: RunConfig, *, on_dataset: Callable[[str], None] | None = None
                     ) -> list[str]:
    """Resolve (and for ``source = "sim"`` generate) every client and eval dataset.

    Returns:
        Display names of the datasets, in configuration order.

    Raises:
        DatasetError: A dataset cannot be opened (missing root, wrong version, offline Hub),
            a client's partition would be empty (``data.heldout_episodes`` too large, more
            clients than episodes), ``data.video_backend`` cannot load, its frames are
            unusable (:func:`check_local_dataset`), or a client's dataset does not fit the
            policy's inputs (the join check).
    """
    from zk0cli.core import data as D

    D.check_video_backend(config.data.video_backend)
    D.check_sim_shares(config)  # before minutes of generating simulator datasets
    names = []
    specs = [*config.data.clients[: max(config.num_clients, 1)], *config.data.eval]
    if config.data.partition == "episodes":
        specs = [config.data.clients[0], *config.data.eval]
    sim_specs = [s for s in specs if s.source == "sim"]
    if len(sim_specs) > 1:  # the missing ones at once, one process per core
        from zk0cli.core.sim.cache import ensure_sim_datasets

        if on_dataset:
            on_dataset(", ".join(dict.fromkeys(s.name for s in sim_specs)))
        ensure_sim_datasets([D.sim_key(s, config.data.sim) for s in sim_specs])
    for spec in specs:
        if on_dataset:
            on_dataset(spec.name)
        ref = D.resolve_dataset(spec, config.data.sim)
        meta = D.load_metadata(ref)
        check_local_dataset(ref.name, Path(meta.root), float(meta.fps))
        names.append(ref.name)
        logger.info("dataset ready: %s (%s)", ref.name, ref.root or ref.repo_id)
    D.client_partitions(config)  # every client's share is non-empty, before any process starts
    from zk0cli.core.site import check_all_clients

    check_all_clients(config)  # every client's inputs fit the policy, before any process
    return names


def check_local_dataset(name: str, root: Path, fps: float) -> None:
    """Check the frames of a dataset present on this machine before round 1.

    Timestamps must increase by ``1 / fps`` within LeRobot's tolerance in every episode,
    and state/action values must be finite (:func:`zk0cli.core.checks.check_dataset`).
    A dataset whose frames are not downloaded yet (Hub metadata only) is skipped; its
    site checks it as it joins.

    Raises:
        DatasetError: Naming the dataset and every offending episode id (exit 2).
    """
    from zk0cli.core.checks import check_dataset, describe

    if not any((root / "data").glob("*/*.parquet")):
        return
    problems = check_dataset(root, fps)
    if problems:
        raise DatasetError(describe(name, problems))
