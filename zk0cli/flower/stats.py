"""The federated statistics step: the server's ``query.stats`` round and the client's answer.

Before round 1 (``data.stats = "federated"``) the server sends a Flower query message
(``message_type = "query.stats"``) to every connected client. Each client answers with
the sufficient statistics of its training episodes (:func:`zk0cli.core.stats.compute_sums`:
count, sums, sums of squares, min, max; never raw data) as JSON in a ``ConfigRecord``.
The server merges the answers exactly (:func:`zk0cli.core.stats.merge_sums`); the merged
sums then ride in every round's train config (:data:`zk0cli.constants.STATS_KEY`) and
clients rebuild their processors when they change (:func:`apply_stats`).

Clients that fail to answer are left out of the merge with a warning; when none
answers, every client keeps its own statistics (the ``local`` behaviour).
"""

from __future__ import annotations

from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from zk0cli import constants as K
from zk0cli.core.config import RunConfig
from zk0cli.log import logger


def query_stats(grid: Any, cfg: RunConfig) -> str | None:
    """Ask every connected client for its statistics and merge them (server side).

    Waits up to ``federation.node_wait_timeout_s`` (else ``round_timeout_s``) for all
    ``num_clients`` nodes, then queries the connected ones and waits up to
    ``federation.round_timeout_s`` for their answers.

    Args:
        grid: The ServerApp's Flower ``Grid``.
        cfg: The run configuration.

    Returns:
        The merged sufficient statistics as JSON, or ``None`` when no client answered.
    """
    from zk0cli.core.checks import non_finite_stats
    from zk0cli.core.stats import merge_sums, sums_from_json, sums_to_json
    from zk0cli.core.strategy import wait_for_nodes

    fed = cfg.federation
    node_ids = wait_for_nodes(grid, cfg.num_clients,
                              timeout_s=fed.node_wait_timeout_s or fed.round_timeout_s)
    conf = ConfigRecord({K.IMAGE_FRAMES_KEY: int(cfg.data.stats_image_frames)})
    messages = [Message(RecordDict({K.CONFIG_KEY: conf}), dst_node_id=n,
                        message_type=f"{MessageType.QUERY}.{K.STATS_ACTION}")
                for n in node_ids]
    parts = []
    for reply in grid.send_and_receive(messages, timeout=fed.round_timeout_s):
        node = reply.metadata.src_node_id
        if reply.has_error():
            logger.warning("statistics: node %s failed: %s", node, reply.error.reason)
            continue
        info = reply.content.config_records.get(K.INFO_KEY, ConfigRecord())
        if K.STATS_KEY not in info:
            logger.warning("statistics: client %s: %s", info.get(K.CLIENT_ID, node),
                           info.get(K.ERROR, "no statistics in the reply"))
            continue
        try:
            part = sums_from_json(str(info[K.STATS_KEY]))
        except ValueError as err:
            logger.warning("statistics: client %s: %s", info.get(K.CLIENT_ID, node), err)
            continue
        bad = non_finite_stats(part)
        if bad:  # one site's NaN would poison every site's normalisation
            logger.warning("statistics: client %s left out of the merge: non-finite "
                           "statistics for %s", info.get(K.CLIENT_ID, node), ", ".join(bad))
            continue
        parts.append(part)
    if not parts:
        logger.warning("statistics: no client answered; every client keeps its own "
                       "normalisation statistics")
        return None
    try:
        merged = merge_sums(parts)
    except ValueError as err:
        logger.warning("statistics: cannot merge (%s); clients keep their own", err)
        return None
    counts = {k: s.count for k, s in merged.items() if s.kind == "vector"}
    logger.info("statistics: merged %d of %d clients (%s)", len(parts), len(node_ids),
                ", ".join(f"{k}: {n} frames" for k, n in counts.items()))
    return sums_to_json(merged)


def answer_stats(msg: Message, cfg: RunConfig, partition: Any, client_id: str) -> Message:
    """The client's reply to a ``query.stats`` message.

    Args:
        msg: The query.
        cfg: The run configuration.
        partition: The client's :class:`~zk0cli.core.data.ClientPartition`.
        client_id: Reported with the statistics.

    Returns:
        A reply whose ``info`` ConfigRecord holds the JSON statistics of the training
        episodes, or ``error`` when they could not be computed.
    """
    from zk0cli.core.stats import compute_sums, sums_to_json

    conf = msg.content.config_records.get(K.CONFIG_KEY, ConfigRecord())
    raw = conf.get(K.IMAGE_FRAMES_KEY, cfg.data.stats_image_frames)
    frames = int(raw) if isinstance(raw, int | float) else cfg.data.stats_image_frames
    info: dict[str, Any] = {K.CLIENT_ID: client_id}
    try:
        sums = compute_sums(partition.ref, partition.train_episodes,
                            rename_map=cfg.data.rename_map, image_frames=frames,
                            video_backend=cfg.data.video_backend)
        info[K.STATS_KEY] = sums_to_json(sums)
    except Exception as err:  # report, never leave the server waiting
        logger.error("client %s: statistics failed: %s", client_id, err)
        info[K.ERROR] = f"{type(err).__name__}: {err}"
    return Message(RecordDict({K.INFO_KEY: ConfigRecord(info)}), reply_to=msg)


def apply_stats(bundle: Any, text: str, cfg: RunConfig, current: str | None
                ) -> tuple[Any, str]:
    """Rebuild ``bundle``'s processors with merged statistics when they changed.

    Args:
        bundle: The client's :class:`~zk0cli.core.policy.PolicyBundle`.
        text: Merged sufficient statistics (JSON) from the train config.
        cfg: The run configuration (rename map).
        current: Digest of the statistics ``bundle`` uses now (``None``: its own).

    Returns:
        The (possibly new) bundle and the digest of the statistics it uses.
    """
    from dataclasses import replace

    from zk0cli.core.policy import make_processors
    from zk0cli.core.stats import stats_digest, sums_from_json, to_lerobot_stats

    digest = stats_digest(text)
    if digest == current:
        return bundle, digest
    pre, post = make_processors(bundle.policy.config,
                                stats=to_lerobot_stats(sums_from_json(text)),
                                rename_map=cfg.data.rename_map)
    logger.info("normalising with the federated statistics %s", digest)
    return replace(bundle, preprocessor=pre, postprocessor=post), digest
