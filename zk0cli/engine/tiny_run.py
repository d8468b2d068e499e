"""The phases of ``zk0 tiny-run`` after the federation: check, analyse, push."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zk0cli.core.rundir import RunDir
from zk0cli.errors import CheckpointError


def check_push_target(repo_id: str | None) -> str:
    """Check ``--push --repo-id`` before the smoke run starts.

    Returns:
        The repo id.

    Raises:
        UsageError: No repo id, or not a valid Hub ``namespace/name``.
    """
    from zk0cli.errors import UsageError
    from zk0cli.hub.checkpoint import check_repo_id

    if not repo_id:
        raise UsageError("--push needs --repo-id namespace/name; nothing was run or pushed.")
    problem = check_repo_id(repo_id)
    if problem:
        raise UsageError(f"--repo-id: {problem}; nothing was run or pushed.")
    return repo_id


def check_checkpoint(rundir: RunDir) -> Path:
    """Verify the newest checkpoint against its manifest and reload it offline.

    Returns:
        The checkpoint directory.

    Raises:
        CheckpointError: No checkpoint, a manifest mismatch, or it does not reload.
    """
    from zk0cli.core.checkpoint import verify_checkpoint
    from zk0cli.core.policy import load_bundle

    ckpt = rundir.latest_checkpoint()
    if ckpt is None:
        raise CheckpointError(str(rundir.models_dir), ["models/latest names no checkpoint"])
    verify_checkpoint(ckpt)
    try:
        load_bundle(ckpt)
    except Exception as err:  # any load failure means the checkpoint is unusable
        raise CheckpointError(str(ckpt), [f"does not reload: {type(err).__name__}: {err}"]
                              ) from err
    return ckpt


def analyze(rundir: RunDir, console: Any) -> None:
    """Run ``analyze-run`` on the run directory and print its summary."""
    try:
        from zk0cli.analysis import analyze_run
    except ImportError:
        console.print("analyze-run is not available yet; skipped")
        return
    analysis = analyze_run(rundir.root)
    console.print(f"analysis written to {rundir.report_dir}: "
                  f"{len(getattr(analysis, 'findings', []))} finding(s)")


def push(checkpoint: Path, *, repo_id: str, console: Any, endpoint: str | None = None) -> None:
    """Push the checkpoint to the Hub (only when the user asked with --push).

    Args:
        checkpoint: The run's newest checkpoint.
        repo_id: Target ``namespace/name``.
        console: Where to print the commit URL.
        endpoint: Hub URL (default ``HF_ENDPOINT`` or huggingface.co).

    Raises:
        CheckpointError: The checkpoint fails validation.
        HubAuthError: No token (nothing is sent).
        HubError: The upload failed.
    """
    from zk0cli.hub import PushOptions, prepare_push, upload_checkpoint

    plan = prepare_push(PushOptions.from_flags(checkpoint=checkpoint, repo_id=repo_id,
                                               endpoint=endpoint))
    result = upload_checkpoint(plan)
    console.print(f"pushed {len(plan.files)} files to {repo_id}, tag {result.tag}: "
                  f"{result.commit_url}")
