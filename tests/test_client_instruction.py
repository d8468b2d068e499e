"""The deployed ClientApp reads only the messages and its own site file (no Flower
processes): a train message with the instruction trains; the coordinator's paths in the
run config are never opened; a bad instruction or a mismatched site gets a failure reply."""

import json

from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from zk0cli import constants as K
from zk0cli.core.config import SiteConfig, load_config
from zk0cli.core.contract.instruction import encode, features_of, run_instruction
from zk0cli.core.policy import get_trainable_state
from zk0cli.core.site import JoinReport
from zk0cli.core.transport import to_array_record
from zk0cli.flower import client_app


def _message(kind, content):
    meta = Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=7,
                    reply_to_message_id="", group_id="1", created_at=0.0, ttl=600.0,
                    message_type=kind)
    return Message(content, metadata=meta)


def _context(tmp_path, site):
    path = tmp_path / "state" / "site.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(site.model_dump_json())
    # The run config names the coordinator's files: a site must never open them.
    run_config = {K.RUN_CONFIG_PATH_KEY: "/coordinator/run/config.json",
                  K.RUN_DIR_KEY: "/coordinator/run"}
    return Context(run_id=1, node_id=7, node_config={K.NODE_SITE_CONFIG_KEY: str(path)},
                   state=RecordDict(), run_config=run_config)


def _instruction(bundle, *extra):
    cfg = load_config(preset="tiny", overrides=["data.heldout_episodes=1",
                                                "training.batch_size=2", "model.device=cpu",
                                                *extra])
    return run_instruction(cfg, input_features=features_of(bundle.policy.config), stats=None,
                           simulation=False)


def _train_message(bundle, instr, **round_values):
    conf = ConfigRecord({**encode(instr), K.ROUND_KEY: 1, K.LR_KEY: 1e-3, K.STEPS_KEY: 2,
                         K.PROXIMAL_MU_KEY: 0.1, K.SERVER_ROUND_KEY: 1, **round_values})
    arrays = to_array_record(get_trainable_state(bundle.policy), transport_dtype="float32")
    return _message("train", RecordDict({K.ARRAYS_KEY: arrays, K.CONFIG_KEY: conf}))


def test_site_trains_from_the_instruction_and_its_own_site_file(tmp_path, make_bundle,
                                                                so101_root):
    bundle = make_bundle(seed=1)
    instr = _instruction(bundle)
    site = SiteConfig(dataset="zk0test/so101", dataset_root=so101_root, device="cpu",
                      client_id="lab-a")
    client_app._CACHE.clear()
    reply = client_app.train(_train_message(bundle, instr), _context(tmp_path, site))
    info = reply.content.config_records[K.INFO_KEY]
    metrics = reply.content.metric_records[K.METRICS_KEY]
    assert K.ERROR not in info, info[K.ERROR]
    assert info[K.CLIENT_ID] == "lab-a" and info[K.DATASET_NAME] == "zk0test/so101"
    assert metrics[K.NUM_STEPS] == 2 and metrics[K.FEDPROX_LOSS] > 0  # mu = 0.1 arrived
    # A missing proximal mu is a failure naming it, not mu = 0.
    msg = _train_message(bundle, instr)
    del msg.content.config_records[K.CONFIG_KEY][K.PROXIMAL_MU_KEY]
    reply = client_app.train(msg, _context(tmp_path, site))
    err = str(reply.content.config_records[K.INFO_KEY][K.ERROR])
    assert "InstructionError" in err and K.PROXIMAL_MU_KEY in err
    assert reply.content.metric_records[K.METRICS_KEY][K.FAILED] == 1


def test_join_query_reports_the_rename_map_fix(tmp_path, make_bundle, dataset_writer):
    bundle = make_bundle(seed=1)  # the policy declares cameras top and wrist
    instr = _instruction(bundle)
    other = dataset_writer(tmp_path / "other", repo_id="zk0test/other", episodes=3, frames=8,
                           cameras=("front", "wrist"), size=48)
    site = SiteConfig(dataset="zk0test/other", dataset_root=other, client_id="lab-b")
    query = _message("query.join", RecordDict({K.CONFIG_KEY: ConfigRecord(encode(instr))}))
    client_app._CACHE.clear()
    reply = client_app.join(query, _context(tmp_path, site))
    report = JoinReport.model_validate_json(
        str(reply.content.config_records[K.INFO_KEY][K.JOIN_REPORT_KEY]))
    assert not report.ok and report.client_id == "lab-b"
    assert report.rename_fix == {"observation.images.front": "observation.images.top"}
    fixed = site.model_copy(update={"rename_map": report.rename_fix})
    reply = client_app.join(query, _context(tmp_path, fixed))
    assert json.loads(str(reply.content.config_records[K.INFO_KEY][K.JOIN_REPORT_KEY]))["ok"]
    # Training on the unfixed site fails with the report, never on other inputs.
    reply = client_app.train(_train_message(bundle, instr), _context(tmp_path, site))
    assert "observation.images.front" in str(reply.content.config_records[K.INFO_KEY][K.ERROR])


class _Grid:
    """A stand-in for Flower's Grid: node id -> site context, replies by the real app."""

    def __init__(self, contexts):
        self.contexts = contexts

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, timeout):
        out = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = f"q{m.metadata.dst_node_id}"
            handler = client_app.stats if m.metadata.message_type.endswith(
                K.STATS_ACTION) else client_app.join
            out.append(handler(m, self.contexts[m.metadata.dst_node_id]))
        return out


