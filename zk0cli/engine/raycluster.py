"""The Ray cluster a simulation runs on: its nodes' resources, the parallelism, refusals.

``federation.ray_address`` unset: zk0's private local Ray (one node: this machine's CPUs,
or ``max_parallel_clients`` × ``client_cpus``, and its CUDA devices). Set (``auto`` or
``HOST:PORT``): an existing cluster started with ``ray start``, whose alive nodes are read
before launch by a short-lived Ray driver in a child process (:func:`query_cluster`); zk0
never stops that cluster, only the driver (``flwr-simulation``) and the actors it created.

The parallelism is Flower's own actor-pool size (``flwr.simulation.ray_transport.
ray_actor.pool_size_from_resources``): per node with resources,
``int(CPU / client_cpus)``, and with ``client_gpus > 0`` the minimum of that and
``int(GPU / client_gpus)`` (0 on a node without GPU); summed over the nodes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from zk0cli.errors import UsageError

#: Environment variable Ray reads in ``ray.init()`` before anything else (an address,
#: ``auto`` or ``local``); zk0 sets it for the SuperLink and its ``flwr-simulation``.
RAY_ADDRESS_ENV = "RAY_ADDRESS"
#: ``RAY_ADDRESS`` value of the private default: always a new local Ray, even when a
#: ``ray start`` cluster runs on this machine or the user's shell sets ``RAY_ADDRESS``.
PRIVATE_RAY = "local"
#: Seconds the pre-launch look at the cluster may take (connect, list nodes, disconnect).
QUERY_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class RayNode:
    """One node of the cluster, as Ray reports it.

    Attributes:
        node_id: Ray's node id (hex), or ``None`` for the private Ray before it starts.
        address: IP address of the node's raylet (``NodeManagerAddress``).
        cpus: Its ``CPU`` resource (logical CPUs, as ``ray start --num-cpus`` set them).
        gpus: Its ``GPU`` resource.
        resources: Every resource of the node (``CPU``, ``GPU``, ``memory`` in bytes,
            custom labels, ...).
    """

    node_id: str | None
    address: str
    cpus: float
    gpus: float
    resources: dict[str, float] = field(default_factory=dict)

    def label(self) -> str:
        """``10.0.0.2 (1a2b3c4d)``: the address and the first 8 hex of the node id."""
        return f"{self.address} ({self.node_id[:8]})" if self.node_id else self.address

    def to_json(self) -> dict[str, Any]:
        """The ``run.json`` form (``ray_cluster.nodes`` item)."""
        return {"node_id": self.node_id, "address": self.address, "cpus": self.cpus,
                "gpus": self.gpus, "resources": dict(self.resources)}


@dataclass(frozen=True)
class ClusterResources:
    """The nodes the simulated clients can be placed on.

    Attributes:
        address: ``federation.ray_address`` (``None``: zk0's private local Ray).
        nodes: Alive nodes with resources.
    """

    address: str | None
    nodes: tuple[RayNode, ...]

    @property
    def cpus(self) -> float:
        """CPUs of all nodes."""
        return sum(n.cpus for n in self.nodes)

    @property
    def gpus(self) -> float:
        """GPUs of all nodes."""
        return sum(n.gpus for n in self.nodes)

    def describe(self) -> str:
        """``2 node(s): 127.0.0.1 (ab12cd34) 1 CPU 0 GPU; ...``."""
        where = "private local Ray" if self.address is None else f"Ray cluster {self.address}"
        nodes = "; ".join(f"{n.label()} {n.cpus:g} CPU {n.gpus:g} GPU" for n in self.nodes)
        return f"{where}, {len(self.nodes)} node(s): {nodes or 'none'}"

    def to_json(self) -> dict[str, Any]:
        """The ``run.json`` form (``ray_cluster``)."""
        return {"address": self.address, "cpus": self.cpus, "gpus": self.gpus,
                "nodes": [n.to_json() for n in self.nodes]}


def private_cluster(cpus: int, gpus: int) -> ClusterResources:
    """The private local Ray zk0 starts: one node with ``cpus`` CPUs and ``gpus`` GPUs."""
    return ClusterResources(None, (RayNode(None, "127.0.0.1", float(cpus), float(gpus),
                                           {"CPU": float(cpus), "GPU": float(gpus)}),))


def nodes_from_ray(raw: list[dict[str, Any]]) -> tuple[RayNode, ...]:
    """Alive nodes with resources from ``ray.nodes()`` (dead or empty nodes left out).

    Args:
        raw: ``ray.nodes()``: dicts with ``NodeID``, ``Alive``, ``NodeManagerAddress`` and
            ``Resources`` (name -> float).
    """
    out = []
    for n in raw:
        res = {str(k): float(v) for k, v in (n.get("Resources") or {}).items()}
        if not n.get("Alive", True) or not res:
            continue
        out.append(RayNode(str(n.get("NodeID") or "") or None,
                           str(n.get("NodeManagerAddress") or "?"),
                           res.get("CPU", 0.0), res.get("GPU", 0.0), res))
    return tuple(sorted(out, key=lambda x: (x.address, x.node_id or "")))


def clients_per_node(node: RayNode, client_cpus: float, client_gpus: float) -> int:
    """Client actors Flower places on ``node`` (its ``pool_size_from_resources`` rule)."""
    fit = int(node.cpus / client_cpus)
    if client_gpus > 0:
        fit = min(fit, int(node.gpus / client_gpus)) if node.gpus else 0
    return fit


def check_cluster(cluster: ClusterResources, client_cpus: float, client_gpus: float) -> None:
    """Refuse client resources that no node of ``cluster`` can hold.

    Raises:
        UsageError: ``client_gpus > 0`` and no node has a GPU, ``client_gpus`` above every
            node's GPUs, ``client_cpus`` above every node's CPUs, or no single node with
            both; the message names the field, the request and what each node has.
    """
    if any(clients_per_node(n, client_cpus, client_gpus) > 0 for n in cluster.nodes):
        return
    where = "the private local Ray" if cluster.address is None \
        else f"the Ray cluster at {cluster.address}"
    has = "; ".join(f"{n.label()}: {n.cpus:g} CPU, {n.gpus:g} GPU" for n in cluster.nodes) \
        or "no alive node with resources"
    max_cpu = max((n.cpus for n in cluster.nodes), default=0.0)
    max_gpu = max((n.gpus for n in cluster.nodes), default=0.0)
    if client_gpus > 0 and max_gpu == 0:
        problem = (f"federation.client_gpus = {client_gpus:g} but no node of {where} has a "
                   "GPU (resource GPU)")
        fix = "Use federation.client_gpus = 0, or add a node with `ray start --num-gpus N`."
    elif client_gpus > max_gpu:
        problem = (f"federation.client_gpus = {client_gpus:g} but the largest node of "
                   f"{where} has {max_gpu:g} GPU (resource GPU)")
        fix = f"Use federation.client_gpus <= {max_gpu:g}."
    elif client_cpus > max_cpu:
        problem = (f"federation.client_cpus = {client_cpus:g} but the largest node of "
                   f"{where} has {max_cpu:g} CPU (resource CPU)")
        fix = f"Use federation.client_cpus <= {max_cpu:g}."
    else:
        problem = (f"federation.client_cpus = {client_cpus:g} and federation.client_gpus = "
                   f"{client_gpus:g} together fit no single node of {where} (resources CPU "
                   "and GPU)")
        fix = "Lower one of them."
    raise UsageError(f"{problem}: no simulated client could ever start. Nodes: {has}. {fix}")


def query_cluster(address: str, *, timeout_s: float = QUERY_TIMEOUT_S) -> ClusterResources:
    """Read the alive nodes of the running cluster at ``address`` (nothing is started).

    A child process connects as a Ray driver (``ray.init(address=...)``), lists
    ``ray.nodes()`` and disconnects; the cluster keeps running unchanged.

    Args:
        address: ``auto`` or ``HOST:PORT`` (``federation.ray_address``).
        timeout_s: Longest wait for the answer, in seconds.

    Raises:
        UsageError: No cluster answers at ``address`` (the message has Ray's reason).
    """
    if address != "auto":  # a closed port is refused at once: no need to wait for Ray
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
        except (OSError, ValueError) as refused:
            raise UsageError(_unreachable(address, f"{type(refused).__name__}: {refused}")
                             ) from None
    env = {**os.environ, RAY_ADDRESS_ENV: address}
    try:
        res = subprocess.run([sys.executable, "-m", "zk0cli.engine.raycluster", address],
                             env=env, capture_output=True, text=True, timeout=timeout_s,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise UsageError(_unreachable(address, f"no answer within {timeout_s:g} s")) from None
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        err = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(_unreachable(address, err))
    return ClusterResources(address, nodes_from_ray(json.loads(lines[-1])["nodes"]))


def _unreachable(address: str, reason: str) -> str:
    return (f"federation.ray_address = {address!r}: could not connect to a Ray cluster there "
            f"({reason}). Start one with `ray start --head --port 6379` on the head node and "
            "`ray start --address HEAD:6379` on the others (docs/deployment.md), or leave "
            "federation.ray_address unset for a private local Ray.")


def ray_node_id() -> str | None:
    """The Ray node this process runs on (inside a Ray worker), else ``None``.

    Only looks when Ray is already imported and initialised (a simulated client's actor),
    so a deployed ClientApp never imports Ray.
    """
    ray = sys.modules.get("ray")
    if ray is None:
        return None
    try:
        if not ray.is_initialized():
            return None
        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # noqa: BLE001 - the node id is informational only
        return None


def _main(address: str) -> int:
    """Child process of :func:`query_cluster`: print ``{"nodes": ray.nodes()}`` as JSON."""
    import logging

    import ray

    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False,
             include_dashboard=False, configure_logging=False)
    try:
        nodes = [{"NodeID": n.get("NodeID"), "Alive": n.get("Alive"),
                  "NodeManagerAddress": n.get("NodeManagerAddress"),
                  "Resources": n.get("Resources")} for n in ray.nodes()]
    finally:
        ray.shutdown()
    print(json.dumps({"nodes": nodes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
