"""The zk0 ClientApp: one round of local FedProx training on this site's dataset.

Which dataset a client trains on: in simulation, ``data.clients`` entry (or episode
share) number ``partition-id``; in deployment, the SuperNode's node config
(``dataset`` and optional ``dataset-root``, see ``zk0 train supernode``).

Every message gets a reply. When local training fails, the reply carries the failure
(``failed`` = 1 and the error text) instead of weights, so the server can record it and
go on without waiting for the round timeout.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from zk0cli import constants as K
from zk0cli.core.config import DatasetSpec, RunConfig
from zk0cli.flower.actor_restarts import install_in_simulation_runtime
from zk0cli.flower.common import fault_for, run_config_of
from zk0cli.log import logger, quiet_libraries

app = ClientApp()
quiet_libraries()  # this module is the ClientApp's entry point (loaded by Flower)

# In Flower's simulation runtime, dead Ray workers are replaced (zk0cli.flower.actor_restarts).
install_in_simulation_runtime()


@dataclass
class _ClientState:
    key: tuple[Any, ...]
    client_id: str
    dataset_name: str
    bundle: Any
    dataset: Any
    stats_digest: str | None = None  # federated statistics in use (None: the dataset's own)


_CACHE: dict[str, _ClientState] = {}  # one warm client per process (Ray actors are reused)


def _partition(cfg: RunConfig, context: Context) -> Any:
    """This client's dataset partition (simulation: partition-id; deployment: node config)."""
    from zk0cli.core import data as D

    node = context.node_config
    if K.NODE_DATASET_KEY in node:
        name = str(node[K.NODE_DATASET_KEY])
        root = str(node.get(K.NODE_DATASET_ROOT_KEY, "")) or None
        spec = DatasetSpec(source="local" if root else "hub", name=name, root=root)
        ref = D.resolve_dataset(spec, cfg.data.sim)
        meta = D.load_metadata(ref)
        n = int(meta.total_episodes)
        k = cfg.data.heldout_episodes if n > cfg.data.heldout_episodes else 0
        client_id = str(node.get(K.PARTITION_ID_KEY, context.node_id))
        return D.ClientPartition(client_id, name, ref, list(range(n - k)), list(range(n - k, n)))
    pid = int(node[K.PARTITION_ID_KEY])
    return D.client_partition(cfg, pid)


def _state(cfg: RunConfig, context: Context, cfg_key: str) -> _ClientState:
    from zk0cli.core import data as D
    from zk0cli.core.policy import build_policy

    # The partition follows from the config and the node config: check the warm client
    # before resolving it (that reads every client dataset's metadata, ~0.2 s a round).
    key = (cfg_key, tuple(sorted((k, str(v)) for k, v in context.node_config.items())))
    cached = _CACHE.get("client")
    if cached is not None and cached.key == key:
        return cached
    part = _partition(cfg, context)
    _CACHE.clear()
    if K.NODE_DATASET_KEY not in context.node_config:
        import torch  # simulation: clients share the machine; use the CPUs Ray reserved

        torch.set_num_threads(cfg.federation.client_cpus)
    meta = D.load_metadata(part.ref)
    bundle = build_policy(cfg.model, meta=meta, rename_map=cfg.data.rename_map,
                          stats=D.dataset_stats(meta, cfg.data.rename_map), seed=cfg.seed,
                          allow_missing_cameras=cfg.model.allow_missing_cameras)
    dataset = D.open_dataset(part.ref, episodes=part.train_episodes,
                             chunk_size=bundle.policy.config.chunk_size,
                             video_backend=cfg.data.video_backend)
    state = _ClientState(key, part.client_id, part.name, bundle, dataset)
    _CACHE["client"] = state
    return state


def _number(conf: ConfigRecord, key: str, default: float) -> float:
    """A numeric train-config value sent by the server.

    Raises:
        ValueError: The server sent something that is not a number.
    """
    value = conf.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"train config {key!r} must be a number, got {value!r}")
    return float(value)


def _round_seed(seed: int, server_round: int, client_id: str) -> int:
    """Seed of one client's round: data order, flow-matching noise and time."""
    import zlib

    return (seed * 1_000_003 + server_round * 7919 + zlib.crc32(client_id.encode())) % 2**31


