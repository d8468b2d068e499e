"""One mapping from zk0 exceptions to messages and exit codes.

Exit codes: 0 success; 1 a runtime failure (the run failed, an upload failed);
2 bad input (config, path, dataset, checkpoint) — nothing was written or overwritten;
130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.text import Text

from zk0cli.errors import MissingDependencyError, UsageError, Zk0Error

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130



def make_console(*, stderr: bool = False) -> Console:
    """A console for user-facing text: no rich markup, no highlighting, no wrapping.

    User text (paths, dataset names, config keys such as ``[data.rename_map]``) is printed
    as given: markup is off (style with :class:`rich.text.Text`), and long lines are not
    broken into blocks (paths stay copyable).
    """
    return Console(stderr=stderr, markup=False, highlight=False, soft_wrap=True)


err_console = make_console(stderr=True)


def exit_code_for(exc: BaseException) -> int:
    """The process exit code for an exception raised by a command."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, UsageError | MissingDependencyError):
        return EXIT_USAGE
    return EXIT_FAILURE


@contextmanager
def handle_errors(phase: str | Callable[[], str] | None = None) -> Iterator[None]:
    """Turn known zk0 errors into a one-paragraph message and an exit code.

    Unknown exceptions propagate with their traceback: they are bugs to report.

    Args:
        phase: Name of the phase, prefixed to runtime failures ("tiny-run: train failed"),
            or a function returning the current phase's name.
    """
    try:
        yield
    except Zk0Error as exc:
        code = exit_code_for(exc)
        label = "error" if code == EXIT_USAGE else "failed"
        name = phase() if callable(phase) else phase
        prefix = f"{name}: " if name else ""
        err_console.print(Text.assemble((f"{label}: ", "bold red"), f"{prefix}{exc}"))
        logging.getLogger("zk0").debug("error details", exc_info=True)
        raise typer.Exit(code) from None
    except KeyboardInterrupt:
        err_console.print(Text("interrupted", style="yellow"))
        raise typer.Exit(EXIT_INTERRUPTED) from None


def not_available(command: str, issue: str) -> None:
    """Exit 1 for a command whose implementation has not landed yet."""
    err_console.print(f"zk0 {command}: not available yet ({issue}).")
    raise typer.Exit(EXIT_FAILURE)
