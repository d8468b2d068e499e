"""``zk0 eval``: closed-loop success rate of a SmolVLA checkpoint in the SO-101 simulator."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from zk0cli.cli.errors import handle_errors, make_console
from zk0cli.core.config import SIM_TASKS
from zk0cli.errors import UsageError


def _tasks(text: str) -> list[str]:
    from zk0cli.core.sim.recorder import check_task

    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise UsageError(f"--task is empty; valid tasks: {', '.join(SIM_TASKS)}.")
    for task in tasks:
        check_task(task)
    return tasks


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def render_result(result: dict[str, Any]) -> list[str]:
    """One line per task: success rate, Wilson 95 % interval, steps and distance."""
    lines = []
    for task, r in result["tasks"].items():
        steps = r["mean_steps_to_success"]
        lines.append(
            f"{task}: success {r['successes']}/{r['episodes']} = {_pct(r['success_rate'])} "
            f"(95% CI {_pct(r['ci_low'])}-{_pct(r['ci_high'])}), mean steps to success "
            f"{'n/a' if steps is None else f'{steps:.0f}'}, mean final distance "
            f"{100 * r['mean_final_distance']:.1f} cm")
    return lines


def eval_checkpoint(
    checkpoint: Annotated[Path | None, typer.Argument(
        help="A checkpoint directory (models/checkpoint_round_N, or a lerobot-train "
             "pretrained_model/), or a zk0 run directory (its models/latest).",
        show_default=False)] = None,
    task: Annotated[str, typer.Option(
        help=f"Comma-separated simulator tasks: {', '.join(SIM_TASKS)}.")] = "lift",
    episodes: Annotated[int, typer.Option(help="Episodes per task.")] = 20,
    seed: Annotated[int, typer.Option(
        help="Evaluation seed: the same seed gives the same layouts and the same rollouts; "
             "the layouts are ones no generated training dataset holds.")] = 0,
    max_steps: Annotated[int | None, typer.Option(
        help="Control steps (1/30 s) per episode; default per task.")] = None,
    video: Annotated[Path | None, typer.Option(
        help="Write every episode as MP4 to DIR/<task>/eval_episode_<i>.mp4 (LeRobot's "
             "eval-video layout; both cameras side by side).")] = None,
    expert: Annotated[bool, typer.Option(
        "--expert", help="Evaluate the scripted expert (the reference rate) instead.")] = False,
    out: Annotated[Path | None, typer.Option(
        help="JSON result file (replaced if it exists); default eval_<checkpoint "
             "name>.json (eval_expert.json) in the current folder.")
        ] = None,
    device: Annotated[str, typer.Option(help="Torch device: cpu, cuda or auto.")] = "cpu",
) -> None:
    """Roll a SmolVLA checkpoint out in the SO-101 simulator; print its success rate."""
    with handle_errors("eval"):
        tasks = _tasks(task)
        if max_steps is not None and max_steps < 1:
            raise UsageError(f"--max-steps {max_steps}: give at least 1 control step.")
        if checkpoint is not None and expert:
            raise UsageError("Pass either a CHECKPOINT or --expert, not both.")
        _check_options(episodes=episodes, seed=seed, video=video, out=out, device=device)
        _run(checkpoint, tasks=tasks, episodes=episodes, seed=seed, max_steps=max_steps,
             video=video, expert=expert, out=out, device=device)


MAX_EPISODES = 10_000  # eval.closed_loop.episodes' bound


def _check_options(*, episodes: int, seed: int, video: Path | None, out: Path | None,
                   device: str) -> None:
    """Refuse bad options before any policy loads or episode runs.

    Raises:
        UsageError: ``--episodes`` outside 1..10000, a negative ``--seed``, a ``--video``
            that is (or lies under) a file, an ``--out`` that is a directory, or a
            ``--device`` other than cpu, cuda, cuda:N or auto.
    """
    if not 1 <= episodes <= MAX_EPISODES:
        raise UsageError(f"--episodes {episodes}: evaluate at least 1 episode per task, "
                         f"at most {MAX_EPISODES:,}.")
    if seed < 0:
        raise UsageError(f"--seed {seed}: the evaluation seed must be >= 0.")
    if video is not None:
        for part in (video, *video.parents):
            if part.exists() and not part.is_dir():
                raise UsageError(f"--video {video}: {part} is a file; give a folder for the "
                                 "MP4 files (created if missing).")
    if out is not None and out.is_dir():
        raise UsageError(f"--out {out}: is a directory; give the JSON file to write "
                         "(e.g. {out}/eval.json).".replace("{out}", str(out)))
    if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", device):
        raise UsageError(f"--device {device!r}: accepted: cpu, cuda, cuda:N or auto.")


def _run(checkpoint: Path | None, *, tasks: list[str], episodes: int, seed: int,
         max_steps: int | None, video: Path | None, expert: bool, out: Path | None,
         device: str) -> None:
    from zk0cli.core.closed_loop import evaluate_checkpoint
    from zk0cli.core.rundir import write_json

    console = make_console()
    result = evaluate_checkpoint(checkpoint, tasks=tasks, episodes=episodes, seed=seed,
                                 max_steps=max_steps, video_dir=video, device=device,
                                 expert=expert)
    name = "expert" if expert else Path(result["checkpoint"]).name
    path = out or Path(f"eval_{name}.json")
    write_json(path, result)
    who = "scripted expert" if expert else result["checkpoint"]
    console.print(f"closed-loop evaluation of {who} (seed {seed}, {episodes} episodes per task)")
    for line in render_result(result):
        console.print(line)
    console.print(f"result: {path}" + (f"; videos: {video}" if video else ""))
