"""Two trained models as one averaged model: flat, saveable, and foldable like a single one."""

import keras
import numpy as np
import pytest
from keras import layers

from nucleus_segmentation.datasets.keras_model import KerasModelDataset
from nucleus_segmentation.model import UNetConfig, build_attention_unet
from nucleus_segmentation.model.ensemble import average_models
from nucleus_segmentation.model.precision import model_precision, with_precision
from nucleus_segmentation.model.predict import output_stride
from nucleus_segmentation.segment import SegmentationSettings, for_segmentation
from tests.model.test_folding import _trained_statistics

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TINY = UNetConfig(base_filters=4, aspp_filters=8, num_classes=3)


def _member(seed: int):
    keras.utils.set_random_seed(seed)
    model = build_attention_unet(TINY)
    _trained_statistics(model, seed)  # different per member, so copying them matters
    return model


@pytest.fixture(scope="module")
def members():
    return _member(0), _member(1)


@pytest.fixture(scope="module")
def ensemble(members):
    return average_models(members)


def _images() -> np.ndarray:
    return np.random.default_rng(5).random((2, 32, 48, 1)).astype("float32")


def test_the_ensemble_predicts_the_mean_of_its_members_from_one_flat_graph(members, ensemble):
    x = _images()
    outputs = [np.asarray(m.predict_on_batch(x)) for m in members]
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-2  # the members differ
    np.testing.assert_allclose(
        np.asarray(ensemble.predict_on_batch(x)), (outputs[0] + outputs[1]) / 2, atol=1e-6
    )
    # Flat: every member layer at the top level, once per member, none nested.
    assert not any(isinstance(layer, keras.Model) for layer in ensemble.layers)
    assert len(ensemble.layers) == 2 * (len(members[0].layers) - 1) + 2
    # Members side by side: the stride of one, not of the poolings of both.
    assert output_stride(ensemble) == output_stride(members[0]) == 16


def test_the_ensemble_saves_loads_and_folds_like_a_single_model(ensemble, tmp_path):
    ensemble.trained_preprocessing = {"stain": {"representation": "gray"}}
    dataset = KerasModelDataset(filepath=str(tmp_path / "ensemble.keras"))
    dataset.save(ensemble)
    loaded = dataset.load()
    assert loaded.trained_preprocessing == {"stain": {"representation": "gray"}}
    x = _images()
    expected = np.asarray(ensemble.predict_on_batch(x))
    np.testing.assert_allclose(np.asarray(loaded.predict_on_batch(x)), expected, atol=1e-6)
    ready = for_segmentation(loaded, SegmentationSettings(precision="float32"))
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in ready.layers)
    np.testing.assert_allclose(np.asarray(ready.predict_on_batch(x)), expected, atol=1e-4)


def test_members_that_do_not_fit_together_are_named(members):
    other = build_attention_unet(UNetConfig(base_filters=4, aspp_filters=8))
    with pytest.raises(ValueError, match=r"model 1 .*output shape .*differs from model 0"):
        average_models([members[0], other])
    with pytest.raises(ValueError, match="two or more models, got 1"):
        average_models(members[:1])


def test_in_bfloat16_the_members_softmax_heads_stay_float32(ensemble):
    bf16 = with_precision(ensemble, "mixed_bfloat16")
    heads = {
        layer.name: layer.dtype_policy.name
        for layer in bf16.layers
        if layer.name.endswith("probabilities")
    }
    names = ["m0_probabilities", "m1_probabilities", "probabilities"]
    assert heads == dict.fromkeys(names, "float32")
    assert model_precision(bf16) == "mixed_bfloat16"
