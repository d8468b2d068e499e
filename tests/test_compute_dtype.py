"""``model.dtype`` (bf16 autocast on cuda) and ``federation.transport_dtype`` settings."""

import contextlib

import pytest
import torch

from zk0cli.core.config import load_config
from zk0cli.errors import ConfigError


def test_transport_dtype_defaults_to_bf16_and_is_closed():
    assert load_config(preset="tiny").federation.transport_dtype == "bfloat16"
    cfg = load_config(preset="tiny", overrides=["federation.transport_dtype=float32"])
    assert cfg.federation.transport_dtype == "float32"
    with pytest.raises(ConfigError, match="federation.transport_dtype"):
        load_config(preset="tiny", overrides=["federation.transport_dtype=float16"])


def test_bf16_compute_on_cpu_is_rejected_by_the_config():
    with pytest.raises(ConfigError) as err:
        load_config(preset="so100", overrides=["model.device=cpu", "model.dtype=bfloat16"])
    assert "model.dtype = 'bfloat16' needs model.device = 'cuda'" in str(err.value)
    cfg = load_config(preset="so100", overrides=["model.device=cuda", "model.dtype=bfloat16"])
    assert cfg.model.dtype == "bfloat16"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_bf16_with_auto_device_on_a_cpu_machine_fails_before_building(so101_meta):
    from zk0cli.core.config import ModelConfig
    from zk0cli.core.policy import build_policy

    model = ModelConfig(kind="pretrained", path="/nonexistent", device="auto", dtype="bfloat16")
    with pytest.raises(ConfigError, match="model.dtype") as err:
        build_policy(model, meta=so101_meta, rename_map={}, stats=None, seed=0)
    assert "resolved to 'cpu'" in str(err.value)


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_autocast_context_follows_the_bundle(make_bundle):
    from zk0cli.core.trainer import autocast_for

    bundle = make_bundle(seed=0)
    assert bundle.autocast_dtype == "float32"
    assert isinstance(autocast_for(bundle), contextlib.nullcontext)
    bundle.autocast_dtype = "bfloat16"
    bundle.device = torch.device("cuda")  # only inspected, nothing runs on it
    ctx = autocast_for(bundle)
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
