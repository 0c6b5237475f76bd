"""The model benchmark (benchmarks/bench_model.py) counts and times the network the
training node builds: same output classes, loss and labels of every class."""

import sys

import numpy as np
import pytest

from nucleus_segmentation.model.recipe import training_model_config
from tests.project import PROJECT, base_training_parameters

sys.path.insert(0, str(PROJECT / "benchmarks"))

import bench_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_the_model_benchmark_counts_and_times_the_network_training_builds():
    params = base_training_parameters()
    plain = training_model_config(bench_model.plain_unet(params))
    assert plain.num_classes == training_model_config(params).num_classes == 3
    assert (plain.attention, plain.channel_expansion, plain.aspp) == ("none", False, False)
    config = training_model_config(base_training_parameters(4))
    x, y = bench_model.synthetic_batch(config, 4, 32)
    assert x.shape == (4, 32, 32, 1) and y.shape == (4, 32, 32)
    assert set(np.unique(y)) == {0, 1, 2}  # every class of the boundary head is trained
    model = bench_model.compiled_model(config, params)
    assert model.output_shape[-1] == 3 and model.loss.dice_weight == 1.0
