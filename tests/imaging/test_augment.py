import cv2
import numpy as np
import pytest

from nucleus_segmentation.errors import ParameterError
from nucleus_segmentation.imaging.augment import (
    AugmentConfig,
    augment_sample,
    perturb_gray,
    perturb_quality,
    sample_rng,
)

OFF = dict(crop=False, flip=False, gray_perturbation=False, shape_perturbation=False, elastic=False)


def _pair(size=64):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size), dtype=np.uint8)
    labels = np.zeros((size, size), np.uint16)
    labels[10:20, 10:30], labels[40:50, 30:60] = 1, 2
    return image, labels


def test_identity_when_everything_is_off():
    image, labels = _pair()
    config = AugmentConfig(output_size=64, **OFF)
    out_image, out_labels = augment_sample(image, labels, config, sample_rng(1, "x", 0))
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_labels, labels)


def test_flip_only_is_an_exact_flip_of_image_and_labels():
    image, labels = _pair()
    config = AugmentConfig(output_size=64, **{**OFF, "flip": True}, flip_probability=1.0)
    out_image, out_labels = augment_sample(image, labels, config, sample_rng(1, "x", 0))
    np.testing.assert_array_equal(out_image, image[::-1, ::-1])
    np.testing.assert_array_equal(out_labels, labels[::-1, ::-1])


def test_geometry_is_shared_and_labels_keep_their_ids():
    image, labels = _pair()
    image = np.where(labels > 0, 255, 0).astype(np.uint8)  # image shows exactly the labels
    config = AugmentConfig(
        output_size=32,
        gray_perturbation=False,
        corner_shift=0.1,
        elastic_alpha=3.0,
        crop_scale=(0.6, 0.9),
    )
    for copy in range(5):
        out_image, out_labels = augment_sample(image, labels, config, sample_rng(7, "x", copy))
        assert out_image.shape == out_labels.shape == (32, 32)
        assert set(np.unique(out_labels)) <= {0, 1, 2}
        # Image (bilinear) and labels (nearest) moved together: they agree on most pixels.
        agreement = ((out_image > 127) == (out_labels > 0)).mean()
        assert agreement > 0.93


def test_same_seed_same_bytes_other_seed_differs():
    image, labels = _pair()
    config = AugmentConfig(output_size=32)
    first = augment_sample(image, labels, config, sample_rng(5, "img", 3))
    again = augment_sample(image, labels, config, sample_rng(5, "img", 3))
    other = augment_sample(image, labels, config, sample_rng(6, "img", 3))
    assert first[0].tobytes() == again[0].tobytes() and first[1].tobytes() == again[1].tobytes()
    assert first[0].tobytes() != other[0].tobytes()


def test_colour_copies_move_every_channel_as_the_gray_copy_and_share_the_noise():
    """Colour input (``stain.representation: rgb``): each channel of a copy is the copy its
    gray image would get from the same draws, and the imaging noise is one field for all
    three channels (gray images repeated into three stay three equal channels)."""
    image, labels = _pair()
    colour = np.dstack([image, image // 2, 255 - image])
    config = AugmentConfig(output_size=48, quality_perturbation=True, noise_std_range=(0.05, 0.05))
    out, out_labels = augment_sample(colour, labels, config, sample_rng(3, "x", 1))
    assert out.shape == (48, 48, 3) and out.dtype == np.uint8
    for channel in range(3):
        plane, plane_labels = augment_sample(
            np.ascontiguousarray(colour[:, :, channel]), labels, config, sample_rng(3, "x", 1)
        )
        np.testing.assert_array_equal(out[:, :, channel], plane)
        np.testing.assert_array_equal(out_labels, plane_labels)
    repeated, _ = augment_sample(np.dstack([image] * 3), labels, config, sample_rng(3, "x", 1))
    np.testing.assert_array_equal(repeated[:, :, 0], repeated[:, :, 2])


def test_gray_perturbation_formula():
    image = np.array([[0, 51, 255]], np.uint8)  # 0, 0.2, 1.0
    np.testing.assert_array_equal(perturb_gray(image, 1.2, -0.1), [[0, 36, 255]])
    np.testing.assert_array_equal(perturb_gray(image, 0.8, 0.2), [[51, 92, 255]])


def _quality(**changes) -> AugmentConfig:
    plain = dict(blur_probability=0.0, gamma_range=(1.0, 1.0), noise_std_range=(0.0, 0.0))
    return AugmentConfig(quality_perturbation=True, **{**plain, **changes})


def test_quality_perturbation_at_its_neutral_settings_is_the_identity():
    image, _ = _pair()
    np.testing.assert_array_equal(perturb_quality(image, _quality(), sample_rng(1, "x", 0)), image)


def test_quality_perturbation_gamma_blur_and_noise_formulas():
    image = np.array([[0, 128, 255]], np.uint8)
    # (128 / 255) ** 2 * 255 = 64.25
    squared = perturb_quality(image, _quality(gamma_range=(2.0, 2.0)), sample_rng(1, "x", 0))
    np.testing.assert_array_equal(squared, [[0, 64, 255]])
    dot = np.zeros((9, 9), np.uint8)
    dot[4, 4] = 255
    blurred = perturb_quality(
        dot, _quality(blur_probability=1.0, blur_sigma_range=(1.0, 1.0)), sample_rng(1, "x", 0)
    )
    expected = cv2.GaussianBlur(dot.astype(np.float32) / 255.0, (0, 0), 1.0)
    np.testing.assert_array_equal(blurred, (expected * 255.0 + 0.5).astype(np.uint8))
    flat = np.full((200, 200), 128, np.uint8)
    noisy = perturb_quality(flat, _quality(noise_std_range=(0.05, 0.05)), sample_rng(1, "x", 0))
    assert abs(noisy.astype(float).std() / 255.0 - 0.05) < 0.002
    assert abs(noisy.astype(float).mean() - 128) < 0.5


def test_quality_perturbation_is_seeded_and_leaves_the_other_draws_alone():
    image, labels = _pair()
    plain = AugmentConfig(output_size=32)
    jittered = AugmentConfig(output_size=32, quality_perturbation=True)
    first = augment_sample(image, labels, jittered, sample_rng(5, "img", 3))
    again = augment_sample(image, labels, jittered, sample_rng(5, "img", 3))
    before = augment_sample(image, labels, plain, sample_rng(5, "img", 3))
    assert first[0].tobytes() == again[0].tobytes()
    assert first[0].tobytes() != before[0].tobytes()  # the image changed ...
    np.testing.assert_array_equal(first[1], before[1])  # ... its geometry did not


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("gamma_range", [0.0, 1.2], "gamma_range must be"),
        ("blur_sigma_range", [1.5, 0.5], "blur_sigma_range must be"),
        ("noise_std_range", [-0.1, 0.1], "noise_std_range must be"),
        ("blur_probability", 1.5, "blur_probability must be in"),
        ("gamma_range", 1.2, "gamma_range must be"),
        ("noise_std_range", ["a", "b"], "noise_std_range must be"),
    ],
)
def test_quality_perturbation_settings_are_checked(setting, value, message):
    with pytest.raises(ParameterError, match=f"augmentation.transforms.{message}"):
        AugmentConfig.from_params({setting: value})


