"""``zk0 data``: dataset tools."""

import typer

from zk0cli.cli.errors import not_available

app = typer.Typer(help="Dataset tools: generate simulated SO-101 demonstrations.",
                  no_args_is_help=True)


@app.command("sim")
def sim() -> None:
    """Generate SO-101 demonstration datasets in MuJoCo."""
    not_available("data sim", "issue: Simulated SO-101 demonstrations")
