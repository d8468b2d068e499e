"""``zk0 tiny-run``: the lifecycle of :mod:`zk0cli.engine.lifecycle`, then check, analyse, push."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from zk0cli.core.rundir import RunDir
from zk0cli.errors import CheckpointError, UsageError

if TYPE_CHECKING:
    from zk0cli.analysis import RunAnalysis
    from zk0cli.engine.lifecycle import RunDisplay, RunOutcome, RunRequest


def check_push_target(repo_id: str | None) -> str:
    """Check ``--push --repo-id`` before the smoke run starts.

    Returns:
        The repo id.

    Raises:
        UsageError: No repo id, or not a valid Hub ``namespace/name``.
    """
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


def analyze(rundir: RunDir, say: Callable[[str], None]) -> int:
    """Run ``analyze-run`` on the run directory and print its summary.

    Args:
        rundir: The run.
        say: Prints one line.

    Returns:
        The number of findings.
    """
    from zk0cli.analysis import analyze_run

    analysis = analyze_run(rundir.root)
    n = count_findings(analysis)
    say(f"analysis written to {rundir.report_dir}: {n} finding(s)")
    return n


def push(checkpoint: Path, *, repo_id: str, say: Callable[[str], None],
         endpoint: str | None = None) -> None:
    """Push the checkpoint to the Hub (only when the user asked with --push).

    Args:
        checkpoint: The run's newest checkpoint.
        repo_id: Target ``namespace/name``.
        say: Prints the commit URL.
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
    say(f"pushed {len(plan.files)} files to {repo_id}, tag {result.tag}: {result.commit_url}")


def run_tiny(req: RunRequest, ui: RunDisplay, *, push_repo: str | None, push_requested: bool,
             on_phase: Callable[[str], None],
             on_federation_end: Callable[[RunOutcome], object]) -> RunOutcome:
    """``zk0 tiny-run``: config, federation, checkpoint, analysis, and push if asked.

    Args:
        req: The request (``command`` = ``tiny-run``).
        ui: The display.
        push_repo: ``--repo-id`` for ``--push``.
        push_requested: ``--push`` was given.
        on_phase: Told each phase's name as it starts (errors name the phase).
        on_federation_end: Shows the federation's outcome; may stop the command (a run
            that did not complete).

    Returns:
        The federation's outcome.

    Raises:
        UsageError: ``--push`` without ``--repo-id``, or bad configuration.
        CheckpointError: The checkpoint is incomplete or does not reload.
    """
    from zk0cli.engine import lifecycle

    on_phase("config")
    if push_requested:
        check_push_target(push_repo)  # before minutes of smoke run
    lifecycle.check_request(req)
    cfg = lifecycle.load_config(req)
    on_phase("federation")
    outcome = lifecycle.simulate(req, ui, config=cfg)
    on_federation_end(outcome)
    on_phase("checkpoint")
    ckpt = check_checkpoint(outcome.rundir)
    ui.info(f"checkpoint reloads offline with SmolVLAPolicy.from_pretrained: {ckpt}")
    on_phase("analysis")
    analyze(outcome.rundir, ui.info)
    if push_repo and push_requested:
        on_phase("push")
        push(ckpt, repo_id=push_repo, say=ui.info)
    return outcome
