"""The benchmark scripts' model-cost counter (benchmarks/complexity.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from complexity import count_multiply_adds  # noqa: E402


def test_multiply_adds_of_a_tiny_known_network():
    import keras

    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8 * 9*1 * 4 = 2304
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 8*8 * 9 * 4 = 2304
    x = keras.layers.Conv2D(2, 1)(x)  # 8*8 * 1*4 * 2 = 512
    assert count_multiply_adds(keras.Model(inputs, x), 8) == 2304 + 2304 + 512
    assert keras.layers.Conv2D.call.__name__ == "call"  # the wrapper is removed again
