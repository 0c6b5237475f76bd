"""Calibration measured on images it was not tuned on: what `kedro run --pipeline calibration`
gives a lab on its next images, not on the ones it calibrated with.

    python benchmarks/bench_calibration.py --model <trained_model version> \
        --separation <instance_postprocessing version> [--data <data_split version>] \
        [--handful 3] [--seed 42] [--outline-only]
    python benchmarks/bench_calibration.py --report-only

Each version defaults to the latest; pin them to a full-data model, the separation its
evaluation tuned and the full data's split (a later sample run writes newer ones); the table
names the versions measured. On the acquisition-grouped split of
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
import functools
import json
import logging
import sys
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from _common import (
    PROJECT,
    catalog_filepath,
    cell,
    parameters,
    vector_instructions,
    write_section,
)
from bench_scale_policy import interval_over_groups

RESULTS = PROJECT / "benchmarks" / "results" / "calibration.json"
SCORED = ("dsb_score", "f1", "nucleus_iou_pooled", "area_error")
RESAMPLES = 2000


def paired_interval(differences: pd.Series, clusters: pd.Series, seed: int) -> list[float]:
    """Mean of ``differences`` and its 95 % bootstrap interval, resampling whole clusters
    (images of one group count together when the clusters are groups); images without a
    score (NaN) are left out."""
    scored = differences.dropna()
    interval = interval_over_groups(scored, clusters, resamples=RESAMPLES, seed=seed)
    return [interval["mean"], interval["low"], interval["high"]]


def own_images(ids: list[str], group: str, handful: int, seed: int) -> list[str]:
    """The ``handful`` images of one acquisition group a lab labels, drawn from the sorted ids
    with a generator of (seed, group): the same whatever the split file's row order."""
    rng = np.random.default_rng([seed, zlib.crc32(group.encode())])
    return sorted(rng.choice(sorted(ids), size=handful, replace=False).tolist())


def settings_of(plan: Mapping[str, Any], ingested: Mapping[str, np.ndarray], key: str) -> dict:
    """The settings a separation plan gives the ingested image ``key`` (its modality's)."""
    from nucleus_segmentation import bundle
    from nucleus_segmentation.segment import image_separation

    return image_separation(plan, bundle.field(ingested, key, "image"))


def shown_settings(plan: Mapping[str, Any], ingested: Mapping[str, np.ndarray], ids) -> dict:
    """The settings most of the images ``ids`` get from a plan: what a table row shows."""
    chosen = [settings_of(plan, ingested, k) for k in ids]
    return max(chosen, key=chosen.count)


def scores(
    probabilities: Mapping[str, np.ndarray],
    ingested: Mapping[str, np.ndarray],
    separation: Mapping[str, Any],
    groups: Mapping[str, str],
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-image scores and pooled summary of ``probabilities`` separated by ``separation``
    (a plan: each image by the settings of its modality where it has them, as inference)."""
    from nucleus_segmentation import bundle
    from nucleus_segmentation.imaging.instances import separate_instances
    from nucleus_segmentation.scoring import score_images

    truths = {k: bundle.field(ingested, k, "labels") for k in probabilities}
    predictions = {
        k: separate_instances(p, **settings_of(separation, ingested, k))
        for k, p in probabilities.items()
    }
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
    """Calibrate on the images ``calibrated``, score ``scored`` before and after: the table
    row, its DSB interval resampling ``clusters`` (image id -> what is resampled whole), and
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
        "paired_dsb": paired_interval(paired["after"] - paired["before"], paired["cluster"], seed),
        "clusters": int(paired["cluster"].nunique()),
        "interval_over": "images" if paired["cluster"].is_unique else "acquisition groups",
        "separation_before": shown_settings(before, ingested, scored),
        "separation_after": shown_settings(after, ingested, scored),
    }
    return row, paired


