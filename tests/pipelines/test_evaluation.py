"""The evaluation node on exact cases: a perfect and an empty prediction."""

import numpy as np

from nucleus_segmentation.pipelines.evaluation.nodes import evaluate_test_predictions
from tests.pipelines.test_training import _data


def test_evaluation_scores_a_perfect_and_an_empty_prediction():
    preprocessed, _, split = _data()
    split = split.assign(
        split=["train", "train", "test", "test"],
        modality=["fluorescence", "fluorescence", "fluorescence", "stained"],
    )
    perfect = preprocessed["img2/mask"].astype(np.float32)
    probabilities = {"img2": perfect, "img3": np.zeros_like(perfect)}
    params = {"instances": {"threshold": 0.5, "min_distance": 3, "smoothing": 0.0, "min_size": 1}}
    per_image, per_modality, metrics = evaluate_test_predictions(
        probabilities, preprocessed, split, params
    )
    by_id = per_image.set_index("image_id")
    assert by_id.loc["img2", "dsb_score"] == 1.0 and by_id.loc["img2", "miou"] == 1.0
    assert by_id.loc["img3", "dsb_score"] == 0.0 and by_id.loc["img3", "recall"] == 0.0
    assert by_id.loc["img2", "true_nuclei"] == by_id.loc["img2", "predicted_nuclei"] == 2
    assert per_modality["modality"].tolist() == ["all", "fluorescence", "stained"]
    assert metrics["dsb_score"]["value"] == 0.5
