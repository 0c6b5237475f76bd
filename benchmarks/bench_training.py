"""Full-data training of the attention U-Net and of the plain U-Net baseline, same budget.

    python benchmarks/bench_training.py                 # trains both (about 80 min on 2 cores)
    python benchmarks/bench_training.py --report-only   # tabulate the latest runs in mlflow.db

Expects `kedro run --pipeline data_processing --params raw_data=<stage1_train.zip>` to have
run (the latest preprocessed and augmented sets are used). Runs, in the project,
`kedro run --pipeline training` and `kedro run --pipeline training --env baseline`, each one
MLflow run, then reads their best validation scores back from the MLflow store and writes
the "training" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime

import mlflow
from _common import PROJECT, run_measured, write_section

RUNS = {"attention U-Net (SAP + CE + ASPP)": "local", "plain U-Net baseline": "baseline"}


def train(env: str) -> dict:
    command = [sys.executable, "-m", "kedro", "run", "--pipeline", "training"]
    if env != "local":
        command += ["--env", env]
    environment = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    result = run_measured(command, PROJECT, environment, PROJECT / f"benchmark_training_{env}.log")
    if result["returncode"] != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result['log'][-3000:]}")
    return result


def latest_run(env: str):
    mlflow.set_tracking_uri(f"sqlite:///{PROJECT / 'mlflow.db'}")
    runs = mlflow.search_runs(
        experiment_names=["nucleus_segmentation"],
        output_format="list",
        filter_string=f"tags.`mlflow.runName` = 'training@{env}' and status = 'FINISHED'",
        order_by=["start_time DESC"],
        max_results=1,
    )
    if not runs:
        sys.exit(f"no finished MLflow run named training@{env} in mlflow.db")
    return runs[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    measured = {} if args.report_only else {env: train(env) for env in RUNS.values()}
    rows = []
    for name, env in RUNS.items():
        run = latest_run(env)
        metrics, params = run.data.metrics, run.data.params
        minutes = (run.info.end_time - run.info.start_time) / 60000
        peak = measured.get(env, {}).get("peak")
        best = int(
            mlflow.MlflowClient()
            .get_metric_history(run.info.run_id, "best.val_miou_pooled")[-1]
            .step
        )
        rows.append(
            f"| {name} | {params['training.model.base_filters']} | {params['training.epochs']} "
            f"| {best} | {minutes:.1f} | "
            + " | ".join(
                f"{100 * metrics[f'best.val_{k}']:.2f}"
                for k in (
                    "pa_pooled",
                    "mpa_pooled",
                    "miou_pooled",
                    "miou_per_image",
                    "nucleus_iou_pooled",
                )
            )
            + f" | {'%.1f GiB' % (peak / 2**30) if peak else 'see note'} | `{run.info.run_id[:8]}` "
            f"{datetime.fromtimestamp(run.info.start_time / 1000):%Y-%m-%d} |"
        )
    body = "\n".join(
        [
            "Commands: `python benchmarks/bench_training.py` (runs `kedro run --pipeline training`"
            " and `kedro run --pipeline training --env baseline` after `kedro run --pipeline "
            "data_processing --params raw_data=../shared/dsb2018/stage1_train.zip`).",
            "Validation split of stage1_train (100 images, whole 512x512 preprocessed images, "
            "never trained on), the best epoch by pooled validation MIoU. Scores in %.",
            "",
            "| model | base width | epochs | best epoch | run minutes | PA | MPA | MIoU (pooled) "
            "| MIoU (per image) | nucleus IoU | peak memory | MLflow run |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "| paper, Table 2 (its own test split, 512x512, GPU, 100 epochs) | 64 | 100 | | "
            "| 89.97 "
            "| 91.35 | 85.02 | | | | |",
        ]
    )
    print(write_section("training", "Full-data training (CPU default configuration)", body))


if __name__ == "__main__":
    main()
