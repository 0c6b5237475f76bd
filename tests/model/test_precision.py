"""Precision: which one ``auto`` picks, and a model moved between float32 and bfloat16."""

import keras
import numpy as np
import pytest

from nucleus_segmentation.errors import ParameterError
from nucleus_segmentation.hardware import cpu_vendor
from nucleus_segmentation.model import UNetConfig, build_attention_unet
from nucleus_segmentation.model.precision import (
    cpu_flags,
    model_precision,
    precision_scope,
    resolve_precision,
    with_precision,
)
from nucleus_segmentation.segment import SegmentationSettings

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# Every custom layer: SAP attention with channel expansion, ASPP, LRN.
TINY = UNetConfig(base_filters=4, aspp_filters=8)


def _images(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((2, 32, 32, 1)).astype("float32")


@pytest.fixture(scope="module")
def float32_model():
    keras.utils.set_random_seed(0)
    return build_attention_unet(TINY)


AMD, INTEL = "AuthenticAMD", "GenuineIntel"


@pytest.mark.parametrize(
    ("devices", "flags", "vendor", "capability", "expected"),
    [
        (["cpu:0"], {"avx2", "amx_bf16", "amx_tile"}, INTEL, None, "mixed_bfloat16"),
        # AVX512-BF16 without AMX: Intel slower in bfloat16, AMD faster.
        (["cpu:0"], {"avx512f", "avx512_bf16", "avx512_fp16"}, INTEL, None, "float32"),
        (["cpu:0"], {"avx2", "avx512f", "avx512_bf16"}, AMD, None, "mixed_bfloat16"),
        (["cpu:0"], {"avx512f", "avx512_bf16", "avx512_fp16"}, AMD, None, "float32"),
        (["cpu:0"], {"avx2", "avx512f"}, AMD, None, "float32"),
        (["cpu:0"], {"avx2", "avx512f", "avx512_bf16"}, "", None, "float32"),
        (["cpu:0"], set(), INTEL, None, "float32"),
        (["gpu:0", "gpu:1"], set(), AMD, (8, 0), "mixed_bfloat16"),  # A100
        (["gpu:0"], {"avx512_bf16"}, AMD, (7, 0), "float32"),  # V100: no bfloat16
        (["tpu:0"], set(), INTEL, None, "mixed_bfloat16"),
    ],
)
def test_auto_picks_bfloat16_only_where_the_hardware_runs_it_well(
    devices, flags, vendor, capability, expected
):
    assert resolve_precision("auto", devices, flags, capability, vendor=vendor) == expected


def test_a_gpu_whose_capability_is_unknown_stays_in_float32(monkeypatch):
    import nucleus_segmentation.model.precision as precision

    monkeypatch.setattr(precision, "gpu_capability", lambda: None)
    assert resolve_precision("auto", ["gpu:0"], set()) == "float32"
    # This machine's own answers agree with its CPU flags and vendor (no GPU here or in CI).
    flags, amd = cpu_flags(), cpu_vendor() == AMD
    fast = amd and "avx512_bf16" in flags and "avx512_fp16" not in flags
    answer = "mixed_bfloat16" if "amx_bf16" in flags or fast else "float32"
    assert resolve_precision("auto") == answer
    # The model the segmentation path builds computes in that answer.
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 1)])
    assert model_precision(with_precision(model, "auto")) == answer


def test_explicit_precisions_are_kept_and_unknown_ones_refused():
    assert resolve_precision("float32", ["gpu:0"], {"amx_bf16"}) == "float32"
    assert resolve_precision("mixed_bfloat16", ["cpu:0"], set()) == "mixed_bfloat16"
    with pytest.raises(ParameterError, match="precision must be one of"):
        resolve_precision("float16", ["cpu:0"], set())


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16 amx_tile\n\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512_bf16", "amx_tile"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_cpu_vendor_is_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu\n\n")
    assert cpu_vendor(cpuinfo) == "AuthenticAMD"
    assert cpu_vendor(tmp_path / "missing") == ""
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd\n")  # an ARM CPU: no vendor_id
    assert cpu_vendor(cpuinfo) == ""


def test_bfloat16_clone_has_the_same_weights_and_nearly_the_same_output(float32_model):
    bf16 = with_precision(float32_model, "mixed_bfloat16")
    assert model_precision(float32_model) == "float32"
    assert model_precision(bf16) == "mixed_bfloat16"
    assert with_precision(float32_model, "mixed_bfloat16") is bf16  # converted once
    # The sub-layers of the custom layers follow their parent (SAP, CE, ASPP).
    aspp, fusion = bf16.get_layer("aspp"), bf16.get_layer("dec1_attention")
    inner = [
        *aspp.branches,
        *aspp.branch_norms,
        aspp.project,
        fusion.high_attention.reduce,
        fusion.high_attention.excite,
        fusion.expansion.expand,
    ]
    assert {layer.dtype_policy.name for layer in inner} == {"mixed_bfloat16"}
    for a, b in zip(float32_model.get_weights(), bf16.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = _images()
    expected = np.asarray(float32_model.predict_on_batch(x))
    got = bf16.predict_on_batch(x)
    assert got.dtype == "float32"  # the softmax head stays float32
    got = np.asarray(got)
    assert not np.array_equal(got, expected)  # it did compute in bfloat16
    np.testing.assert_allclose(got, expected, atol=0.05)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


def test_the_clone_follows_weights_that_change_after_it_was_made():
    keras.utils.set_random_seed(3)
    model = build_attention_unet(TINY)
    first = with_precision(model, "mixed_bfloat16")
    old = [w.copy() for w in first.get_weights()]
    model.set_weights([w + 0.01 for w in model.get_weights()])
    kept = with_precision(model, "mixed_bfloat16")  # inference: the weights do not change
    assert kept is first
    for a, b in zip(old, kept.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    again = with_precision(model, "mixed_bfloat16", refresh=True)  # training's validation
    assert again is first
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_model_already_in_the_precision_is_returned_as_it_is(float32_model):
    assert with_precision(float32_model, "float32") is float32_model
    double = object()
    assert with_precision(double, "mixed_bfloat16") is double


def test_a_model_trained_in_bfloat16_loads_and_runs_in_float32(tmp_path):
    keras.utils.set_random_seed(1)
    before = keras.config.dtype_policy().name
    with precision_scope("mixed_bfloat16") as policy:
        model = build_attention_unet(TINY)
    assert policy == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before  # restored
    assert model_precision(model) == "mixed_bfloat16"
    assert model.get_layer("probabilities").dtype_policy.name == "float32"
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert model_precision(loaded) == "mixed_bfloat16"
    loaded.loaded_from = "provenance"
    as_float32 = with_precision(loaded, "float32")
    assert model_precision(as_float32) == "float32"
    assert as_float32.loaded_from == "provenance"
    x = _images(2)
    np.testing.assert_allclose(
        np.asarray(as_float32.predict_on_batch(x)),
        np.asarray(model.predict_on_batch(x)),
        atol=0.05,
    )


def test_precision_scope_restores_the_policy_after_an_error():
    before = keras.config.dtype_policy().name
    with pytest.raises(RuntimeError), precision_scope("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == before


def test_segmentation_settings_check_and_record_the_precision():
    settings = SegmentationSettings.from_params({"precision": "mixed_bfloat16"})
    assert settings.to_params()["precision"] == "mixed_bfloat16"
    assert SegmentationSettings.from_params({}).precision == "auto"
    with pytest.raises(ParameterError, match="precision must be one of"):
        SegmentationSettings.from_params({"precision": "half"})
