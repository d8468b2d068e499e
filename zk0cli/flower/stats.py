"""The federated statistics step: the server's ``query.stats`` round and the client's answer.

Before round 1 (``data.stats = "federated"``) the server sends a Flower query message
(``message_type = "query.stats"``) to every connected client. Each client answers with
the sufficient statistics of its training episodes (:func:`zk0cli.core.stats.compute_sums`:
count, sums, sums of squares, min, max; never raw data) as JSON in a ``ConfigRecord``.
The server merges the answers exactly (:func:`zk0cli.core.stats.merge_sums`); the merged
sums then ride in every round's train instruction
(:class:`~zk0cli.core.contract.instruction.RunInstruction` ``stats``) and clients rebuild
their processors when they change (:func:`apply_stats`). The query carries the run's
instruction too: a client reads nothing from the coordinator's disk.

Clients that fail to answer are left out of the merge with a warning. A client whose
statistics are not finite (NaN or infinite values in its data) is left out with a named
failure — logged as an error and recorded in ``run.json`` ``stats_left_out`` — so that it
cannot poison every site's normalisation. When none answers, every client keeps its own
statistics (the ``local`` behaviour).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from zk0cli import constants as K
from zk0cli.core.config import RunConfig
from zk0cli.log import logger

if TYPE_CHECKING:
    from zk0cli.core.rundir import RunDir


def query_stats(grid: Any, cfg: RunConfig, instruction: Any, *, rundir: RunDir | None = None
                ) -> str | None:
    """Ask every connected client for its statistics and merge them (server side).

    Waits up to ``federation.node_wait_timeout_s`` (else ``round_timeout_s``) for all
    ``num_clients`` nodes, then queries the connected ones and waits up to
    ``federation.round_timeout_s`` for their answers.

    Args:
        grid: The ServerApp's Flower ``Grid``.
        cfg: The run configuration.
        instruction: The run's :class:`~zk0cli.core.contract.instruction.RunInstruction`.
        rundir: Where ``stats_left_out`` is recorded (``None``: only logged).

    Returns:
        The merged sufficient statistics as JSON, or ``None`` when no client answered.
    """
    from zk0cli.core.checks import non_finite_stats
    from zk0cli.core.contract.instruction import encode
    from zk0cli.core.stats import merge_sums, sums_from_json, sums_to_json
    from zk0cli.core.strategy import wait_for_nodes

    fed = cfg.federation
    node_ids = wait_for_nodes(grid, cfg.num_clients,
                              timeout_s=fed.node_wait_timeout_s or fed.round_timeout_s)
    conf = ConfigRecord(encode(instruction))
    messages = [Message(RecordDict({K.CONFIG_KEY: conf}), dst_node_id=n,
                        message_type=f"{MessageType.QUERY}.{K.STATS_ACTION}")
                for n in node_ids]
    parts = []
    left_out: list[str] = []
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
            left_out.append(f"client {info.get(K.CLIENT_ID, node)}: non-finite statistics "
                            f"for {', '.join(bad)} (NaN or infinite values in its data; "
                            "see its join report or data.skip_bad_episodes)")
            logger.error("statistics: left out of the merge: %s", left_out[-1])
            continue
        parts.append(part)
    if left_out and rundir is not None:
        rundir.update_run(stats_left_out=left_out)
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


def answer_stats(msg: Message, instruction: Any, partition: Any,
                 rename_map: dict[str, str]) -> Message:
    """The client's reply to a ``query.stats`` message.

    Args:
        msg: The query.
        instruction: The run's :class:`~zk0cli.core.contract.instruction.RunInstruction`
            (frames per camera, video backend).
        partition: The client's :class:`~zk0cli.core.data.ClientPartition`.
        rename_map: The client's own dataset key -> policy key.

    Returns:
        A reply whose ``info`` ConfigRecord holds the JSON statistics of the training
        episodes, or ``error`` when they could not be computed.
    """
    from zk0cli.core.stats import compute_sums, sums_to_json

    info: dict[str, Any] = {K.CLIENT_ID: partition.client_id}
    try:
        sums = compute_sums(partition.ref, partition.train_episodes,
                            rename_map=rename_map, image_frames=instruction.stats_image_frames,
                            video_backend=instruction.video_backend)
        info[K.STATS_KEY] = sums_to_json(sums)
    except Exception as err:  # report, never leave the server waiting
        logger.error("client %s: statistics failed: %s", partition.client_id, err)
        info[K.ERROR] = f"{type(err).__name__}: {err}"
    return Message(RecordDict({K.INFO_KEY: ConfigRecord(info)}), reply_to=msg)


def apply_stats(bundle: Any, text: str, rename_map: dict[str, str], current: str | None
                ) -> tuple[Any, str]:
    """Rebuild ``bundle``'s processors with merged statistics when they changed.

    Args:
        bundle: The client's :class:`~zk0cli.core.policy.PolicyBundle`.
        text: Merged sufficient statistics (JSON) from the train instruction.
        rename_map: The client's own dataset key -> policy key.
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
                                rename_map=rename_map)
    logger.info("normalising with the federated statistics %s", digest)
    return replace(bundle, preprocessor=pre, postprocessor=post), digest
