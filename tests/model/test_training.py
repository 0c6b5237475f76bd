"""Training support: batch feeders, optimizer schedule, validation loss, callbacks."""

import numpy as np
import pytest

from nucleus_segmentation.model.predict import pad_to_multiple, predict_probabilities
from nucleus_segmentation.model.training import (
    SegmentationBatches,
    TimeBudget,
    make_optimizer,
    weighted_cross_entropy_numpy,
)


def test_batches_cover_every_sample_once_per_pass_across_short_epochs():
    images = np.arange(10, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)
    masks = np.zeros((10, 4, 4), np.uint8)
    feeder = SegmentationBatches(images, masks, batch_size=2, steps=2, seed=0)
    seen = []
    for _ in range(3):  # 3 epochs x 2 steps x 2 = 12 samples: one pass (10) and 2 more
        for step in range(len(feeder)):
            x, y = feeder[step]
            assert x.shape == (2, 4, 4, 1) and x.dtype == np.float32 and y.dtype == np.int32
            seen.extend(int(round(v * 255)) for v in x[:, 0, 0, 0])
        feeder.on_epoch_end()
    assert sorted(seen[:10]) == list(range(10))
    again = SegmentationBatches(images, masks, batch_size=2, steps=2, seed=0)
    np.testing.assert_array_equal(again[1][0], SegmentationBatches(images, masks, 2, 2, 0)[1][0])


def test_sgd_poly_schedule_follows_the_paper_formula():
    optimizer = make_optimizer(
        {
            "name": "sgd",
            "learning_rate": 0.005,
            "weight_decay": 1e-4,
            "momentum": 0.98,
            "poly_power": 0.99,
        },
        total_steps=100,
    )
    schedule = optimizer._learning_rate  # the schedule object (learning_rate is its value)
    for step in (0, 50, 99):
        expected = 0.005 * (1 - step / 100) ** 0.99
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5)
    assert float(optimizer.momentum) == pytest.approx(0.98)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        make_optimizer({"name": "rmsprop", "learning_rate": 0.1}, 10)


def test_adam_takes_the_poly_schedule_on_request_and_is_constant_otherwise():
    params = {"name": "adam", "learning_rate": 0.001, "weight_decay": 1e-4}
    constant = make_optimizer(params, total_steps=10)
    assert float(constant.learning_rate) == pytest.approx(0.001)
    poly = make_optimizer({**params, "schedule": "poly", "poly_power": 1.0}, total_steps=10)
    assert float(poly._learning_rate(5)) == pytest.approx(0.0005, rel=1e-5)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'cosine'"):
        make_optimizer({**params, "schedule": "cosine"}, 10)


def test_numpy_validation_loss_hand_case():
    probabilities = np.array([[[0.9, 0.1], [0.2, 0.8]]], np.float32)  # 1x2 pixels, 2 classes
    truth = np.array([[0, 0]])
    expected = -(1.0 * np.log(0.9) + 1.0 * np.log(0.2)) / 2
    assert weighted_cross_entropy_numpy(probabilities, truth, [1.0, 3.0]) == pytest.approx(expected)
    truth = np.array([[1, 1]])
    expected = -(3.0 * np.log(0.1) + 3.0 * np.log(0.8)) / 2
    assert weighted_cross_entropy_numpy(probabilities, truth, [1.0, 3.0]) == pytest.approx(expected)


def test_time_budget_stops_before_an_epoch_would_overrun():
    now = [0.0]
    budget = TimeBudget(minutes=10, clock=lambda: now[0])
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    budget.set_model(model)
    now[0] = 240.0  # epoch 1 took 4 min: 4 + 4 < 10, go on
    budget.on_epoch_end(0)
    assert not getattr(model, "stop_training", False)
    now[0] = 480.0  # two epochs in 8 min: a third would end at 12 > 10
    budget.on_epoch_end(1)
    assert model.stop_training and budget.stopped_epoch == 2


def test_pad_and_predict_keep_the_original_size():
    image = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
    padded = pad_to_multiple(image, 16)
    assert padded.shape == (32, 32)
    np.testing.assert_array_equal(padded[:20, :30], image)

    class Echo:  # a "model" returning the input as class-1 probability
        def predict_on_batch(self, batch):
            return np.concatenate([1 - batch, batch], axis=-1)

    out = predict_probabilities(Echo(), [image, image[:17, :5]], multiple=16)
    assert out[0].shape == (20, 30, 2) and out[1].shape == (17, 5, 2)
    np.testing.assert_allclose(out[1][..., 1], image[:17, :5] / 255.0, rtol=1e-6)
