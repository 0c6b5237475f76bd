"""Whole-image prediction with a fully convolutional model (any image size)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

# Test-time flips: the array axes each one reverses.
FLIPS = {"none": (), "horizontal": (1,), "vertical": (0,), "both": (0, 1)}


def output_stride(model) -> int:
    """Input size / deepest feature map size of a U-Net: 2 ** (the most stride-2 poolings on
    any path from the input to an output).

    Read off the model itself, so a model always gets inputs it can take, whatever the
    configuration it was trained with; members side by side in one model (an ensemble) count
    once, not once per member. Models without such layers (test doubles) take any size: 1.
    """
    outputs = getattr(model, "outputs", None) or ()
    depths: dict[tuple[int, int], int] = {}

    def poolings(tensor) -> int:
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return 0
        layer, index = history.operation, history.node_index
        key = (id(layer), index)
        if key not in depths:
            inputs = layer._inbound_nodes[index].input_tensors
            below = max((poolings(t) for t in inputs), default=0)
            strides = tuple(getattr(layer, "strides", None) or ())
            depths[key] = below + (type(layer).__name__ == "MaxPooling2D" and strides == (2, 2))
        return depths[key]

    return 2 ** max((poolings(t) for t in outputs), default=0)


def to_network_input(images: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 HxW (or HxWxC) images of one size -> (B, H, W, 1) (or C) float32 in [0, 1]."""
    batch = np.stack(images).astype(np.float32) / 255.0
    return batch[..., None] if batch.ndim == 3 else batch


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pad the bottom and right of an HxW(xC) image so both sides divide by
    ``multiple``.

    Reflection continues the texture (and a nucleus cut by the edge) instead of adding a
    black frame the network never saw in training.
    """
    height, width = image.shape[:2]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not (pad_h or pad_w):
        return image
    mode = "reflect" if height > pad_h and width > pad_w else "symmetric"
    channels = ((0, 0),) * (image.ndim - 2)
    return np.pad(image, ((0, pad_h), (0, pad_w), *channels), mode=mode)


def _devices_per_batch() -> int:
    """Devices a prediction batch is split over: 1 unless Keras (already imported by whoever
    built the model) has a data-parallel distribution active."""
    if "keras" not in sys.modules:
        return 1
    from nucleus_segmentation.model.distribution import batch_multiple

    return batch_multiple()


def predict_probabilities(
    model, images: Sequence[np.ndarray], multiple: int = 16, batch_size: int = 4
) -> list[np.ndarray]:
    """Class probabilities for each uint8 HxW (or HxWxC) image: a list of HxWxK float32
    arrays.

    Images are padded to a multiple of the model's output stride, batched with others of the
    same padded size, and the padding is cut off again: no resizing, so no distortion. Under
    a data-parallel distribution a batch is filled up with blank images to a multiple of the
    device count (each device takes an equal share), and their outputs dropped.
    """
    devices = _devices_per_batch()
    padded = [pad_to_multiple(image, multiple) for image in images]
    results: list[np.ndarray | None] = [None] * len(images)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(padded):
        by_shape.setdefault(image.shape[:2], []).append(index)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            batch = to_network_input([padded[i] for i in chunk])
            fill = -len(batch) % devices
            if fill:
                batch = np.concatenate([batch, np.zeros((fill, *batch.shape[1:]), batch.dtype)])
            probabilities = np.asarray(model.predict_on_batch(batch), dtype=np.float32)
            probabilities = probabilities[: len(chunk)]
            for i, probability in zip(chunk, probabilities, strict=True):
                height, width = images[i].shape[:2]
                results[i] = probability[:height, :width]
    return results  # type: ignore[return-value]
