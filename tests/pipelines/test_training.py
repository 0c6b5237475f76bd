"""The training node on tiny synthetic data: trains, keeps the best epoch, resumes."""

import logging

import keras
import numpy as np
import pandas as pd
import pytest

from nucleus_segmentation import bundle
from nucleus_segmentation.errors import DataProblem, ParameterError
from nucleus_segmentation.model import training
from nucleus_segmentation.model.training import ValidationMetrics
from nucleus_segmentation.pipelines.training.nodes import (
    compute_class_weights,
    describe_training_data,
    plot_training_curves,
    train_segmentation_model,
)
from nucleus_segmentation.segment import SegmentationSettings
from tests.conftest import disk


def _data(size=32, count=4):
    samples = []
    for index in range(count):
        labels = disk((size, size), (8 + index, 10), 4) + 2 * disk((size, size), (22, 20), 5)
        image = np.where(labels > 0, 200, 30).astype(np.uint8)
        mask = (labels > 0).astype(np.uint8)
        samples.append(
            (f"img{index}", {"image": image, "labels": labels.astype(np.uint16), "mask": mask})
        )
    preprocessed = bundle.pack(samples)
    augmented = bundle.pack((f"{i}_aug00", f) for i, f in samples[:2])
    split = pd.DataFrame(
        {
            "image_id": [s for s, _ in samples],
            "split": ["train", "train", "validation", "validation"],
        }
    )
    return preprocessed, augmented, split


PARAMS = {
    "seed": 3,
    "augmentation_mode": "offline",
    "online_workers": 1,
    "model": {"base_filters": 4, "depth": 2, "aspp_rates": [1, 2], "sap_grid": [2, 2]},
    "dice_weight": 0.0,
    "optimizer": {"name": "adam", "learning_rate": 0.01, "weight_decay": 1e-4},
    "batch_size": 2,
    "epochs": 2,
    "steps_per_epoch": 1,
    "max_minutes": None,
    "jit_compile": False,
    "precision": "float32",
    "monitor": "val_miou_pooled",
    "distribution": "none",
    "max_validation_images": None,
    "resume": True,
}
AUGMENTATION = {"copies_per_image": 1, "transforms": {"output_size": 16}}
RAW = {  # every preprocessing step off: the stored images are what the network sees
    "invert": {"enabled": False, "brightness_threshold": 127.0},
    "equalize": {"enabled": False, "method": "global", "clip_limit": 2.0, "tile_grid": 8},
    "smooth": {"enabled": False, "kernel_size": 5, "sigma": 1.0},
}
SEGMENTATION = {
    "separation": {
        "threshold": 0.5,
        "method": "distance",
        "seed_depth": 1.0,
        "smoothing": 1.0,
        "min_size": 4,
    }
}


COLOUR = {**RAW, "stain": {"representation": "rgb", "spread_threshold": 15.0}}


def _train(preprocessed, augmented, split, weights, params, preprocessing=RAW):
    """The node, with the preprocessed images standing in for the raw ones."""
    return train_segmentation_model(
        augmented,
        preprocessed,
        preprocessed,
        split,
        weights,
        params,
        AUGMENTATION,
        preprocessing,
        SEGMENTATION,
    )


def test_training_data_size_counts_splits_and_samples_per_epoch():
    _, augmented, split = _data()
    split.loc[3, "split"] = "test"
    offline = describe_training_data(augmented, split, PARAMS, AUGMENTATION)
    assert {k: v["value"] for k, v in offline.items()} == {
        "train_images": 2.0,
        "validation_images": 1.0,
        "test_images": 1.0,
        "train_samples": 2.0,  # the stored augmented copies
    }
    online = describe_training_data(
        augmented, split, {**PARAMS, "augmentation_mode": "online"}, {"copies_per_image": 5}
    )
    assert online["train_samples"] == {"value": 10.0, "step": 0}