def test_server_join_check_stops_below_min_clients(tmp_path, make_bundle, so101_root,
                                                   dataset_writer, monkeypatch):
    import pytest
    from flwr.supercore.task_identity import TaskIdentity

    from zk0cli.flower.join import JoinCheckError, query_join

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)  # what a ServerApp process has set
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    bundle = make_bundle(seed=1)
    instr = _instruction(bundle)
    other = dataset_writer(tmp_path / "other", repo_id="zk0test/other", episodes=3, frames=8,
                           cameras=("front", "wrist"), size=48)
    good = SiteConfig(dataset="zk0test/so101", dataset_root=so101_root, client_id="lab-a")
    bad = SiteConfig(dataset="zk0test/other", dataset_root=other, client_id="lab-b")
    grid = _Grid({1: _context(tmp_path / "a", good), 2: _context(tmp_path / "b", bad)})
    cfg = load_config(preset="tiny", overrides=["federation.min_clients=2",
                                                "federation.node_wait_timeout_s=1"])
    with pytest.raises(JoinCheckError) as err:
        query_join(grid, cfg, instr)
    text = str(err.value)
    assert "1 of 2 site(s)" in text and "site lab-b (zk0test/other): REFUSED" in text
    assert '"observation.images.front" = "observation.images.top"' in text
    ok = query_join(grid, cfg.model_copy(update={"federation": cfg.federation.model_copy(
        update={"min_clients": 1})}), instr)
    assert [r.ok for r in sorted(ok, key=lambda r: r.client_id)] == [True, False]


def test_a_site_with_bad_episodes_is_named_at_the_join_check(tmp_path, make_bundle,
                                                             so101_root, dataset_corrupter,
                                                             monkeypatch):
    """Drifting timestamps / NaN at one site: refused before round 1 naming the site and the
    episode ids; with data.skip_bad_episodes the site joins and trains without them."""
    import shutil

    import pytest
    from flwr.supercore.task_identity import TaskIdentity

    from zk0cli.flower.join import JoinCheckError, query_join

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    bundle = make_bundle(seed=1)
    root = dataset_corrupter(shutil.copytree(so101_root, tmp_path / "drift"), drift=(1,),
                             nan=(2,))
    good = SiteConfig(dataset="zk0test/so101", dataset_root=so101_root, client_id="lab-a")
    bad = SiteConfig(dataset="zk0test/so101", dataset_root=root, client_id="lab-b",
                     device="cpu")
    grid = _Grid({1: _context(tmp_path / "a", good), 2: _context(tmp_path / "b", bad)})
    cfg = load_config(preset="tiny", overrides=["federation.min_clients=2",
                                                "federation.node_wait_timeout_s=1"])
    client_app._CACHE.clear()
    with pytest.raises(JoinCheckError) as err:
        query_join(grid, cfg, _instruction(bundle))
    text = str(err.value)
    assert "site lab-b (zk0test/so101): REFUSED" in text
    assert "site lab-a (zk0test/so101): ok" in text
    assert "2 bad episode(s) [1, 2] refused:" in text
    assert "episode 1: timestamps drift" in text and "episode 2: action: 1 frame(s)" in text
    assert "data.skip_bad_episodes = true on the coordinator" in text
    # Training there fails with the same report, never with LeRobot's FrameTimestampError.
    reply = client_app.train(_train_message(bundle, _instruction(bundle)),
                             _context(tmp_path / "b", bad))
    assert "[1, 2] refused" in str(reply.content.config_records[K.INFO_KEY][K.ERROR])

    skip = _instruction(bundle, "data.skip_bad_episodes=true")
    reports = {r.client_id: r for r in query_join(grid, cfg, skip)}
    assert reports["lab-a"].ok and reports["lab-a"].bad_episodes == []
    b = reports["lab-b"]
    assert b.ok and b.skipped_bad_episodes and b.bad_episodes == [1, 2]
    assert "2 bad episode(s) [1, 2] skipped (data.skip_bad_episodes)" in b.describe()
    plan = client_app.plan_of(skip, _context(tmp_path / "b", bad))
    assert (plan.partition.train_episodes, plan.partition.heldout_episodes) == ([0], [3])
    reply = client_app.train(_train_message(bundle, skip), _context(tmp_path / "b", bad))
    info = reply.content.config_records[K.INFO_KEY]
    assert K.ERROR not in info, info[K.ERROR]
    assert reply.content.metric_records[K.METRICS_KEY][K.NUM_STEPS] == 2

    # A site let through (min_clients = 1 here) still answers the statistics query: its
    # NaN sums are left out of the merge with a named failure, not merged.
    from zk0cli.core.rundir import RunDir
    from zk0cli.core.stats import sums_from_json
    from zk0cli.flower.stats import query_stats

    one = cfg.model_copy(update={"federation": cfg.federation.model_copy(
        update={"min_clients": 1})})
    rundir = RunDir.create(tmp_path / "outputs", name="run")
    merged = query_stats(grid, one, _instruction(bundle), rundir=rundir)
    sums = sums_from_json(merged)
    assert sums["action"].count == 3 * 20  # lab-a's 3 training episodes only
    [line] = rundir.run_record().stats_left_out
    assert line.startswith("client lab-b: non-finite statistics for action (sum)")
