"""A Grid whose ``send_and_receive`` hands replies over one at a time, as they arrive.

Flower 1.42's ``Grid.send_and_receive`` (``HttpGrid``, ``InMemoryGrid``) pushes a
round's messages, then pulls until every reply is in or the timeout passed, and returns
all replies as one list: the ServerApp then holds every client's encoded model at once
(16 clients × 0.4 GB = 6.4 GB for full-size SmolVLA). :class:`StreamingGrid` keeps
Flower's contract — push everything first, stop at the timeout, error replies as Flower
makes them — but returns a lazy iterator that pulls one reply at a time
(``Grid.pull_messages`` with one message id) and yields it, so a consumer that drops each
reply after reading it (:meth:`zk0cli.core.strategy.Zk0FedProx.aggregate_train`) holds one
encoded reply at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from flwr.app import Message

if TYPE_CHECKING:
    from flwr.serverapp import Grid

#: Seconds between two looks for missing replies when the grid names none: Flower's
#: ``HttpGrid`` (deployment) waits 3 s; ``InMemoryGrid`` (simulation) has ``pull_interval``.
PULL_INTERVAL_S = 3.0


class StreamingGrid:
    """Wrap a Flower ``Grid`` so that ``send_and_receive`` streams its replies.

    Every other attribute is the wrapped grid's.

    Args:
        grid: The Flower ``Grid`` the ServerApp was given.
        pull_interval_s: Seconds between two polls for missing replies; by default the
            grid's own ``pull_interval`` (0.1 s in simulation), else
            :data:`PULL_INTERVAL_S`, as Flower's ``send_and_receive`` would wait.
    """

    def __init__(self, grid: Any, *, pull_interval_s: float | None = None) -> None:
        self._grid = grid
        if pull_interval_s is None:
            pull_interval_s = float(getattr(grid, "pull_interval", PULL_INTERVAL_S))
        self.pull_interval_s = pull_interval_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterator[Message]:
        """Push ``messages`` now; return an iterator over their replies as they arrive.

        Args:
            messages: Messages to send (pushed before this returns).
            timeout: Seconds, from the push, after which missing replies are given up
                (the iterator ends); ``None`` waits for every reply.

        Returns:
            A one-shot iterator yielding each reply once, in arrival order.
        """
        ids = [i for i in self._grid.push_messages(messages) if i]
        del messages
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._replies(ids, deadline)

    def _replies(self, ids: list[str], deadline: float | None) -> Iterator[Message]:
        pending = dict.fromkeys(ids)  # insertion-ordered set of message ids
        while pending:
            for msg_id in list(pending):
                got = list(self._grid.pull_messages([msg_id]))
                while got:
                    pending.pop(msg_id, None)
                    yield got.pop(0)  # not kept here once the consumer drops it
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                return
            wait = self.pull_interval_s
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)


def streaming_grid(grid: Grid) -> Grid:
    """``grid`` wrapped in a :class:`StreamingGrid` (typed as the Grid Flower expects)."""
    return cast("Grid", StreamingGrid(grid))
