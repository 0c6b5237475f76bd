"""Scale policy, measured: the same evaluation path for models trained under each policy.

    python benchmarks/bench_scale_policy.py --native-model <version> --fixed-model <version>
    python benchmarks/bench_scale_policy.py --report-only

Each configuration runs ``kedro run --pipeline evaluation`` with the model version pinned
(``--load-versions trained_model:<version>``) and the scale policy set by ``--params``, so the
separation is tuned on validation at the scale where it is applied and the test split is scored
on each image's own grid, exactly as inference segments it. The default configuration runs
last, so the latest tuned separation (what inference uses) is the default's again.

Models: ``--native-model`` trained under the default (``segmentation.scale.mode=native``,
absolute-zoom crops); ``--fixed-model`` trained under the previous recipe, every image resized
to 512x512 (``--env fixed512``: its own data, model file and reports):

    kedro run --pipeline data_processing --params raw_data=../shared/dsb2018/stage1_train.zip
    kedro run --pipeline training
    kedro run --env fixed512 --pipeline data_processing \
        --params raw_data=../shared/dsb2018/stage1_train.zip
    kedro run --env fixed512 --pipeline training --params training.epochs=<as the default's>

Results are kept in ``benchmarks/results/scale_policy.json`` and written to the
"scale_policy" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
from _common import (
    PROJECT,
    SCORES,
    cell,
    kedro_run,
    latest_version,
    pooled_separation,
    reports_folder,
    write_section,
)

ENVS = {"native": "local", "fixed": "fixed512"}  # the environment each model was trained in
RESULTS = PROJECT / "benchmarks" / "results" / "scale_policy.json"
# (key, model flag, scale mode, description), the default last.
CONFIGS = (
    (
        "fixed_model_native_path",
        "fixed",
        "native",
        "512-trained model, native prediction (what inference did before: trained 512, run native)",
    ),
    (
        "fixed_model_fixed_path",
        "fixed",
        "fixed",
        "512-trained model, every image resized to 512x512 and back (the paper's rule, consistent)",
    ),
    (
        "native_model_native_path",
        "native",
        "native",
        "native-trained model, native prediction (**default**)",
    ),
)


def latest(env: str, name: str):
    return latest_version(reports_folder(env), name, "run `kedro run --pipeline evaluation` first")


def measure(env: str, model_version: str, mode: str) -> dict:
    """One evaluation run; its per-modality table, validation DSB and wall time."""
    result = kedro_run(
        "evaluation",
        "--env",
        env,
        "--load-versions",
        f"trained_model:{model_version}",
        "--params",
        f"segmentation.scale.mode={mode},evaluation.tta_compare=null",
        log_path=PROJECT / "benchmark_scale_policy.log",
    )
    modality = pd.read_csv(latest(env, "evaluation_per_modality.csv"))
    images = pd.read_csv(latest(env, "evaluation_per_image.csv"))
    search = pd.read_csv(latest(env, "separation_search.csv"))
    score, separation = pooled_separation(search)
    return {
        "env": env,
        "model_version": model_version,
        "scale_mode": mode,
        "validation_dsb_score": score,
        "separation": separation,
        "per_modality": modality.to_dict("records"),
        "per_image": images[["image_id", "acquisition", "dsb_score"]].to_dict("records"),
        "wall_seconds": result["wall"],
    }


def interval_over_groups(
    values: pd.Series, groups: pd.Series, resamples: int = 10_000, seed: int = 0
) -> dict:
    """Mean of per-image ``values`` with a 95 % interval from a bootstrap over ``groups``
    (whole acquisition groups resampled: images of one acquisition are not independent)."""
    by_group = [v.to_numpy() for _, v in values.groupby(groups.loc[values.index])]
    rng = np.random.default_rng(seed)
    means = [
        np.concatenate([by_group[i] for i in rng.integers(0, len(by_group), len(by_group))]).mean()
        for _ in range(resamples)
    ]
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "mean": float(values.mean()),
        "low": float(low),
        "high": float(high),
        "images": int(values.size),
        "groups": len(by_group),
        "resamples": resamples,
    }


def per_image(results: dict, key: str) -> pd.DataFrame | None:
    """The run's per-image DSB scores and acquisition groups, by image id (None: not kept)."""
    rows = results.get(key, {}).get("per_image")
    return pd.DataFrame(rows).set_index("image_id") if rows else None


