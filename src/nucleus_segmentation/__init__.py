"""nucleus-segmentation"""

import os

__version__ = "0.1"

# TensorFlow's CPU allocator hands every freed tensor back to malloc, which returns the large
# ones (a training step's activations, tens of MB each) to the kernel: every step then faults
# its memory in afresh, a third of a 2-core CPU's time spent in the kernel. TensorFlow's own
# pooling (BFC) allocator keeps and reuses it: 1.3x faster training steps (1.6x in the
# pipeline), peak memory +6 % (docs/benchmarks.md, "Memory allocator"). Read when TensorFlow
# first allocates, so set here, before any model code runs; a value the user set wins
# (TF_CPU_ALLOCATOR_USE_BFC=false).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
