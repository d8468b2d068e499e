"""Built-in configuration presets (``--preset so100`` and ``--preset tiny``).

Presets are plain mappings validated like any TOML file; ``examples/so100.toml`` and
``examples/tiny.toml`` are commented copies (a test keeps them equal).
"""

from __future__ import annotations

import copy
from typing import Any

from zk0cli.errors import ConfigError, FieldProblem

# Public SO-100/SO-101 datasets used by the upstream zk0 project (one client each) and its
# held-out server evaluation dataset.
SO100_CLIENT_DATASETS: tuple[str, ...] = (
    "shaunkirby/record-test",
    "ethanCSL/direction_test",
    "gimarchetti/so101-winnie-us5",
    "olingoudey/so101_stationary_mug445",
)
SO100_EVAL_DATASETS: tuple[str, ...] = ("Hupy440/Two_Cubes_and_Two_Buckets_v2",)

_PRESETS: dict[str, dict[str, Any]] = {
    "so100": {
        "seed": 42,
        "model": {"kind": "pretrained", "path": "lerobot/smolvla_base", "device": "auto",
                  "allow_missing_cameras": True},
        "data": {
            "clients": [{"source": "hub", "name": n} for n in SO100_CLIENT_DATASETS],
            "eval": [{"source": "hub", "name": n} for n in SO100_EVAL_DATASETS],
            "heldout_episodes": 2,
            "rename_map": {
                "observation.images.front": "observation.images.camera1",
                "observation.images.wrist": "observation.images.camera2",
            },
        },
        "training": {"steps_per_round": 20, "batch_size": 16, "lr": 1e-4},
        "federation": {"rounds": 30, "min_clients": 2, "proximal_mu": 0.01},
        "eval": {"frequency": 1, "batches": 4, "batch_size": 16},
        "checkpoint": {"interval": 5},
    },
    "tiny": {
        "seed": 42,
        "model": {"kind": "tiny", "device": "cpu"},
        "data": {
            "clients": [
                {"source": "sim", "name": "lift"},
                {"source": "sim", "name": "pick_place"},
                {"source": "sim", "name": "stack"},
                {"source": "sim", "name": "push"},
            ],
            "eval": [{"source": "sim", "name": "pick_place", "seed": 1000, "episodes": 2}],
            "heldout_episodes": 1,
            "sim": {"episodes": 4, "height": 96, "width": 128},
        },
        "training": {"steps_per_round": 10, "batch_size": 4, "lr": 1e-3, "min_lr": 1e-4},
        "federation": {"rounds": 3, "min_clients": 2, "proximal_mu": 0.01,
                       "round_timeout_s": 600},
        "eval": {"frequency": 1, "batches": 4, "batch_size": 8},
        "checkpoint": {"interval": 1},
    },
}

PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)


def get_preset(name: str) -> dict[str, Any]:
    """Return a fresh copy of a preset's configuration mapping.

    Raises:
        ConfigError: ``name`` is not one of :data:`PRESET_NAMES`.
    """
    if name not in _PRESETS:
        raise ConfigError(
            [FieldProblem("--preset", name, f"must be one of {', '.join(PRESET_NAMES)}")],
            hint="Pick one of these presets, or give your own TOML file with --config "
                 "(examples/ holds commented copies of both presets).")
    return copy.deepcopy(_PRESETS[name])
