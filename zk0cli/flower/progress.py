"""What the ServerApp is doing right now, for the live display (``server/progress.json``).

The round files are written only after a round aggregated; this small file moves while a
round runs: the phase (statistics, round-0 evaluation, training round N) and the number of
replies received so far. :class:`ProgressGrid` wraps Flower's ``Grid`` and rewrites the file
each time a reply arrives (over :class:`~zk0cli.flower.streaming.StreamingGrid`, which hands
replies over as they arrive).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zk0cli import constants as K
from zk0cli.core import contract as C
from zk0cli.core.contract import client_round_name
from zk0cli.log import logger

if TYPE_CHECKING:  # the engine reads the file without importing Flower
    from flwr.app import Message

_PHASES = {"train": "round {r} training", "evaluate": "round {r} client evaluation",
           "query": "statistics from the clients"}


def progress_path(server_dir: Path) -> Path:
    """``server/progress.json`` of a run directory's ``server/`` folder."""
    return Path(server_dir) / C.PROGRESS_FILE


def write_progress(server_dir: Path, *, phase: str, server_round: int, sent: int = 0,
                   replies: int = 0) -> None:
    """Atomically replace ``server/progress.json`` (never raises: the display is optional).

    Args:
        server_dir: The run directory's ``server/`` folder.
        phase: What runs now, in words (``"round 2 training"``).
        server_round: The run's round (0 before round 1).
        sent: Messages sent in the current exchange.
        replies: Replies received so far.
    """
    path = progress_path(server_dir)
    data = {K.PROGRESS_PHASE: phase, K.PROGRESS_ROUND: server_round, K.PROGRESS_SENT: sent,
            K.PROGRESS_REPLIES: replies}
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:  # e.g. a full disk: the run's next real write reports it
        tmp.unlink(missing_ok=True)
        logger.debug("could not write %s: %s", path, err)


def write_phase(server_dir: Path, *, phase: str, server_round: int) -> None:
    """Like :func:`write_progress`, keeping the counts already recorded for ``server_round``.

    Used for the server evaluation after a round trained: the display keeps showing how
    many clients replied until the round's files are written.
    """
    prev = read_progress(server_dir)
    same = prev.get(K.PROGRESS_ROUND) == server_round
    write_progress(server_dir, phase=phase, server_round=server_round,
                   sent=int(prev.get(K.PROGRESS_SENT) or 0) if same else 0,
                   replies=int(prev.get(K.PROGRESS_REPLIES) or 0) if same else 0)


def read_progress(server_dir: Path) -> dict[str, Any]:
    """The current ``server/progress.json`` (``{}`` when absent or being replaced)."""
    try:
        data = json.loads(progress_path(server_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _round_of(messages: list[Message], default: int) -> int:
    """The run's round a train message is for (``zk0-round`` in its config record)."""
    for msg in messages[:1]:
        conf = msg.content.config_records.get(K.CONFIG_KEY)
        value = conf.get(K.ROUND_KEY) if conf is not None else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    return default


def live_progress(server_dir: Path, clients_dir: Path, next_round: int) -> tuple[int, str]:
    """Clients finished in ``next_round`` so far, and the ServerApp's phase.

    The replies counted in ``server/progress.json`` while the round trains (the client
    files appear only after aggregation), or the client files once they are written.

    Args:
        server_dir: The run directory's ``server/`` folder.
        clients_dir: Its ``clients/`` folder.
        next_round: The round being trained (rounds completed + 1).

    Returns:
        ``(clients finished, phase)``; phase ``""`` before the ServerApp wrote one.
    """
    prog = read_progress(server_dir)
    replies = 0
    if prog.get(K.PROGRESS_ROUND) == next_round:  # training, or evaluating after it
        replies = int(prog.get(K.PROGRESS_REPLIES) or 0)
    files = sum(1 for _ in clients_dir.glob(f"*/{client_round_name(next_round)}")) \
        if clients_dir.is_dir() else 0
    return max(replies, files), str(prog.get(K.PROGRESS_PHASE) or "")


class ProgressGrid:
    """A Flower ``Grid`` that reports each reply of ``send_and_receive`` as it arrives.

    Everything except ``send_and_receive`` is delegated to the wrapped grid.

    Args:
        grid: Flower's grid.
        server_dir: The run directory's ``server/`` folder.
        round_offset: Rounds already done before this ServerApp started (a resume); the
            round shown for messages that carry none.
    """

    def __init__(self, grid: Any, server_dir: Path, *, round_offset: int = 0) -> None:
        self._grid, self._dir, self._offset = grid, Path(server_dir), round_offset

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterator[Message]:
        """Send through the wrapped grid; count each reply as the consumer receives it.

        The wrapped grid (:class:`~zk0cli.flower.streaming.StreamingGrid`) pushes the
        messages and hands replies over one at a time as they arrive, so the count moves
        while the round trains.
        """
        messages = list(messages)  # the outgoing messages share the global model's record
        server_round = _round_of(messages, self._offset)
        kind = next((m.metadata.message_type for m in messages), "").split(".")[0]
        phase = _PHASES.get(kind, "round {r} " + (kind or "exchange")).format(r=server_round)
        sent = len(messages)
        write_progress(self._dir, phase=phase, server_round=server_round, sent=sent)
        replies = self._grid.send_and_receive(messages, timeout=timeout)
        del messages
        return self._counted(replies, phase=phase, server_round=server_round, sent=sent)

    def _counted(self, replies: Iterable[Message], *, phase: str, server_round: int,
                 sent: int) -> Iterator[Message]:
        count = 0
        for reply in replies:
            count += 1
            write_progress(self._dir, phase=phase, server_round=server_round, sent=sent,
                           replies=count)
            yield reply
