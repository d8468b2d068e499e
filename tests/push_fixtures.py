"""Run directories and checkpoints laid out as in docs/run-directory.md, for push tests.

The LeRobot files are real: ``config.json`` is written by ``SmolVLAConfig``, the processor
JSON and normaliser state files by ``PolicyProcessorPipeline.save_pretrained`` (with a
normaliser step; no tokenizer, so no network). They are built once per process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
from pathlib import Path

from zk0cli.core.config import validate_config
from zk0cli.core.presets import get_preset
from zk0cli.core.rundir import RunDir, write_json

# Server eval loss per round: the card must show these numbers.
LOSSES = {0: 0.9312, 1: 0.7105, 2: 0.5521, 3: 0.6034}
CLIENT_LOSSES = {1: 0.8123, 2: 0.6422, 3: 0.5977}
VERSIONS = {"zk0": "0.1.0", "flwr": "1.42.0", "lerobot": "0.6.1", "torch": "2.11.0",
            "python": "3.12.3"}
CLIENT_DATASETS = ("alice/so101-lift", "bob/so100-pick")


@functools.cache
def lerobot_files() -> dict[str, bytes]:
    """config.json, processor JSON files and their state files, as bytes."""
    import torch
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.processor import (
        NormalizerProcessorStep,
        PolicyProcessorPipeline,
        UnnormalizerProcessorStep,
    )

    feats = {"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(6,)),
             "action": PolicyFeature(type=FeatureType.ACTION, shape=(6,))}
    stats = {k: {"mean": torch.arange(6.0), "std": torch.ones(6)} for k in feats}
    norm = {FeatureType.STATE: NormalizationMode.MEAN_STD,
            FeatureType.ACTION: NormalizationMode.MEAN_STD}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        SmolVLAConfig(input_features={"observation.state": feats["observation.state"]},
                      output_features={"action": feats["action"]})._save_pretrained(out)
        PolicyProcessorPipeline(
            steps=[NormalizerProcessorStep(features=feats, norm_map=norm, stats=stats)],
            name="policy_preprocessor",
        ).save_pretrained(out)
        PolicyProcessorPipeline(
            steps=[UnnormalizerProcessorStep(features={"action": feats["action"]}, norm_map=norm,
                                             stats={"action": stats["action"]})],
            name="policy_postprocessor",
        ).save_pretrained(out)
        return {p.name: p.read_bytes() for p in out.iterdir()}


def weights_bytes() -> bytes:
    """A small model.safetensors (two tensors, ~4.4 kB)."""
    import torch
    from safetensors.torch import save

    gen = torch.Generator().manual_seed(0)
    return save({"model.action_out_proj.weight": torch.randn(32, 32, generator=gen),
                 "model.action_out_proj.bias": torch.randn(32, generator=gen)})


def write_manifest(checkpoint: Path, server_round: int) -> None:
    """(Re)write manifest.json over every other file of the checkpoint."""
    files = {}
    for p in sorted(checkpoint.rglob("*")):
        rel = p.relative_to(checkpoint).as_posix()
        if p.is_file() and rel != "manifest.json":
            data = p.read_bytes()
            files[rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    write_json(checkpoint / "manifest.json", {"round": server_round, "files": files})


def make_checkpoint(run: RunDir, server_round: int, *, latest: bool = True) -> Path:
    """Write models/checkpoint_round_N (with a card) and point models/latest at it."""
    from zk0cli.core.card import build_model_card

    ckpt = run.checkpoint(server_round)
    ckpt.mkdir(parents=True)
    for name, data in lerobot_files().items():
        (ckpt / name).write_bytes(data)
    (ckpt / "model.safetensors").write_bytes(weights_bytes())
    write_json(ckpt / "metrics.json", {"round": server_round,
                                       "server_eval_loss": LOSSES.get(server_round)})
    build_model_card(run.root, checkpoint_round=server_round).save(ckpt / "README.md")
    write_manifest(ckpt, server_round)
    if latest:
        run.set_latest(ckpt)
    return ckpt


def make_run_dir(root: Path, *, rounds: int = 3, checkpoints: tuple[int, ...] = (3,)) -> RunDir:
    """A completed 2-client run with server eval files, metrics and checkpoints."""
    data = get_preset("so100")
    data["data"]["clients"] = [{"source": "hub", "name": n} for n in CLIENT_DATASETS]
    data["training"].update(steps_per_round=7, batch_size=12, lr=3e-4)
    data["federation"].update(rounds=rounds, proximal_mu=0.05)
    config = validate_config(data)
    run = RunDir.create(root, name="2025-01-31_12-00-00")
    run.config_json.write_text(config.model_dump_json(indent=2), encoding="utf-8")
    write_json(run.run_json, {"status": "completed", "engine": "simulation",
                              "command": "simulate", "seed": 42, "versions": VERSIONS,
                              "rounds_planned": rounds, "rounds_completed": rounds})
    history = {str(r): loss for r, loss in LOSSES.items() if r <= rounds}
    write_json(run.policy_loss_history, history)
    rows = []
    for r in range(rounds + 1):
        rows.append({"round": r, "aggregated": r > 0, "num_clients": 2 if r else 0,
                     "num_failures": 0, "avg_client_loss": CLIENT_LOSSES.get(r),
                     "server_policy_loss": LOSSES.get(r), "proximal_mu": 0.05, "lr": 3e-4})
        write_json(run.server_eval(r), {
            "round": r, "aggregated": r > 0, "proximal_mu": 0.05, "lr": 3e-4,
            "server_eval": {"datasets": {"Hupy440/Two_Cubes_and_Two_Buckets_v2": LOSSES[r]},
                            "composite": LOSSES[r]},
            "server_composite_eval_loss": LOSSES[r],
        })
    write_json(run.federated_metrics, rows)
    for r in checkpoints:
        make_checkpoint(run, r)
    return run


def rewrite_json(path: Path, **changes: object) -> None:
    """Change top-level keys of a JSON file."""
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=4))