def measure(args: argparse.Namespace) -> dict:
    from kedro.io.core import Version
    from kedro_datasets.json import JSONDataset
    from kedro_datasets.pandas import CSVDataset

    from nucleus_segmentation.datasets import KerasModelDataset, NpzDataset
    from nucleus_segmentation.segment import SegmentationSettings, segmentation_probabilities

    params = parameters("base")
    datasets = {
        "model": KerasModelDataset(
            filepath=str(catalog_filepath("base", "trained_model")),
            version=Version(args.model, None),
        ),
        "separation": JSONDataset(
            filepath=str(catalog_filepath("base", "instance_postprocessing")),
            version=Version(args.separation, None),
        ),
        "data": CSVDataset(
            filepath=str(catalog_filepath("base", "data_split")), version=Version(args.data, None)
        ),
    }
    # The versions measured, resolved (the latest unless pinned), so the command printed
    # with the table measures the same again.
    versions = {name: dataset.resolve_load_version() for name, dataset in datasets.items()}
    ingested_file = catalog_filepath("base", "ingested_images")
    ingested = NpzDataset(filepath=str(ingested_file), version=Version(versions["data"], None))
    if not ingested.exists():
        sys.exit(f"{ingested_file}: no version {versions['data']} (the data_split measured)")
    model, in_use, split = (datasets[name].load() for name in ("model", "separation", "data"))
    ingested = ingested.load()
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
    calibrate = functools.partial(
        calibrated_row,
        probabilities=probabilities,
        ingested=ingested,
        in_use=in_use,
        params=evaluation,
        calibration=calibration,
        seed=args.seed,
    )
    # 1. A modality's validation images -> its test images (clusters: acquisition groups).
    for modality, images in test.groupby("modality"):
        own = validation.loc[validation["modality"] == modality, "image_id"].tolist()
        if not own:
            logging.info("%s: no validation image to calibrate on, skipped", modality)
            continue
        groups = images.set_index("image_id")["group"].to_dict()
        row, _ = calibrate(
            f"{modality}: validation -> test", own, images["image_id"].tolist(), groups
        )
        rows.append(row)
    # 2. A lab's own images: a handful of one acquisition group -> its other images.
    pooled = []
    for group, images in test.groupby("group"):
        if len(images) < args.handful + 3:
            continue
        ids = images["image_id"].tolist()
        chosen = set(own_images(ids, group, args.handful, args.seed))
        scored = [i for i in ids if i not in chosen]
        row, paired = calibrate(
            f"{group}: {args.handful} of its images -> the other {len(scored)}",
            sorted(chosen),
            scored,
            {i: i for i in scored},  # within one group, the interval resamples images
        )
        rows.append(row)
        pooled.append(paired.assign(cluster=group))
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
                "clusters": len(pooled),
                "interval_over": "acquisition groups",
            }
        )
    return {
        "model_version": versions["model"],
        "separation_version": versions["separation"],
        "data_version": versions["data"],
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
            f"| {mean:+.3f} ({low:+.3f} to {high:+.3f}; {row['clusters']} "
            f"{row['interval_over']}) | "
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
        f"--separation {run['separation_version']} --data {run['data_version']} "
        f"--handful {run['handful']} "
        f"--seed {run['seed']}" + (" --outline-only" if run["outline_only"] else "")
    )
    what = "the outline level only" if run["outline_only"] else "the whole search"
    rows = [row for row in run["rows"] if "separation_before" in row]  # not the pooled row
    before = [row["separation_before"] for row in rows]
    if all(settings == before[0] for settings in before):
        in_use = f"tuned on the validation split: {settings_text(before[0] if before else {})}"
    else:  # a separation tuned per modality: each row starts from its images' settings
        rows_of: dict[str, list[str]] = {}
        for settings, row in zip(before, rows, strict=True):
            rows_of.setdefault(settings_text(settings), []).append(row["rows"].split(":")[0])
        in_use = "tuned on the validation split per modality; each row starts from its " + (
            "images' settings: " + "; ".join(f"{k} ({', '.join(v)})" for k, v in rows_of.items())
        )
    return (
        f"`{command}` ({what}; machine: 2 cores, {run['machine']}; the separation in use, "
        f"evaluation's, {in_use}):\n\n" + "\n".join(lines)
    )


def report(runs: list[dict]) -> str:
    return (
        "Every score on images the calibration never saw; pixel scores in %, area error the "
        "mean signed (predicted - true) / true area of nuclei matched at IoU 0.5; the paired "
        "interval resamples what it names (bootstrap, 2,000 draws).\n\n"
        + "\n\n".join(run_table(run) for run in runs)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="trained_model version (default: the latest)")
    parser.add_argument("--separation", help="instance_postprocessing version (the latest)")
    parser.add_argument("--data", help="data_split / ingested_images version (the latest)")
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
        key = ("model_version", "separation_version", "data_version", "handful", "seed")
        key += ("outline_only",)
        runs = [r for r in runs if any(r[k] != run[k] for k in key)] + [run]
        runs.sort(key=lambda r: (r["handful"], r["outline_only"]))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(runs, indent=1, default=str))
    print(write_section("calibration", "Calibration on images it never saw", report(runs)))


if __name__ == "__main__":
    main()
