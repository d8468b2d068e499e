"""``zk0 push``."""

from zk0cli.cli.errors import not_available


def push() -> None:
    """Upload a checkpoint to the Hugging Face Hub with a model card."""
    not_available("push", "issue: zk0 push")
