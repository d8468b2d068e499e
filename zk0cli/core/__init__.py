"""The zk0 core library: never imports the CLI, Typer or rich; no import-time side effects."""
