"""``zk0 config``: resolve and check a configuration without running anything."""

from __future__ import annotations

from typing import Annotated

import typer

from zk0cli.cli.errors import handle_errors
from zk0cli.cli.options import ConfigOpt, PresetOpt, SetOpt

app = typer.Typer(help="Resolve and check configurations (nothing runs).", no_args_is_help=True)


@app.command("show")
def show(
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="json or toml.")] = "toml",
) -> None:
    """Print the resolved, validated configuration (preset or file, then --set overrides)."""
    with handle_errors():
        from zk0cli.core.config import load_config
        from zk0cli.errors import UsageError

        if fmt not in ("json", "toml"):
            raise UsageError(f"--format {fmt!r} is not supported; use json or toml.")
        cfg = load_config(preset=preset, config_file=config, overrides=set_ or [])
        if fmt == "json":
            typer.echo(cfg.model_dump_json(indent=2))
        else:
            import tomli_w

            typer.echo(tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True)))
