"""The tracker interface and the scalar names every tracker logs.

The run directory's JSON files are the source of truth; a tracker is an optional sink
that the :class:`~zk0cli.core.recorder.RunRecorder` feeds with the same records right
after writing them (``run.json`` at the start, each round file with its client files,
the final status). Trackers take plain mappings, so typed records pass as
``record.model_dump()``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from zk0cli import constants as K
from zk0cli.errors import MissingDependencyError

# Client-file fields that are identifiers or bookkeeping, not metrics.
_CLIENT_NON_METRICS: frozenset[str] = frozenset({"round", "node_id", K.NUM_EXAMPLES_KEY})


@runtime_checkable
class Tracker(Protocol):
    """An experiment tracker fed from the run's records.

    Attributes:
        name: Key of what the tracker records in ``run.json`` under ``tracking``.
    """

    name: str

    def start(self, run_record: Mapping[str, Any]) -> Mapping[str, Any]:
        """Open the tracker's run.

        Args:
            run_record: ``run.json`` as written at the start of the run (on a resume it
                holds what this tracker returned in the first run under
                ``tracking.<name>``).

        Returns:
            What to keep in ``run.json`` under ``tracking.<name>`` (e.g. a run id); may
            be empty. Never secrets.
        """
        ...

    def log_round(self, server_round: int, round_record: Mapping[str, Any],
                  client_records: Sequence[Mapping[str, Any]]) -> None:
        """Log one round, with step = ``server_round``.

        Args:
            server_round: The round (0 = evaluation of the initial model).
            round_record: The round file ``server/round_<N>_server_eval.json``.
            client_records: The client files ``clients/<id>/round_<N>.json`` of the round.
        """
        ...

    def finish(self, status: str) -> Mapping[str, Any]:
        """Close the tracker's run.

        Args:
            status: The run's final status (``completed``, ``failed``, ``interrupted``).

        Returns:
            What to add to ``run.json`` under ``tracking.<name>``; may be empty.
        """
        ...


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def round_scalars(round_record: Mapping[str, Any],
                  client_records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The scalars of one round, under the names every tracker uses.

    Names (``docs/tracking.md``): ``server/eval_loss/<dataset>`` and
    ``server/eval_loss/composite`` (server evaluation, when the round was evaluated);
    ``clients/<key>`` for each number of the aggregated client metrics
    (``loss_avg``, ``policy_loss_std``, ``num_clients``...); ``round/<key>`` for ``lr``,
    ``proximal_mu``, ``seconds`` and ``bytes_sent`` when the round file has them; and
    ``client/<client_id>/<metric>`` for each number a client reported. Non-finite
    values (NaN of a metric no client reported) and non-numbers are left out.

    Args:
        round_record: A round file's content.
        client_records: The round's client files (failed clients included: their
            numbers are logged too).

    Returns:
        Name -> value (float).
    """
    out: dict[str, float] = {}
    server_eval = round_record.get("server_eval") or {}
    for dataset, loss in (server_eval.get("datasets") or {}).items():
        if (v := _number(loss)) is not None:
            out[f"{K.TB_SERVER_EVAL}/{dataset}"] = v
    if (v := _number(server_eval.get("composite"))) is not None:
        out[f"{K.TB_SERVER_EVAL}/{K.TB_COMPOSITE}"] = v
    for key, value in (round_record.get("client_aggregated_training_metrics") or {}).items():
        if (v := _number(value)) is not None:
            out[f"{K.TB_CLIENTS_AGG}/{key}"] = v
    for key in K.ROUND_SCALAR_FIELDS:
        if (v := _number(round_record.get(key))) is not None:
            out[f"{K.TB_ROUND}/{key}"] = v
    for client in client_records:
        cid = client.get(K.CLIENT_ID)
        if cid is None:
            continue
        for key, value in client.items():
            if key in _CLIENT_NON_METRICS:
                continue
            if (v := _number(value)) is not None:
                out[f"{K.TB_CLIENT}/{cid}/{key}"] = v
    return out


def require_module(module: str, *, tracker: str, field: str) -> None:
    """Check that a tracker's library is importable.

    Args:
        module: The module to import (``tensorboard``, ``wandb``).
        tracker: The tracker's name, for the message.
        field: The configuration field that asked for it.

    Raises:
        MissingDependencyError: The module is not installed; the message names the
            ``zk0cli[tracking]`` extra.
    """
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"{field} asks for {tracker} logging, but the Python package {module!r} is not "
            f"installed ({err}). Install the tracking extra: pip install "
            f"'zk0cli[{K.TRACKING_EXTRA}]' (or turn {field} off)."
        ) from err