def test_unknown_parameter_is_refused():
    with pytest.raises(ValueError, match=r"augmentation.transforms: unknown keys \['rotate'\]"):
        AugmentConfig.from_params({"rotate": 10})


def _longest_run(row: np.ndarray) -> int:
    changes = np.flatnonzero(np.diff(row.astype(np.int64))) + 1
    edges = np.concatenate([[0], changes, [row.size]])
    return int(np.diff(edges).max())


def test_absolute_zoom_keeps_the_pixel_size_of_nuclei():
    # Vertical stripes 10 px wide (nucleus, background, nucleus, ...) on a 96x96 image.
    labels = ((np.arange(96) // 10) % 2).astype(np.uint16)[None, :].repeat(96, axis=0)
    image = (labels * 200).astype(np.uint8)
    fixed = {"flip": False, "shape_perturbation": False, "elastic": False, "output_size": 24}
    for copy in range(5):
        rng = sample_rng(0, "stripes", copy)
        _, same = augment_sample(image, labels, AugmentConfig(zoom_range=(1.0, 1.0), **fixed), rng)
        assert _longest_run(same[12]) <= 10  # a stripe never grows at zoom 1
        rng = sample_rng(0, "stripes", copy)
        _, big = augment_sample(image, labels, AugmentConfig(zoom_range=(2.0, 2.0), **fixed), rng)
        assert _longest_run(big[12]) >= 12  # 12 source pixels fill the 24-pixel crop
    with pytest.raises(ParameterError, match="zoom_range"):
        AugmentConfig.from_params({"zoom_range": [2.0, 1.0]})


def test_stain_jitter_settings_are_checked_and_draws_follow_the_generator():
    from nucleus_segmentation.imaging.augment import StainJitter

    assert StainJitter.from_params(None) == StainJitter() and not StainJitter().enabled
    jitter = StainJitter.from_params({"enabled": True, "gain_range": [0.5, 2.0]})
    gains, shifts = jitter.draw(sample_rng(3, "a", 0))
    again = jitter.draw(sample_rng(3, "a", 0))
    np.testing.assert_array_equal(gains, again[0])
    np.testing.assert_array_equal(shifts, again[1])
    assert gains.shape == shifts.shape == (3,)
    assert np.all((gains >= 0.5) & (gains <= 2.0)) and np.all(np.abs(shifts) <= 0.01)
    with pytest.raises(ParameterError, match=r"augmentation.stain_jitter: unknown keys \['gain'\]"):
        StainJitter.from_params({"gain": [1, 2]})
    with pytest.raises(ParameterError, match=r"stain_jitter.shift_range .*\[0.1, -0.1\]"):
        StainJitter.from_params({"shift_range": [0.1, -0.1]})
    with pytest.raises(ParameterError, match="gain_range must stay above 0"):
        StainJitter.from_params({"gain_range": [0.0, 1.0]})
