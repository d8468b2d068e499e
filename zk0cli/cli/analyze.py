"""``zk0 analyze-run``."""

from zk0cli.cli.errors import not_available


def analyze_run() -> None:
    """Report, plots and anomalies for a run directory."""
    not_available("analyze-run", "issue: zk0 analyze-run")