def _inject(fault: str, tensors: dict[str, Any]) -> dict[str, Any]:
    import torch

    name = sorted(tensors)[0]
    if fault == "raise":
        raise RuntimeError("injected client failure (ZK0_FAULT_INJECTION)")
    if fault == "hang":
        time.sleep(10**6)
    if fault == "nan":
        tensors[name] = torch.full_like(tensors[name], float("nan"))
    if fault == "shape":
        tensors[name] = torch.zeros(1)
    return tensors


def _failure_reply(msg: Message, client_id: str, error: str) -> Message:
    metrics = MetricRecord({K.FAILED: 1, K.NUM_EXAMPLES_KEY: 0})
    info = ConfigRecord({K.CLIENT_ID: client_id, K.ERROR: error})
    return Message(RecordDict({K.METRICS_KEY: metrics, K.INFO_KEY: info}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train on the local dataset from the received global tensors; reply with the update."""
    client_id = str(context.node_config.get(K.PARTITION_ID_KEY, context.node_id))
    try:
        from zk0cli.core.data import make_loader
        from zk0cli.core.policy import set_trainable_state
        from zk0cli.core.trainer import train_round
        from zk0cli.core.transport import from_array_record, to_array_record

        cfg, _run_dir = run_config_of(dict(context.run_config))
        state = _state(cfg, context, str(context.run_config.get(K.RUN_CONFIG_PATH_KEY)))
        client_id = state.client_id
        conf = msg.content.config_records[K.CONFIG_KEY]
        server_round = int(_number(conf, K.ROUND_KEY, _number(conf, K.SERVER_ROUND_KEY, 0)))
        if K.STATS_KEY in conf:  # data.stats = "federated": normalise with the merged stats
            from zk0cli.flower.stats import apply_stats

            state.bundle, state.stats_digest = apply_stats(
                state.bundle, str(conf[K.STATS_KEY]), cfg, state.stats_digest)
        set_trainable_state(state.bundle.policy,
                            from_array_record(msg.content.array_records[K.ARRAYS_KEY]),
                            source="server")
        # A fresh loader per round, seeded by (seed, round, client): the data order of a
        # round does not depend on which process ran the earlier rounds (resume-safe).
        loader = make_loader(state.dataset, batch_size=cfg.training.batch_size, shuffle=True,
                             seed=_round_seed(cfg.seed, server_round, client_id),
                             num_workers=cfg.training.num_workers)
        result = train_round(
            state.bundle, loader,
            steps=int(_number(conf, K.STEPS_KEY, cfg.training.steps_per_round)),
            lr=_number(conf, K.LR_KEY, cfg.training.lr),
            mu=_number(conf, K.PROXIMAL_MU_KEY, 0.0),
            training=cfg.training, dataset_name=state.dataset_name,
            seed=_round_seed(cfg.seed, server_round, client_id),
        )
        tensors = result.tensors
        fault = fault_for(client_id)
        if fault:
            tensors = _inject(fault, dict(tensors))
    except Exception as err:  # report, never leave the server waiting
        logger.error("client %s: local training failed: %s", client_id, err)
        logger.debug("%s", traceback.format_exc())
        return _failure_reply(msg, client_id, f"{type(err).__name__}: {err}")
    numbers: dict[str, Any] = {k: v for k, v in result.metrics.items()
                               if isinstance(v, int | float) and not isinstance(v, bool)}
    numbers[K.NUM_EXAMPLES_KEY] = int(result.metrics[K.NUM_EXAMPLES])
    strings: dict[str, Any] = {k: v for k, v in result.metrics.items() if isinstance(v, str)}
    strings[K.CLIENT_ID] = client_id
    content = RecordDict({
        K.ARRAYS_KEY: to_array_record(tensors, transport_dtype=cfg.federation.transport_dtype),
        K.METRICS_KEY: MetricRecord(numbers),
        K.INFO_KEY: ConfigRecord(strings),
    })
    return Message(content, reply_to=msg)


@app.query(K.STATS_ACTION)
def stats(msg: Message, context: Context) -> Message:
    """Reply with the sufficient statistics of this client's training episodes."""
    from zk0cli.flower.stats import answer_stats

    client_id = str(context.node_config.get(K.PARTITION_ID_KEY, context.node_id))
    try:
        cfg, _run_dir = run_config_of(dict(context.run_config))
        part = _partition(cfg, context)
    except Exception as err:  # report, never leave the server waiting
        info = ConfigRecord({K.CLIENT_ID: client_id, K.ERROR: f"{type(err).__name__}: {err}"})
        return Message(RecordDict({K.INFO_KEY: info}), reply_to=msg)
    return answer_stats(msg, cfg, part, part.client_id)
