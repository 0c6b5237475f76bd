"""The project as users run it: KedroSession and the `kedro` CLI on the embedded sample.

Each test works in a throw-away copy of conf/ and the sample under tmp_path, with MLflow
tracking into a SQLite file there, so nothing outside tmp_path is written.
"""

from __future__ import annotations

import math
import shutil
import sqlite3
import subprocess
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from nucleus_segmentation import bundle
from nucleus_segmentation.datasets.npz import NpzDataset
from tests.project import EXAMPLES, SAMPLE, cli, copy_project

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A runnable copy of the project under tmp_path, as the cwd."""
    root = copy_project(tmp_path / "project")
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    return root


def _run(root: Path, pipeline: str, params: dict | None = None) -> None:
    bootstrap_project(root)
    with KedroSession.create(project_path=root, runtime_params=params or {}) as session:
        session.run(pipeline_names=[pipeline])


def test_data_processing_on_the_sample_versions_and_tracks(project):
    _run(project, "data_processing", {"augmentation": {"copies_per_image": 2}})
    metadata_csv = next((project / "data/02_intermediate/image_metadata.csv").glob("*/*.csv"))
    metadata = pd.read_csv(metadata_csv)
    assert len(metadata) == 30
    assert set(metadata["modality"]) == {"fluorescence", "stained", "brightfield"}
    split = pd.read_csv(next((project / "data/03_primary/data_split.csv").glob("*/*.csv")))
    n_train = int((split["split"] == "train").sum())
    augmented = NpzDataset(
        filepath=str(next((project / "data/05_model_input/augmented_images.npz").glob("*/*.npz")))
    ).load()
    assert len(bundle.sample_ids(augmented)) == 2 * n_train
    # kedro-mlflow recorded the run with its parameters in the SQLite store
    with sqlite3.connect(project / "mlflow.db") as db:
        names = {row[0] for row in db.execute("select value from tags where key='mlflow.runName'")}
        params = dict(db.execute("select key, value from params"))
    assert "data_processing" in " ".join(names)
    assert params["augmentation.copies_per_image"] == "2"

    # Changing a preprocessing parameter and rerunning the stage keeps the old version.
    # (through the CLI, as users do: one MLflow run per process)
    result = _cli(
        project, "--pipeline", "preprocessing", "--params", "preprocessing.equalize.method=global"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    versions = sorted((project / "data/04_feature/preprocessed_images.npz").iterdir())
    assert len(versions) == 2
    old, new = (NpzDataset(filepath=str(v / "preprocessed_images.npz")).load() for v in versions)
    first = bundle.sample_ids(old)[0]
    native = tuple(metadata.set_index("image_id").loc[first, ["height", "width"]])
    assert old[f"{first}/image"].shape == new[f"{first}/image"].shape == native
    assert old[f"{first}/image"].tobytes() != new[f"{first}/image"].tobytes()


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return cli(root, "run", *args)


def test_cli_unusable_input_exits_nonzero_naming_the_file(project):
    empty = project / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    result = _cli(project, "--pipeline", "ingestion", "--params", f"raw_data={empty}")
    assert result.returncode == 1
    assert "Error: dsb_raw: " in result.stderr
    assert "empty.zip: zip archive contains no DSB image folders" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not list((project / "data").glob("02_intermediate/*/*"))


def test_training_on_a_fresh_clone_names_the_pipeline_to_run_first(project):
    result = _cli(project, "--pipeline", "training")
    assert result.returncode == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error: ")]
    assert "no saved version yet in" in line and "data/0" in line
    assert "run `kedro run --pipeline " in line and "data_processing" in line
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_inference_without_a_model_or_folder_says_what_is_missing(project):
    args = ("--pipeline", "inference", "--params")
    no_model = _cli(project, *args, f"inference_input={project / EXAMPLES}")
    assert no_model.returncode == 1
    assert "attention_unet.keras: no saved model yet" in no_model.stderr
    assert "kedro run --pipeline training" in no_model.stderr
    missing = project / "no such folder"
    no_folder = _cli(project, *args, f"inference_input={missing}")
    assert no_folder.returncode == 1
    assert f"{missing}: image folder does not exist" in no_folder.stderr
    for result in (no_model, no_folder):
        assert "Traceback" not in result.stdout + result.stderr


def test_default_run_trains_and_tracks_everything_in_mlflow(trained_sample):
    """`kedro run` (data processing + training + evaluation) on the sample, shrunk to a few
    steps (the session's trained sample)."""
    import mlflow
    import numpy as np

    project = trained_sample.root
    assert "epoch 2/2" in trained_sample.log and "ETA" in trained_sample.log
    assert len(list((project / "data/06_models/attention_unet.keras").glob("*/*.keras"))) == 1

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    (run,) = mlflow.search_runs(
        experiment_names=["nucleus_segmentation"],
        filter_string="tags.kedro_pipeline = '__default__'",
        output_format="list",
    )
    assert run.data.tags["mlflow.runName"] == "__default__ attention_unet dsb2018_sample"
    assert run.data.tags["kedro_env"] == "local" and run.data.tags["git_commit"]
    assert run.data.tags["model_name"] == "attention_unet"
    assert run.data.tags["data"] == "dsb2018_sample"
    # The data it read, as MLflow dataset inputs (the UI's Dataset column), with versions.
    inputs = {i.dataset.name: {t.key: t.value for t in i.tags} for i in run.inputs.dataset_inputs}
    split_version = run.data.tags["input.data_split.version"]
    assert inputs["data_split"]["version"] == split_version
    assert inputs["data_split"]["size"] == "30 images"
    assert {"dsb_raw", "ingested_images", "augmented_images"} <= set(inputs)
    # One registered model, this run's version tagged with the data it was trained on.
    (version,) = client.search_model_versions("name = 'attention_unet'")
    assert version.run_id == run.info.run_id
    assert version.tags["data"] == "dsb2018_sample"
    assert version.tags["data_version"] == split_version
    assert run.data.params["training.model.base_filters"] == "4"
    history = client.get_metric_history(run.info.run_id, "epoch.val_miou_pooled")
    assert [m.step for m in history] == [1, 2]
    assert "best.val_nucleus_iou_pooled" in run.data.metrics
    split = pd.read_csv(next((project / "data/03_primary/data_split.csv").glob("*/*.csv")))
    assert run.data.metrics["data.train_images"] == (split["split"] == "train").sum()
    assert 0.0 <= run.data.metrics["test.dsb_score"] <= 1.0
    per_modality = pd.read_csv(
        next((project / "data/08_reporting/evaluation_per_modality.csv").glob("*/*.csv"))
    )
    assert "all" in set(per_modality["modality"])
    # The Table-2 comparison: no plain U-Net trained yet, so three rows; also in MLflow.
    comparison = pd.read_csv(
        next((project / "data/08_reporting/method_comparison.csv").glob("*/*.csv"))
    )
    assert comparison["method"].tolist() == ["otsu", "multilevel", "attention_unet"]
    row = comparison.set_index("method").loc["attention_unet"]
    assert row["dsb_score"] == pytest.approx(run.data.metrics["test.dsb_score"])
    assert run.data.metrics["comparison.otsu.miou_pooled"] == pytest.approx(
        comparison.set_index("method").loc["otsu", "miou_pooled"]
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "class_weights.json",
        "training_curves.png",
        "training_history.csv",
        "instance_postprocessing.json",
        "method_comparison.csv",
        "method_comparison.md",
        "comparison_panels.png",
        "tta_comparison.csv",
        "evaluation_per_image.csv",
    } <= artifacts

    import nucleus_segmentation.model  # noqa: F401  (registers the custom layers)

    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    pyfunc = mlflow.pyfunc.load_model(models[0].model_uri)
    prediction = pyfunc.predict(np.zeros((1, 32, 48, 1), np.float32))
    # background, nucleus interior, nucleus boundary: the default's three classes
    assert np.asarray(prediction).shape == (1, 32, 48, 3)
    np.testing.assert_allclose(np.asarray(prediction).sum(axis=-1), 1.0, rtol=1e-5)

    _inference_on_odd_inputs(project, client)
    _inference_gives_the_labels_evaluation_scored(project, split)


def _inference_gives_the_labels_evaluation_scored(project: Path, split: pd.DataFrame) -> None:
    """Parity: the test images' label maps behind the reported scores are byte-identical
    to what `kedro run --pipeline inference` writes for the same files."""
    import cv2

    scored = NpzDataset(
        filepath=str(
            next(
                (project / "data/07_model_output/attention_unet_scored_test_labels.npz").glob(
                    "*/*.npz"
                )
            )
        )
    ).load()
    test_ids = split.loc[split["split"] == "test", "image_id"].tolist()
    assert sorted(bundle.sample_ids(scored)) == sorted(test_ids)
    folder = project / "test images"
    folder.mkdir()
    for image_id in test_ids:
        shutil.copy(project / SAMPLE / image_id / "images" / f"{image_id}.png", folder)
    out = project / "parity"
    args = f"inference_input={folder},inference_output={out}"
    result = _cli(project, "--pipeline", "inference", "--params", args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (written,) = out.iterdir()
    for image_id in test_ids:
        labels = cv2.imread(str(written / "labels" / f"{image_id}.tif"), cv2.IMREAD_UNCHANGED)
        expected = bundle.field(scored, image_id, "labels")
        assert labels.dtype == expected.dtype and labels.tobytes() == expected.tobytes(), image_id


def _inference_on_odd_inputs(project: Path, client) -> None:
    """`kedro run --pipeline inference` after the default run: the user's own odd folder."""
    import json

    import cv2
    import numpy as np

    user = project / "my images"
    shutil.copytree(project / EXAMPLES, user / "plate 1")
    wide = cv2.resize(cv2.imread(str(user / "plate 1" / "stained_crop.jpg")), (1000, 700))
    cv2.imwrite(str(user / "wide.png"), wide)  # 1000x700 (width x height), 8-bit RGB
    (user / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (user / "empty.tif").write_bytes(b"")
    out = project / "results"
    args = ("--pipeline", "inference", "--params", f"inference_input={user},inference_output={out}")
    result = _cli(project, *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (first,) = out.iterdir()
    manifest = json.loads((first / "manifest.json").read_text())
    model_versions = [v.name for v in (project / "data/06_models/attention_unet.keras").iterdir()]
    assert manifest["model"]["version"] == model_versions[-1]
    sizes = {i["id"]: (i["height"], i["width"]) for i in manifest["images"]}
    assert sizes["wide"] == (700, 1000)
    assert set(sizes) == {
        "wide",
        "plate 1/fluorescence_rgba",
        "plate 1/stained_crop",
        "plate 1/fluorescence_16bit",
    }
    report = pd.read_csv(first / "report.csv")
    assert sorted(Path(f).name for f in report["file"]) == ["corrupt.png", "empty.tif"]
    labels = cv2.imread(str(first / "labels" / "wide.tif"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (700, 1000) and labels.dtype == np.uint16
    mask = cv2.imread(str(first / "masks" / "plate 1" / "fluorescence_16bit.png"), 0)
    assert mask.shape == (360, 480)
    overlay = cv2.imread(str(first / "overlays" / "wide.png"))
    assert overlay.shape == (700, 1000, 3)
    nuclei = pd.read_csv(first / "nuclei.csv")
    assert (
        nuclei.groupby("image")["nucleus_id"].max()
        == pd.Series({i["id"]: i["nuclei"] for i in manifest["images"] if i["nuclei"]}).sort_index()
    ).all()
    submission = pd.read_csv(first / "submission.csv")
    assert list(submission.columns) == ["ImageId", "EncodedPixels"]
    # A second run never touches the first one's folder.
    before = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    again = _cli(project, *args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len(list(out.iterdir())) == 2
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*")} == before


def test_the_paper_environment_takes_a_training_step_on_the_jax_backend(project):
    """What a GPU user runs (`KERAS_BACKEND=jax kedro run --pipeline training --env paper`),
    shrunk to one step of the full-width network on the CPU, in bfloat16 (what `auto` picks
    on a GPU): the backend, devices and precision are reported in the log and on the MLflow
    run."""
    import importlib.util

    import mlflow

    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    # Tiny data for the paper's network: its 512x512 images and crops become 64x64 in this
    # copy of conf/paper (lists cannot be given with --params); the model keeps its width.
    paper = project / "conf" / "paper"
    for name, old, new in (
        ("parameters.yml", "size: [512, 512]", "size: [64, 64]"),
        ("parameters_augmentation.yml", "output_size: 512", "output_size: 64"),
    ):
        text = (paper / name).read_text()
        assert old in text
        (paper / name).write_text(text.replace(old, new))
    data = ("--env", "paper", "--pipeline", "data_processing")
    result = _cli(project, *data, "--params", "augmentation.copies_per_image=1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    one_step = (
        "training.epochs=1,training.steps_per_epoch=1,training.batch_size=2,"
        "training.max_validation_images=1,training.precision=mixed_bfloat16"
    )
    args = ("run", "--env", "paper", "--pipeline", "training", "--params", one_step)
    result = cli(project, *args, env={"KERAS_BACKEND": "jax"})
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert (
        "Keras jax backend on cpu:0, precision mixed_bfloat16 "
        "(training.precision: mixed_bfloat16), distribution none"
    ) in log
    assert len(list((project / "data/06_models/attention_unet_paper.keras").glob("*/*.keras"))) == 1
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    (run,) = mlflow.search_runs(
        experiment_names=["nucleus_segmentation"],
        filter_string="tags.kedro_env = 'paper' and tags.kedro_pipeline = 'training'",
        output_format="list",
    )
    assert run.data.tags["keras.backend"] == "jax" and run.data.tags["keras.devices"] == "cpu:0"
    assert run.data.tags["keras.precision"] == "mixed_bfloat16"
    assert run.data.params["training.model.base_filters"] == "64"
    # The training node's loop (batches, weighted loss, optimizer, validation callback) ran
    # on JAX: what tests/model/test_unet.py leaves to this test.
    assert math.isfinite(run.data.metrics["epoch.loss"])
    assert 0.0 <= run.data.metrics["epoch.val_miou_pooled"] <= 1.0
    assert 0.0 <= run.data.metrics["epoch.val_dsb_score"] <= 1.0
