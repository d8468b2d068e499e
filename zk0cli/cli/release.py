"""``zk0 release``."""

from zk0cli.cli.errors import not_available


def release() -> None:
    """Semantic version bump, changelog and annotated git tag."""
    not_available("release", "issue: zk0 release")
