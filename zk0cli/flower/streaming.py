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

#: Seconds between two looks for missing replies when the grid names none (deployment:
#: Flower's ``HttpGrid`` has no ``pull_interval``; its own ``send_and_receive`` waits 3 s,
#: which a round with warm clients would pay on average half of). One look is one small
#: ``PullMessages`` request per missing reply. ``InMemoryGrid`` (simulation) has
#: ``pull_interval`` (0.1 s).
PULL_INTERVAL_S = 0.5


#: Backoff (seconds) of the ServerApp's pulls of a reply's objects (deployment). The
#: SuperLink lists a reply as soon as the SuperNode has sent its header, before its
#: objects; Flower's defaults (1 s, doubling to 10 s) then cost seconds per reply.
PULL_BACKOFF_S = 0.05
PULL_BACKOFF_CAP_S = 0.25


def short_pull_backoff(grid: Any) -> bool:
    """Make Flower's ``HttpGrid`` pull reply objects with :data:`PULL_BACKOFF_S` (idempotent).

    ``HttpGrid.pull_messages`` calls ``pull_objects`` with Flower's default backoff; this
    replaces the name in ``flwr.superlink.grid.http_grid`` (this process only) by a wrapper
    that passes zk0's backoff unless the caller gives one.

    Returns:
        ``True`` when ``grid`` is an ``HttpGrid`` (the wrapper is in place).
    """
    import functools

    try:
        from flwr.superlink.grid import http_grid
    except ImportError:  # another Flower layout: keep its defaults
        return False
    if not isinstance(grid, http_grid.HttpGrid):
        return False
    orig = getattr(http_grid.pull_objects, "__wrapped__", http_grid.pull_objects)

    @functools.wraps(orig)
    def pull_objects(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("initial_backoff", PULL_BACKOFF_S)
        kwargs.setdefault("backoff_cap", PULL_BACKOFF_CAP_S)
        return orig(*args, **kwargs)

    http_grid.pull_objects = pull_objects
    return True


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
        short_pull_backoff(grid)
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
