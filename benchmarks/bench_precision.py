"""Precision of the segmentation path, measured: the same model evaluated with the network in
float32 and in bfloat16 (``segmentation.precision``), scores and prediction time.

    python benchmarks/bench_precision.py --model <trained_model version>
    python benchmarks/bench_precision.py --report-only

Each precision runs ``kedro run --pipeline evaluation`` with the model version pinned and
``--params segmentation.precision=<p>``: the separation is tuned on validation in that precision
and the test split scored on each image's own grid, as inference segments it. The default
(``auto`` as this machine resolves it) runs last, so the latest tuned separation is the
default's. Seconds per 512x512 image are ``benchmarks/bench_inference.py``'s.

Results are kept in ``benchmarks/results/precision.json`` and written to the "precision"
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json

import _common
import pandas as pd
import yaml
from _common import PROJECT, SCORES, cell, kedro_run, latest_version, write_section
from bench_evaluation import node_times
from bench_scale_policy import interval_over_groups, per_image

from nucleus_segmentation.model.precision import resolve_precision

REPORTS = PROJECT / "data/08_reporting"
RESULTS = PROJECT / "benchmarks" / "results" / "precision.json"
PREDICT_NODES = ("predict_validation_images", "predict_test_images")


def default_precision() -> str:
    conf = yaml.safe_load((PROJECT / "conf/base/parameters.yml").read_text())
    return resolve_precision(conf["segmentation"]["precision"])


def measure(model_version: str, precision: str) -> dict:
    result = kedro_run(
        "evaluation",
        "--load-versions",
        f"trained_model:{model_version}",
        "--params",
        f"segmentation.precision={precision},evaluation.tta_compare=null",
        log_path=PROJECT / "benchmark_precision.log",
    )

    def latest(name: str) -> pd.DataFrame:
        path = latest_version(REPORTS, name, "run `kedro run --pipeline evaluation` first")
        return pd.read_csv(path)

    search = latest("separation_search.csv")
    images = latest("evaluation_per_image.csv")
    score, separation = _common.pooled_separation(search)
    return {
        "model_version": model_version,
        "precision": precision,
        "validation_dsb_score": score,
        "separation": separation,
        "per_modality": latest("evaluation_per_modality.csv").to_dict("records"),
        "per_image": images[["image_id", "acquisition", "dsb_score"]].to_dict("records"),
        "node_seconds": {
            node: seconds
            for node, seconds in node_times(result["log"]).items()
            if node in PREDICT_NODES
        },
        "wall_seconds": result["wall"],
    }


def report(results: dict) -> str:
    header = "| precision | validation DSB (tuned) | " + " | ".join(SCORES.values())
    rows = [
        header + " | predicting the test split, s |",
        "|---|---:|" + "---:|" * (len(SCORES) + 1),
    ]
    for precision, run in results.items():
        overall = next(r for r in run["per_modality"] if r["modality"] == "all")
        test_seconds = run["node_seconds"].get("predict_test_images")
        rows.append(
            f"| {precision} | {run['validation_dsb_score']:.3f} | "
            + " | ".join(cell(k, overall[k]) for k in SCORES)
            + f" | {test_seconds if test_seconds is not None else '-'} |"
        )
    default = list(results)[-1]  # the run order puts the default last
    own = per_image(results, default)
    interval = interval_over_groups(own["dsb_score"], own["acquisition"])
    lines = [
        f"The default ({default} here) reads test DSB {interval['mean']:.3f}, 95 % interval "
        f"{interval['low']:.3f} to {interval['high']:.3f} (bootstrap over its "
        f"{interval['groups']} acquisition groups)."
    ]
    tuned = "; ".join(
        f"{p}: " + ", ".join(f"{k} {v}" for k, v in run.get("separation", {}).items())
        for p, run in results.items()
    )
    lines.append(
        "Each precision tunes its own separation on validation, as a user's evaluation run "
        f"would ({tuned}), so a difference in the instance scores mixes the precision with "
        "that choice; the pixel scores (MIoU, nucleus IoU) show the network's own change."
    )
    if {"float32", "mixed_bfloat16"} <= set(results):
        a, b = per_image(results, "float32"), per_image(results, "mixed_bfloat16")
        difference = (b["dsb_score"] - a["dsb_score"].reindex(b.index)).dropna()
        paired = interval_over_groups(difference, b["acquisition"])
        lines.append(
            f"bfloat16 minus float32, paired over the same {paired['images']} test images: "
            f"DSB score {paired['mean']:+.3f} (95 % interval {paired['low']:+.3f} to "
            f"{paired['high']:+.3f}, bootstrap over {paired['groups']} acquisition groups)."
        )
    model = next(iter(results.values()))["model_version"]
    return "\n\n".join(
        [
            "Command: `python benchmarks/bench_precision.py --model <version>` (one "
            "`kedro run --pipeline evaluation` per precision, model pinned, precision by "
            f"`--params`), or `--report-only`. Model `attention_unet.keras` {model} (trained "
            "in float32). Test split grouped by acquisition, each image scored on its own "
            "grid, separation tuned on validation in the precision it is applied in; pixel "
            "scores in %, pooled; instance scores averaged over images.",
            "\n".join(rows),
            *lines,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="trained_model version to evaluate")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads(RESULTS.read_text())
    else:
        if not args.model:
            parser.error("--model is needed unless --report-only")
        default = default_precision()
        order = [p for p in ("float32", "mixed_bfloat16") if p != default] + [default]
        results = {p: measure(args.model, p) for p in order}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1, default=str))
    print(write_section("precision", "Precision of the segmentation path", report(results)))


if __name__ == "__main__":
    main()
