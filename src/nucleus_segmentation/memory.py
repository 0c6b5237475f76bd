"""The process's memory allocators, set for a training step's pattern: the same few hundred
MB of large buffers freed and taken again every step (docs/benchmarks.md, "Memory allocator").

Two allocators are involved. TensorFlow's own (its tensors) is switched to its pooling BFC
allocator by an environment variable read when TensorFlow first allocates. The C library's
malloc serves every other allocation; glibc hands every freed block above its mmap
threshold, and the top of each heap, back to the kernel, so the next step faults the same
memory in again: 21 % of a 2-core CPU's training time spent in the kernel with the BFC
allocator on. :func:`keep_freed_memory` asks glibc to keep it instead.
"""

from __future__ import annotations

import ctypes
import os

OPT_OUT = "NUCLEUS_SEGMENTATION_MALLOPT"
"""Set to ``0`` to leave glibc's malloc settings as they are."""

# mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4

# TensorFlow sets the trim threshold back to 128 KB when a generator dataset (the training
# feed) first runs; the top pad is what then keeps a heap from shrinking below its last
# 64 MiB, and large blocks no longer come from mmap(2) at all.
SETTINGS = (
    (M_MMAP_MAX, 0),  # large blocks from the heap, not mmap'd and unmapped on free
    (M_TRIM_THRESHOLD, 2**31 - 1),  # a heap's free top stays (until TensorFlow's reset)
    (M_TOP_PAD, 64 << 20),  # grow a heap 64 MiB at a time; trimming leaves that much
)


def use_bfc_allocator() -> None:
    """TensorFlow's pooling (BFC) CPU allocator unless the user chose one
    (``TF_CPU_ALLOCATOR_USE_BFC=false``); read when TensorFlow first allocates."""
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the glibc this process runs on; None under another C library."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (AttributeError, ValueError, OSError):  # no confstr, or not "glibc X.Y"
        return None
    return tuple(map(int, version.split(".")[:2])) if name == "glibc" else None


def keep_freed_memory() -> bool:
    """glibc keeps freed memory for reuse instead of returning it to the kernel: no mmap'd
    blocks, no heap trimming, so the process no longer shrinks after a peak. True when
    applied; False where the C library is not glibc (musl, macOS, Windows), where
    ``NUCLEUS_SEGMENTATION_MALLOPT=0`` opts out, or where glibc refuses a setting."""
    if os.environ.get(OPT_OUT, "1") == "0" or glibc_version() is None:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    accepted = [mallopt(parameter, value) == 1 for parameter, value in SETTINGS]
    return all(accepted)
