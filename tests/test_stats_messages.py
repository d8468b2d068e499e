"""The query.stats reply and the clients' processor rebuild, without Flower processes."""

import numpy as np
from flwr.app import ConfigRecord, Message, Metadata, RecordDict

from zk0cli import constants as K
from zk0cli.core.config import load_config
from zk0cli.core.contract.instruction import decode_run, encode, run_instruction
from zk0cli.core.data import ClientPartition
from zk0cli.core.stats import compute_sums, stats_digest, sums_from_json, sums_to_json
from zk0cli.flower.stats import answer_stats, apply_stats


def _instruction(frames):
    cfg = load_config(preset="tiny", overrides=[f"data.stats_image_frames={frames}"])
    return run_instruction(cfg, input_features={}, stats=None, simulation=False)


def _query(frames):
    meta = Metadata(run_id=1, message_id="q1", src_node_id=0, dst_node_id=3,
                    reply_to_message_id="", group_id="0", created_at=0.0, ttl=60.0,
                    message_type="query.stats")
    conf = ConfigRecord(encode(_instruction(frames)))
    return Message(RecordDict({K.CONFIG_KEY: conf}), metadata=meta)


def test_answer_carries_sums_of_the_training_episodes_only(so101_ref):
    query = _query(4)
    instr = decode_run(query.content.config_records[K.CONFIG_KEY])  # as the client reads it
    assert instr.stats_image_frames == 4
    part = ClientPartition("3", so101_ref.name, so101_ref, [0, 1], [2, 3])
    reply = answer_stats(query, instr, part, {})
    info = reply.content[K.INFO_KEY]
    assert info[K.CLIENT_ID] == "3" and K.ERROR not in info
    sums = sums_from_json(str(info[K.STATS_KEY]))
    assert sums["action"].count == 40  # 2 episodes × 20 frames, not the held-out ones
    assert sums["observation.images.top"].count == 4 * 32 * 32
    broken = ClientPartition("3", "missing", so101_ref, [], [])
    info = answer_stats(query, instr, broken, {}).content[K.INFO_KEY]
    assert K.STATS_KEY not in info and "no episodes" in str(info[K.ERROR])


def test_apply_stats_rebuilds_processors_only_when_they_change(make_bundle, so101_ref):
    bundle = make_bundle(seed=0)
    sums = compute_sums(so101_ref, [0], rename_map={}, image_frames=0)
    text = sums_to_json(sums)
    new, digest = apply_stats(bundle, text, {}, None)
    assert digest == stats_digest(text) and new.policy is bundle.policy
    assert new.preprocessor is not bundle.preprocessor
    norm = next(s for s in new.preprocessor.steps if getattr(s, "_tensor_stats", None))
    mean = sums["action"].sum / sums["action"].count
    np.testing.assert_allclose(norm._tensor_stats["action"]["mean"].numpy(), mean, rtol=1e-6)
    same, digest2 = apply_stats(new, text, {}, digest)
    assert same is new and digest2 == digest
