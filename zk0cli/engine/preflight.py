"""Pre-flight resource checks: run before any process starts or any file is written.

A simulation whose resources cannot be met fails late and far from the cause inside
Flower's Ray backend (``ActorPool is empty`` in ``server.log`` for ``client_gpus > 0`` on a
CPU-only host; a hang blamed on the dataset for ``client_cpus`` beyond the cores). These
checks turn such settings into a usage error (exit 2) naming the field, and warn when
``/dev/shm`` is too small for Ray's object store (Ray then silently moves it to ``/tmp``).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from zk0cli.core.config import RunConfig
from zk0cli.errors import UsageError

#: Below this, Ray's object store does not fit ``/dev/shm`` and falls back to ``/tmp``
#: (Docker's default ``/dev/shm`` is 64 MiB). Bytes.
MIN_SHM_BYTES = 1 << 30
SHM_PATH = Path("/dev/shm")


def mps_available() -> bool:
    """Whether torch can use Apple's MPS backend on this machine (False without torch)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.backends.mps.is_available())


def check_device(device: str, *, field: str, gpu_count: Callable[[], int] | None = None,
                 mps: Callable[[], bool] = mps_available) -> None:
    """Refuse a torch device this machine does not have (``auto`` and ``cpu`` always pass).

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        field: The option or field the user set, named in the error (``model.device``).
        gpu_count: CUDA devices of this machine (injectable for tests).
        mps: Whether MPS is available (injectable for tests).

    Raises:
        UsageError: ``cuda`` without a CUDA GPU, or ``mps`` without MPS.
    """
    count = gpu_count or cuda_devices
    if device == "cuda" and count() == 0:
        raise UsageError(
            f"{field} = 'cuda' needs a CUDA GPU, and torch sees none on this machine "
            "(torch.cuda.is_available() is False). Use 'auto' or 'cpu', or run on a machine "
            "with CUDA.")
    if device == "mps" and not mps():
        raise UsageError(
            f"{field} = 'mps' needs Apple's MPS backend, which torch does not have on this "
            "machine (torch.backends.mps.is_available() is False). Use 'auto' or 'cpu'.")


def cuda_devices() -> int:
    """CUDA devices torch sees on this machine (0 without CUDA or without torch)."""
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def check_resources(config: RunConfig, *, simulation: bool = True,
                    cpu_count: Callable[[], int | None] = os.cpu_count,
                    gpu_count: Callable[[], int] = cuda_devices,
                    shm: Path = SHM_PATH) -> list[str]:
    """Check that this machine can run ``config``; returns warnings to show.

    Args:
        config: The validated configuration.
        simulation: ``True`` for ``zk0 simulate`` / ``tiny-run`` (Ray's client resources
            apply); ``False`` for a deployment (only the device is checked).
        cpu_count: CPU cores of this machine (injectable for tests).
        gpu_count: CUDA devices of this machine (injectable for tests).
        shm: The shared-memory mount Ray's object store uses.

    Returns:
        Warnings (e.g. a small ``/dev/shm`` with the ``--shm-size`` flag to fix it).

    Raises:
        UsageError: ``federation.client_cpus`` exceeds the cores, or CUDA is required
            (``federation.client_gpus > 0`` or ``model.device = "cuda"``) and absent
            (the client resources only for the private local Ray: with
            ``federation.ray_address`` the cluster's nodes are checked instead).
    """
    fed = config.federation
    cores = cpu_count() or 1
    needs_gpu = [f"model.device = {config.model.device!r}"] if config.model.device == "cuda" \
        else []
    # On a Ray cluster (federation.ray_address) the cluster's nodes hold the clients, not
    # this machine: zk0cli.engine.raycluster.check_cluster checks them before launch.
    local_ray = simulation and fed.ray_address is None
    if local_ray and fed.client_gpus > 0:
        needs_gpu.append(f"federation.client_gpus = {fed.client_gpus:g}")
    if needs_gpu and gpu_count() == 0:
        raise UsageError(
            f"{' and '.join(needs_gpu)} needs a CUDA GPU, and torch sees none on this "
            "machine (torch.cuda.is_available() is False). Use model.device = 'auto' or "
            "'cpu' and federation.client_gpus = 0, or run on a machine with CUDA.")
    check_device(config.model.device, field="model.device", gpu_count=gpu_count)
    if local_ray and fed.client_cpus > cores:
        raise UsageError(
            f"federation.client_cpus = {fed.client_cpus} but this machine has {cores} CPU "
            f"core(s): no simulated client could ever start. Use federation.client_cpus "
            f"<= {cores}.")
    warnings: list[str] = []
    if simulation:
        warnings += _shm_warning(shm)
    return warnings


def _shm_warning(shm: Path) -> list[str]:
    try:
        size = shutil.disk_usage(shm).total
    except OSError:
        return []
    if size >= MIN_SHM_BYTES:
        return []
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = 8 << 30
    want = max(2, math.ceil(0.3 * ram / (1 << 30)))  # Ray's object store: 30 % of RAM
    return [f"{shm} is only {size / (1 << 20):.0f} MiB: Ray will put its object store in "
            f"/tmp instead (slower). In Docker, start the container with "
            f"--shm-size={want}g."]
