"""Before a federation starts: resolve every dataset once, in this process.

Simulator datasets are generated (or taken from the cache) here, not inside the
Flower clients, so that parallel clients never race to generate the same data.
"""

from __future__ import annotations

from collections.abc import Callable

from zk0cli.core.config import RunConfig
from zk0cli.log import logger


def prepare_datasets(config: RunConfig, *, on_dataset: Callable[[str], None] | None = None
                     ) -> list[str]:
    """Resolve (and for ``source = "sim"`` generate) every client and eval dataset.

    Returns:
        Display names of the datasets, in configuration order.

    Raises:
        DatasetError: A dataset cannot be opened (missing root, wrong version, offline Hub),
            or a client's dataset does not fit the policy's inputs (the join check).
    """
    from zk0cli.core import data as D

    names = []
    specs = [*config.data.clients[: max(config.num_clients, 1)], *config.data.eval]
    if config.data.partition == "episodes":
        specs = [config.data.clients[0], *config.data.eval]
    for spec in specs:
        if on_dataset:
            on_dataset(spec.name)
        ref = D.resolve_dataset(spec, config.data.sim)
        D.load_metadata(ref)
        names.append(ref.name)
        logger.info("dataset ready: %s (%s)", ref.name, ref.root or ref.repo_id)
    from zk0cli.core.site import check_all_clients

    check_all_clients(config)  # every client's inputs fit the policy, before any process
    return names
