"""Calibration measured on images it was not tuned on: what `kedro run --pipeline calibration`
gives a lab on its next images, not on the ones it calibrated with.

    python benchmarks/bench_calibration.py --model <trained_model version> \
        --separation <instance_postprocessing version> [--handful 3] [--seed 42] \
        [--outline-only]
    python benchmarks/bench_calibration.py --report-only

Both versions default to the latest; pin them to a full-data model and the separation its
evaluation tuned (a later sample run writes newer ones). On the acquisition-grouped split of
the latest ``data_processing`` run, every validation and test image is segmented by the
path inference runs, then the calibration node (``calibrate_separation``: evaluation's search
with the separation in use as a candidate) is run on

1. **a modality's validation images** (acquisitions of the same kind from other labs), scored
   on that modality's test images;
2. **a lab's own images**: in each test acquisition group with at least three images more
   than ``--handful``, ``--handful`` of them (drawn with ``--seed``), scored on the group's
   other images.

``--outline-only`` runs it with ``calibration.tune: outline``: the separation in use kept,
only the outline level (the extent each nucleus is drawn at) fitted.

Each row gives the DSB score, F1 at IoU 0.5, pooled nucleus IoU and the signed area error of
matched nuclei with the separation in use (tuned on validation by ``evaluation``) and with the
calibrated one, and the paired DSB difference with a 95 % bootstrap interval (over images
within a group, over groups when pooling groups). Results are kept in
``benchmarks/results/calibration.json`` (one entry per handful and search) and written to the
"calibration" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from _common import (
    PROJECT,
    catalog_filepath,
    cell,
    latest_version,
    parameters,
    vector_instructions,
    write_section,
)

RESULTS = PROJECT / "benchmarks" / "results" / "calibration.json"
SCORED = ("dsb_score", "f1", "nucleus_iou_pooled", "area_error")
RESAMPLES = 2000


def paired_interval(differences: pd.Series, clusters: pd.Series, seed: int) -> list[float]:
    """Mean of ``differences`` and its 95 % bootstrap interval, resampling whole clusters
    (images of one group count together when the clusters are groups)."""
    rng = np.random.default_rng(seed)
    by_cluster = differences.groupby(clusters)
    sums, counts = by_cluster.sum().to_numpy(), by_cluster.size().to_numpy()
    draws = rng.integers(0, len(sums), size=(RESAMPLES, len(sums)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return [float(differences.mean()), float(low), float(high)]


def scores(
    probabilities: Mapping[str, np.ndarray],
    ingested: Mapping[str, np.ndarray],
    separation: Mapping[str, Any],
    groups: Mapping[str, str],
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-image scores and pooled summary of ``probabilities`` separated by ``separation``."""
    from nucleus_segmentation import bundle
    from nucleus_segmentation.imaging.instances import separate_instances
    from nucleus_segmentation.scoring import score_images

    truths = {k: bundle.field(ingested, k, "labels") for k in probabilities}
    predictions = {k: separate_instances(p, **separation) for k, p in probabilities.items()}
    per_image, summary = score_images(truths, predictions, dict(groups))
    overall = summary.set_index("group").loc["all"]
    return per_image.set_index("image_id"), {k: float(overall[k]) for k in SCORED}


