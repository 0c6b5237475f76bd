"""The network the training parameters describe (model/recipe.py): one builder for the
training node and the benchmarks that count and time "the CPU default"."""

import sys

import numpy as np
import pytest
import yaml

from nucleus_segmentation.errors import ParameterError
from nucleus_segmentation.model.recipe import (
    class_names,
    compile_training_model,
    fits_budget,
    training_model_config,
)
from tests.project import PROJECT

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _base_training() -> dict:
    text = (PROJECT / "conf/base/parameters_training.yml").read_text()
    return yaml.safe_load(text)["training"]


def _tiny(params: dict) -> dict:
    return {**params, "model": {**params["model"], "base_filters": 4, "aspp_filters": 8}}


def test_the_default_network_has_one_output_per_target_class():
    params = _base_training()
    assert params["targets"]["kind"] == "boundary"
    assert class_names(params) == ("background", "nucleus", "boundary")
    assert training_model_config(params).num_classes == 3
    binary = {**params, "targets": {"kind": "binary"}}
    assert training_model_config(binary).num_classes == 2
    untargeted = {k: v for k, v in params.items() if k != "targets"}
    assert training_model_config(untargeted).num_classes == 2
    with pytest.raises(ParameterError, match="training.targets.kind"):
        training_model_config({**params, "targets": {"kind": "edges"}})


def test_the_compiled_model_carries_trainings_loss_weights_and_dice_term():
    params = _tiny(_base_training())
    model = compile_training_model(training_model_config(params), params, [1.0, 2.0, 3.0], 10)
    assert model.output_shape[-1] == 3
    assert model.loss.class_weights == [1.0, 2.0, 3.0]
    assert model.loss.dice_weight == float(params["dice_weight"]) == 1.0
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 3, (2, 32, 32)).astype(np.int32)
    assert np.isfinite(model.train_on_batch(x, y))


def test_the_schedule_is_fitted_to_the_budget_only_with_a_budget_and_poly_decay():
    params = _base_training()
    assert fits_budget(params)
    assert not fits_budget({**params, "max_minutes": None})
    assert not fits_budget({**params, "fit_schedule_to_budget": False})
    constant = {**params, "optimizer": {**params["optimizer"], "schedule": "constant"}}
    assert not fits_budget(constant)


def test_the_model_benchmark_counts_and_times_the_network_training_builds():
    sys.path.insert(0, str(PROJECT / "benchmarks"))
    import bench_model

    params = _base_training()
    plain = training_model_config(bench_model.plain_unet(params))
    assert plain.num_classes == training_model_config(params).num_classes == 3
    assert (plain.attention, plain.channel_expansion, plain.aspp) == ("none", False, False)
    config = training_model_config(_tiny(params))
    x, y = bench_model.synthetic_batch(config, 4, 32)
    assert x.shape == (4, 32, 32, 1) and y.shape == (4, 32, 32)
    assert set(np.unique(y)) == {0, 1, 2}  # every class of the boundary head is trained
    model = bench_model.compiled_model(config, params)
    assert model.output_shape[-1] == 3 and model.loss.dice_weight == 1.0
