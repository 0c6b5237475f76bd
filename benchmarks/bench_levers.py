"""Accuracy levers, measured one by one on the same acquisition-grouped split: the boundary
class (and where its seeds come from) against the two-class model; the stain representation,
the per-image normalisation and the stain jitter in training against the boundary-class
default.

    python benchmarks/bench_levers.py --model two_class=<version> --model boundary=<version> \
        boundary_mask_seeds hematoxylin two_class boundary
    python benchmarks/bench_levers.py --model hematoxylin=<version> hematoxylin_trained
    python benchmarks/bench_levers.py --model percentile=<version> percentile
    python benchmarks/bench_levers.py --model stain_jitter=<version> stain_jitter
    python benchmarks/bench_levers.py --model seed43=<version> seed43
    python benchmarks/bench_levers.py --model oversample=<version> oversample
    python benchmarks/bench_levers.py --model no_attention=<version> no_attention
    python benchmarks/bench_levers.py --model gap=<version> gap
    python benchmarks/bench_levers.py --model plain_unet=<version> plain_unet
    python benchmarks/bench_levers.py --model no_aspp=<version> no_aspp
    python benchmarks/bench_levers.py --model no_ce=<version> no_ce
    python benchmarks/bench_levers.py --model no_aspp_seed43=<version> no_aspp_seed43
    python benchmarks/bench_levers.py --model budget_cut_decay=<version> \
        --model budget_fitted_decay=<version> budget_cut_decay budget_fitted_decay
    python benchmarks/bench_levers.py --report-only

Each lever is one ``kedro run --pipeline evaluation`` (its environment, the model version
pinned, the lever's parameters in a ``--config`` file): the separation is tuned on
validation and the test split segmented by the inference path and scored on each image's
own grid. Runs are added to ``benchmarks/results/levers.json`` as they finish (a rerun of
one lever replaces its entry) and tabulated in the "levers" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from _common import (
    PROJECT,
    SCORES,
    cell,
    kedro_run,
    latest_version,
    parameters,
    pooled_separation,
    reports_folder,
    write_section,
)
from bench_scale_policy import interval_over_groups

RESULTS = PROJECT / "benchmarks" / "results" / "levers.json"
# The models trained before the percentile normalisation became the default (2026-12-02)
# were trained on CLAHE input, and are evaluated on it: a rerun of their levers measures
# what was measured.
CLAHE = {"equalize": {"method": "clahe"}}
MASK_SEEDS = {
    "evaluation": {"instances": {"search": {"method": ["distance", "probability"]}}},
    "preprocessing": CLAHE,
}
# name -> environment, which trained model (a --model key), parameters, the lever it is
# paired against (one change at a time), what it shows. Levers run in this order, so each
# environment's last run (its latest tuned separation, what its inference uses) is its
# default configuration's.
LEVERS = {
    "boundary_mask_seeds": {
        "env": "local",
        "model": "boundary",
        "params": MASK_SEEDS,
        "against": "two_class",
        "label": "boundary class, seeds from the nucleus mask (distance / probability relief)",
    },
    "hematoxylin": {
        "env": "local",
        "model": "boundary",
        # match_model false: a deliberate test-time change (the model records its training
        # preprocessing since; this one, older, has no record).
        "params": {
            "preprocessing": {
                **CLAHE,
                "stain": {"representation": "hematoxylin"},
                "match_model": False,
            }
        },
        "against": "boundary",
        "label": "boundary class, stained images as hematoxylin density at test time only",
    },
    "two_class": {
        "env": "two_class",
        "model": "two_class",
        "params": {"preprocessing": CLAHE},
        "against": None,
        "label": "two-class attention U-Net (background / nucleus)",
    },
    "boundary": {
        "env": "local",
        "model": "boundary",
        "params": {"preprocessing": CLAHE},
        "against": "two_class",
        "label": "boundary class, separation tuned over every relief (interior seeds included)",
    },
    # Each trained in its own environment (own data, model and separation), the default's
    # recipe otherwise (3 passes, seed 42). The percentile model is the default since.
    "hematoxylin_trained": {
        "env": "hematoxylin",
        "model": "hematoxylin",
        "params": {"preprocessing": CLAHE},
        "against": "boundary",
        "label": "boundary class, stained images as hematoxylin density in training and test",
    },
    "percentile": {
        "env": "percentile",
        "model": "percentile",
        "params": {},
        "against": "boundary",
        "label": "boundary class, per-image percentile normalisation (1 / 99.8) for CLAHE",
    },
    "stain_jitter": {
        "env": "stain_jitter",
        "model": "stain_jitter",
        "params": {"preprocessing": CLAHE},
        "against": "boundary",
        "label": "boundary class, HED stain jitter of stained training images (CLAHE)",
    },
    # The default's recipe again with training and augmentation seeds 43: how far a rerun
    # moves every score (the yardstick for the differences above).
    "seed43": {
        "env": "seed43",
        "model": "seed43",
        "params": {},
        "against": "percentile",
        "label": "the default recipe again, training and augmentation seeds 43 for 42",
    },
    "oversample": {
        "env": "oversample",
        "model": "oversample",
        "params": {},
        "against": "percentile",
        "label": "rare modalities oversampled (stained x16, brightfield x24 copies), same steps",
    },
    # The paper's claim: the default without its attention (no SAP, no channel expansion).
    "no_attention": {
        "env": "no_attention",
        "model": "no_attention",
        "params": {},
        "against": "percentile",
        "label": "no attention (neither SAP nor channel expansion), ASPP kept",
    },
    # The paper's SAP against plain global average pooling, channel expansion kept.
    "gap": {
        "env": "gap",
        "model": "gap",
        "params": {},
        "against": "percentile",
        "label": "GAP attention for SAP (channel expansion and ASPP kept)",
    },
    # Each of the paper's other two components removed alone: ASPP, then channel expansion.
    "no_aspp": {
        "env": "no_aspp",
        "model": "no_aspp",
        "params": {},
        "against": "percentile",
        "label": "no ASPP (SAP attention and channel expansion kept)",
    },
    # ASPP's second seed: no ASPP with seeds 43, against the default's recipe with seeds 43.
    "no_aspp_seed43": {
        "env": "no_aspp_seed43",
        "model": "no_aspp_seed43",
        "params": {},
        "against": "seed43",
        "label": "no ASPP (SAP attention and channel expansion kept), seeds 43",
    },
    # The learning-rate decay under a time budget that fits one pass (AVX2 host): the decay
    # planned over 3 passes and cut after the first (budget-off checkpoint after pass 1), against
    # the decay fitted to the one pass (training.fit_schedule_to_budget). Same env, seeds, steps.
    "budget_cut_decay": {
        "env": "no_aspp_seed43",
        "model": "budget_cut_decay",
        "params": {},
        "against": None,  # the reference of the pair: its difference is the fitted decay's row
        "label": "one pass, rate decay planned over 3 passes and cut after the first",
    },
    "budget_fitted_decay": {
        "env": "no_aspp_seed43",
        "model": "budget_fitted_decay",
        "params": {},
        "against": "budget_cut_decay",
        "label": "one pass, rate decay fitted to the pass (0.001 -> 0)",
    },
    "no_ce": {
        "env": "no_ce",
        "model": "no_ce",
        "params": {},
        "against": "percentile",
        "label": "no channel expansion (SAP attention and ASPP kept)",
    },
    # And the plain U-Net (`--env baseline`: no attention, no CE, no ASPP) on the same data.
    "plain_unet": {
        "env": "baseline",
        "model": "plain_unet",
        "params": {},
        "against": "percentile",
        "label": "plain U-Net (no attention, CE or ASPP)",
    },
}
# Shown in this order (the reference first).
SHOWN = (
    "two_class",
    "boundary_mask_seeds",
    "boundary",
    "hematoxylin",
    "hematoxylin_trained",
    "percentile",
    "stain_jitter",
    "seed43",
    "oversample",
    "no_attention",
    "gap",
    "no_ce",
    "no_aspp",
    "no_aspp_seed43",
    "plain_unet",
    "budget_cut_decay",
    "budget_fitted_decay",
)
COUNTS = {"split": "split", "merged": "merged"}
# The paper's claim at the CPU budget: the default's recipe (and its rerun with seeds 43) against
# its attention changed or removed, same data, passes and scale policy.
ABLATION = (
    "percentile",
    "seed43",
    "gap",
    "no_ce",
    "no_attention",
    "no_aspp",
    "no_aspp_seed43",
    "plain_unet",
)
PRECISION = "mixed_bfloat16"


def measure(name: str, version: str) -> dict:
    lever = LEVERS[name]
    env = lever["env"]
    params = {**lever["params"], "evaluation": {**lever["params"].get("evaluation", {})}}
    # Only the model's own test scores: no TTA variants, no baseline rows.
    params["evaluation"].update(tta_compare=None, compare_with_baseline=False)
    # Every lever segments in bfloat16: what `auto` picked on the AMX host where the first
    # ones ran, pinned so a run on a CPU without AMX (auto: float32) measures the same thing.
    params["segmentation"] = {"precision": PRECISION, **lever["params"].get("segmentation", {})}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as config:
        yaml.safe_dump({"run": {"params": params}}, config)
    try:
        result = kedro_run(
            "evaluation",
            "--env",
            env,
            "--load-versions",
            f"trained_model:{version}",
            "--config",
            config.name,
            log_path=PROJECT / f"benchmark_levers_{name}.log",
        )
    finally:
        Path(config.name).unlink()

    def latest(report: str) -> pd.DataFrame:  # this run's: the newest version
        hint = "run `kedro run --pipeline evaluation` first"
        return pd.read_csv(latest_version(reports_folder(env), report, hint))

    search = latest("separation_search.csv")
    images = latest("evaluation_per_image.csv")
    score, separation = pooled_separation(search)
    return {
        "env": env,
        "model_version": version,
        "params": lever["params"],
        "validation_dsb_score": score,
        "separation": separation,
        "per_modality": latest("evaluation_per_modality.csv").to_dict("records"),
        "per_image": images[["image_id", "acquisition", "modality", "dsb_score"]].to_dict(
            "records"
        ),
        "wall_seconds": result["wall"],
    }


def _modality(run: dict, modality: str) -> dict:
    return next((r for r in run["per_modality"] if r["modality"] == modality), {})


def _paired(results: dict, name: str, against: str) -> dict:
    """Per-image DSB of ``name`` minus ``against``, bootstrapped over acquisition groups."""
    base = pd.DataFrame(results[against]["per_image"]).set_index("image_id")
    own = pd.DataFrame(results[name]["per_image"]).set_index("image_id")
    if set(own.index) != set(base.index):
        raise SystemExit(f"{name} and {against} scored different test images")
    difference = own["dsb_score"] - base["dsb_score"].reindex(own.index)
    return interval_over_groups(difference, own["acquisition"])


def ablation(results: dict) -> str:
    """The attention / CE / ASPP table of the levers in ABLATION that have run (the
    components read from each environment's parameters), paired against the first."""
    shown = [name for name in ABLATION if name in results]
    if len(shown) < 2:
        return ""
    reference = shown[0]
    rows = [
        "| attention | CE | ASPP | seed | validation DSB (tuned) | MIoU | nucleus IoU | DSB "
        "| DSB minus the first row (paired, 95 % interval) | F1 @ 0.5 | stained DSB / nucleus "
        "IoU | fluorescence DSB |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|---|---:|",
    ]
    for name in shown:
        run, training = results[name], parameters(LEVERS[name]["env"])["training"]
        model, overall = training["model"], _modality(run, "all")
        stained, fluorescence = _modality(run, "stained"), _modality(run, "fluorescence")
        if name == reference:
            paired = "-"
        else:
            p = _paired(results, name, reference)
            paired = f"{p['mean']:+.3f} ({p['low']:+.3f} to {p['high']:+.3f})"
        rows.append(
            f"| {model['attention']} | {'yes' if model['channel_expansion'] else 'no'} | "
            f"{'yes' if model['aspp'] else 'no'} | {training['seed']} | "
            f"{run['validation_dsb_score']:.3f} | {cell('miou_pooled', overall['miou_pooled'])} "
            f"| {cell('nucleus_iou_pooled', overall['nucleus_iou_pooled'])} | "
            f"{overall['dsb_score']:.3f} | {paired} | {overall['f1']:.3f} | "
            f"{stained['dsb_score']:.3f} / {100 * stained['nucleus_iou_pooled']:.1f} | "
            f"{fluorescence['dsb_score']:.3f} |"
        )
    return (
        "**Ablation of the paper's modules** (the rows above, same data, 3 passes, native "
        "scale, boundary class; components as each environment's parameters set them):\n\n"
        + "\n".join(rows)
    )


def report(results: dict) -> str:
    rows = [
        "| lever | validation DSB (tuned) | "
        + " | ".join(SCORES.values())
        + " | split | merged | separation |",
        "|---|---:|" + "---:|" * (len(SCORES) + 2) + "---|",
    ]
    for name, run in results.items():
        overall = _modality(run, "all")
        separation = ", ".join(f"{k} {v}" for k, v in run["separation"].items())
        rows.append(
            f"| {LEVERS[name]['label']} | {run['validation_dsb_score']:.3f} | "
            + " | ".join(cell(k, overall[k]) for k in SCORES)
            + f" | {overall.get('split', '-')} | {overall.get('merged', '-')} | {separation} |"
        )
    modalities = sorted({r["modality"] for run in results.values() for r in run["per_modality"]})
    modalities = [m for m in modalities if m != "all"]
    by_modality = [
        "| lever | " + " | ".join(f"{m}: DSB / nucleus IoU" for m in modalities) + " |",
        "|---|" + "---:|" * len(modalities),
    ]
    for name, run in results.items():
        cells = []
        for modality in modalities:
            row = _modality(run, modality)
            cells.append(
                f"{row['dsb_score']:.3f} / {100 * row['nucleus_iou_pooled']:.1f} "
                f"({row['images']} images)"
                if row
                else "-"
            )
        by_modality.append(f"| {LEVERS[name]['label']} | " + " | ".join(cells) + " |")
    lines = []
    for name in results:
        against = LEVERS[name]["against"]
        if against not in results:
            continue
        paired = _paired(results, name, against)
        lines.append(
            f"- {LEVERS[name]['label']} minus {LEVERS[against]['label']}, paired over the "
            f"same {paired['images']} test images: DSB {paired['mean']:+.3f} (95 % interval "
            f"{paired['low']:+.3f} to {paired['high']:+.3f}, bootstrap over "
            f"{paired['groups']} acquisition groups)."
        )
    table = ablation(results)
    versions = ", ".join(
        sorted({f"`{r['env']}` model {r['model_version']}" for r in results.values()})
    )
    keys = ", ".join(dict.fromkeys(lever["model"] for lever in LEVERS.values()))
    return "\n\n".join(
        [
            "Command: `python benchmarks/bench_levers.py --model <key>=<version> <levers>` "
            f"(keys {keys}: the trained "
            "models the levers need; one `kedro run --pipeline evaluation` per lever in its "
            "environment, model pinned, the lever's parameters in a `--config` file), or "
            "`--report-only`. "
            f"Models: {versions}. Test split grouped by acquisition (96 images, never trained "
            "or tuned on), each image segmented by the inference path and scored on its own "
            f"grid; separation tuned on validation per lever; network in {PRECISION} "
            "(pinned, whatever the CPU). Pixel scores in %, pooled; instance scores averaged "
            "over images; "
            "split: true nuclei cut into two or more predicted ones; merged: predicted nuclei "
            "covering two or more true ones (each > half its area inside), summed over the "
            "test images.",
            "\n".join(rows),
            "Per modality:",
            "\n".join(by_modality),
            *(["\n".join(lines)] if lines else []),
            *([table] if table else []),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("levers", nargs="*", help=f"levers to run: {', '.join(LEVERS)}")
    parser.add_argument(
        "--model", action="append", default=[], help="KEY=VERSION of a trained model"
    )
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not args.report_only:
        models = dict(item.split("=", 1) for item in args.model)
        unknown = sorted(set(args.levers) - set(LEVERS))
        if unknown or not args.levers:
            parser.error(f"name levers to run from {list(LEVERS)} (unknown: {unknown})")
        for name in (k for k in LEVERS if k in args.levers):
            key = LEVERS[name]["model"]
            if key not in models:
                parser.error(f"lever {name} needs --model {key}=<version>")
            results[name] = measure(name, models[key])
            ordered = {k: results[k] for k in SHOWN if k in results}
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(ordered, indent=1, default=str))
    results = {k: results[k] for k in SHOWN if k in results}
    print(write_section("levers", "Accuracy levers, one by one", report(results)))


if __name__ == "__main__":
    main()
