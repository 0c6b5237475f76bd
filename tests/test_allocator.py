"""The package sets the process's allocators on import, unless the user chose otherwise
(docs/benchmarks.md, "Memory allocator"): TensorFlow's pooling (BFC) CPU allocator, and glibc
keeping freed memory instead of returning it to the kernel."""

import os
import subprocess
import sys

import pytest

from nucleus_segmentation import memory

PROBE = "import os, nucleus_segmentation; print(os.environ['TF_CPU_ALLOCATOR_USE_BFC'])"

# A 64 MiB block: how many more mmap'd chunks glibc holds while it is taken, and whether the
# heap's free bytes hold it once freed (mallinfo2's hblks and fordblks). Run with and without
# importing the package first.
MMAP_PROBE = """
import ctypes, sys

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "import":
    import nucleus_segmentation  # noqa: F401
before = libc.mallinfo2().hblks
block = libc.malloc(64 << 20)
held = libc.mallinfo2().hblks - before
libc.free(block)
print(held, libc.mallinfo2().fordblks >= 64 << 20)
"""

glibc_only = pytest.mark.skipif(
    (memory.glibc_version() or (0, 0)) < (2, 33),
    reason="glibc's mallopt, read back through mallinfo2 (glibc 2.33 and later)",
)


@pytest.mark.parametrize("given, expected", [(None, "true"), ("false", "false")])
def test_import_sets_the_bfc_allocator_unless_the_user_chose(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    if given is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = given
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == expected


def _mmap_probe(mode: str, **env: str) -> str:
    # glibc's defaults in the child, whatever this process was started with
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NUCLEUS_SEGMENTATION_MALLOPT", "LD_PRELOAD", "GLIBC_TUNABLES")
        and not k.startswith("MALLOC_")
    }
    done = subprocess.run(
        [sys.executable, "-c", MMAP_PROBE, mode],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@glibc_only
def test_import_keeps_large_blocks_in_the_heap():
    # glibc's default: a 64 MiB block is mmap'd and unmapped on free (the next one faults in)
    assert _mmap_probe("bare") == "1 False"
    # after the import: taken from the heap, and kept there once freed
    assert _mmap_probe("import") == "0 True"


@glibc_only
def test_the_user_can_opt_out_of_the_malloc_settings():
    assert _mmap_probe("import", NUCLEUS_SEGMENTATION_MALLOPT="0") == "1 False"


def test_keep_freed_memory_reports_the_opt_out(monkeypatch):
    monkeypatch.setenv("NUCLEUS_SEGMENTATION_MALLOPT", "0")
    assert memory.keep_freed_memory() is False
