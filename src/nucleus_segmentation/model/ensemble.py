"""Several trained segmentation models as one: their class probabilities averaged.

The members are copied side by side into one flat functional model on a shared input (each
member's layers renamed ``m<i>_<name>``), not nested as sub-models, so everything that reads a
model's top-level layers (its output stride, BatchNorm folding, phased upsampling, another
precision) works on the ensemble as on a single model.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras


def average_models(models: Sequence[keras.Model], name: str = "ensemble") -> keras.Model:
    """One model whose output is the mean of ``models``' outputs (each a functional model
    with one input and one float probability output of the same shape), with their trained
    weights. ``ValueError`` names the member whose input or output differs from the first's.
    """
    if len(models) < 2:
        raise ValueError(f"an ensemble needs two or more models, got {len(models)}")
    first = models[0]
    for index, model in enumerate(models):
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(f"model {index} ({model.name}): one input and one output needed")
        for what, mine, theirs in (
            ("input", model.inputs[0], first.inputs[0]),
            ("output", model.outputs[0], first.outputs[0]),
        ):
            if tuple(mine.shape[1:]) != tuple(theirs.shape[1:]):
                raise ValueError(
                    f"model {index} ({model.name}): {what} shape {tuple(mine.shape)} "
                    f"differs from model 0's {tuple(theirs.shape)}"
                )
    inputs = keras.Input(shape=first.inputs[0].shape[1:], name="image")
    outputs = []
    for index, model in enumerate(models):
        clones: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

        def renamed(layer, prefix=f"m{index}_", pairs=clones):
            config = {**layer.get_config(), "name": prefix + layer.name}
            clone = layer.__class__.from_config(config)
            pairs.append((layer, clone))
            return clone

        copy = keras.models.clone_model(model, input_tensors=inputs, clone_function=renamed)
        outputs.append(copy.outputs[0])
        for layer, clone in clones:
            clone.set_weights(layer.get_weights())
    mean = keras.layers.Average(dtype="float32", name="probabilities")(outputs)
    return keras.Model(inputs, mean, name=name)