def calibrated_row(
    name: str,
    calibrated: list[str],
    scored: list[str],
    clusters: Mapping[str, str],
    probabilities: Mapping[str, np.ndarray],
    ingested: Mapping[str, np.ndarray],
    in_use: Mapping[str, Any],
    params: Mapping[str, Any],
    calibration: Mapping[str, Any],
    seed: int,
) -> tuple[dict, pd.DataFrame]:
    """Calibrate on the images ``calibrated``, score ``scored`` before and after: the table row and
    the per-image DSB scores (before, after, cluster)."""
    from nucleus_segmentation.pipelines.calibration.nodes import calibrate_separation

    after, _, before = calibrate_separation(
        {k: probabilities[k] for k in calibrated}, ingested, in_use, params, calibration
    )
    test = {k: probabilities[k] for k in scored}
    per_before, pooled_before = scores(test, ingested, before, clusters)
    per_after, pooled_after = scores(test, ingested, after, clusters)
    paired = pd.DataFrame(
        {
            "before": per_before["dsb_score"],
            "after": per_after["dsb_score"],
            "cluster": pd.Series(clusters)[per_before.index],
        }
    )
    row = {
        "rows": name,
        "calibration_images": len(calibrated),
        "scored_images": len(scored),
        "before": pooled_before,
        "after": pooled_after,
        "paired_dsb": paired_interval(paired["after"] - paired["before"], paired.index, seed),
        "separation_before": dict(before),
        "separation_after": dict(after),
    }
    return row, paired


def measure(args: argparse.Namespace) -> dict:
    from kedro.io.core import Version
    from kedro_datasets.json import JSONDataset

    from nucleus_segmentation.datasets import KerasModelDataset, NpzDataset
    from nucleus_segmentation.segment import SegmentationSettings, segmentation_probabilities

    params = parameters("base")
    model = KerasModelDataset(
        filepath=str(catalog_filepath("base", "trained_model")), version=Version(args.model, None)
    ).load()
    in_use = JSONDataset(
        filepath=str(catalog_filepath("base", "instance_postprocessing")),
        version=Version(args.separation, None),
    ).load()
    hint = "run `kedro run --pipeline data_processing` first"
    split = pd.read_csv(latest_version(PROJECT / "data/03_primary", "data_split.csv", hint))
    ingested = NpzDataset(
        filepath=str(latest_version(PROJECT / "data/02_intermediate", "ingested_images.npz", hint))
    ).load()
    split = split[split["split"].isin(["validation", "test"])]
    probabilities = segmentation_probabilities(
        model,
        ingested,
        split["image_id"].tolist(),
        params["preprocessing"],
        SegmentationSettings.from_params(params["segmentation"]),
        "predicting validation and test images",
    )
    evaluation = params["evaluation"]
    calibration = {**params["calibration"], "tune": "outline" if args.outline_only else "all"}
    rows = []
    test = split[split["split"] == "test"]
    validation = split[split["split"] == "validation"]
    # 1. A modality's validation images -> its test images (clusters: acquisition groups).
    for modality, images in test.groupby("modality"):
        own = validation.loc[validation["modality"] == modality, "image_id"].tolist()
        if len(own) < args.handful:
            continue
        groups = images.set_index("image_id")["group"].to_dict()
        row, paired = calibrated_row(
            f"{modality}: validation -> test",
            own,
            images["image_id"].tolist(),
            groups,
            probabilities,
            ingested,
            in_use,
            evaluation,
            calibration,
            args.seed,
        )
        row["paired_dsb"] = paired_interval(
            paired["after"] - paired["before"], paired["cluster"], args.seed
        )
        rows.append(row)
    # 2. A lab's own images: a handful of one acquisition group -> its other images.
    pooled = []
    for group, images in test.groupby("group"):
        if len(images) < args.handful + 3:
            continue
        ids = images["image_id"].to_numpy()
        rng = np.random.default_rng(args.seed)
        chosen = set(rng.choice(ids, size=args.handful, replace=False).tolist())
        row, paired = calibrated_row(
            f"{group}: {args.handful} of its images -> the other {len(ids) - args.handful}",
            [i for i in ids if i in chosen],
            [i for i in ids if i not in chosen],
            dict.fromkeys(ids, group),
            probabilities,
            ingested,
            in_use,
            evaluation,
            calibration,
            args.seed,
        )
        rows.append(row)
        pooled.append(paired)
    if pooled:
        paired = pd.concat(pooled)
        rows.append(
            {
                "rows": f"own-acquisition calibration, {len(pooled)} groups pooled "
                "(mean DSB over their scored images)",
                "calibration_images": args.handful * len(pooled),
                "scored_images": len(paired),
                "before": {"dsb_score": float(paired["before"].mean())},
                "after": {"dsb_score": float(paired["after"].mean())},
                "paired_dsb": paired_interval(
                    paired["after"] - paired["before"], paired["cluster"], args.seed
                ),
            }
        )
    return {
        "model_version": args.model,
        "separation_version": args.separation,
        "handful": args.handful,
        "seed": args.seed,
        "outline_only": args.outline_only,
        "machine": vector_instructions(),
        "rows": rows,
    }