def test_class_weights_use_training_masks_only():
    preprocessed, _, split = _data()
    weights = compute_class_weights(preprocessed, split, {"class_weight_power": 1.0})
    masks = [preprocessed[f"img{i}/mask"] for i in (0, 1)]
    nucleus = sum(m.sum() for m in masks) / sum(m.size for m in masks)
    median = np.median([1 - nucleus, nucleus])
    assert weights["nucleus"] == pytest.approx(median / nucleus)
    assert weights["background"] == pytest.approx(median / (1 - nucleus))
    tempered = compute_class_weights(preprocessed, split, {"class_weight_power": 0.5})
    assert tempered["nucleus"] == pytest.approx((median / nucleus) ** 0.5)
    assert compute_class_weights(preprocessed, split, {"class_weight_power": 0.0}) == {
        "background": 1.0,
        "nucleus": 1.0,
    }


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_training_returns_model_history_and_best_metrics(tmp_path, mode):
    preprocessed, augmented, split = _data()
    params = {
        **PARAMS,
        "augmentation_mode": mode,
        "online_workers": 1,
        "checkpoint_dir": str(tmp_path / "ckpt"),
    }
    model, history, metric_history, best = _train(
        preprocessed, augmented, split, {"background": 1.0, "nucleus": 2.0}, params
    )
    assert history["epoch"].tolist() == [1, 2]
    assert {
        "loss",
        "val_loss",
        "val_miou_pooled",
        "val_miou_per_image",
        "val_nucleus_iou_pooled",
        "val_pa_pooled",
        "val_mpa_pooled",
        "val_dsb_score",
    } <= set(history.columns)
    assert [p["step"] for p in metric_history["val_miou_pooled"]] == [1, 2]
    best_epoch = int(history["val_miou_pooled"].idxmax()) + 1
    assert best["val_miou_pooled"] == {
        "value": pytest.approx(history["val_miou_pooled"].max()),
        "step": best_epoch,
    }
    assert model.predict(np.zeros((1, 32, 32, 1), np.float32), verbose=0).shape == (1, 32, 32, 2)
    # The preprocessing it was trained with goes with it (saved in its .keras file).
    from nucleus_segmentation.imaging.preprocess import effective_preprocessing

    assert model.trained_preprocessing == effective_preprocessing(RAW)
    assert model.trained_preprocessing["equalize.enabled"] is RAW["equalize"]["enabled"]
    figure = plot_training_curves(history)
    assert len(figure.axes) == 2 and len(figure.axes[0].lines) == 3


