"""The phases of ``zk0 tiny-run`` after the federation: check, analyse, push."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from zk0cli.core.rundir import RunDir
from zk0cli.errors import CheckpointError

if TYPE_CHECKING:
    from zk0cli.analysis import RunAnalysis


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
        raise CheckpointError(str(rundir.models_dir),
                              [f"{rundir.latest.name} names no complete checkpoint"])
    verify_checkpoint(ckpt)
    try:
        load_bundle(ckpt)
    except Exception as err:  # any load failure means the checkpoint is unusable
        raise CheckpointError(str(ckpt), [f"does not reload: {type(err).__name__}: {err}"]
                              ) from err
    return ckpt


def count_findings(analysis: RunAnalysis) -> int:
    """How many anomalies ``analyze-run`` found (``summary.findings``)."""
    return len(analysis.summary.findings)


def analyze(rundir: RunDir, console: Any) -> int:
    """Run ``analyze-run`` on the run directory and print its summary.

    Returns:
        The number of findings.
    """
    from zk0cli.analysis import analyze_run

    analysis = analyze_run(rundir.root)
    n = count_findings(analysis)
    console.print(f"analysis written to {rundir.report_dir}: {n} finding(s)")
    return n


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
