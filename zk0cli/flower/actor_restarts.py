"""Simulation workers that die are replaced: Ray restarts a dead client actor.

Flower's Ray backend creates its ``ClientAppActor`` pool with Ray's default
``max_restarts = 0``: an actor killed once (the OOM killer, a segfault in a native
library) stays dead, its handle goes back into the pool, and every later round fails the
clients it is given with ``ActorDiedError``. :func:`install` makes the pool create its
actors with ``max_restarts`` (Ray option, see ``ray.actor.ActorClass.options``), so Ray
starts a fresh worker process for the actor: the reply in flight fails (that client's
round is recorded as failed) and the client trains again in the next round.

Flower reads only ``num_cpus``/``num_gpus`` from a pool's client resources and passes the
whole mapping to ``ActorClass.options``, so the option travels in that mapping. It is
installed in the ``flwr-simulation`` process only, which imports the zk0 ClientApp
before it builds the pool (:func:`install_in_simulation_runtime`).

Why a patch and not a setting (checked against flwr 1.42): the pool's resources come from
the run's federation config, which travels from ``flwr run`` through the SuperLink as the
typed ``SimulationConfig`` protobuf (``flwr/proto/federation_config.proto``); that message
has fields for ``client_resources_num_cpus``/``num_gpus`` and a few ``init_args`` only,
and ``flwr/simulation/app.py`` copies exactly those into the backend config. So
``client-resources-max-restarts`` never reaches ``RayBackend._validate_client_resources``
(which would accept it), ``ray.init`` has no default for actors' ``max_restarts``, and the
backend registry (``supported_backends``) can only be extended by patching too. Wrapping
``BasicActorPool.__init__`` is the smallest change: it adds one key to the mapping Flower
already passes to ``ActorClass.options``. ``flwr`` is pinned exactly; the end-to-end test
(``tests/test_actor_restart_e2e.py``, a worker killed once trains again) fails if an
upgrade moves this seam.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

from zk0cli import constants as K


def install(max_restarts: int = K.SIM_ACTOR_MAX_RESTARTS) -> bool:
    """Make Flower's Ray actor pool restart dead actors (idempotent).

    Args:
        max_restarts: Restarts per actor (``-1``: unlimited).

    Returns:
        Whether the hook is in place (``False`` without Flower's simulation extra).
    """
    try:
        from flwr.simulation.ray_transport import ray_actor
    except ImportError:
        return False
    pool = ray_actor.BasicActorPool
    if getattr(pool.__init__, "_zk0_max_restarts", None) is not None:
        return True
    original = pool.__init__

    @functools.wraps(original)
    def init(self: Any, actor_type: Any, client_resources: dict[str, Any],
             actor_kwargs: dict[str, Any]) -> None:
        original(self, actor_type, {**client_resources, "max_restarts": max_restarts},
                 actor_kwargs)

    init._zk0_max_restarts = max_restarts  # type: ignore[attr-defined]
    pool.__init__ = init  # type: ignore[method-assign]
    return True


def install_in_simulation_runtime() -> bool:
    """:func:`install` when this process is Flower's ``flwr-simulation`` runtime."""
    if Path(sys.argv[0]).name != "flwr-simulation":
        return False
    return install()
