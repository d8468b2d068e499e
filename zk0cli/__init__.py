"""zk0: federated fine-tuning of SmolVLA (LeRobot) on SO-100/SO-101 datasets, on Flower.

The package is layered (see ``docs/design.md``): ``zk0cli.core`` holds the library
(configuration, policy factory, datasets, simulator, trainer, strategy, transport,
checkpoints, run directory); ``zk0cli.flower`` adapts it to Flower's ServerApp and
ClientApp; ``zk0cli.engine`` runs federations; ``zk0cli.cli`` is the Typer front end.
Importing this package is cheap: nothing here imports torch, LeRobot or Flower.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zk0cli")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
