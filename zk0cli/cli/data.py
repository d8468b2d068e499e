"""``zk0 data``: dataset tools (``zk0 data sim`` generates SO-101 demonstrations in MuJoCo)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from zk0cli.cli.errors import handle_errors, make_console
from zk0cli.core import contract as C
from zk0cli.core.config import SIM_TASKS
from zk0cli.errors import UsageError, field_problems, problem_lines

app = typer.Typer(help="Dataset tools: generate simulated SO-101 demonstrations.",
                  no_args_is_help=True)


class SimRequest(BaseModel):
    """Validated arguments of ``zk0 data sim``."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[str] = Field(min_length=1)
    episodes: int = Field(ge=1, le=10_000)
    out: Path | None
    height: int = Field(ge=16, le=1080)
    width: int = Field(ge=16, le=1920)
    seed: int = Field(ge=0)
    only_success: bool
    overwrite: bool
    preview: Path | None

    @field_validator("tasks", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @field_validator("tasks")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in SIM_TASKS]
        if unknown:
            raise ValueError(
                f"unknown task(s) {', '.join(unknown)}; valid tasks: {', '.join(SIM_TASKS)}")
        return value


def _validate(**kwargs: object) -> SimRequest:
    try:
        return SimRequest.model_validate(kwargs)
    except ValidationError as err:
        problems = field_problems(err, data=kwargs, model=SimRequest, flags=True)
        raise UsageError(f"Invalid arguments of zk0 data sim {problem_lines(problems)}\n"
                         "Fix the flags above; see zk0 data sim --help.") from None


@app.command("sim")
def sim(
    tasks: Annotated[str, typer.Option(
        help=f"Comma-separated tasks: {', '.join(SIM_TASKS)}.")] = ",".join(SIM_TASKS),
    episodes: Annotated[int, typer.Option(help="Episodes per task.")] = 10,
    out: Annotated[Path | None, typer.Option(
        help="Folder receiving one LeRobotDataset per task (<out>/<task>); default data/sim "
             "(with --preview alone, no dataset is written).")] = None,
    height: Annotated[int, typer.Option(help="Image height (pixels).")] = 96,
    width: Annotated[int, typer.Option(help="Image width (pixels).")] = 128,
    seed: Annotated[int, typer.Option(help="Generator seed: same seed, same data.")] = 0,
    only_success: Annotated[bool, typer.Option(
        "--only-success/--keep-failures", help="Drop episodes the expert failed.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace existing datasets.")] = False,
    preview: Annotated[Path | None, typer.Option(
        help="Write a PNG contact sheet of both cameras (one expert episode per task).")] = None,
) -> None:
    """Generate SO-101 demonstration datasets in MuJoCo (LeRobotDataset v3.0, offline)."""
    with handle_errors("data sim"):
        req = _validate(tasks=tasks, episodes=episodes, out=out, height=height, width=width,
                        seed=seed, only_success=only_success, overwrite=overwrite,
                        preview=preview)
        _run(req)


def _quiet_encoders() -> None:
    """Silence the video encoder's and Hugging Face datasets' chatter (the bar shows progress)."""
    import os

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only
    try:
        import av
        from datasets.utils.logging import disable_progress_bar

        av.logging.set_level(av.logging.ERROR)
        disable_progress_bar()
    except ImportError:  # both come with lerobot[dataset]; without them generation fails later
        pass


def _run(req: SimRequest) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    from zk0cli.core.sim import contact_sheet, generate_dataset

    _quiet_encoders()
    console = make_console()
    if req.preview is not None:
        path = contact_sheet(req.preview, tasks=req.tasks, seed=req.seed, height=req.height,
                             width=req.width)
        console.print(f"contact sheet: {path}")
        if req.out is None:
            return
    out = req.out or Path("data/sim")
    roots = {task: out / task for task in req.tasks}
    existing = [str(p) for p in roots.values() if p.exists()]
    if existing and not req.overwrite:
        raise UsageError(
            f"Dataset folder(s) already exist: {', '.join(existing)}; nothing was written. "
            "Pass --overwrite to replace them, or choose another --out.")
    import time

    log = out / C.SIM_LOG
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("episodes  {task.fields[fps]:.0f} frames/s"), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as bar:
        for task, root in roots.items():
            started = time.perf_counter()
            job = bar.add_task(task, total=req.episodes, fps=0.0)

            def on_frames(n: int, job: TaskID = job, started: float = started) -> None:
                bar.update(job, fps=n / max(time.perf_counter() - started, 1e-6))

            def on_episodes(done: int, total: int, job: TaskID = job) -> None:
                bar.update(job, completed=done)

            generate_dataset(
                task, root=root, repo_id=f"zk0/sim_{task}", episodes=req.episodes,
                seed=req.seed, height=req.height, width=req.width,
                only_success=req.only_success, overwrite=req.overwrite,
                progress=on_episodes,
                frame_progress=on_frames, native_log=log)
    for task, root in roots.items():
        console.print(f"{task}: LeRobotDataset('zk0/sim_{task}', root='{root}')")
    if log.is_file() and log.stat().st_size:
        console.print(f"video encoder output: {log} (zk0 -v data sim shows it)")
