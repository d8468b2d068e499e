"""``zk0 train``: a real federation on Flower SuperLink and SuperNodes."""

import typer

from zk0cli.cli.errors import not_available

app = typer.Typer(help="Run a real federation on a Flower SuperLink and SuperNodes.",
                  invoke_without_command=True)


@app.callback()
def train(ctx: typer.Context) -> None:
    """Submit the zk0 Flower app to a SuperLink."""
    if ctx.invoked_subcommand is None:
        not_available("train", "issue: zk0 train")
