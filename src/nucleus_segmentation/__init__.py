"""nucleus-segmentation"""

from nucleus_segmentation import memory

__version__ = "0.1"

# A training step frees and retakes the same large buffers every step; by default both
# TensorFlow's allocator and glibc's malloc return them to the kernel, and the next step
# faults them in again. Kept instead (docs/benchmarks.md, "Memory allocator"): TensorFlow's
# pooling BFC allocator, 1.6x faster pipeline steps on a 2-core AVX2 CPU; glibc keeping
# freed memory, 1.26x more. Set here, before any model code runs; a user's
# TF_CPU_ALLOCATOR_USE_BFC=false or NUCLEUS_SEGMENTATION_MALLOPT=0 wins.
memory.use_bfc_allocator()
memory.keep_freed_memory()
