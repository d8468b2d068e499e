"""Upload a validated zk0 checkpoint to the Hugging Face Hub (``zk0 push``).

``prepare_push`` resolves and validates everything and builds the card without sending
anything; ``upload_checkpoint`` sends it. ``validate_checkpoint`` and
``resolve_checkpoint`` are usable on their own.
"""

from zk0cli.hub.checkpoint import (
    CheckpointFile,
    ResolvedCheckpoint,
    check_repo_id,
    resolve_checkpoint,
    validate_checkpoint,
)
from zk0cli.hub.upload import (
    PushOptions,
    PushPlan,
    PushResult,
    prepare_push,
    resolve_token,
    upload_checkpoint,
)

__all__ = [
    "CheckpointFile",
    "PushOptions",
    "PushPlan",
    "PushResult",
    "ResolvedCheckpoint",
    "check_repo_id",
    "prepare_push",
    "resolve_checkpoint",
    "resolve_token",
    "upload_checkpoint",
    "validate_checkpoint",
]
