"""The ``zk0`` command: wires the command groups, nothing else.

Heavy libraries (torch, LeRobot, Flower) are imported inside the commands, so
``zk0 --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from zk0cli import __version__
from zk0cli.cli import analyze, config_cmd, data, eval_cmd, hub, release, run
from zk0cli.cli import train as train_cmd

app = typer.Typer(
    name="zk0",
    help="Federated fine-tuning of SmolVLA on SO-100/SO-101 robot datasets, on Flower.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"zk0 {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """zk0: train a robot policy together without pooling the data."""
    import logging
    import sys

    from rich.console import Console
    from rich.logging import RichHandler

    from zk0cli.log import quiet_libraries

    quiet_libraries()
    # The console shows warnings and errors; zk0's INFO lines (each command started, each
    # dataset ready) and library output are for the log files, and for -v.
    # Bound to this stdout: rich's default console writes to whatever sys.stdout is at the
    # time, and inside `library_prints` that is the writer that logs, which would loop.
    handler = RichHandler(console=Console(file=sys.stdout), show_path=False,
                          rich_tracebacks=False, markup=False)
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[handler],
    )
    logging.getLogger("zk0").setLevel(logging.DEBUG if verbose else logging.INFO)


app.add_typer(train_cmd.app, name="train")
app.command("simulate")(run.simulate)
app.command("tiny-run")(run.tiny_run)
app.command("analyze-run")(analyze.analyze_run)
app.command("eval")(eval_cmd.eval_checkpoint)
app.command("push")(hub.push)
app.command("release")(release.release)
app.add_typer(data.app, name="data")
app.add_typer(config_cmd.app, name="config")


def main() -> None:
    """Console-script entry point."""
    app()
