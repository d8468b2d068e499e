"""``zk0 simulate`` on an existing two-node Ray cluster (``federation.ray_address``).

One cluster (two ``ray start`` nodes on 127.0.0.1, 1 CPU each, in a private temp dir), one
run on it and the same run on zk0's private local Ray: the clients ran on both nodes, the
results are bitwise equal, and the cluster is still running, unchanged. Training is cut to
2 steps a round and evaluation to 1 batch (both runs alike) to keep the test short.
"""

import pytest
from ray_cluster import start_cluster
from safetensors.torch import load_file
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.core.rundir import RunDir, read_json

pytestmark = pytest.mark.slow

SHORT = ["--rounds", "2", "--clients", "4", "--set", "training.steps_per_round=2",
         "--set", "eval.batches=1", "--set", "federation.client_cpus=1"]


def _simulate(out, *sets):
    res = CliRunner().invoke(app, ["simulate", "--preset", "tiny", "--out", str(out),
                                   *SHORT, *sets])
    return res, RunDir(out)


def _core(cluster):
    """PIDs of the cluster's own daemons (GCS, raylets, ray start), not of its workers."""
    return {p.pid for p in cluster.processes()
            if not any(w in " ".join(p.cmdline()) for w in ("default_worker", "ray::"))}


@pytest.fixture(scope="module")
def cluster():
    c = start_cluster(nodes=({"node_a": 1}, {"node_b": 1}), cpus=1)
    yield c
    c.stop()


def test_simulate_on_a_two_node_cluster_equals_the_private_ray_run(tmp_path, cluster,
                                                                   monkeypatch):
    nodes_before = cluster.initial_nodes
    core_before = _core(cluster)
    ids = {n["NodeID"] for n in nodes_before}
    assert len(ids) == 2

    res, rd = _simulate(tmp_path / "cluster", "--set",
                        f"federation.ray_address={cluster.address}")
    assert res.exit_code == 0, res.output
    # The parallelism as Ray schedules it: one 1-CPU client per node.
    assert "2 client(s) in parallel (1 CPU each of 2; per node:" in res.output
    run = read_json(rd.run_json)
    assert run["status"] == "completed" and run["parallel_clients"] == 2
    assert run["ray_cluster"]["address"] == cluster.address
    assert {n["node_id"] for n in run["ray_cluster"]["nodes"]} == ids
    assert run["ray_cluster"]["cpus"] == 2
    assert sorted(run["ray_client_nodes"]) == ["0", "1", "2", "3"]
    used = {n for v in run["ray_client_nodes"].values() for n in v}
    assert used == ids  # clients ran on both nodes
    for rnd in (1, 2):
        for c in read_json(rd.server_eval(rnd))["individual_client_training_metrics"]:
            assert c["ray_node_id"] in ids

    # The cluster's daemons are still running (its nodes are checked at the end).
    assert core_before <= _core(cluster)

    # The same run on the private local Ray (2 CPUs: also 2 at once), with RAY_ADDRESS
    # pointing at the cluster: zk0's private default must not join it.
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    res2, rd2 = _simulate(tmp_path / "private", "--set",
                          "federation.max_parallel_clients=2")
    assert res2.exit_code == 0, res2.output
    run2 = read_json(rd2.run_json)
    assert run2["ray_cluster"]["address"] is None
    private_nodes = {n for v in run2["ray_client_nodes"].values() for n in v}
    assert len(private_nodes) == 1 and not private_nodes & ids

    # Bitwise equal: server losses of every round and the final model's tensors.
    assert read_json(rd.policy_loss_history) == read_json(rd2.policy_loss_history)
    for rnd in (1, 2):
        a = {c["client_id"]: c["param_hash"]
             for c in read_json(rd.server_eval(rnd))["individual_client_training_metrics"]}
        b = {c["client_id"]: c["param_hash"]
             for c in read_json(rd2.server_eval(rnd))["individual_client_training_metrics"]}
        assert a == b and len(a) == 4
    t1 = load_file(rd.latest_checkpoint() / "model.safetensors")
    t2 = load_file(rd2.latest_checkpoint() / "model.safetensors")
    assert t1.keys() == t2.keys()
    assert all((t1[k] == t2[k]).all() for k in t1)
    # The cluster is still running, with the same nodes and resources and daemons.
    assert cluster.nodes() == nodes_before
    assert core_before <= _core(cluster)
