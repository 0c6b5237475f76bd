"""Where the model runs: the Keras backend, its devices and precision, and data-parallel
training over several devices (Keras 3's distribution API, JAX backend).

``training.distribution: data_parallel`` replicates the model on every device Keras sees
(``keras.distribution.list_devices()``: the GPUs of a machine, or virtual CPU devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``) and splits each global batch across
them; the gradients are those of the whole batch, so the weights follow the single-device
run within float tolerance.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras

from nucleus_segmentation.errors import ParameterError

DISTRIBUTIONS = ("none", "data_parallel")


def device_report() -> dict[str, str]:
    """``backend`` (jax | tensorflow | torch), ``devices`` (comma-separated, e.g.
    ``cpu:0`` or ``gpu:0,gpu:1``) and ``precision`` (the global dtype policy)."""
    return {
        "backend": keras.backend.backend(),
        "devices": ",".join(keras.distribution.list_devices()),
        "precision": keras.config.dtype_policy().name,
    }


@contextlib.contextmanager
def distribution_scope(
    name: str, batch_size: int
) -> Iterator[keras.distribution.Distribution | None]:
    """Build and train the model inside this scope: ``none`` changes nothing,
    ``data_parallel`` spreads every batch over all devices.

    Raises:
        ParameterError: an unknown name, a backend without the distribution API (only JAX
            has it), or a batch that does not split evenly over the devices.
    """
    if name not in DISTRIBUTIONS:
        raise ParameterError(f"training.distribution must be one of {DISTRIBUTIONS}, got {name!r}")
    if name == "none":
        yield None
        return
    backend = keras.backend.backend()
    if backend != "jax":
        raise ParameterError(
            f"training.distribution: data_parallel needs the JAX backend (KERAS_BACKEND=jax); "
            f"this run uses {backend}"
        )
    devices = keras.distribution.list_devices()
    if batch_size % len(devices):
        raise ParameterError(
            f"training.batch_size {batch_size} does not split evenly over {len(devices)} devices"
        )
    distribution = keras.distribution.DataParallel(devices=devices)
    with distribution.scope():
        yield distribution


def batch_multiple() -> int:
    """How many devices the active distribution splits a batch over (1 without one): a
    prediction batch is padded to a multiple of it."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    return int(distribution.device_mesh.devices.size)
