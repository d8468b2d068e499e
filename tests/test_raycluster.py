"""Simulation on a Ray cluster: parallelism as Flower/Ray place the clients, and refusals.

Cluster resources are given as ``ray.nodes()`` would list them (fake dicts); the real
two-node cluster runs in tests/test_ray_cluster_e2e.py.
"""

import pytest
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.core.config import load_config
from zk0cli.engine import raycluster
from zk0cli.engine.preflight import check_resources
from zk0cli.engine.raycluster import (
    ClusterResources,
    check_cluster,
    nodes_from_ray,
    query_cluster,
)
from zk0cli.engine.simulate import parallelism
from zk0cli.errors import ConfigError, UsageError


def _node(nid, cpu, gpu=0.0, *, alive=True, ip="10.0.0.1", **extra):
    res = {"CPU": cpu, "memory": 8e9, **({"GPU": gpu} if gpu else {}), **extra}
    return {"NodeID": nid * 8, "Alive": alive, "NodeManagerAddress": ip,
            "Resources": res if cpu or gpu or extra else {}}


def _cluster(*nodes):
    return ClusterResources("10.0.0.1:6379", nodes_from_ray(list(nodes)))


def _cfg(*sets, clients=4):
    return load_config(preset="tiny", overrides=["federation.ray_address=10.0.0.1:6379",
                                                 *sets],
                       flags={"federation.num_clients": clients})


def test_dead_and_empty_nodes_hold_no_client():
    c = _cluster(_node("a", 4), _node("b", 8, alive=False), _node("c", 0),
                 _node("d", 2, ip="10.0.0.2"))
    assert [n.node_id for n in c.nodes] == ["a" * 8, "d" * 8]
    assert c.cpus == 6 and c.gpus == 0
    assert [n.resources["CPU"] for n in c.nodes] == [4, 2]


def test_gpu_fractions_bound_the_clients_per_node():
    # The machine: 16 CPUs, 1 GPU, client_gpus = 0.5 -> 2 at once, not 16.
    one = _cluster(_node("a", 16, 1))
    p = parallelism(_cfg("federation.client_gpus=0.5"), cluster=one)
    assert p.parallel_clients == 2 and p.gpus == 1 and p.cpus == 16
    assert p.describe() == ("2 client(s) in parallel (1 CPU each of 16; 0.5 GPU each of 1; "
                            "per node: 10.0.0.1 (aaaaaaaa) 2)")
    # 0.3 GPU each of 1 GPU: int(1 / 0.3) = 3 (Flower's rule), CPU-bound at 4 CPUs each.
    assert parallelism(_cfg("federation.client_gpus=0.3"), cluster=one).parallel_clients == 3
    assert parallelism(_cfg("federation.client_gpus=0.3", "federation.client_cpus=8"),
                       cluster=one).parallel_clients == 2
    # A GPU node and a CPU-only node: with client_gpus > 0 only the GPU node holds clients.
    mixed = _cluster(_node("a", 8, 2), _node("b", 8, ip="10.0.0.2"))
    p = parallelism(_cfg("federation.client_gpus=0.5", "federation.client_cpus=2",
                         "data.partition=episodes", clients=8), cluster=mixed)
    assert p.parallel_clients == 4 and p.per_node == (("10.0.0.1 (aaaaaaaa)", 4),
                                                      ("10.0.0.2 (bbbbbbbb)", 0))
    # Without GPUs per client both nodes count: 4 + 4, capped by the 6 clients.
    assert parallelism(_cfg("federation.client_cpus=2", "data.partition=episodes", clients=6),
                       cluster=mixed).parallel_clients == 6
    assert "GPU each" not in parallelism(_cfg(), cluster=mixed).describe()


def test_clients_are_counted_per_node_not_over_the_sum():
    # 3 CPUs per client, nodes of 2 and 4 CPUs: 6 CPUs in all, but only one client fits.
    c = _cluster(_node("a", 2), _node("b", 4, ip="10.0.0.2"))
    assert parallelism(_cfg("federation.client_cpus=3"), cluster=c).parallel_clients == 1


def test_no_gpu_in_the_cluster_is_refused():
    c = _cluster(_node("a", 8), _node("b", 8, ip="10.0.0.2"))
    with pytest.raises(UsageError) as e:
        check_cluster(c, 1, 0.5)
    msg = str(e.value)
    assert "federation.client_gpus = 0.5 but no node of the Ray cluster at 10.0.0.1:6379 " \
           "has a GPU (resource GPU)" in msg
    assert "10.0.0.1 (aaaaaaaa): 8 CPU, 0 GPU; 10.0.0.2 (bbbbbbbb): 8 CPU, 0 GPU" in msg
    check_cluster(c, 8, 0)  # CPU-only clients fit


