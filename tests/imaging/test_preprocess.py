import cv2
import numpy as np
import pytest

from nucleus_segmentation.imaging.colour import (
    BRIGHTFIELD,
    FLUORESCENCE,
    STAINED,
    classify_modality,
    invert_bright_background,
    to_grayscale,
    to_uint8,
)
from nucleus_segmentation.imaging.enhance import equalize_histogram, gaussian_smooth
from nucleus_segmentation.imaging.geometry import resize_image, resize_labels
from nucleus_segmentation.imaging.preprocess import preprocess_image

PARAMS = {
    "invert": {"enabled": True, "brightness_threshold": 127.0},
    "equalize": {"enabled": True, "method": "global", "clip_limit": 2.0, "tile_grid": 8},
    "smooth": {"enabled": True, "kernel_size": 5, "sigma": 1.0},
}


def test_to_uint8_passes_uint8_and_stretches_16_bit():
    image = np.array([[0, 255]], np.uint8)
    assert to_uint8(image) is image
    wide = np.linspace(1000, 5000, 1001, dtype=np.uint16).reshape(7, 143)
    out = to_uint8(wide)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255


def test_grayscale_of_rgba_equals_opencv_luma_and_gray_passes():
    rgb = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((5, 6), 7, np.uint8)])
    np.testing.assert_array_equal(to_grayscale(rgba), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    gray = rgb[:, :, 0]
    np.testing.assert_array_equal(to_grayscale(gray), gray)


def test_modality_colour_test():
    dark = np.zeros((8, 8, 3), np.uint8) + 20
    light = np.zeros((8, 8, 3), np.uint8) + 200
    purple = np.zeros((8, 8, 3), np.uint8)
    purple[...] = (150, 60, 170)
    assert classify_modality(dark) == FLUORESCENCE
    assert classify_modality(light) == BRIGHTFIELD
    assert classify_modality(purple) == STAINED
    assert classify_modality(light[:, :, 0]) == BRIGHTFIELD
    # 16-bit with an opaque alpha channel: the alpha does not set the colours' stretch.
    rgb16 = np.zeros((8, 8, 3), np.uint16)
    rgb16[...] = (1500, 600, 1700)
    rgb16[0, 0] = (100, 100, 100)
    rgba16 = np.dstack([rgb16, np.full((8, 8), 65535, np.uint16)])
    assert classify_modality(rgb16) == classify_modality(rgba16) == STAINED


def test_invert_only_bright_backgrounds():
    bright = np.full((4, 4), 200, np.uint8)
    dark = np.full((4, 4), 20, np.uint8)
    np.testing.assert_array_equal(invert_bright_background(bright), np.full((4, 4), 55))
    np.testing.assert_array_equal(invert_bright_background(dark), dark)


def test_equalize_global_spreads_to_full_range_and_clahe_differs():
    gray = np.tile(np.arange(100, 140, dtype=np.uint8), (40, 1))
    out = equalize_histogram(gray, "global")
    assert out.min() < 10 and out.max() == 255
    assert not np.array_equal(equalize_histogram(gray, "clahe", 2.0, 4), out)
    with pytest.raises(ValueError, match="unknown histogram equalization method 'x'"):
        equalize_histogram(gray, "x")


def test_percentile_normalisation_is_a_linear_stretch_between_the_images_own_levels():
    gray = np.tile(np.arange(100, 140, dtype=np.uint8), (40, 1))  # 40 levels, equally many
    out = equalize_histogram(gray, "percentile", percentiles=(0.0, 100.0))
    # 100 -> 0, 139 -> 255, every level in between on the line, rounded
    expected = np.floor((np.arange(40) * 255.0 / 39.0) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[0], expected)
    # Inner percentiles clip the tails: the lowest and highest levels saturate.
    clipped = equalize_histogram(gray, "percentile", percentiles=(10.0, 90.0))
    assert clipped[0, 0] == clipped[0, 3] == 0 and clipped[0, -1] == clipped[0, -4] == 255
    assert np.all(np.diff(clipped[0].astype(int)) >= 0)  # order kept
    # A dim nucleus stays dimmer than a bright one (equalization maps both near the top).
    image = np.full((64, 64), 10, np.uint8)
    image[8:24, 8:24], image[40:56, 40:56] = 60, 200
    stretched = equalize_histogram(image, "percentile", percentiles=(1.0, 99.8))
    assert stretched[10, 10] < stretched[50, 50] == 255 and stretched[0, 0] == 0
    assert equalize_histogram(np.full((8, 8), 9, np.uint8), "percentile").max() == 0
    for bad in [(50.0, 5.0), (-1.0, 50.0), (5.0, 101.0), (5.0,), "ab", None]:
        with pytest.raises(ValueError, match="0 <= low < high <= 100"):
            equalize_histogram(gray, "percentile", percentiles=bad)


def test_preprocess_rejects_unknown_equalization_and_bad_percentiles():
    image = np.zeros((8, 8), np.uint8)
    with pytest.raises(Exception, match=r"preprocessing.equalize.method must be one of .*'x'"):
        preprocess_image(image, {**PARAMS, "equalize": {**PARAMS["equalize"], "method": "x"}})
    percentile = {**PARAMS["equalize"], "method": "percentile", "percentiles": [99.0, 1.0]}
    with pytest.raises(Exception, match=r"preprocessing.equalize.percentiles .*\[99.0, 1.0\]"):
        preprocess_image(image, {**PARAMS, "equalize": percentile})


def test_gaussian_preserves_constant_and_validates_kernel():
    flat = np.full((9, 9), 77, np.uint8)
    np.testing.assert_array_equal(gaussian_smooth(flat, 5, 1.0), flat)
    impulse = np.zeros((9, 9), np.uint8)
    impulse[4, 4] = 255
    smoothed = gaussian_smooth(impulse, 3, 1.0)
    assert smoothed[4, 4] < 255 and smoothed[4, 5] > 0 and smoothed[0, 0] == 0
    with pytest.raises(ValueError, match="odd"):
        gaussian_smooth(flat, 4, 1.0)


def test_resize_labels_never_invents_ids_and_image_uses_area_when_shrinking():
    labels = np.zeros((10, 10), np.uint16)
    labels[:5, :5], labels[5:, 5:] = 3, 9
    assert set(np.unique(resize_labels(labels, (7, 13)))) == {0, 3, 9}
    image = np.zeros((4, 4), np.uint8)
    image[:2, :2] = 200
    np.testing.assert_array_equal(resize_image(image, (2, 2)), [[200, 0], [0, 0]])


def test_preprocess_chain_shape_and_inversion():
    image = np.full((50, 60, 4), 220, np.uint8)
    image[10:20, 10:20, :3] = 30  # dark nucleus on a light background
    assert preprocess_image(image, PARAMS).shape == (50, 60)  # no size: the own grid
    out = preprocess_image(image, PARAMS, (32, 32))
    assert out.shape == (32, 32) and out.dtype == np.uint8
    assert out[8, 7] > out[28, 28]  # after inversion the nucleus is the bright part


def test_preprocess_steps_can_be_switched_off():
    image = np.random.default_rng(3).integers(0, 100, (20, 30), dtype=np.uint8)
    off = {name: {**step, "enabled": False} for name, step in PARAMS.items()}
    np.testing.assert_array_equal(preprocess_image(image, off), image)


def _stained_section():
    """An H&E-like RGB image: eosin (cytoplasm) everywhere in the tissue band, hematoxylin
    in two nuclei, bright glass above and below; and the nucleus mask."""
    from skimage.color import hed2rgb

    from tests.conftest import disk

    hed = np.zeros((48, 64, 3))
    hed[8:40, :, 1] = 0.03  # eosin: the tissue band, pink
    nuclei = disk((48, 64), (24, 20), 6) | disk((48, 64), (24, 44), 6)
    hed[nuclei > 0, 0] = 0.1  # hematoxylin: purple nuclei
    rgb = (np.clip(hed2rgb(hed), 0, 1) * 255).astype(np.uint8)
    return rgb, nuclei > 0


def test_hematoxylin_density_makes_nuclei_bright_and_cytoplasm_dark():
    from nucleus_segmentation.imaging.colour import hematoxylin_density, is_stained

    rgb, nuclei = _stained_section()
    assert is_stained(rgb) and not is_stained(rgb.mean(axis=2).astype(np.uint8))
    density = hematoxylin_density(rgb)
    assert density.dtype == np.uint8 and density.shape == nuclei.shape
    band = np.zeros_like(nuclei)
    band[8:40] = True
    cytoplasm, glass = band & ~nuclei, ~band
    assert density[nuclei].min() > density[cytoplasm].max()
    assert density[nuclei].min() > density[glass].max()
    # Inverted grayscale, by contrast, makes the whole band bright against the glass.
    gray = preprocess_image(
        rgb, {name: {**s, "enabled": name == "invert"} for name, s in PARAMS.items()}
    )
    assert gray[cytoplasm].mean() > gray[glass].mean() + 20


def test_stain_representation_switches_stained_images_only():
    rgb, nuclei = _stained_section()
    off = {name: {**step, "enabled": name == "invert"} for name, step in PARAMS.items()}
    hematoxylin = {**off, "stain": {"representation": "hematoxylin", "spread_threshold": 15.0}}
    from nucleus_segmentation.imaging.colour import hematoxylin_density

    np.testing.assert_array_equal(preprocess_image(rgb, hematoxylin), hematoxylin_density(rgb))
    gray = np.full((20, 20), 200, np.uint8)  # a gray brightfield image: inverted as before
    np.testing.assert_array_equal(preprocess_image(gray, hematoxylin), preprocess_image(gray, off))
    with pytest.raises(Exception, match="stain.representation must be one of"):
        preprocess_image(rgb, {**off, "stain": {"representation": "lab", "spread_threshold": 1}})


INVERT_ONLY = {name: {**step, "enabled": name == "invert"} for name, step in PARAMS.items()}
COLOUR = {**INVERT_ONLY, "stain": {"representation": "rgb", "spread_threshold": 15.0}}


def test_rgb_representation_keeps_the_colour_of_stained_images_and_repeats_gray_ones():
    rgb, nuclei = _stained_section()
    out = preprocess_image(rgb, COLOUR)
    # Bright glass: all three channels inverted, as the gray image would be; colour kept.
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, 255 - rgb)
    assert np.ptp(out[nuclei].astype(int), axis=1).mean() > 15  # nuclei stay coloured
    gray = np.full((20, 30), 200, np.uint8)
    gray[5:10, 5:10] = 40
    expected = preprocess_image(gray, INVERT_ONLY)
    np.testing.assert_array_equal(preprocess_image(gray, COLOUR), np.dstack([expected] * 3))
    # An RGB file of a gray image (fluorescence saved as RGB) is not stained: gray, repeated.
    np.testing.assert_array_equal(
        preprocess_image(np.dstack([gray] * 3), COLOUR), np.dstack([expected] * 3)
    )


