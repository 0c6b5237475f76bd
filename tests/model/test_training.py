"""Training support: batch feeders, optimizer schedule, validation loss, callbacks."""

import logging

import numpy as np
import pytest

from nucleus_segmentation.model.predict import (
    pad_to_multiple,
    predict_probabilities,
    to_network_input,
)
from nucleus_segmentation.model.training import (
    SegmentationBatches,
    TimeBudget,
    averaged_weights,
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


def test_colour_images_are_padded_and_batched_with_their_channels():
    image = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    padded = pad_to_multiple(image, 16)
    assert padded.shape == (32, 32, 3)
    np.testing.assert_array_equal(padded[:20, :30], image)
    np.testing.assert_array_equal(padded[20:, :30], image[18:6:-1])  # reflected rows
    batch = to_network_input([image, image])
    assert batch.shape == (2, 20, 30, 3) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[1], image / 255.0, rtol=1e-6)
    assert to_network_input([image[:, :, 0]]).shape == (1, 20, 30, 1)


class _Ticker:
    """A fake clock that training callbacks advance: ``step`` seconds per batch, ``epoch``
    more at each epoch end (validation, checkpoint)."""

    def __init__(self, step: float, epoch: float = 0.0):
        import keras

        self.now, self.rates = 0.0, []
        ticker = self

        class Advance(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                ticker.now += step

            def on_epoch_end(self, epoch_index, logs=None):
                ticker.now += epoch

        class Record(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                ticker.rates.append(float(self.model.optimizer.learning_rate))

        self.advance, self.record = Advance(), Record()

    def clock(self) -> float:
        return self.now


def _fit_fitted(minutes, ticker, epochs=3, initial_epoch=0, model=None, power=1.0, **options):
    """A 1-weight model, 8 steps per epoch, SGD with a plain rate (0.1) set by FittedPolyDecay."""
    import keras

    from nucleus_segmentation.model.training import EpochLog, FittedPolyDecay, StepLog

    if model is None:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        params = {"name": "sgd", "learning_rate": 0.1, "momentum": 0.0, "schedule": "poly"}
        model.compile(optimizer=make_optimizer(params, 24, fitted=True), loss="mse")
    budget = FittedPolyDecay(
        minutes, epochs, 8, power, first_epoch=initial_epoch, clock=ticker.clock, **options
    )
    x = np.linspace(0, 1, 32, dtype=np.float32)[:, None]
    history = model.fit(
        x,
        2 * x,
        batch_size=4,
        epochs=epochs,
        initial_epoch=initial_epoch,
        shuffle=False,
        verbose=0,
        callbacks=[
            ticker.advance,
            EpochLog(epochs, initial_epoch, clock=ticker.clock, plan=budget),
            budget,
            StepLog(epochs, 8, clock=ticker.clock, plan=budget),
            ticker.record,
        ],
    )
    return model, budget, history


@pytest.mark.parametrize("warmup", [0, 1])
def test_fitted_poly_decays_to_zero_over_the_epochs_that_fit_and_stops_there(warmup, caplog):
    # 10 s a step, 88 s an epoch with 10 % for validation, 100 s of budget: the probe
    # (4 steps) finds that one epoch fits.
    ticker = _Ticker(step=10.0)
    with caplog.at_level(logging.INFO, logger="nucleus_segmentation.model.training"):
        _, budget, history = _fit_fitted(100 / 60, ticker, probe_steps=4, warmup_steps=warmup)
    assert len(history.epoch) == 1 and budget.stopped_epoch == 1 and budget.last_epoch == 1
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch")]
    assert len(epoch_lines) == 1 and epoch_lines[0].startswith("epoch 1/1 ")
    assert epoch_lines[0].endswith("ETA 0m00s")  # the plan's one epoch, not the three asked for
    planned_for_three = [0.1 * (1 - s / 24) for s in range(5)]  # until the probe has measured
    np.testing.assert_allclose(ticker.rates[:5], planned_for_three, rtol=1e-5)
    anchor = 0.1 * (1 - 4 / 24)  # the rate of step 4, decayed to 0 at step 8
    np.testing.assert_allclose(
        ticker.rates[4:], [anchor * (1 - (s - 4) / 4) for s in range(4, 8)], rtol=1e-5
    )


@pytest.mark.parametrize("minutes, fit", [(60.0, True), (None, True), (60.0, False)])
def test_fitted_poly_with_time_for_every_epoch_is_keras_polynomial_decay(minutes, fit):
    import keras

    ticker = _Ticker(step=1.0)
    model, budget, history = _fit_fitted(
        minutes, ticker, power=0.9, fit=fit, probe_steps=4, warmup_steps=1
    )
    assert len(history.epoch) == 3 and budget.stopped_epoch is None
    keras_poly = keras.optimizers.schedules.PolynomialDecay(0.1, 24, 0.0, power=0.9)
    np.testing.assert_allclose(ticker.rates, [float(keras_poly(s)) for s in range(24)], rtol=1e-5)
    assert int(model.optimizer.iterations) == 24


def test_fitted_poly_moves_its_plan_at_an_epoch_end_without_a_jump_in_the_rate(caplog):
    # The probe (steps only, plus 10 % of an epoch per epoch end) finds three epochs fit in
    # 300 s, but validation takes 40 s: after the first epoch (120 s), 180 s are left, which
    # fit the 8 steps of the second epoch, its validation, 2 steps of the third and the
    # validation that ends it. The rate decays from where it is (0.1 * 16/24 at step 8) to 0
    # at step 18, and the run ends on the budget.
    ticker = _Ticker(step=10.0, epoch=40.0)
    with caplog.at_level(logging.INFO, logger="nucleus_segmentation.model.training"):
        model, budget, history = _fit_fitted(300 / 60, ticker, probe_steps=4, warmup_steps=1)
    assert len(history.epoch) == 3 and budget.last_epoch == 3 and budget.stopped_epoch == 3
    assert int(model.optimizer.iterations) == 18 and ticker.now == 300.0
    epoch_lines = [r.getMessage()[:9] for r in caplog.records if r.getMessage().startswith("epoch")]
    assert epoch_lines == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    np.testing.assert_allclose(ticker.rates[:9], [0.1 * (1 - s / 24) for s in range(9)], rtol=1e-5)
    at_8 = 0.1 * 16 / 24
    np.testing.assert_allclose(
        ticker.rates[8:], [at_8 * (1 - (s - 8) / 10) for s in range(8, 18)], rtol=1e-5
    )


def test_fitted_poly_stops_mid_epoch_on_the_last_step_that_fits(caplog):
    # 10 s a step, validation free: after the probe (40 s), the 110 s left fit 11 more
    # steps, so the run stops at step 15, 7 steps into its second epoch, which is then
    # validated as a whole epoch is, the rate reaching 0 there.
    ticker = _Ticker(step=10.0)
    with caplog.at_level(logging.INFO, logger="nucleus_segmentation"):
        model, budget, history = _fit_fitted(
            150 / 60, ticker, probe_steps=4, warmup_steps=0, overhead=0.0
        )
    assert history.epoch == [0, 1] and budget.stopped_epoch == 2 and budget.horizon == 15
    assert int(model.optimizer.iterations) == 15 and ticker.now == 150.0
    at_4 = 0.1 * (1 - 4 / 24)
    np.testing.assert_allclose(
        ticker.rates[4:], [at_4 * (1 - (s - 4) / 11) for s in range(4, 15)], rtol=1e-5
    )
    messages = [r.getMessage() for r in caplog.records]
    assert any("stopping after step 15, in epoch 2" in m for m in messages)
    # Progress counts to the plan: 80 s for the 8 steps of epoch 1, 7 steps left (70 s).
    assert any(m.startswith("epoch 1/2 ") and m.endswith("ETA 1m10s") for m in messages)
    assert any(m.startswith("epoch 2/2: training steps: 7/7 (100 %)") for m in messages)


def test_fitted_poly_times_an_epoch_shorter_than_its_warm_up():
    # Warm-up (10 steps) longer than the 8-step epoch: no step is timed in it, so the plan
    # at its end times all 8 (10 s each, 80 s); the 70 s left fit 7 more steps.
    ticker = _Ticker(step=10.0)
    model, budget, history = _fit_fitted(150 / 60, ticker, probe_steps=4, warmup_steps=10)
    assert history.epoch == [0, 1] and budget.horizon == 15 and budget.stopped_epoch == 2
    assert int(model.optimizer.iterations) == 15 and ticker.now == 150.0


def test_a_resumed_fitted_run_continues_from_the_saved_rate():
    ticker = _Ticker(step=1.0)
    model, _, _ = _fit_fitted(60.0, ticker, epochs=1, probe_steps=4, warmup_steps=1)
    saved = float(model.optimizer.learning_rate)  # the rate set for step 7 (planned: 0 at 8)
    model.optimizer.learning_rate = 0.05  # as if the checkpoint had been made at a rate 0.05
    ticker.rates.clear()
    _, budget, history = _fit_fitted(
        60.0, ticker, epochs=3, initial_epoch=1, model=model, probe_steps=4, warmup_steps=1
    )
    assert saved == pytest.approx(0.1 / 8, rel=1e-5)
    assert history.epoch == [1, 2] and budget.stopped_epoch is None
    # 0.05 was the rate of step 7; from there to 0 at step 24, the end of the third epoch.
    np.testing.assert_allclose(
        ticker.rates, [0.05 * (1 - (s - 7) / 17) for s in range(8, 24)], rtol=1e-5
    )


def test_fitted_optimizers_hold_a_plain_rate_and_others_a_fixed_schedule():
    from nucleus_segmentation.model.training import has_fixed_schedule

    params = {"name": "adam", "learning_rate": 0.001, "schedule": "poly", "poly_power": 0.9}
    assert has_fixed_schedule(make_optimizer(params, 10))
    fitted = make_optimizer(params, 10, fitted=True)
    assert not has_fixed_schedule(fitted)
    assert float(fitted.learning_rate) == pytest.approx(0.001)


def test_averaged_weights_are_the_moving_average_of_the_trained_weights():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1), keras.layers.BatchNormalization()]
    )
    params = {"name": "sgd", "learning_rate": 0.1, "momentum": 0.0, "ema_momentum": 0.25}
    model.compile(optimizer=make_optimizer(params, 10), loss="mse")
    assert averaged_weights(model) is None  # no step taken: nothing averaged yet
    trained, averaged = [], []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            trained.append(self.model.get_weights())
            averaged.append(averaged_weights(self.model))

    x = np.linspace(0, 1, 12, dtype=np.float32)[:, None]
    model.fit(x, 2 * x, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[Record()])
    # Step 1 starts the average at the weights; then a <- 0.25 a + 0.75 w.
    expected = trained[0]
    for step in (1, 2):
        trainable = [0.25 * a + 0.75 * w for a, w in zip(expected, trained[step], strict=True)]
        expected = trainable[:4] + trained[step][4:]  # BatchNorm statistics: the model's own
        for got, want in zip(averaged[step], expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.allclose(averaged[2][0], trained[2][0])
    plain = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    plain.compile(optimizer=make_optimizer({**params, "ema_momentum": None}, 10), loss="mse")
    plain.fit(x, 2 * x, verbose=0)
    assert averaged_weights(plain) is None


@pytest.mark.parametrize("momentum", [1.0, 0, -0.5, "0.99", True])
def test_ema_momentum_is_checked(momentum):
    from nucleus_segmentation.errors import ParameterError

    params = {"name": "adam", "learning_rate": 0.1, "ema_momentum": momentum}
    with pytest.raises(ParameterError, match="training.optimizer.ema_momentum must"):
        make_optimizer(params, 10)
