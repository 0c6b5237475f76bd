"""What the hardware offers: the CPU's feature flags and the GPU's compute capability.

Kept apart from ``model/`` (which uses only backend-neutral Keras): asking a GPU its compute
capability needs the backend's own API.
"""

from __future__ import annotations

import sys
from pathlib import Path

import keras


def _cpuinfo_field(keys: tuple[str, ...], cpuinfo: str | Path) -> str | None:
    """The first value of one of ``keys`` in Linux ``/proc/cpuinfo``; None where it cannot
    be read or has none of them."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return None


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where it cannot be read."""
    return frozenset((_cpuinfo_field(("flags", "Features"), cpuinfo) or "").split())


def cpu_vendor(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's vendor (``GenuineIntel``, ``AuthenticAMD``, ...); empty where it cannot be
    read."""
    return _cpuinfo_field(("vendor_id",), cpuinfo) or ""


def gpu_capability() -> tuple[int, int] | None:
    """Compute capability (major, minor) of the first GPU the Keras backend sees; None when
    there is none or the backend cannot say."""
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            value = getattr(jax.devices("gpu")[0], "compute_capability", None)
            return tuple(int(v) for v in str(value).split(".")[:2]) if value else None
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
            value = details.get("compute_capability")
            return tuple(int(v) for v in value) if value else None
        if backend == "torch":
            import torch

            return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None
    except (RuntimeError, IndexError, ValueError, TypeError):
        return None
    return None
