"""Screenshots for the documentation: the kedro-viz DAG and the MLflow UI comparing the plain
U-Net with the attention U-Net, taken in headless Chromium (Debian's `chromium`).

    python scripts/docs_screenshots.py --project <project folder with runs in mlflow.db>

The project folder is one where `kedro run` (and `kedro run --pipeline training --env
baseline`) have run: this checkout, or another one (e.g. where the full-data runs live).
Writes docs/images/kedro-viz.png, docs/images/mlflow-runs.png, docs/images/mlflow-compare.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import (  # noqa: E402
    browser_page,
    free_port,
    serve_folder,
    server_process,
    wait_for_url,
)

IMAGES = ROOT / "docs" / "images"
# kedro-viz settings (its localStorage): no feature tour, light theme, top-down flow, the
# graph alone (no sidebar or minimap) so the node names stay readable.
VIZ_SETTINGS = (
    "localStorage.setItem('KedroViz', JSON.stringify({showFeatureHints: false, "
    "theme: 'light', orientation: 'vertical', visible: {sidebar: false, miniMap: false, "
    "graph: true, code: false, slicing: false, traceback: false}}))"
)


def kedro_viz(project: Path, output: Path) -> None:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    command = [sys.executable, "-m", "kedro", "viz", "build", "--include-previews"]
    subprocess.run(command, cwd=project, env=env, check=True, capture_output=True)
    with serve_folder(project / "build") as url, browser_page(1300, 1500, VIZ_SETTINGS) as page:
        page.goto(f"{url}/?pid=__default__")
        page.wait_for_selector("g.pipeline-node text", timeout=60_000)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(output))


def newest_training_runs(client, experiment_id: str) -> list:
    """The newest finished training run of the attention U-Net and of the plain U-Net."""
    chosen = []
    for env in ("local", "baseline"):
        runs = client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.kedro_env = '{env}' and attributes.status = 'FINISHED' "
                "and metrics.`best.val_dsb_score` >= 0"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        chosen += runs
    return chosen


def mlflow_ui(project: Path, runs_png: Path, compare_png: Path) -> None:
    import mlflow

    store = f"sqlite:///{project / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("nucleus_segmentation")
    pair = newest_training_runs(client, experiment.experiment_id)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with server_process(command, project, dict(os.environ), project / "mlflow_ui.log"):
        wait_for_url(f"{base}/health")
        ml = "workflowType=machine_learning"
        training = urllib.parse.quote("tags.kedro_pipeline = 'training'")
        with browser_page(1600, 900) as page:
            runs = f"{base}/#/experiments/{experiment.experiment_id}/runs"
            page.goto(f"{runs}?{ml}&searchFilter={training}")
            page.wait_for_selector(f"text={pair[0].info.run_name}", timeout=60_000)
            close_assistant(page)
            page.screenshot(path=str(runs_png))
        with browser_page(1600, 2200) as page:
            ids = json.dumps([r.info.run_id for r in pair])
            experiments = json.dumps([experiment.experiment_id])
            page.goto(f"{base}/#/compare-runs?runs={ids}&experiments={experiments}&{ml}")
            page.wait_for_selector("text=best.val_dsb_score", timeout=60_000)
            close_assistant(page)
            with contextlib.suppress(Exception):  # parameters: only those that differ
                page.get_by_text("Show diff only").first.click(timeout=3000)
                page.wait_for_timeout(1000)
            page.screenshot(path=str(compare_png))


def close_assistant(page) -> None:
    """Close MLflow 3's assistant side panel, when it shows, so the runs get the width."""
    page.wait_for_timeout(2000)
    if page.get_by_text("MLflow Assistant").count():
        buttons = page.locator("button[aria-label*='lose']")
        for index in range(buttons.count()):
            with contextlib.suppress(Exception):
                buttons.nth(index).click(timeout=1000)
        page.wait_for_timeout(1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=ROOT)
    args = parser.parse_args()
    IMAGES.mkdir(parents=True, exist_ok=True)
    kedro_viz(args.project.resolve(), IMAGES / "kedro-viz.png")
    mlflow_ui(args.project.resolve(), IMAGES / "mlflow-runs.png", IMAGES / "mlflow-compare.png")
    print(f"wrote {sorted(p.name for p in IMAGES.glob('*.png'))}")


if __name__ == "__main__":
    main()
