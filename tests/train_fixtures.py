"""Configurations for zk0 train tests: local fixture datasets, the tiny model, small rounds."""

from pathlib import Path


def write_train_config(directory: Path, roots: list[Path], *, rounds: int = 2,
                       extra: str = "") -> Path:
    """A TOML config with one ``source = "local"`` dataset per root (repo id zk0test/c<i>)."""
    clients = ",\n  ".join(f'{{source = "local", name = "zk0test/c{i}", root = "{r}"}}'
                           for i, r in enumerate(roots))
    text = f"""seed = 3
output_root = "{directory / 'outputs'}"
[model]
kind = "tiny"
device = "cpu"
[data]
clients = [
  {clients}
]
heldout_episodes = 1
[training]
steps_per_round = 2
batch_size = 2
lr = 1e-3
min_lr = 1e-4
[federation]
rounds = {rounds}
min_clients = {len(roots)}
round_timeout_s = 240
node_wait_timeout_s = 5
[eval]
batches = 1
batch_size = 2
[checkpoint]
interval = 1
{extra}"""
    path = directory / "train.toml"
    path.write_text(text, encoding="utf-8")
    return path
