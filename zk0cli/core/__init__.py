"""The zk0 core library: never imports the CLI, Typer or rich."""

from zk0cli.log import quiet_libraries

quiet_libraries()
