"""The zk0 ClientApp: one round of local FedProx training on this site's dataset.

A ClientApp reads nothing from the coordinator's disk: the run's settings arrive in every
message as the train instruction (:mod:`zk0cli.core.contract.instruction`), and the site
owns the rest — its dataset, rename map, device and workers (:class:`~zk0cli.core.config.
SiteConfig`, named in the node config by ``zk0 train supernode``). In simulation the data
plan (``data.clients`` entry or episode share number ``partition-id``) travels in the
instruction, since every simulated client runs on the coordinator.

Every message gets a reply. When local training fails, or the instruction cannot be
read, the reply carries the failure (``failed`` = 1 and the error text) instead of
weights, so the server can record it and go on without waiting for the round timeout.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from zk0cli import constants as K
from zk0cli.core.config import SiteConfig
from zk0cli.flower.actor_restarts import install_in_simulation_runtime
from zk0cli.log import logger, quiet_libraries

app = ClientApp()
quiet_libraries()  # this module is the ClientApp's entry point (loaded by Flower)

# In Flower's simulation runtime, dead Ray workers are replaced (zk0cli.flower.actor_restarts).
install_in_simulation_runtime()

#: ``tamper(client_id, tensors) -> tensors``: a hook for test ClientApps (never set here).
Tamper = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass
class _ClientState:
    key: tuple[Any, ...]
    client_id: str
    dataset_name: str
    bundle: Any
    dataset: Any
    rename_map: dict[str, str]
    num_workers: int
    stats_digest: str | None = None  # federated statistics in use (None: the dataset's own)


@dataclass(frozen=True)
class SitePlan:
    """What this client trains on, and with which of its own settings.

    Attributes:
        partition: The :class:`~zk0cli.core.data.ClientPartition`.
        meta: The dataset's LeRobot metadata.
        rename_map: Dataset key -> policy key (the site's own; in simulation the client
            entry's ``rename_map``, else ``data.rename_map``).
        device: Torch device name of local training.
        num_workers: DataLoader workers.
        simulated: ``True`` in simulation (clients share the coordinator's CPUs).
    """

    partition: Any
    meta: Any
    rename_map: dict[str, str]
    device: str
    num_workers: int
    simulated: bool


_CACHE: dict[str, _ClientState] = {}  # one warm client per process (Ray actors are reused)


def site_of(context: Context) -> SiteConfig | None:
    """The site's settings from the node config (``None`` in simulation).

    ``zk0 train supernode`` names the site file (JSON, written in the site's state folder)
    under :data:`~zk0cli.constants.NODE_SITE_CONFIG_KEY`; a SuperNode started by hand may
    give ``dataset`` (and ``dataset-root``) instead.
    """
    node = context.node_config
    if K.NODE_SITE_CONFIG_KEY in node:
        path = Path(str(node[K.NODE_SITE_CONFIG_KEY]))
        return SiteConfig.model_validate(json.loads(path.read_text(encoding="utf-8")))
    if K.NODE_DATASET_KEY in node:
        return SiteConfig(dataset=str(node[K.NODE_DATASET_KEY]),
                          dataset_root=str(node.get(K.NODE_DATASET_ROOT_KEY, "")) or None,
                          client_id=str(node[K.PARTITION_ID_KEY])
                          if K.PARTITION_ID_KEY in node else None)
    return None


def plan_of(instr: Any, context: Context) -> SitePlan:
    """This client's dataset partition and settings (deployment: its site; simulation: plan).

    Raises:
        DatasetError: The dataset cannot be opened or holding out episodes leaves none.
        InstructionError: A simulated client got an instruction without the data plan.
    """
    from zk0cli.core import data as D

    site = site_of(context)
    if site is not None:
        from zk0cli.core.site import dataset_ref

        ref = dataset_ref(site)
        meta = D.load_metadata(ref)
        client_id = site.client_id or str(context.node_id)
        part = D.site_partition(client_id, ref, meta, heldout_episodes=instr.heldout_episodes,
                                skip_bad_episodes=instr.skip_bad_episodes)
        return SitePlan(part, meta, dict(site.rename_map), site.device, site.num_workers,
                        simulated=False)
    if instr.simulation is None:
        from zk0cli.errors import InstructionError

        raise InstructionError("simulation", None, "the data plan of a simulated run (this "
                               "node has no site settings in its node config)")
    from zk0cli.core.config import FederationConfig, RunConfig

    cfg = RunConfig(data=instr.simulation, model=instr.model,
                    federation=FederationConfig(num_clients=instr.num_clients))
    index = int(context.node_config[K.PARTITION_ID_KEY])
    part = D.client_partition(cfg, index)
    return SitePlan(part, D.load_metadata(part.ref), instr.simulation.client_rename_map(index),
                    instr.model.device, instr.training.num_workers, simulated=True)


def _check_join(instr: Any, plan: SitePlan) -> Any:
    """The join report of this client (see :func:`zk0cli.core.site.join_report`).

    A deployed site also checks its frames (:func:`zk0cli.core.site.with_episode_checks`).
    """
    from zk0cli.core.site import dataset_shapes, join_report, with_episode_checks

    report = join_report(plan.partition.client_id, plan.partition.name,
                         dataset_shapes(plan.meta), plan.rename_map, instr.input_features,
                         allow_missing_cameras=instr.allow_missing_cameras)
    if plan.simulated:  # zk0 simulate checked every dataset's frames before it started
        return report
    return with_episode_checks(report, plan.meta, plan.partition.skipped,
                               skip_bad=instr.skip_bad_episodes)


def _state(instr: Any, context: Context) -> _ClientState:
    from zk0cli.core import data as D
    from zk0cli.core.policy import build_policy
    from zk0cli.errors import DatasetError

    # Warm client: the run's settings (without the per-round values and statistics) and
    # the node config decide the policy and the dataset.
    run_part = instr.model_dump_json(exclude={"stats", "round", "lr", "steps", "mu",
                                                "epsilon"})
    key = (run_part, tuple(sorted((k, str(v)) for k, v in context.node_config.items())))
    cached = _CACHE.get("client")
    if cached is not None and cached.key == key:
        return cached
    plan = plan_of(instr, context)
    report = _check_join(instr, plan)
    if not report.ok:
        raise DatasetError(report.describe())
    _CACHE.clear()
    if plan.simulated:
        import torch  # simulation: clients share the machine; use the CPUs Ray reserved

        torch.set_num_threads(instr.client_cpus)
    model = instr.model.model_copy(update={"device": plan.device})
    bundle = build_policy(model, meta=plan.meta, rename_map=plan.rename_map,
                          stats=D.dataset_stats(plan.meta, plan.rename_map,
                                                episodes=plan.partition.train_episodes),
                          seed=instr.seed,
                          allow_missing_cameras=instr.allow_missing_cameras)
    dataset = D.open_dataset(plan.partition.ref, episodes=plan.partition.train_episodes,
                             chunk_size=bundle.policy.config.chunk_size,
                             video_backend=instr.video_backend)
    state = _ClientState(key, plan.partition.client_id, plan.partition.name, bundle, dataset,
                         plan.rename_map, plan.num_workers)
    _CACHE["client"] = state
    return state


def _round_seed(seed: int, server_round: int, client_id: str) -> int:
    """Seed of one client's round: data order, flow-matching noise and time."""
    import zlib

    return (seed * 1_000_003 + server_round * 7919 + zlib.crc32(client_id.encode())) % 2**31


def failure_reply(msg: Message, client_id: str, error: str) -> Message:
    """A train reply that carries a failure instead of weights."""
    metrics = MetricRecord({K.FAILED: 1, K.NUM_EXAMPLES_KEY: 0})
    info = ConfigRecord({K.CLIENT_ID: client_id, K.ERROR: error})
    return Message(RecordDict({K.METRICS_KEY: metrics, K.INFO_KEY: info}), reply_to=msg)


def _client_id(context: Context) -> str:
    node = context.node_config
    if K.PARTITION_ID_KEY in node:
        return str(node[K.PARTITION_ID_KEY])
    try:
        site = site_of(context)
    except Exception:  # noqa: BLE001 - the handler reports it
        site = None
    return site.client_id if site is not None and site.client_id else str(context.node_id)


def run_train(msg: Message, context: Context, *, tamper: Tamper | None = None) -> Message:
    """Train on the local dataset from the received global tensors; the reply.

    Args:
        msg: The train message (global tensors and the train instruction).
        context: The node's context (node config: the site's settings).
        tamper: Test hook applied to the tensors before they are sent.

    Returns:
        The update, or a failure reply naming the error.
    """
    client_id = _client_id(context)
    try:
        from zk0cli.core.contract.instruction import decode_train
        from zk0cli.core.data import make_loader
        from zk0cli.core.policy import set_trainable_state
        from zk0cli.core.trainer import train_round
        from zk0cli.core.transport import from_array_record

        instr = decode_train(msg.content.config_records[K.CONFIG_KEY])
        refusal = privacy_refusal(instr, context)
        if refusal is not None:  # the site's own privacy limits: no training at all
            logger.error("client %s: %s", client_id, refusal)
            return failure_reply(msg, client_id, refusal)
        state = _state(instr, context)
        client_id = state.client_id
        if instr.stats is not None:  # data.stats = "federated": normalise with merged stats
            from zk0cli.flower.stats import apply_stats

            state.bundle, state.stats_digest = apply_stats(
                state.bundle, instr.stats, state.rename_map, state.stats_digest)
        received = from_array_record(msg.content.array_records[K.ARRAYS_KEY])
        set_trainable_state(state.bundle.policy, received, source="server")
        # A fresh loader per round, seeded by (seed, round, client): the data order of a
        # round does not depend on which process ran the earlier rounds (resume-safe).
        seed = _round_seed(instr.seed, instr.round, client_id)
        loader = make_loader(state.dataset, batch_size=instr.training.batch_size,
                             shuffle=True, seed=seed, num_workers=state.num_workers)
        result = train_round(state.bundle, loader, steps=instr.steps, lr=instr.lr,
                             mu=instr.mu, training=instr.training,
                             dataset_name=state.dataset_name, seed=seed)
        tensors = result.tensors
        if instr.privacy is not None:  # clip the decoded float update before encoding it
            from zk0cli.core.privacy import clip_update
            from zk0cli.core.transport import tensor_hash

            tensors, pre_clip = clip_update(tensors, received, instr.privacy.clipping_norm)
            result.metrics[K.DP_PRE_CLIP_NORM] = pre_clip
            result.metrics[K.PARAM_HASH] = tensor_hash(tensors)  # of the tensors sent
        del received
        tensors = tensors if tamper is None else tamper(client_id, dict(tensors))
    except Exception as err:  # report, never leave the server waiting
        logger.error("client %s: local training failed: %s", client_id, err)
        logger.debug("%s", traceback.format_exc())
        return failure_reply(msg, client_id, f"{type(err).__name__}: {err}")
    return _update_reply(msg, client_id, tensors, result.metrics, instr.transport_dtype)


def privacy_refusal(instr: Any, context: Context) -> str | None:
    """Why this site refuses the round under its own privacy limits (``None``: it trains).

    The limits are the site's (``privacy`` of its :class:`~zk0cli.core.config.SiteConfig`),
    never the coordinator's: a simulated client has none.

    Returns:
        ``"site privacy limit: ..."`` naming every broken limit and the run's value.
    """
    from zk0cli.core.privacy import site_limit_problems

    site = site_of(context)
    if site is None:
        return None
    problems = site_limit_problems(site.privacy, instr.privacy,
                                   epsilon=getattr(instr, "epsilon", None))
    return "refused by the site's privacy limits: " + "; ".join(problems) if problems else None


def _update_reply(msg: Message, client_id: str, tensors: dict[str, Any],
                  metrics: dict[str, Any], transport_dtype: Any) -> Message:
    from zk0cli.core.transport import to_array_record

    numbers: dict[str, Any] = {k: v for k, v in metrics.items()
                               if isinstance(v, int | float) and not isinstance(v, bool)}
    numbers[K.NUM_EXAMPLES_KEY] = int(metrics[K.NUM_EXAMPLES])
    strings: dict[str, Any] = {k: v for k, v in metrics.items() if isinstance(v, str)}
    strings[K.CLIENT_ID] = client_id
    from zk0cli.engine.raycluster import ray_node_id

    node = ray_node_id()  # simulation: which node of the Ray cluster ran this round
    if node is not None:
        strings[K.RAY_NODE_ID] = node
    content = RecordDict({
        K.ARRAYS_KEY: to_array_record(tensors, transport_dtype=transport_dtype),
        K.METRICS_KEY: MetricRecord(numbers),
        K.INFO_KEY: ConfigRecord(strings),
    })
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train on the local dataset from the received global tensors; reply with the update."""
    return run_train(msg, context)


def _error_info(msg: Message, client_id: str, err: Exception) -> Message:
    info = ConfigRecord({K.CLIENT_ID: client_id, K.ERROR: f"{type(err).__name__}: {err}"})
    return Message(RecordDict({K.INFO_KEY: info}), reply_to=msg)


@app.query(K.STATS_ACTION)
def stats(msg: Message, context: Context) -> Message:
    """Reply with the sufficient statistics of this client's training episodes."""
    from zk0cli.core.contract.instruction import decode_run
    from zk0cli.flower.stats import answer_stats

    client_id = _client_id(context)
    try:
        instr = decode_run(msg.content.config_records.get(K.CONFIG_KEY, ConfigRecord()))
        plan = plan_of(instr, context)
    except Exception as err:  # report, never leave the server waiting
        return _error_info(msg, client_id, err)
    return answer_stats(msg, instr, plan.partition, plan.rename_map)


@app.query(K.JOIN_ACTION)
def join(msg: Message, context: Context) -> Message:
    """Reply with this site's join report: its dataset against the policy's inputs."""
    from zk0cli.core.contract.instruction import decode_run
    from zk0cli.core.site import JoinReport

    client_id = _client_id(context)
    try:
        instr = decode_run(msg.content.config_records.get(K.CONFIG_KEY, ConfigRecord()))
        plan = plan_of(instr, context)
        report = _check_join(instr, plan)
        refusal = privacy_refusal(instr, context)
        if refusal is not None:  # reported before round 1, with the join check
            report = report.model_copy(update={"ok": False,
                                               "problems": [*report.problems, refusal]})
    except Exception as err:  # report, never leave the server waiting
        site = site_of_safe(context)
        report = JoinReport(client_id=client_id, dataset=site.dataset if site else "?",
                            ok=False, problems=[f"{type(err).__name__}: {err}"])
    info = ConfigRecord({K.CLIENT_ID: report.client_id,
                         K.JOIN_REPORT_KEY: report.model_dump_json()})
    return Message(RecordDict({K.INFO_KEY: info}), reply_to=msg)


def site_of_safe(context: Context) -> SiteConfig | None:
    """:func:`site_of`, or ``None`` when the site file cannot be read."""
    try:
        return site_of(context)
    except Exception:  # noqa: BLE001 - only for naming the site in a failure report
        return None