def settings_text(settings: dict) -> str:
    """A separation as the tables show it: ``key value`` pairs, null for none."""
    return ", ".join(f"{k} {'null' if v is None else v}" for k, v in settings.items())


def run_table(run: dict) -> str:
    """One measured run (a handful and a search) as a command line and a table."""

    def scored(values: dict, name: str) -> str:
        return cell(name, values[name]) if name in values else "-"

    lines = [
        "| calibrated on -> scored on | images (calibration / scored) | DSB before -> after "
        "| paired DSB (95 % interval) | F1 @ 0.5 | nucleus IoU | area error | calibrated "
        "separation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in run["rows"]:
        before, after = row["before"], row["after"]
        mean, low, high = row["paired_dsb"]
        separation = row.get("separation_after")
        lines.append(
            f"| {row['rows']} | {row['calibration_images']} / {row['scored_images']} "
            f"| {scored(before, 'dsb_score')} -> {scored(after, 'dsb_score')} "
            f"| {mean:+.3f} ({low:+.3f} to {high:+.3f}) | "
            + " | ".join(
                f"{scored(before, k)} -> {scored(after, k)}"
                for k in ("f1", "nucleus_iou_pooled", "area_error")
            )
            + " | "
            + (settings_text(separation) if separation else "-")
            + " |"
        )
    command = (
        f"python benchmarks/bench_calibration.py --model {run['model_version']} "
        f"--separation {run['separation_version']} --handful {run['handful']} "
        f"--seed {run['seed']}" + (" --outline-only" if run["outline_only"] else "")
    )
    what = "the outline level only" if run["outline_only"] else "the whole search"
    return f"`{command}` ({what}; machine: 2 cores, {run['machine']}):\n\n" + "\n".join(lines)


def report(runs: list[dict]) -> str:
    in_use = runs[0]["rows"][0].get("separation_before", {}) if runs[0]["rows"] else {}
    return (
        "The separation in use (evaluation's, tuned on the validation split): "
        f"{settings_text(in_use)}. Every score on images the "
        "calibration never saw; pixel scores in %, area error the mean signed (predicted - "
        "true) / true area of nuclei matched at IoU 0.5.\n\n"
        + "\n\n".join(run_table(run) for run in runs)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="trained_model version (default: the latest)")
    parser.add_argument("--separation", help="instance_postprocessing version (the latest)")
    parser.add_argument("--handful", type=int, default=3, help="own images calibrated on")
    parser.add_argument("--seed", type=int, default=42, help="which own images; bootstrap")
    parser.add_argument(
        "--outline-only", action="store_true", help="calibrate the outline level only"
    )
    parser.add_argument("--report-only", action="store_true", help="rewrite the docs section")
    args = parser.parse_args()
    runs = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    if args.report_only:
        if not runs:
            sys.exit(f"{RESULTS}: no results yet; run without --report-only first")
    else:
        if args.handful < 1:
            sys.exit(f"--handful must be at least 1, got {args.handful}")
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        run = measure(args)
        key = ("model_version", "separation_version", "handful", "seed", "outline_only")
        runs = [r for r in runs if any(r[k] != run[k] for k in key)] + [run]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(runs, indent=1, default=str))
    print(write_section("calibration", "Calibration on images it never saw", report(runs)))


if __name__ == "__main__":
    main()
