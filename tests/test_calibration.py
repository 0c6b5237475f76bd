"""`kedro run --pipeline calibration` on a few labelled images of "another lab" (the sample's,
with outlines drawn 2 px tighter): a new separation version that inference then uses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from kedro.io.core import generate_timestamp

from tests.project import EXAMPLES, SAMPLE, cli, succeeded

pytestmark = pytest.mark.slow


def _tighter_labels(project: Path, folder: Path, count: int) -> list[str]:
    """``count`` sample images in the DSB layout with every mask eroded by 2 px."""
    ids = sorted(p.name for p in (project / SAMPLE).iterdir() if (p / "masks").is_dir())[:count]
    kernel = np.ones((3, 3), np.uint8)
    for image_id in ids:
        source = project / SAMPLE / image_id
        shutil.copytree(source / "images", folder / image_id / "images")
        (folder / image_id / "masks").mkdir()
        for mask in (source / "masks").glob("*.png"):
            tight = cv2.erode(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE), kernel, iterations=2)
            if tight.any():
                cv2.imwrite(str(folder / image_id / "masks" / mask.name), tight)
    return ids


def test_calibration_tunes_the_separation_on_the_users_labels_and_inference_uses_it(
    trained_sample, tmp_path
):
    project = shutil.copytree(trained_sample.root, tmp_path / "project", symlinks=True)
    labelled = tmp_path / "our lab"
    ids = _tighter_labels(project, labelled, 4)
    versions = project / "data/06_models/instance_postprocessing.json"
    # The separation in use: a newer version that drops every nucleus, so the calibrated
    # one must differ from it (and the report's "before" must be this one, not the new one).
    latest = json.loads((sorted(versions.iterdir())[-1] / versions.name).read_text())
    previous = {**latest, "min_size": 10**6}
    (versions / generate_timestamp()).mkdir()
    (sorted(versions.iterdir())[-1] / versions.name).write_text(json.dumps(previous))
    before = sorted(versions.iterdir())
    # The whole search (calibration.tune: all): the broken min_size must be replaced.
    params = f"calibration_input={labelled},calibration.tune=all"
    args = ("run", "--pipeline", "calibration", "--params", params)
    result = cli(project, *args)
    succeeded(result)
    assert "Calibrated on 4 images" in result.stdout + result.stderr

    after = sorted(versions.iterdir())
    assert after[:-1] == before and len(after) == len(before) + 1
    calibrated = json.loads((after[-1] / versions.name).read_text())
    assert calibrated != previous
    report = pd.read_csv(
        next((project / "data/08_reporting/calibration_report.csv").glob("*/*.csv"))
    ).set_index("separation")
    assert report["images"].tolist() == [len(ids), len(ids)]
    # The "before" row is the separation that was in use, the "after" row what was written;
    # the one in use is a candidate of the search, so in-sample the new one is no worse.
    # Evaluation's record of the settings it tuned on goes with the calibrated version.
    assert calibrated["tuned_on"] == latest["tuned_on"] and "scale" in latest["tuned_on"]
    for row, separation in (("before", previous), ("after", calibrated)):
        keys = [k for k in separation if k != "tuned_on"]
        settings = report.loc[row, keys].to_dict()
        assert {k: None if v != v else v for k, v in settings.items()} == {
            k: separation[k] for k in keys
        }, row
    assert report.loc["before", "dsb_score"] == 0.0
    assert report.loc["after", "dsb_score"] >= report.loc["before", "dsb_score"]
    search = pd.read_csv(
        next((project / "data/08_reporting/calibration_search.csv").glob("*/*.csv"))
    )
    assert search["images"].eq(len(ids)).all() and len(search) > 1

    # The next inference run segments with the calibrated separation.
    out = tmp_path / "segmented"
    params = f"inference_input={project / EXAMPLES},inference_output={out}"
    succeeded(cli(project, "run", "--pipeline", "inference", "--params", params))
    (written,) = out.iterdir()
    manifest = json.loads((written / "manifest.json").read_text())
    used = manifest["parameters"]["instance_postprocessing"]
    assert used == calibrated


def test_calibration_on_images_without_labels_says_so(trained_sample, tmp_path):
    project = shutil.copytree(trained_sample.root, tmp_path / "project", symlinks=True)
    unlabelled = tmp_path / "unlabelled"
    image_id = sorted(p.name for p in (project / SAMPLE).iterdir())[0]
    shutil.copytree(project / SAMPLE / image_id / "images", unlabelled / image_id / "images")
    result = cli(
        project, "run", "--pipeline", "calibration", "--params", f"calibration_input={unlabelled}"
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert errors and f"{unlabelled}: none of its 1 images is usable" in errors[0]
    assert f"{image_id}/masks: no mask files and no run-length labels" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    versions = project / "data/06_models/instance_postprocessing.json"
    assert len(list(versions.iterdir())) == len(
        list((trained_sample.root / "data/06_models/instance_postprocessing.json").iterdir())
    )