def test_more_gpus_than_any_node_is_refused():
    with pytest.raises(UsageError, match=r"client_gpus = 2 but the largest node of the Ray "
                       r"cluster at 10.0.0.1:6379 has 1 GPU \(resource GPU\)") as e:
        check_cluster(_cluster(_node("a", 8, 1), _node("b", 8, 1, ip="10.0.0.2")), 1, 2)
    assert "client_gpus <= 1" in str(e.value)


def test_client_cpus_above_every_node_is_refused():
    c = _cluster(_node("a", 8), _node("b", 4, ip="10.0.0.2"))
    with pytest.raises(UsageError, match=r"client_cpus = 12 but the largest node of the Ray "
                       r"cluster at 10.0.0.1:6379 has 8 CPU \(resource CPU\)") as e:
        check_cluster(c, 12, 0)
    assert "client_cpus <= 8" in str(e.value)
    check_cluster(c, 8, 0)  # the 8-CPU node holds one


def test_cpus_and_gpus_on_different_nodes_are_refused():
    c = _cluster(_node("a", 8), _node("b", 2, 1, ip="10.0.0.2"))
    with pytest.raises(UsageError, match=r"client_cpus = 4 and federation.client_gpus = 1 "
                       r"together fit no single node"):
        check_cluster(c, 4, 1)
    check_cluster(c, 2, 1)


def test_a_cluster_without_nodes_is_refused():
    with pytest.raises(UsageError, match="no alive node with resources"):
        check_cluster(_cluster(), 1, 0)


def test_simulate_refuses_with_exit_2_before_anything_starts(tmp_path, monkeypatch):
    seen = []

    def fake_query(address, **_):
        seen.append(address)
        return _cluster(_node("a", 4), _node("b", 4, ip="10.0.0.2"))

    monkeypatch.setattr(raycluster, "query_cluster", fake_query)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["simulate", "--preset", "tiny", "--out", str(out),
                                   "--set", "federation.ray_address=10.0.0.1:6379",
                                   "--set", "federation.client_gpus=0.5"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "federation.client_gpus = 0.5 but no node of the Ray cluster at 10.0.0.1:6379" in text
    assert seen == ["10.0.0.1:6379"] and not out.exists()


def test_an_address_without_a_cluster_is_a_usage_error():
    from zk0cli.engine.flwr_proc import free_port

    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(UsageError, match=r"federation.ray_address = '127.0.0.1:\d+': could not "
                       r"connect to a Ray cluster there") as e:
        query_cluster(address, timeout_s=4)
    assert "ray start --head" in str(e.value)


def test_the_local_machine_checks_step_aside_on_a_cluster():
    # 64 CPUs and a GPU per client are the cluster's business, not this 2-core machine's.
    check_resources(_cfg("federation.client_cpus=64", "federation.client_gpus=1"),
                    cpu_count=lambda: 2, gpu_count=lambda: 0)


@pytest.mark.parametrize("value", ["auto", "10.0.0.2:6379", "head.lab:10001", "[::1]:6379"])
def test_ray_address_accepts_auto_and_host_port(value):
    assert load_config(preset="tiny", overrides=[f"federation.ray_address={value}"]
                       ).federation.ray_address == value


@pytest.mark.parametrize("value", ["head", "head:", ":6379", "head:0", "head:port"])
def test_ray_address_refuses_anything_else(value):
    with pytest.raises(ConfigError, match=r"federation.ray_address .*must be `auto` or "
                       r"`HOST:PORT`"):
        load_config(preset="tiny", overrides=[f"federation.ray_address={value}"])


def test_max_parallel_clients_cannot_cap_a_running_cluster():
    with pytest.raises(ConfigError, match="max_parallel_clients .* cannot be combined with "
                       "ray_address"):
        _cfg("federation.max_parallel_clients=2")


def test_a_closed_port_is_refused_at_once_without_starting_ray():
    from zk0cli.engine.flwr_proc import free_port
    from zk0cli.engine.raycluster import query_cluster

    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(UsageError) as info:
        query_cluster(address, timeout_s=1)  # the TCP check answers before this timeout
    assert f"federation.ray_address = {address!r}" in str(info.value)
    assert "Connection refused" in str(info.value)
