import numpy as np
import pytest

from nucleus_segmentation.model.predict import predict_probabilities, predict_with_tta


class Echo:
    """A "model" whose nucleus probability is the input itself (flip- and scale-equivariant)."""

    def predict_on_batch(self, batch):
        return np.concatenate([1 - batch, batch], axis=-1)


class LeftHalf:
    """A "model" that calls the left half of every input nucleus: not flip-equivariant."""

    def predict_on_batch(self, batch):
        nucleus = np.zeros_like(batch)
        nucleus[:, :, : batch.shape[2] // 2] = 1.0
        return np.concatenate([1 - nucleus, nucleus], axis=-1)


def test_tta_with_identity_only_is_plain_prediction():
    image = np.random.default_rng(0).integers(0, 256, (20, 30), dtype=np.uint8)
    plain = predict_probabilities(Echo(), [image])[0]
    np.testing.assert_array_equal(predict_with_tta(Echo(), [image])[0], plain)


def test_flip_averaging_undoes_each_flip_before_averaging():
    image = np.zeros((32, 32), np.uint8)
    none = predict_with_tta(LeftHalf(), [image], flips=["none"])[0][..., 1]
    assert none[:, :16].min() == 1.0 and none[:, 16:].max() == 0.0
    both = predict_with_tta(LeftHalf(), [image], flips=["none", "horizontal"])[0][..., 1]
    np.testing.assert_array_equal(both, np.full((32, 32), 0.5, np.float32))
    vertical = predict_with_tta(LeftHalf(), [image], flips=["vertical"])[0][..., 1]
    np.testing.assert_array_equal(vertical, none)  # a vertical flip leaves left-right alone
    # An equivariant model gives the same answer under every flip.
    ramp = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    all_flips = ["none", "horizontal", "vertical", "both"]
    np.testing.assert_allclose(
        predict_with_tta(Echo(), [ramp], flips=all_flips)[0],
        predict_probabilities(Echo(), [ramp])[0],
    )


def test_multi_scale_returns_each_image_at_its_own_size():
    flat = np.full((40, 24), 100, np.uint8)
    other = np.full((17, 50), 200, np.uint8)
    out = predict_with_tta(Echo(), [flat, other], scales=[0.55, 1.0, 1.55])
    assert out[0].shape == (40, 24, 2) and out[1].shape == (17, 50, 2)
    np.testing.assert_allclose(out[0][..., 1], 100 / 255, rtol=1e-5)
    np.testing.assert_allclose(out[1][..., 1], 200 / 255, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"flips": ["sideways"]}, "flips must be"), ({"scales": [0.0]}, "scales must be positive")],
)
def test_bad_tta_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        predict_with_tta(Echo(), [np.zeros((16, 16), np.uint8)], **kwargs)
