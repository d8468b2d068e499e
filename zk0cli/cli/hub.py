"""``zk0 push``: upload a validated checkpoint to the Hugging Face Hub with a model card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zk0cli.cli.errors import handle_errors


def push(
    checkpoint_dir: Annotated[
        Path,
        typer.Argument(help="Checkpoint directory (models/checkpoint_round_N) or run directory "
                            "(its newest complete checkpoint, named in the output).",
                       show_default=False),
    ],
    repo_id: Annotated[
        str,
        typer.Option("--repo-id", help="Target model repository, namespace/name.",
                     show_default=False),
    ],
    private: Annotated[
        bool, typer.Option("--private", help="Create the repository private.")
    ] = False,
    revision: Annotated[
        str | None,
        typer.Option("--revision", help="Branch to commit to (created if missing); default main.",
                     show_default=False),
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option("--tag", help="Tag for the upload commit; default fl-round-N.",
                     show_default=False),
    ] = None,
    commit_message: Annotated[
        str | None,
        typer.Option("--commit-message", help="Commit title; default names the round.",
                     show_default=False),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", help="Hub URL; default HF_ENDPOINT or https://huggingface.co.",
                     show_default=False),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Validate; print the files, target and card; send nothing."),
    ] = False,
    regenerate_card: Annotated[
        bool,
        typer.Option("--regenerate-card",
                     help="Rebuild README.md from the run directory instead of the checkpoint's."),
    ] = False,
) -> None:
    """Upload a checkpoint to the Hugging Face Hub with a model card.

    Validates everything first; the token comes from HF_TOKEN or `hf auth login`.
    """
    with handle_errors("push"):
        from rich.filesize import decimal

        from zk0cli.hub import PushOptions, prepare_push, upload_checkpoint

        options = PushOptions.from_flags(
            checkpoint=checkpoint_dir, repo_id=repo_id, private=private, revision=revision,
            tag=tag, commit_message=commit_message, endpoint=endpoint, dry_run=dry_run,
            regenerate_card=regenerate_card,
        )
        plan = prepare_push(options)
        ckpt = plan.checkpoint
        if ckpt.from_run_dir:
            typer.echo(f"Newest complete checkpoint of {ckpt.run_dir}: {ckpt.path.name} "
                       f"(round {ckpt.round})")
        typer.echo(f"Checkpoint {ckpt.path} is valid (round {ckpt.round}).")
        target = f"{plan.endpoint}/{options.repo_id}"
        branch = options.revision or "main"
        if not dry_run:
            result = upload_checkpoint(plan)
            typer.echo(f"Uploaded {len(plan.files)} files ({decimal(plan.total_bytes)}) to "
                       f"{target} ({branch}), tag {result.tag}.")
            typer.echo(f"Commit: {result.commit_url}")
            return
        typer.echo(f"Dry run: nothing is sent. Would upload {len(plan.files)} files "
                   f"({decimal(plan.total_bytes)}) to {target}")
        typer.echo(f"  branch {branch}, tag {plan.tag}, "
                   f"{'private' if options.private else 'public'} if created, "
                   f"commit message {plan.commit_message!r}")
        width = max(len(name) for name, _ in plan.files)
        for name, size in plan.files:
            typer.echo(f"  {name:<{width}}  {decimal(size):>10}")
        card_origin = "regenerated from the run directory" if regenerate_card else "README.md"
        typer.echo(f"\nModel card ({card_origin}):\n")
        typer.echo(plan.card)
