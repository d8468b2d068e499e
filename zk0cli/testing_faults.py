"""A ClientApp for tests that injects faults around zk0's real train handler.

Not part of the shipped app: tests select it with
``zk0cli.engine.flwr_proc.CLIENTAPP = "zk0cli.testing_faults:app"`` (or
``make_app_dir(..., clientapp=...)``) and give the faults in ``ZK0_FAULT_INJECTION``:
JSON ``{"<client_id>" or "*": "<mode>"}`` with mode ``raise``, ``nan``, ``shape`` or
``hang``. The environment reaches every ClientApp process (Ray actors, SuperNodes).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from zk0cli import constants as K
from zk0cli.flower import client_app as real

FAULT_ENV = "ZK0_FAULT_INJECTION"
COMPONENT = "zk0cli.testing_faults:app"

app = ClientApp()


def fault_for(client_id: str) -> str | None:
    """The fault to inject for ``client_id`` (``None``: behave normally)."""
    raw = os.environ.get(FAULT_ENV)
    if not raw:
        return None
    table = json.loads(raw)
    return table.get(client_id, table.get("*"))


def _tamper(client_id: str, tensors: dict[str, Any]) -> dict[str, Any]:
    import torch

    fault = fault_for(client_id)
    name = sorted(tensors)[0]
    if fault == "raise":
        raise RuntimeError(f"injected client failure ({FAULT_ENV})")
    if fault == "hang":
        time.sleep(10**6)
    if fault == "nan":
        tensors[name] = torch.full_like(tensors[name], float("nan"))
    if fault == "shape":
        tensors[name] = torch.zeros(1)
    return tensors


@app.train()
def train(msg: Message, context: Context) -> Message:
    """zk0's train handler, with the configured fault applied to its update."""
    return real.run_train(msg, context, tamper=_tamper)


@app.query(K.STATS_ACTION)
def stats(msg: Message, context: Context) -> Message:
    """zk0's statistics handler."""
    return real.stats(msg, context)


@app.query(K.JOIN_ACTION)
def join(msg: Message, context: Context) -> Message:
    """zk0's join-check handler."""
    return real.join(msg, context)