def test_a_model_trained_on_colour_input_takes_three_channels(tmp_path):
    """``preprocessing.stain.representation: rgb``: stored images are HxWx3, the network is
    built for three channels and validates on colour images through the segmentation path."""
    preprocessed, augmented, split = _data()

    def tinted(bundled):  # stained-looking: nuclei purple, ground grey-green
        samples = []
        for sample_id in bundle.sample_ids(bundled):
            fields = {k: bundle.field(bundled, sample_id, k) for k in ("image", "labels", "mask")}
            image = fields["image"]
            fields["image"] = np.dstack([image, image // 4, image]).astype(np.uint8)
            samples.append((sample_id, fields))
        return bundle.pack(samples)

    params = {**PARAMS, "epochs": 1, "checkpoint_dir": str(tmp_path / "ckpt")}
    weights = {"background": 1.0, "nucleus": 2.0}
    model, history, _, _ = _train(
        tinted(preprocessed), tinted(augmented), split, weights, params, COLOUR
    )
    assert model.input_shape[-1] == 3
    assert model.trained_preprocessing["stain.representation"] == "rgb"
    assert history["val_miou_pooled"].notna().all()


def test_stored_images_of_another_representation_are_refused_before_training(tmp_path):
    preprocessed, augmented, split = _data()
    params = {**PARAMS, "checkpoint_dir": str(tmp_path / "ckpt")}
    weights = {"background": 1.0, "nucleus": 2.0}
    with pytest.raises(DataProblem, match="augmented_images: the stored images have 1 channel"):
        _train(preprocessed, augmented, split, weights, params, COLOUR)
    assert not (tmp_path / "ckpt").exists()


def test_boundary_class_weights_come_from_the_training_labels_three_classes():
    from nucleus_segmentation.imaging.targets import class_targets
    from nucleus_segmentation.model.losses import median_frequency_class_weights

    preprocessed, _, split = _data()
    params = {"class_weight_power": 1.0, "targets": {"kind": "boundary", "boundary_width": 1}}
    weights = compute_class_weights(preprocessed, split, params)
    targets = [class_targets(preprocessed[f"img{i}/labels"], "boundary", 1) for i in (0, 1)]
    expected = median_frequency_class_weights(targets, 3)
    assert list(weights) == ["background", "nucleus", "boundary"]
    np.testing.assert_allclose(list(weights.values()), expected)
    assert len(set(np.round(expected, 6))) == 3  # three different classes, three weights


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_a_boundary_model_trains_on_three_class_targets_and_validates(tmp_path, mode):
    from nucleus_segmentation.imaging.targets import class_targets
    from nucleus_segmentation.pipelines.training.nodes import _training_batches

    preprocessed, augmented, split = _data()
    targets = {"kind": "boundary", "boundary_width": 1}
    params = {
        **PARAMS,
        "augmentation_mode": mode,
        "targets": targets,
        "checkpoint_dir": str(tmp_path / "ckpt"),
    }
    feeder, _ = _training_batches(augmented, preprocessed, split, params, AUGMENTATION, 1)
    x, y = feeder[0]
    assert set(np.unique(y)) == {0, 1, 2}
    if mode == "offline":  # the stored samples' own labels, made into targets
        chosen = feeder._indices(0)
        ids = bundle.sample_ids(augmented)
        expected = [class_targets(augmented[f"{ids[i]}/labels"], "boundary", 1) for i in chosen]
        np.testing.assert_array_equal(y, np.stack(expected))
    weights = {"background": 1.0, "nucleus": 2.0, "boundary": 2.0}
    model, history, _, _ = _train(preprocessed, augmented, split, weights, params)
    assert model.predict(np.zeros((1, 32, 32, 1), np.float32), verbose=0).shape == (1, 32, 32, 3)
    assert np.isfinite(history[["loss", "val_loss", "val_dsb_score"]].to_numpy()).all()
    with pytest.raises(ParameterError, match=r"needs \['background', 'nucleus', 'boundary'\]"):
        _train(preprocessed, augmented, split, {"background": 1.0, "nucleus": 2.0}, params)
    binary = {**PARAMS, "checkpoint_dir": str(tmp_path / "binary")}
    with pytest.raises(ParameterError, match="are for the classes"):  # stale 3-class weights
        _train(preprocessed, augmented, split, weights, binary)
    interior = {"separation": {**SEGMENTATION["separation"], "method": "interior"}}
    with pytest.raises(ParameterError, match="need training.targets.kind: boundary"):
        train_segmentation_model(
            augmented,
            preprocessed,
            preprocessed,
            split,
            {"background": 1.0, "nucleus": 1.0},
            binary,
            AUGMENTATION,
            RAW,
            interior,
        )


def test_validation_loss_is_the_cross_entropy_of_the_training_targets():
    from nucleus_segmentation.model.training import class_probabilities

    two = class_probabilities(np.array([[0.25]]))
    np.testing.assert_allclose(two, [[[0.75, 0.25]]])
    three = class_probabilities(np.array([[[0.75, 0.5]]]))  # nucleus 0.75, interior 0.5
    np.testing.assert_allclose(three, [[[0.25, 0.5, 0.25]]])
    labels = np.zeros((8, 8), np.uint16)
    labels[2:6, 2:6] = 1
    perfect = np.zeros((8, 8, 2))
    perfect[..., 0] = labels > 0
    perfect[3:5, 3:5, 1] = 1.0  # interior of a 4x4 square with a 1-px boundary
    validation = ValidationMetrics(
        [np.zeros((8, 8), np.uint8)],
        [labels],
        [1.0, 1.0, 1.0],
        RAW,
        SegmentationSettings(),
        SEGMENTATION["separation"],
        targets=("boundary", 1),
    )
    from nucleus_segmentation.model.training import weighted_cross_entropy_numpy

    loss = weighted_cross_entropy_numpy(
        class_probabilities(perfect), validation.targets[0], [1] * 3
    )
    assert loss == pytest.approx(0.0, abs=1e-6)
    swapped = perfect[..., ::-1]  # interior where the boundary is: a large loss
    assert (
        weighted_cross_entropy_numpy(class_probabilities(swapped), validation.targets[0], [1] * 3)
        > 1
    )


def test_training_in_bfloat16_computes_in_it_and_leaves_the_global_policy(tmp_path):
    preprocessed, augmented, split = _data()
    params = {**PARAMS, "precision": "mixed_bfloat16", "checkpoint_dir": str(tmp_path / "c")}
    before = keras.config.dtype_policy().name
    model, history, _, _ = _train(
        preprocessed, augmented, split, {"background": 1.0, "nucleus": 2.0}, params
    )
    assert keras.config.dtype_policy().name == before
    assert model.get_layer("aspp").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("probabilities").dtype_policy.name == "float32"
    assert np.isfinite(history["loss"]).all() and history["epoch"].tolist() == [1, 2]


def test_a_moving_average_of_the_weights_is_validated_saved_and_returned(tmp_path, monkeypatch):
    preprocessed, augmented, split = _data()
    optimizer = {**PARAMS["optimizer"], "ema_momentum": 0.5}
    params = {**PARAMS, "optimizer": optimizer, "epochs": 2, "steps_per_epoch": 3}
    params["checkpoint_dir"] = str(tmp_path / "ckpt")
    weights = {"background": 1.0, "nucleus": 2.0}
    # Scripted MIoU, in scoring order: epoch 1 trained, average; epoch 2 trained, average.
    script, scores = iter([0.5, 0.9, 0.6, 0.3]), ValidationMetrics._scores

    def scripted(self, description):
        return {**scores(self, description), "val_miou_pooled": next(script)}

    monkeypatch.setattr(ValidationMetrics, "_scores", scripted)
    model, history, _, best = _train(preprocessed, augmented, split, weights, params)
    # The trained weights are scored too (val_raw_*), beside their average (val_*).
    assert history["val_raw_miou_pooled"].tolist() == [0.5, 0.6]
    assert history["val_miou_pooled"].tolist() == [0.9, 0.3]
    assert {"val_raw_dsb_score", "val_dsb_score"} <= set(history.columns)
    assert best["val_miou_pooled"] == {"value": 0.9, "step": 1}
    # Kept and saved: epoch 1's average, not what Keras leaves at the end of fit (epoch
    # 2's average, stored in last.keras with epoch 2's trained weights for a resumed run).
    kept = keras.saving.load_model(tmp_path / "ckpt" / "best.keras").get_weights()
    last = keras.saving.load_model(tmp_path / "ckpt" / "last.keras")
    later = training.averaged_weights(last)
    assert later is not None and last.optimizer.use_ema
    for returned, saved in zip(model.get_weights(), kept, strict=True):
        np.testing.assert_array_equal(returned, saved)
    returned = model.get_weights()
    assert any(not np.array_equal(r, a) for r, a in zip(returned, later, strict=True))
    assert any(not np.array_equal(a, t) for a, t in zip(later, last.get_weights(), strict=True))
    # A val_raw_* monitor keeps the trained weights (one epoch: those in last.keras).
    monkeypatch.undo()
    raw = {**params, "epochs": 1, "monitor": "val_raw_miou_pooled"}
    raw["checkpoint_dir"] = str(tmp_path / "raw")
    model, _, _, _ = _train(preprocessed, augmented, split, weights, raw)
    trained = keras.saving.load_model(tmp_path / "raw" / "last.keras").get_weights()
    for returned, saved in zip(model.get_weights(), trained, strict=True):
        np.testing.assert_array_equal(returned, saved)


def test_interrupted_training_resumes_from_the_last_checkpoint(tmp_path, monkeypatch, caplog):
    from nucleus_segmentation.model.training import has_fixed_schedule

    preprocessed, augmented, split = _data()
    # A poly rate fitted to a time budget: the optimizer holds a plain rate (FittedPolyDecay).
    poly = {**PARAMS["optimizer"], "schedule": "poly", "poly_power": 1.0}
    params = {**PARAMS, "optimizer": poly, "max_minutes": 60, "fit_schedule_to_budget": True}
    params = {**params, "epochs": 1, "checkpoint_dir": str(tmp_path / "ckpt")}
    weights = {"background": 1.0, "nucleus": 2.0}
    # Simulate a run killed after its first epoch: the checkpoint is never marked complete.
    monkeypatch.setattr(training, "mark_checkpoint_complete", lambda directory: None)
    _, first, _, _ = _train(preprocessed, augmented, split, weights, params)
    monkeypatch.undo()
    with caplog.at_level(logging.INFO):
        # Extended to 2 epochs and resumed without the budget: the saved rate (0.01, set for
        # step 0) still decays, to 0.01 * (1 - 1/2) for step 1 of 2, not held constant.
        model, history, _, _ = _train(
            preprocessed, augmented, split, weights, {**params, "epochs": 2, "max_minutes": None}
        )
    assert "Resuming from" in caplog.text and "after epoch 1" in caplog.text
    assert history["epoch"].tolist() == [1, 2]
    pd.testing.assert_series_equal(history.iloc[0], first.iloc[0], check_names=False)
    assert not has_fixed_schedule(model.optimizer)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.005, rel=1e-5)
    # The finished run is marked complete: the next run starts afresh.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _train(preprocessed, augmented, split, weights, params)
    assert "Resuming" not in caplog.text


class _Echo:
    """A "model" whose nucleus probability is its input: perfect on binary images."""

    def predict_on_batch(self, batch):
        return np.concatenate([1 - batch, batch], axis=-1)

    def get_weights(self):
        return ["weights"]


def test_validation_scores_what_the_segmentation_path_gives():
    preprocessed, _, _ = _data()
    images = [np.where(preprocessed[f"img{i}/labels"] > 0, 255, 0).astype(np.uint8) for i in (2, 3)]
    labels = [preprocessed[f"img{i}/labels"] for i in (2, 3)]
    validation = ValidationMetrics(
        images,
        labels,
        [1.0, 1.0],
        RAW,
        SegmentationSettings(),
        SEGMENTATION["separation"],
        monitor="val_dsb_score",
    )
    validation.set_model(_Echo())
    logs = {}
    validation.on_epoch_end(0, logs)
    assert logs["val_miou_pooled"] == pytest.approx(1.0)
    assert logs["val_dsb_score"] == pytest.approx(1.0)  # two disks, each found exactly
    assert validation.best_epoch == 0 and validation.best_weights == ["weights"]
    # An empty image loses the nuclei: DSB score 0 for it.
    validation.images[1] = np.zeros_like(images[1])
    logs = {}
    validation.on_epoch_end(1, logs)
    assert logs["val_dsb_score"] == pytest.approx(0.5)
    assert validation.best_epoch == 0
    with pytest.raises(ParameterError, match="not one of"):
        validation.monitor = "val_accuracy"
        validation.on_epoch_end(2, {})


def test_online_augmentation_refuses_what_only_stored_copies_can_do():
    from nucleus_segmentation.pipelines.training.nodes import _training_batches

    preprocessed, augmented, split = _data()
    jitter = {**AUGMENTATION, "stain_jitter": {"enabled": True}}
    params = {**PARAMS, "augmentation_mode": "online"}
    with pytest.raises(ParameterError, match="stain_jitter works on the stored .offline. copies"):
        _training_batches(augmented, preprocessed, split, params, jitter, 1)
    oversampled = {**AUGMENTATION, "copies_per_modality": {"stained": 4}}
    with pytest.raises(ParameterError, match="copies_per_modality works on the stored"):
        _training_batches(augmented, preprocessed, split, params, oversampled, 1)
    adapted = {**AUGMENTATION, "adapt_nucleus_size": True}
    with pytest.raises(ParameterError, match="adapt_nucleus_size works on the stored"):
        _training_batches(augmented, preprocessed, split, params, adapted, 1)
    feeder, _ = _training_batches(augmented, preprocessed, split, params, AUGMENTATION, 1)
    assert feeder[0][0].shape[0] == PARAMS["batch_size"]


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_contact_weights_reach_the_batches_and_the_model_trains_on_them(tmp_path, mode):
    from nucleus_segmentation.imaging.targets import contact_weights
    from nucleus_segmentation.pipelines.training.nodes import _training_batches

    preprocessed, augmented, split = _data()
    targets = {"kind": "boundary", "boundary_width": 1, "contact_weight": 10.0}
    params = {
        **PARAMS,
        "augmentation_mode": mode,
        "targets": {**targets, "contact_sigma": 3.0},
        "checkpoint_dir": str(tmp_path / "ckpt"),
    }
    feeder, _ = _training_batches(augmented, preprocessed, split, params, AUGMENTATION, 1)
    x, y, w = feeder[0]
    assert w.shape == y.shape and w.dtype == np.float32
    if mode == "offline":  # the stored samples' own labels (two disks 8 px apart)
        ids = bundle.sample_ids(augmented)
        labels = [augmented[f"{ids[i]}/labels"] for i in feeder._indices(0)]
        rtol = 1e-3  # stored as float16
    else:  # each crop's own labels, drawn again with the feeder's generator
        from nucleus_segmentation.imaging.augment import augment_sample, sample_rng

        labels = [
            augment_sample(
                feeder.images[i], feeder.masks[i], feeder.config, sample_rng(3, feeder.ids[i], k)
            )[1]
            for k, i in enumerate(feeder._indices(0))
        ]
        rtol = 1e-6
    expected = np.stack([contact_weights(one, 10.0, 3.0) for one in labels])
    np.testing.assert_allclose(w, expected, rtol=rtol)
    if mode == "offline":
        assert w.max() > 1.2
    weights = {"background": 1.0, "nucleus": 1.0, "boundary": 1.0}
    model, history, _, _ = _train(preprocessed, augmented, split, weights, params)
    assert np.isfinite(history[["loss", "val_loss"]].to_numpy()).all()
    off = {**params, "targets": {**targets, "contact_weight": 0.0}}
    assert len(_training_batches(augmented, preprocessed, split, off, AUGMENTATION, 1)[0][0]) == 2


def test_per_pixel_weights_scale_the_training_loss():
    from nucleus_segmentation.model.losses import PixelWeightedCrossEntropy
    from nucleus_segmentation.model.training import SegmentationBatches
    from nucleus_segmentation.model.unet import UNetConfig, build_attention_unet

    images = np.full((2, 16, 16), 100, np.uint8)
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[:, 4:12, 4:12] = 1
    half = np.zeros((2, 16, 16), np.float16)
    half[:, :, :8] = 1.0  # the left half of every image counts, the right half not at all
    keras.utils.set_random_seed(0)
    model = build_attention_unet(UNetConfig.from_params({**PARAMS["model"], "num_classes": 2}))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=PixelWeightedCrossEntropy())
    x = SegmentationBatches(images, masks, 2, 1, 0)[0][0]
    # as fit computes it (batch statistics in the normalisation); SGD at rate 0 changes nothing
    probabilities = keras.ops.convert_to_numpy(model(x, training=True))
    true = np.take_along_axis(probabilities, masks[..., None].astype(np.int64), -1)[..., 0]
    pixel_loss = -np.log(np.clip(true, 1e-7, 1.0))
    feeder = SegmentationBatches(images, masks, 2, 1, 0, pixel_weights=half)
    loss = model.fit(feeder, epochs=1, verbose=0).history["loss"][0]
    # the mean over all pixels of weight x loss: the right halves' loss is not in it
    assert loss == pytest.approx(float((pixel_loss * half).mean()), rel=1e-4)
    assert abs(float((pixel_loss * half).mean()) - float(pixel_loss.mean()) / 2) > 1e-4


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ({"contact_weight": -1.0}, "training.targets.contact_weight must be >= 0"),
        ({"contact_weight": "high"}, "training.targets.contact_weight must be a number"),
        ({"contact_weight": 5.0, "contact_sigma": 0}, "training.targets.contact_sigma must be > 0"),
        ({"contact_weight": 5.0, "contact_sigma": float("inf")}, "contact_sigma must be finite"),
    ],
)
def test_contact_weight_settings_are_checked(targets, message):
    from nucleus_segmentation.pipelines.training.nodes import _training_batches

    preprocessed, augmented, split = _data()
    params = {**PARAMS, "targets": {"kind": "boundary", **targets}}
    with pytest.raises(ParameterError, match=message):
        _training_batches(augmented, preprocessed, split, params, AUGMENTATION, 1)
