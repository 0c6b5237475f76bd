"""Full-data training of the attention U-Net and of the plain U-Net baseline, same budget.

    python benchmarks/bench_training.py                 # trains both (about 80 min on 2 cores)
    python benchmarks/bench_training.py --report-only   # tabulate the full-data runs in mlflow.db
    python benchmarks/bench_training.py --report-only --run ffccfa91 --peak ffccfa91=3.67
        # also a run made before data.* metrics existed; peak GiB measured outside

Expects `kedro run --pipeline data_processing --params raw_data=<stage1_train.zip>` to have
run (the latest preprocessed and augmented sets are used). Runs, in the project,
`kedro run --pipeline training` and `kedro run --pipeline training --env baseline`, each one
MLflow run, then reads their best validation scores back from the MLflow store and writes
the "training" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
from datetime import datetime

import mlflow
from _common import PROJECT, kedro_run, write_section

RUNS = {"attention U-Net (SAP + CE + ASPP)": "local", "plain U-Net baseline": "baseline"}


def train(env: str) -> dict:
    extra = [] if env == "local" else ["--env", env]
    return kedro_run("training", *extra, log_path=PROJECT / f"benchmark_training_{env}.log")


FULL_DATA_TRAIN_IMAGES = 200  # the embedded sample has ~20 training images, stage1_train 470


def full_data_runs(named: list[str]) -> list:
    """Every finished MLflow training run on the full stage1_train, oldest first: runs whose
    ``data.train_images`` metric says so, and runs named by id prefix (runs made before that
    metric was logged)."""
    mlflow.set_tracking_uri(f"sqlite:///{PROJECT / 'mlflow.db'}")
    runs = mlflow.search_runs(
        experiment_names=["nucleus_segmentation"],
        output_format="list",
        filter_string="tags.kedro_pipeline = 'training' and status = 'FINISHED'",
        order_by=["start_time ASC"],
    )
    return [
        r
        for r in runs
        if "best.val_miou_pooled" in r.data.metrics  # an interrupted run has no result
        and (
            r.data.metrics.get("data.train_images", 0) >= FULL_DATA_TRAIN_IMAGES
            or any(r.info.run_id.startswith(prefix) for prefix in named)
        )
    ]


def row(run, peak: int | None) -> str:
    metrics, params = run.data.metrics, run.data.params
    minutes = (run.info.end_time - run.info.start_time) / 60000
    best = int(
        mlflow.MlflowClient().get_metric_history(run.info.run_id, "best.val_miou_pooled")[-1].step
    )
    model = "attention U-Net" if params["training.model.attention"] != "none" else "plain U-Net"
    parts = "+".join(
        p
        for p, on in (
            ("SAP", params["training.model.attention"] == "sap"),
            ("GAP", params["training.model.attention"] == "gap"),
            ("CE", params["training.model.channel_expansion"] == "True"),
            ("ASPP", params["training.model.aspp"] == "True"),
        )
        if on
    )
    loss = (
        f"CE x weights^{params.get('training.class_weight_power', '1.0')}"
        f" + {params['training.dice_weight']} Dice"
    )
    recipe = (
        f"{params['training.optimizer.name']} "
        f"{params.get('training.optimizer.schedule') or 'constant'} lr"
    )
    scores = " | ".join(
        f"{100 * metrics[f'best.val_{k}']:.2f}"
        for k in ("pa_pooled", "mpa_pooled", "miou_pooled", "miou_per_image", "nucleus_iou_pooled")
    )
    dsb = metrics.get("best.val_dsb_score")
    scores += f" | {dsb:.3f}" if dsb is not None else " | -"
    ran = len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "epoch.loss"))
    scale = params.get("segmentation.scale.mode", "fixed (512x512)")
    if scale == "fixed":
        scale = "fixed (512x512)"
    env = run.data.tags.get("kedro_env", "?")
    memory = f"{peak / 2**30:.1f} GiB" if peak else "-"
    label = f"{model} {parts}".rstrip()
    if params.get("training.targets.kind", "binary") == "boundary":
        label += ", boundary class"
    return (
        f"| {label} | `{env}` | {scale} | {loss} | {recipe} | "
        f"{params['training.model.base_filters']} | "
        f"{ran} of {params['training.epochs']} | {best} | {minutes:.1f} | {scores} | {memory} | "
        f"`{run.info.run_id[:8]}` {datetime.fromtimestamp(run.info.start_time / 1000):%Y-%m-%d} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="PREFIX",
        help="also tabulate this MLflow run (id prefix), e.g. one made before data.* metrics",
    )
    parser.add_argument(
        "--peak",
        action="append",
        default=[],
        metavar="RUN=GIB",
        help="peak memory measured outside (e.g. /usr/bin/time -v) of an MLflow run id prefix",
    )
    args = parser.parse_args()
    measured = {} if args.report_only else {env: train(env) for env in RUNS.values()}
    runs = full_data_runs(args.run)
    peaks = {}
    for given in args.peak:
        prefix, gib = given.split("=")
        peaks.update(
            {r.info.run_id: float(gib) * 2**30 for r in runs if r.info.run_id.startswith(prefix)}
        )
    for env, result in measured.items():  # the newest run of each environment was just made
        mine = [r for r in runs if r.data.tags.get("kedro_env") == env]
        peaks[mine[-1].info.run_id] = result["peak"]
    body = "\n".join(
        [
            "Commands: `python benchmarks/bench_training.py` (runs `kedro run --pipeline training`"
            " and `kedro run --pipeline training --env baseline` after `kedro run --pipeline "
            "data_processing --params raw_data=../shared/dsb2018/stage1_train.zip`), or "
            "`--report-only` to tabulate every finished full-data training run in `mlflow.db`.",
            "Validation split of stage1_train (grouped by acquisition, never trained on): whole "
            "raw images through the segmentation path inference runs, scored on their own "
            "grid on `instances > 0` (default separation), best epoch by `training.monitor`. "
            "Scores in %, DSB score 0..1. `scale`: the scale policy the model was trained and "
            "validated under. `epochs`: run of planned (the time budget ends a run at the last "
            "step that fits it, a partial last epoch counted as one; before 2026-12-04 after "
            "the epoch that would overrun it).",
            "",
            "| model | env | scale | loss | optimizer | base width | epochs | best epoch "
            "| run minutes | PA | MPA | MIoU (pooled) | MIoU (per image) | nucleus IoU "
            "| DSB score | peak memory | MLflow run |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            *[row(run, peaks.get(run.info.run_id)) for run in runs],
        ]
    )
    print(write_section("training", "Full-data training (CPU default configuration)", body))


if __name__ == "__main__":
    main()
