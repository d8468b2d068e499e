"""Pre-flight resource checks: refused before any process starts or file is written."""

import time
from collections import namedtuple

import pytest
import torch
from typer.testing import CliRunner

from zk0cli.cli.app import app
from zk0cli.core.config import load_config
from zk0cli.engine import preflight
from zk0cli.engine.preflight import check_resources
from zk0cli.engine.simulate import parallelism
from zk0cli.errors import UsageError


def _cfg(*sets, clients=4):
    return load_config(preset="tiny", overrides=list(sets),
                       flags={"federation.num_clients": clients})


def test_client_cpus_beyond_the_cores_is_refused():
    with pytest.raises(UsageError, match=r"client_cpus = 4 but this machine has 2 CPU") as e:
        check_resources(_cfg("federation.client_cpus=4"), cpu_count=lambda: 2)
    assert "<= 2" in str(e.value)
    check_resources(_cfg("federation.client_cpus=2"), cpu_count=lambda: 2)  # 2 of 2: fine


@pytest.mark.parametrize("setting, named", [
    ("federation.client_gpus=0.5", "federation.client_gpus = 0.5"),
    ("model.device=cuda", "model.device = 'cuda'"),
])
def test_cuda_settings_need_cuda(setting, named):
    with pytest.raises(UsageError, match="needs a CUDA GPU") as e:
        check_resources(_cfg(setting), gpu_count=lambda: 0)
    assert named in str(e.value)
    check_resources(_cfg(setting), gpu_count=lambda: 1)  # fine with a GPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_simulate_with_cuda_on_a_cpu_machine_exits_2_at_once(tmp_path):
    out = tmp_path / "run"
    t0 = time.monotonic()
    res = CliRunner().invoke(app, ["simulate", "--preset", "tiny", "--set", "model.device=cuda",
                                   "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "needs a CUDA GPU" in " ".join(res.output.split())
    assert time.monotonic() - t0 < 30 and not out.exists()


def test_small_dev_shm_warns_with_the_docker_flag(monkeypatch, tmp_path):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: usage(64 << 20, 0, 64 << 20))
    [warning] = check_resources(_cfg(), cpu_count=lambda: 2, gpu_count=lambda: 0)
    assert "64 MiB" in warning and "--shm-size=" in warning and "g." in warning
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: usage(8 << 30, 0, 8 << 30))
    assert check_resources(_cfg(), cpu_count=lambda: 2, gpu_count=lambda: 0) == []


def test_parallelism_counts_gpus_as_ray_does():
    p = parallelism(_cfg("federation.client_gpus=0.5"), gpu_count=lambda: 1)
    assert p.parallel_clients == min(2, p.cpus) and p.gpus == 1
    assert "0.5 GPU each of 1" in p.describe()
    assert parallelism(_cfg("federation.client_gpus=1"), gpu_count=lambda: 1
                       ).parallel_clients == 1
    assert "GPU" not in parallelism(_cfg()).describe()


def test_mps_needs_mps():
    with pytest.raises(UsageError, match=r"model.device = 'mps' needs Apple's MPS"):
        preflight.check_device("mps", field="model.device", mps=lambda: False)
    preflight.check_device("mps", field="model.device", mps=lambda: True)  # fine on a Mac
    for device in ("auto", "cpu"):
        preflight.check_device(device, field="model.device", gpu_count=lambda: 0,
                               mps=lambda: False)
    if not torch.backends.mps.is_available():
        with pytest.raises(UsageError, match="needs Apple's MPS"):
            check_resources(_cfg("model.device=mps"))
