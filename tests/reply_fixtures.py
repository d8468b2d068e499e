"""Train replies as a ClientApp sends them and the SuperLink delivers them to the strategy."""

from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict

from zk0cli import constants as K
from zk0cli.core.transport import to_array_record


def reply_metadata(node_id):
    """Metadata of a reply that arrived from ``node_id`` (as the SuperLink fills it in)."""
    return Metadata(run_id=1, message_id=f"m{node_id}", src_node_id=node_id, dst_node_id=0,
                    reply_to_message_id="q", group_id="1", created_at=0.0, ttl=60.0,
                    message_type="train")


def train_reply(state, n, *, client_id="0", node_id=1, metrics=None, failed=False, error=None,
                transport_dtype="float32"):
    """A train reply as the ClientApp builds it; ``state`` is a state dict or an ArrayRecord."""
    numbers = {K.NUM_EXAMPLES_KEY: n, K.LOSS: 1.0, **(metrics or {})}
    info = {K.CLIENT_ID: client_id, K.DATASET_NAME: f"ds{client_id}"}
    if failed:
        numbers[K.FAILED] = 1
        info[K.ERROR] = error or "boom"
    content = {K.METRICS_KEY: MetricRecord(numbers), K.INFO_KEY: ConfigRecord(info)}
    if not failed:
        content[K.ARRAYS_KEY] = (state if isinstance(state, ArrayRecord)
                                 else to_array_record(state, transport_dtype=transport_dtype))
    return Message(RecordDict(content), metadata=reply_metadata(node_id))
