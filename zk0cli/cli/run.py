"""``zk0 simulate`` and ``zk0 tiny-run``."""

from zk0cli.cli.errors import not_available


def simulate() -> None:
    """Run N virtual clients on this machine (Flower simulation runtime)."""
    not_available("simulate", "issue: Federation")


def tiny_run() -> None:
    """One-round smoke run of the whole lifecycle on the embedded defaults."""
    not_available("tiny-run", "issue: Federation")
