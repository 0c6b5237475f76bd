"""The network the training parameters describe (model/recipe.py): one builder for the
training node and the benchmarks that count and time "the CPU default"."""

import numpy as np
import pytest

from nucleus_segmentation.errors import ParameterError
from nucleus_segmentation.model.recipe import (
    class_names,
    compile_training_model,
    fits_budget,
    training_model_config,
)
from tests.project import base_training_parameters

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_the_default_network_has_one_output_per_target_class():
    params = base_training_parameters()
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
    params = base_training_parameters(4)
    model = compile_training_model(training_model_config(params), params, [1.0, 2.0, 3.0], 10)
    assert model.output_shape[-1] == 3
    assert model.loss.class_weights == [1.0, 2.0, 3.0]
    assert model.loss.dice_weight == float(params["dice_weight"]) == 1.0
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 3, (2, 32, 32)).astype(np.int32)
    assert np.isfinite(model.train_on_batch(x, y))


def test_the_schedule_is_fitted_to_the_budget_only_with_a_budget_and_poly_decay():
    params = base_training_parameters()
    assert fits_budget(params)
    assert not fits_budget({**params, "max_minutes": None})
    assert not fits_budget({**params, "fit_schedule_to_budget": False})
    constant = {**params, "optimizer": {**params["optimizer"], "schedule": "constant"}}
    assert not fits_budget(constant)
