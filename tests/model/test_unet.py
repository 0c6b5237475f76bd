"""The U-Net builder: config parsing, shapes, training step, .keras round trip, variants."""

import ast
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import keras
import numpy as np
import pytest

import nucleus_segmentation.model as model_package
from nucleus_segmentation.model import (
    ASPP,
    AttentionFusion,
    LocalResponseNormalization,
    PixelWeightedCrossEntropy,
    UNetConfig,
    build_attention_unet,
    model_summary_stats,
)
from nucleus_segmentation.model import layers as layers_module
from nucleus_segmentation.model import unet as unet_module

# Keras' TensorFlow backend calls np.array(x, copy=False) on tensors (numpy 2 warns).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


TINY = UNetConfig(base_filters=4, aspp_filters=8)


def _images(count: int, side: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, side, side, 1)).astype("float32")


@pytest.fixture(scope="module")
def fitted():
    """A tiny attention U-Net after one fit step on two random 32 x 32 samples."""
    keras.utils.set_random_seed(0)
    model = build_attention_unet(TINY)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=PixelWeightedCrossEntropy(class_weights=[0.6, 2.5], dice_weight=0.5),
    )
    x = _images(2, 32)
    y = (x > 0.5).astype("uint8")
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    return model, history


def test_from_params_refuses_unknown_keys():
    message = r"params:model: unknown keys \['filters'\]; known: \[.*'base_filters'"
    with pytest.raises(ValueError, match=message):
        UNetConfig.from_params({"base_filters": 8, "filters": 8})


def test_from_params_reads_yaml_lists_and_round_trips():
    config = UNetConfig.from_params({"sap_grid": [3, 5], "aspp_rates": [1, 2], "attention": "gap"})
    assert config.sap_grid == (3, 5)
    assert config.aspp_rates == (1, 2)
    assert UNetConfig.from_params(config.to_params()) == config
    assert UNetConfig.from_params(None) == UNetConfig()


@pytest.mark.parametrize(
    "params",
    [
        {"attention": "se"},
        {"sap_grid": [8, 8]},
        {"base_filters": 0},
        {"num_classes": 1},
        {"aspp_rates": []},
        {"lrn": "yes"},
    ],
)
def test_invalid_params_are_refused(params):
    with pytest.raises(ValueError):
        UNetConfig.from_params(params)


def test_derived_sizes():
    paper = UNetConfig(base_filters=64)
    assert paper.resolved_aspp_filters == 512  # the paper's ASPP width
    assert (paper.output_stride, paper.min_input_size) == (16, 16)


def test_output_is_a_softmax_at_any_multiple_of_16():
    model = build_attention_unet(TINY)
    assert model.input_shape == (None, None, None, 1)
    for side in (16, 32, 48):
        probabilities = model.predict(_images(2, side), verbose=0)
        assert probabilities.shape == (2, side, side, 2)
        assert probabilities.dtype == np.float32
        np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)


def test_fit_runs_and_gives_a_finite_loss(fitted):
    _, history = fitted
    assert np.isfinite(history.history["loss"][0]) and history.history["loss"][0] > 0


def test_keras_file_round_trip_with_safe_mode(fitted, tmp_path):
    model, _ = fitted
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for side in (32, 48):
        x = _images(2, side, seed=side)
        np.testing.assert_allclose(
            loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
        )
    assert isinstance(loaded.loss, PixelWeightedCrossEntropy)
    assert loaded.loss.class_weights == [0.6, 2.5]


def _count(model: keras.Model, layer_type: type) -> int:
    return sum(isinstance(layer, layer_type) for layer in model.layers)


@pytest.mark.parametrize(
    ("overrides", "fusions", "aspp"),
    [
        ({}, 4, 1),
        ({"attention": "none", "channel_expansion": False, "aspp": False}, 0, 0),
        ({"attention": "gap"}, 4, 1),
        ({"channel_expansion": False}, 4, 1),
        ({"attention": "none"}, 4, 1),
        ({"aspp": False, "lrn": False}, 4, 0),
        ({"depth": 3, "dilated_stages": 2, "sap_grid": [2, 2]}, 3, 1),
    ],
    ids=["paper", "baseline", "gap", "no_ce", "ce_only", "no_aspp_no_lrn", "depth3"],
)
def test_variants_build_and_run(overrides, fusions, aspp):
    config = UNetConfig.from_params({**TINY.to_params(), **overrides})
    model = build_attention_unet(config)
    assert _count(model, AttentionFusion) == fusions
    assert _count(model, ASPP) == aspp
    assert _count(model, LocalResponseNormalization) == int(config.lrn)
    assert model.name == ("unet" if fusions == aspp == 0 else "attention_unet")
    out = keras.ops.convert_to_numpy(model(_images(1, 32), training=False))
    assert out.shape == (1, 32, 32, 2)


def test_model_summary_stats_counts_parameters():
    stats = model_summary_stats(TINY, size=64)
    assert stats["params"] == build_attention_unet(TINY).count_params()
    assert stats["params"] == stats["trainable_params"] + stats["non_trainable_params"]
    assert stats["bottleneck_size"] == 4
    with pytest.raises(ValueError, match="multiple of 16"):
        model_summary_stats(TINY, size=40)


def test_model_code_is_backend_neutral():
    # Parse rather than grep: docstrings may name TensorFlow, code may not use it.
    for source in Path(model_package.__file__).parent.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                modules = []
            assert not any(m.split(".")[0] in ("tensorflow", "jax", "torch") for m in modules)
            if isinstance(node, ast.Name):
                assert node.id != "tf", source.name
            if isinstance(node, ast.Attribute):
                assert node.attr != "Lambda", source.name


JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    from nucleus_segmentation.model import UNetConfig, build_attention_unet

    assert keras.backend.backend() == "jax"
    model = build_attention_unet(UNetConfig(base_filters=4, aspp_filters=8))
    for side in (32, 48):
        x = np.random.default_rng(side).random((2, side, side, 1)).astype("float32")
        y = model.predict(x, verbose=0)
        assert y.shape == (2, side, side, 2)
        np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
    path = sys.argv[1]
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), y, rtol=1e-5, atol=1e-6)
    """
)


def test_model_runs_on_the_jax_backend(tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(tmp_path / "m.keras")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_models_saved_with_keras_batch_normalization_still_load(tmp_path):
    # Models trained before the closed-form BatchNormalization hold Keras' own layer, also in
    # ASPP's list of branches, whose weights a .keras file keys by class name.
    keras_norm = keras.layers.BatchNormalization
    with (
        mock.patch.object(unet_module, "BatchNormalization", keras_norm),
        mock.patch.object(layers_module, "BatchNormalization", keras_norm),
    ):
        old = build_attention_unet(TINY)
    assert not any(
        isinstance(layer, layers_module.BatchNormalization)
        for layer in old._flatten_layers(include_self=False, recursive=True)
    )
    x = _images(1, 32)
    old(x, training=True)  # moving statistics away from their initial values
    path = tmp_path / "old.keras"
    old.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    aspp = loaded.get_layer("aspp")
    assert all(isinstance(norm, layers_module.BatchNormalization) for norm in aspp.branch_norms)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)),
        keras.ops.convert_to_numpy(old(x, training=False)),
        rtol=1e-5,
        atol=1e-6,
    )
