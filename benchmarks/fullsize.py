"""The full-size SmolVLA architecture, built offline with random weights.

SmolVLA on SmolVLM2-500M: the configuration values of ``SmolVLM2-500M-Video-Instruct``
(a llama text model of hidden size 960 × 32 layers, of which SmolVLA keeps 16, and a
768 × 12-layer vision model at 512 px) and LeRobot's SmolVLA defaults (action expert at
0.75 width, 50-step chunks, state/action padded to 32). The tokenizer is zk0's offline
byte-level one (the tiny preset's), which only changes token ids, not tensor shapes.
Nothing is downloaded: 450,046,176 parameters, 99,880,992 trainable by default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FULL_VLM_DIRNAME = "full-vlm-1"

TEXT_CONFIG = {
    "model_type": "llama",
    "vocab_size": 49280,
    "hidden_size": 960,
    "intermediate_size": 2560,
    "num_hidden_layers": 32,
    "num_attention_heads": 15,
    "num_key_value_heads": 5,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": False,
}
VISION_CONFIG = {
    "model_type": "smolvlm_vision",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 512,
    "patch_size": 16,
    "num_channels": 3,
}
IMAGE_SIZE = 512
SCALE_FACTOR = 4


def full_vlm_dir(cache_dir: Path | None = None) -> Path:
    """Write the full-size SmolVLM configuration/tokenizer directory once; return it."""
    from zk0cli.core.policy import _cache_root, _tiny_vlm_files

    target = _cache_root(cache_dir) / FULL_VLM_DIRNAME
    files = _tiny_vlm_files()
    config = json.loads(files["config.json"])
    config["text_config"] = {**TEXT_CONFIG, "pad_token_id": config["pad_token_id"]}
    config["vision_config"] = dict(VISION_CONFIG)
    config["scale_factor"] = SCALE_FACTOR
    image = json.loads(files["preprocessor_config.json"])
    image["size"] = {"longest_edge": IMAGE_SIZE}
    image["max_image_size"] = {"longest_edge": IMAGE_SIZE}
    processor = json.loads(files["processor_config.json"])
    processor["image_seq_len"] = (IMAGE_SIZE // 16 // SCALE_FACTOR) ** 2
    files["config.json"] = json.dumps(config, indent=2, sort_keys=True)
    files["preprocessor_config.json"] = json.dumps(image, indent=2, sort_keys=True)
    files["processor_config.json"] = json.dumps(processor, indent=2, sort_keys=True)
    target.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = target / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
    return target


def full_features(cameras: int = 2) -> dict[str, Any]:
    """SO-100-like policy features: state (6), ``cameras`` RGB cameras, action (6)."""
    from lerobot.configs import FeatureType, PolicyFeature

    feats = {"observation.state": PolicyFeature(FeatureType.STATE, (6,)),
             "action": PolicyFeature(FeatureType.ACTION, (6,))}
    for i in range(cameras):
        feats[f"observation.images.camera{i + 1}"] = PolicyFeature(
            FeatureType.VISUAL, (3, 480, 640))
    return feats


def full_smolvla_config(device: str = "cpu") -> Any:
    """LeRobot's default ``SmolVLAConfig`` on the offline full-size VLM directory."""
    from lerobot.configs import FeatureType
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    feats = full_features()
    return SmolVLAConfig(
        vlm_model_name=str(full_vlm_dir()),
        load_vlm_weights=False,
        device=device,
        input_features={k: f for k, f in feats.items() if f.type != FeatureType.ACTION},
        output_features={k: f for k, f in feats.items() if f.type == FeatureType.ACTION},
    )


def build_full_policy(device: str = "cpu", seed: int = 0) -> Any:
    """The full-size ``SmolVLAPolicy`` with random weights (~12 s, ~3 GB on CPU)."""
    import torch
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = SmolVLAPolicy(full_smolvla_config(device))
    return policy.to(device)


def unit_stats() -> dict[str, dict[str, Any]]:
    """Mean 0 / std 1 statistics for the state and action features (synthetic data)."""
    import numpy as np

    one = {"mean": np.zeros(6, np.float32), "std": np.ones(6, np.float32),
           "min": -np.ones(6, np.float32), "max": np.ones(6, np.float32)}
    return {"observation.state": dict(one), "action": dict(one)}