def test_colour_is_inverted_on_its_gray_median_all_channels_alike_and_alpha_dropped():
    yellow = np.zeros((10, 12, 4), np.uint8)
    yellow[...] = (250, 250, 20, 255)  # gray 224: bright, though its blue channel is dark
    yellow[2:5, 2:5, :3] = (90, 60, 120)
    out = preprocess_image(yellow, COLOUR)
    assert out.shape == (10, 12, 3)
    np.testing.assert_array_equal(out, 255 - yellow[:, :, :3])
    purple = 255 - yellow[:, :, :3]  # gray 31: dark, so no channel is inverted
    np.testing.assert_array_equal(preprocess_image(purple, COLOUR), purple)


def test_each_colour_channel_is_resized_stretched_and_smoothed_as_a_gray_image_is():
    rgb, _ = _stained_section()
    dark = 255 - rgb  # a dark background: nothing is inverted, channel by channel either
    params = {
        **PARAMS,
        "equalize": {**PARAMS["equalize"], "method": "percentile", "percentiles": [1.0, 99.0]},
    }
    colour = {**params, "stain": {"representation": "rgb", "spread_threshold": 15.0}}
    out = preprocess_image(dark, colour, (40, 50))
    assert out.shape == (40, 50, 3)
    for channel in range(3):
        np.testing.assert_array_equal(
            out[:, :, channel], preprocess_image(dark[:, :, channel], params, (40, 50))
        )