def report(results: dict) -> str:
    overall = [
        "| configuration | validation DSB (tuned) | " + " | ".join(SCORES.values()) + " |",
        "|---|---:|" + "---:|" * len(SCORES),
    ]
    modality_rows = ["| configuration | modality | images | " + " | ".join(SCORES.values()) + " |"]
    modality_rows.append("|---|---|---:|" + "---:|" * len(SCORES))
    for key, _, _, description in CONFIGS:
        if key not in results:
            continue
        run = results[key]
        rows = {r["modality"]: r for r in run["per_modality"]}
        all_row = rows["all"]
        overall.append(
            f"| {description} | {run['validation_dsb_score']:.3f} | "
            + " | ".join(cell(k, all_row[k]) for k in SCORES)
            + " |"
        )
        for name, row in rows.items():
            if name == "all":
                continue
            modality_rows.append(
                f"| {key} | {name} | {int(row['images'])} | "
                + " | ".join(cell(k, row[k]) for k in SCORES)
                + " |"
            )
    versions = ", ".join(
        f"`{k}`: `--env {v['env']}`, model `{v['model_version']}`, scale `{v['scale_mode']}`"
        for k, v in results.items()
    )
    return "\n\n".join(
        [
            "Command: `python benchmarks/bench_scale_policy.py --native-model <version> "
            "--fixed-model <version>` (one `kedro run --pipeline evaluation` per row, model "
            "pinned, scale policy by `--params`), or `--report-only`. Runs: " + versions + ".",
            "Test split grouped by acquisition (no acquisition on both sides), every image "
            "scored on its own pixel grid against its own labels on the label maps inference "
            "writes; separation tuned on validation at the scale where it is applied (the "
            "validation DSB column is what chose the policy). Pixel scores in %, pooled; "
            "instance scores averaged over images; area error: mean signed (predicted - true) "
            "/ true area of nuclei matched at IoU 0.5.",
            "\n".join(overall),
            *paired_lines(results),
            "**Per modality:**",
            "\n".join(modality_rows),
        ]
    )


def paired_lines(results: dict) -> list[str]:
    """The default's test DSB with its interval, and each other configuration minus the
    default, paired over the same test images."""
    default = per_image(results, CONFIGS[-1][0])
    if default is None:
        return []
    own = interval_over_groups(default["dsb_score"], default["acquisition"])
    lines = [
        f"- the default's test DSB score: {own['mean']:.3f} (95 % interval "
        f"{own['low']:.3f} to {own['high']:.3f}, bootstrap over its "
        f"{own['groups']} acquisition groups): how much the figure could move with "
        "another draw of acquisitions"
    ]
    for key, _, _, description in CONFIGS[:-1]:
        other = per_image(results, key)
        if other is None:
            continue
        difference = (other["dsb_score"] - default["dsb_score"].reindex(other.index)).dropna()
        paired = interval_over_groups(difference, other["acquisition"])
        lines.append(
            f"- {description.split(' (')[0]} minus the default, paired over the same "
            f"{paired['images']} test images: DSB score {paired['mean']:+.3f} (95 % interval "
            f"{paired['low']:+.3f} to {paired['high']:+.3f}, bootstrap over the "
            f"{paired['groups']} acquisition groups, {paired['resamples']:,} resamples)"
        )
    return ["\n".join(lines)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--native-model", help="trained_model version under the native policy")
    parser.add_argument("--fixed-model", help="trained_model version under the fixed 512 policy")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads(RESULTS.read_text())
    else:
        models = {"native": args.native_model, "fixed": args.fixed_model}
        results = {}
        for key, model, mode, _ in CONFIGS:
            if models[model]:
                results[key] = measure(ENVS[model], models[model], mode)
                print(key, results[key]["validation_dsb_score"], flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1, default=str))
    print(write_section("scale_policy", "Scale policy (issue 8)", report(results)))


if __name__ == "__main__":
    main()
