"""Decoding and encoding of image files held in memory (PNG, TIFF, JPEG, 8/16-bit)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from nucleus_segmentation.errors import InputProblem


class InvalidImageError(ValueError, InputProblem):
    """An image or mask that cannot be used; ``name`` is the file, ``problem`` says why."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Encoded file bytes -> HxW (gray) or HxWxC (RGB / RGBA order) array, dtype as stored.

    Raises:
        InvalidImageError: an empty file, or bytes no decoder accepts (corrupt or not an image).
    """
    if len(data) == 0:
        raise InvalidImageError(name, "file is empty (0 bytes)")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InvalidImageError(name, "not a readable image (corrupt or unsupported format)")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    if image.dtype not in (np.uint8, np.uint16):
        raise InvalidImageError(name, f"pixel type {image.dtype} is not 8- or 16-bit integer")
    return image


def read_image(folder: Path, name: str) -> np.ndarray:
    """Decode the file ``folder / name``: HxW or HxWxC (RGB/RGBA), uint8 or uint16 as stored.

    Raises:
        InvalidImageError: the file is empty, corrupt, not 8/16-bit, or cannot be read; its
            ``name`` is ``name`` (the path relative to the folder).
    """
    try:
        data = (Path(folder) / name).read_bytes()
    except OSError as exc:
        raise InvalidImageError(name, f"cannot be read ({exc.strerror or exc})") from exc
    return decode_image(data, name)


def encode_png(image: np.ndarray) -> bytes:
    """HxW or HxWx3 (RGB) uint8/uint16 array -> PNG bytes."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"could not encode a {image.shape} {image.dtype} array as PNG")
    return buffer.tobytes()
