"""Numeric precision of the network: float32, or bfloat16 compute with float32 weights.

``precision`` is ``auto``, ``float32`` or ``mixed_bfloat16`` (Keras' dtype policy of that
name: layers compute in bfloat16, variables, the softmax head, the loss and the metrics stay
float32). ``auto`` picks ``mixed_bfloat16`` where the hardware runs it natively (a GPU, or a
CPU with AMX or AVX512-BF16, which oneDNN uses) and ``float32`` elsewhere; the figures behind
that choice are in docs/benchmarks.md ("precision").

A saved model computes in whatever precision it was trained in; :func:`with_precision` gives
the same weights computing in another, so a model trained in either loads under either.
Keras is imported where it is used: the names and :func:`resolve_precision`'s rules are
cheap to import for settings checks.
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path

from nucleus_segmentation.errors import ParameterError

PRECISIONS = ("auto", "float32", "mixed_bfloat16")
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
HEAD = "probabilities"  # the softmax layer, float32 in every precision
# model -> {policy: its clone in that policy}: a model is converted once, however many
# callers ask (cloning costs a second and a fresh graph trace).
_CLONES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where it cannot be read."""
    if not sys.platform.startswith("linux"):
        return frozenset()
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def resolve_precision(
    name: str, devices: Iterable[str] | None = None, flags: Iterable[str] | None = None
) -> str:
    """``float32`` or ``mixed_bfloat16`` for a ``precision`` parameter.

    Args:
        name: ``auto`` | ``float32`` | ``mixed_bfloat16``.
        devices: Keras' device names (``keras.distribution.list_devices()`` when None).
        flags: CPU feature flags (:func:`cpu_flags` when None).

    Raises:
        ParameterError: an unknown name.
    """
    if name not in PRECISIONS:
        raise ParameterError(f"precision must be one of {PRECISIONS}, got {name!r}")
    if name != "auto":
        return name
    if devices is None:
        import keras

        devices = keras.distribution.list_devices()
    if any(str(d).lower().startswith("gpu") for d in devices):
        return "mixed_bfloat16"
    flags = cpu_flags() if flags is None else frozenset(flags)
    return "mixed_bfloat16" if BF16_CPU_FLAGS & set(flags) else "float32"


def model_precision(model) -> str:
    """The dtype policy a model's layers compute in (the head aside): ``float32``,
    ``mixed_bfloat16``, ... or ``mixed`` when its layers disagree."""
    names = {
        layer.dtype_policy.name
        for layer in getattr(model, "layers", ())
        if layer.name != HEAD and type(layer).__name__ != "InputLayer"
    }
    if not names:
        return "float32"
    return names.pop() if len(names) == 1 else "mixed"


def with_precision(model, precision: str):
    """``model`` computing in ``precision`` (a resolved one, or ``auto``): the model itself
    when it already does, else a clone with the same weights whose layers (not the float32
    head) take that dtype policy, made once per model and policy and kept while the model
    lives (with the weights of that moment: convert a trained model, not one in training). Attributes the catalog set on the model (``loaded_from``) are carried over.
    Objects that are not Keras models (test doubles) are returned as they are."""
    import keras

    if not isinstance(model, keras.Model):
        return model
    policy = resolve_precision(precision)
    if model_precision(model) == policy:
        return model
    clones = _CLONES.setdefault(model, {})
    if policy in clones:
        return clones[policy]

    def relayer(layer):
        config = layer.get_config()
        if layer.name != HEAD:
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=relayer)
    clone.set_weights(model.get_weights())
    if hasattr(model, "loaded_from"):
        clone.loaded_from = model.loaded_from
    clones[policy] = clone
    return clone


@contextlib.contextmanager
def precision_scope(precision: str) -> Iterator[str]:
    """Build (and train) models inside this scope to get ``precision`` (resolved, yielded);
    the global dtype policy is restored afterwards."""
    import keras

    policy = resolve_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)
