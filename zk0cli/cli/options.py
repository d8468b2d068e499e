"""Options shared by the commands that run a federation (simulate, train, tiny-run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML configuration file (see examples/).",
                 show_default=False),
]
PresetOpt = Annotated[
    str | None,
    typer.Option("--preset", help="Built-in preset: so100 or tiny (default tiny when no --config).",
                 show_default=False),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a field: section.key=value (repeatable).",
                 show_default=False),
]
RoundsOpt = Annotated[
    int | None, typer.Option("--rounds", help="federation.rounds", show_default=False)
]
ClientsOpt = Annotated[
    int | None, typer.Option("--clients", help="federation.num_clients", show_default=False)
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", help="Run directory to create (default outputs/<timestamp>).",
                 show_default=False),
]
ResumeOpt = Annotated[
    Path | None,
    typer.Option("--resume", help="Continue this run directory from its newest complete "
                 "checkpoint (its config.json, plus --rounds/--set changes).",
                 show_default=False),
]
