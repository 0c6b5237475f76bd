"""The shared shape of the prediction-time rewrites of a trained model (BatchNorm folding in
model/folding.py, phased upsampling in model/upsampling.py, another precision in
model/precision.py): a clone of the model with some layers replaced, made once per model and
kept as long as the model lives, that can take the model's current weights again, and that
carries the attributes the catalog or training set on the model."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator

import keras

# Attributes the catalog or training set on a model (where it was loaded from, the
# preprocessing its data had), carried over to the clones made for prediction.
CARRIED = ("loaded_from", "trained_preprocessing")


def carry_attributes(model, clone):
    """``clone`` with ``model``'s :data:`CARRIED` attributes set on it too."""
    for name in CARRIED:
        if hasattr(model, name):
            setattr(clone, name, getattr(model, name))
    return clone


def fed_only_by(model, kind: type) -> Iterator[tuple[keras.layers.Layer, keras.layers.Layer]]:
    """``(producer, consumer)`` for each top-level layer of type ``kind`` called once on one
    input, whose producer (the layer that made that input) is called once and feeds nothing
    else, not even the model's outputs: the pairs a rewrite may merge without changing any
    other layer's input or any output."""
    outputs = {id(tensor) for tensor in model.outputs}
    for consumer in model.layers:
        if not isinstance(consumer, kind) or len(consumer._inbound_nodes) != 1:
            continue
        tensor = consumer._inbound_nodes[0].input_tensors[0]
        producer = tensor._keras_history.operation
        if (
            len(producer._inbound_nodes) == 1
            and len(producer._outbound_nodes) == 1
            and id(tensor) not in outputs
        ):
            yield producer, consumer


def rewritten(
    model,
    cache: weakref.WeakKeyDictionary,
    refresh: bool,
    find: Callable[[keras.Model], dict],
    replace: Callable[[keras.layers.Layer, dict], keras.layers.Layer],
    copy_weights: Callable[[keras.Model, keras.Model, dict], None],
):
    """``model`` rewritten: ``find(model)`` names what to rewrite (a dict; empty: nothing, and
    the model itself is returned), ``replace(layer, found)`` gives each layer's stand-in in the
    clone, ``copy_weights(model, clone, found)`` fills the clone from the model's weights, at
    the first call and again with ``refresh``. The clone is kept in ``cache`` (keyed by the
    model, weakly). Objects that are not Keras models (test doubles) are returned as they are."""
    if not isinstance(model, keras.Model):
        return model
    if model in cache:
        clone, found = cache[model]
        if refresh:
            copy_weights(model, clone, found)
        return carry_attributes(model, clone)
    found = find(model)
    if not found:
        return model
    clone = keras.models.clone_model(model, clone_function=lambda layer: replace(layer, found))
    copy_weights(model, clone, found)
    cache[model] = (clone, found)
    return carry_attributes(model, clone)
