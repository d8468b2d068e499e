"""A benchmark-only ClientApp: no training, replies with the perturbed global tensors.

Selected with ``make_app_dir(directory, clientapp="benchmarks.bench_clientapp:app")`` by
:mod:`server_memory`, so that ``zk0 simulate``'s real server process (flwr-simulation:
the zk0 ServerApp, the SuperLink state and the Ray driver) receives N full-size replies
through the real transport while the clients cost only a decode, a perturbation and an
encode. The shipped ClientApp is not touched.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Reply with ``global + 1e-3 · noise`` (seeded by the partition id) as the update."""
    import torch

    from zk0cli import constants as K
    from zk0cli.core.transport import from_array_record, to_array_record
    from zk0cli.flower.common import run_config_of

    cfg, _ = run_config_of(dict(context.run_config))
    client_id = str(context.node_config.get(K.PARTITION_ID_KEY, context.node_id))
    tensors = from_array_record(msg.content.array_records[K.ARRAYS_KEY])
    g = torch.Generator().manual_seed(int(client_id))
    for t in tensors.values():
        t.add_(torch.randn(t.shape, generator=g, dtype=t.dtype), alpha=1e-3)
    record = to_array_record(tensors, transport_dtype=cfg.federation.transport_dtype)
    del tensors
    numbers: dict[str, Any] = {K.NUM_EXAMPLES_KEY: 8 + int(client_id), K.LOSS: 1.0,
                               K.POLICY_LOSS: 1.0, K.FEDPROX_LOSS: 0.0, K.SECONDS: 0.0,
                               K.NUM_STEPS: 0}
    content = RecordDict({
        K.ARRAYS_KEY: record,
        K.METRICS_KEY: MetricRecord(numbers),
        K.INFO_KEY: ConfigRecord({K.CLIENT_ID: client_id, K.DATASET_NAME: "bench"}),
    })
    return Message(content, reply_to=msg)
