"""The package switches TensorFlow to its pooling (BFC) CPU allocator on import, unless the
user chose one (docs/benchmarks.md, "Memory allocator")."""

import os
import subprocess
import sys

import pytest

PROBE = "import os, nucleus_segmentation; print(os.environ['TF_CPU_ALLOCATOR_USE_BFC'])"


@pytest.mark.parametrize("given, expected", [(None, "true"), ("false", "false")])
def test_import_sets_the_bfc_allocator_unless_the_user_chose(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    if given is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = given
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == expected
