"""The oneDNN benchmark's matmul probe (benchmarks/bench_onednn.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_onednn import matmul_probe  # noqa: E402


def test_matmul_probe_times_both_dtypes_and_measures_the_float32_error():
    probe = matmul_probe(size=64, repeats=2)
    assert set(probe) == {"float32", "bfloat16", "float32_error"}
    assert probe["float32"] > 0 and probe["bfloat16"] > 0
    # A float32 product of 64 terms in [0, 1) is within 1e-4 of float64; in bfloat16
    # (8 significant bits) it would be off by about 0.1.
    assert 0 <= probe["float32_error"] < 1e-4
