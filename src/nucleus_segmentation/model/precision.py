"""Numeric precision of the network: float32, or bfloat16 compute with float32 weights.

``precision`` is ``auto``, ``float32`` or ``mixed_bfloat16`` (Keras' dtype policy of that
name: layers compute in bfloat16, variables, the softmax head, the loss and the metrics stay
float32). ``auto`` picks ``mixed_bfloat16`` where the hardware runs it fast (a TPU, a GPU of
compute capability 8.0 or later, a CPU with AMX tiles, which oneDNN uses, or an AMD CPU
with AVX512-BF16 and without AVX512-FP16) and ``float32`` elsewhere, for training and
prediction alike. On 2-core AMD EPYCs bfloat16 predicted 1.06x, 1.39x and 1.42x faster on
the whole segmentation path (test scores level with float32 for two models) and fitted
28 to 34 % more training steps in the hour; of four such hours, the three with the current
recipe gave models level with or ahead of float32 on validation (tuned DSB +0.009, +0.001,
+0.008) and test (+0.000, +0.023, +0.046), the one of 2026-12-04 with an older recipe a
worse one (test -0.032).
AVX512-BF16 alone is not enough: on a CPU with it and AVX512-FP16 (most likely an Intel
Xeon with AMX hidden) a bfloat16 matmul ran at half the float32 speed and the CPU default's
inference 1.45x slower. The figures are in docs/benchmarks.md
("Precision of the segmentation path", "Inference", "bfloat16 on a 2-core AMD EPYC").

A saved model computes in whatever precision it was trained in; :func:`with_precision` gives
the same weights computing in another, so a model trained in either loads under either.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Iterator

import keras

from nucleus_segmentation.errors import ParameterError
from nucleus_segmentation.hardware import cpu_flags, cpu_vendor, gpu_capability
from nucleus_segmentation.model.rewrite import rewritten

PRECISIONS = ("auto", "float32", "mixed_bfloat16")
BF16_CPU_FLAGS = frozenset({"amx_bf16"})  # not avx512_bf16 alone: slower than float32 there
# CPUs of these vendors with AVX512-BF16 run bfloat16 faster too; not with AVX512-FP16,
# which the one CPU measured slower in bfloat16 had (the EPYCs did not).
BF16_VENDORS = frozenset({"AuthenticAMD"})
BF16_VENDOR_FLAGS = frozenset({"avx512_bf16"})
BF16_VENDOR_EXCLUDED = frozenset({"avx512_fp16"})
BF16_GPU_CAPABILITY = (8, 0)  # Ampere and later run bfloat16 natively
HEAD = "probabilities"  # the softmax layer, float32 in every precision
# policy -> {model: its clone in that policy}: a model is converted once, however many
# callers ask.
_CLONES: dict[str, weakref.WeakKeyDictionary] = {}


def is_head(layer) -> bool:
    """The float32 head: the softmax layer, or in an ensemble (model/ensemble.py) the mean of
    its members' softmax layers and each of those (``m<i>_probabilities``)."""
    return layer.name == HEAD or layer.name.endswith(f"_{HEAD}")


def resolve_precision(
    name: str,
    devices: Iterable[str] | None = None,
    flags: Iterable[str] | None = None,
    capability: tuple[int, int] | None = None,
    *,
    vendor: str | None = None,
) -> str:
    """``float32`` or ``mixed_bfloat16`` for a ``precision`` parameter.

    Args:
        name: ``auto`` | ``float32`` | ``mixed_bfloat16``.
        devices: Keras' device names (``keras.distribution.list_devices()`` when None).
        flags: CPU feature flags (:func:`cpu_flags` when None).
        capability: the GPU's compute capability, when ``devices`` has a GPU
            (:func:`gpu_capability` when None).
        vendor: the CPU's vendor (:func:`cpu_vendor` when None).

    Raises:
        ParameterError: an unknown name.
    """
    if name not in PRECISIONS:
        raise ParameterError(f"precision must be one of {PRECISIONS}, got {name!r}")
    if name != "auto":
        return name
    kinds = {str(d).lower().split(":")[0] for d in (devices or keras.distribution.list_devices())}
    if "tpu" in kinds:
        return "mixed_bfloat16"
    if "gpu" in kinds:
        capability = capability or gpu_capability()
        native = capability is not None and tuple(capability) >= BF16_GPU_CAPABILITY
        return "mixed_bfloat16" if native else "float32"
    flags = cpu_flags() if flags is None else frozenset(flags)
    if BF16_CPU_FLAGS & flags:
        return "mixed_bfloat16"
    if BF16_VENDOR_FLAGS & flags and not BF16_VENDOR_EXCLUDED & flags:
        vendor = cpu_vendor() if vendor is None else vendor
        if vendor in BF16_VENDORS:
            return "mixed_bfloat16"
    return "float32"


def model_precision(model) -> str:
    """The dtype policy a model's layers compute in (the head aside): ``float32``,
    ``mixed_bfloat16``, ... or ``mixed`` when its layers disagree."""
    names = {
        layer.dtype_policy.name
        for layer in getattr(model, "layers", ())
        if not is_head(layer) and type(layer).__name__ != "InputLayer"
    }
    if not names:
        return "float32"
    return names.pop() if len(names) == 1 else "mixed"


def with_precision(model, precision: str, refresh: bool = False):
    """``model`` computing in ``precision`` (a resolved one, or ``auto``): the model itself
    when it already does, else a clone with the same weights whose layers (not the float32
    head) take that dtype policy. The clone is made once per model and policy (cloning
    costs a second and a graph trace); ``refresh`` gives it the model's current weights
    again, for a model that trains on between calls (training's per-epoch validation; a
    refresh costs about 70 ms for the CPU default model, so inference and evaluation, whose
    models do not change, skip it). Attributes the catalog or training set on the model
    (:data:`~nucleus_segmentation.model.rewrite.CARRIED`) are carried over. Objects that
    are not Keras models (test doubles) are returned as they are."""
    if not isinstance(model, keras.Model):
        return model
    policy = resolve_precision(precision)

    def differs(model) -> dict[str, str]:  # nothing to rewrite when it computes in policy
        return {} if model_precision(model) == policy else {"policy": policy}

    def relayer(layer, found):
        config = layer.get_config()
        if not is_head(layer):
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    def copy_weights(model, clone, found):
        clone.set_weights(model.get_weights())

    cache = _CLONES.setdefault(policy, weakref.WeakKeyDictionary())
    return rewritten(model, cache, refresh, differs, relayer, copy_weights)


@contextlib.contextmanager
def precision_scope(precision: str) -> Iterator[str]:
    """Build (and train) models inside this scope to get ``precision`` (resolved, yielded);
    the global dtype policy is restored afterwards."""
    policy = resolve_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)
