"""A tiny-preset checkpoint is complete on its own: plain LeRobot loads it and acts,
in a process whose HOME and caches are elsewhere and where zk0's cache is hidden."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zk0cli.core.policy import VLM_SUBDIR, load_bundle, save_bundle

PLAIN_LEROBOT = r"""
import torch
from lerobot.policies.factory import make_pre_post_processors
from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

policy = SmolVLAPolicy.from_pretrained(".")
pre, post = make_pre_post_processors(policy.config, pretrained_path=".")
batch = {"observation.state": torch.zeros(1, 6), "task": ["pick the cube"]}
for key in policy.config.image_features:
    batch[key] = torch.rand(1, 3, 32, 32)
policy.eval()
with torch.no_grad():
    action = post(policy.select_action(pre(batch)))
assert tuple(action.shape) == (1, 6), action.shape
assert torch.isfinite(action).all()
print("ACTION", action.shape[-1])
"""


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="hiding zk0's cache needs a mount namespace (root)")
def test_plain_lerobot_loads_a_tiny_checkpoint_without_zk0s_cache(tmp_path, make_bundle):
    bundle = make_bundle(seed=3)
    vlm = Path(bundle.policy.config.vlm_model_name)
    ckpt = tmp_path / "ckpt"
    save_bundle(bundle, ckpt)
    assert bundle.policy.config.vlm_model_name == str(vlm)  # the live policy is unchanged
    assert (ckpt / VLM_SUBDIR / "tokenizer.json").is_file()
    for name in ("config.json", "policy_preprocessor.json"):
        text = (ckpt / name).read_text()
        assert str(vlm) not in text and str(vlm.parent) not in text, name
    assert json.loads((ckpt / "config.json").read_text())["vlm_model_name"] == VLM_SUBDIR
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(home / "hf"), "XDG_CACHE_HOME": str(home / "cache"),
           "TOKENIZERS_PARALLELISM": "false"}  # no PYTHONPATH: zk0 is not importable
    script = tmp_path / "act.py"
    script.write_text(PLAIN_LEROBOT)
    hide = f"mount -t tmpfs none {vlm.parent} && exec {sys.executable} {script}"
    res = subprocess.run(["unshare", "--mount", "--fork", "sh", "-c", hide], cwd=ckpt,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "ACTION 6" in res.stdout
    # zk0's own loader reads it from any folder, with identical tensors.
    again = load_bundle(ckpt)
    assert again.policy.config.vlm_model_name == str((ckpt / VLM_SUBDIR).absolute())
    a, b = bundle.policy.state_dict(), again.policy.state_dict()
    assert all(a[k].equal(b[k].to(a[k].device)) for k in a)


def test_plain_lerobot_loads_a_tiny_checkpoint_from_another_folder(tmp_path, make_bundle,
                                                                   monkeypatch):
    """The recipe of docs/run-directory.md: LeRobot resolves ``vlm_model_name`` against the
    working directory, so from elsewhere the checkpoint's ``vlm`` folder is named in full."""
    import torch
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    bundle = make_bundle(seed=4)
    ckpt = tmp_path / "run" / "models" / "checkpoint_round_1"
    save_bundle(bundle, ckpt)
    monkeypatch.chdir(tmp_path)  # not the checkpoint folder: "vlm" alone does not resolve
    with pytest.raises(OSError, match="huggingface.co"):  # "vlm" is taken for a Hub id
        SmolVLAPolicy.from_pretrained(ckpt)
    cfg = PreTrainedConfig.from_pretrained(ckpt)
    cfg.vlm_model_name = str(ckpt.resolve() / "vlm")
    policy = SmolVLAPolicy.from_pretrained(ckpt, config=cfg)
    pre, post = make_pre_post_processors(
        cfg, pretrained_path=str(ckpt),
        preprocessor_overrides={"tokenizer_processor": {"tokenizer_name": cfg.vlm_model_name}})
    a, b = bundle.policy.state_dict(), policy.state_dict()
    assert all(a[k].equal(b[k].to(a[k].device)) for k in a)
    batch = {"observation.state": torch.zeros(1, 6), "task": ["pick the cube"]}
    for key in policy.config.image_features:
        batch[key] = torch.rand(1, 3, 32, 32)
    policy.eval()
    with torch.no_grad():
        action = post(policy.select_action(pre(batch)))
    assert tuple(action.shape) == (1, 6) and torch.isfinite(action).all()