def test_the_network_takes_three_channels_for_rgb_and_the_record_names_the_stain_test():
    from nucleus_segmentation.imaging.preprocess import effective_preprocessing, network_channels

    for representation, channels in (("gray", 1), ("hematoxylin", 1), ("rgb", 3)):
        params = {**PARAMS, "stain": {"representation": representation, "spread_threshold": 9.0}}
        assert network_channels(params) == channels
        record = effective_preprocessing(params)
        assert record["stain.representation"] == representation
        threshold = None if representation == "gray" else 9.0
        assert record.get("stain.spread_threshold") == threshold
    assert network_channels(PARAMS) == 1  # settings written before stain existed


def test_stain_jitter_scales_each_stain_and_is_exact_at_identity():
    from skimage.color import hed_from_rgb

    from nucleus_segmentation.imaging.colour import jitter_stains

    rgb, nuclei = _stained_section()
    np.testing.assert_array_equal(jitter_stains(rgb, [1, 1, 1], [0, 0, 0]), rgb)
    rgba = np.dstack([rgb, np.full(nuclei.shape, 255, np.uint8)])
    np.testing.assert_array_equal(jitter_stains(rgba, [1, 1, 1], [0, 0, 0]), rgb)

    def densities(image):  # rgb2hed's scale, unclipped
        od = np.log(np.clip(image / 255.0, 1e-6, 1)) / np.log(1e-6)
        return od @ hed_from_rgb

    before = densities(rgb)[nuclei]
    stronger = densities(jitter_stains(rgb, [1.5, 1.0, 1.0], [0, 0, 0]))[nuclei]
    # Hematoxylin x1.5 in the nuclei (up to 8-bit rounding); eosin untouched.
    np.testing.assert_allclose(stronger[:, 0], 1.5 * before[:, 0], atol=0.004)
    np.testing.assert_allclose(stronger[:, 1], before[:, 1], atol=0.004)
    shifted = densities(jitter_stains(rgb, [1, 1, 1], [0.0, 0.02, 0.0]))
    assert abs((shifted[..., 1] - densities(rgb)[..., 1]).mean() - 0.02) < 0.003
    with pytest.raises(ValueError, match="needs an RGB image"):
        jitter_stains(rgb[..., 0], [1, 1, 1], [0, 0, 0])
    with pytest.raises(ValueError, match="three gains and three shifts"):
        jitter_stains(rgb, [1, 1], [0, 0, 0])
