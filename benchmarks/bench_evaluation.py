"""Full-data evaluation: the Table-2 comparison, test-time variants, per-modality scores.

    python benchmarks/bench_evaluation.py                 # runs `kedro run --pipeline evaluation`
    python benchmarks/bench_evaluation.py --report-only   # tabulate the latest reports only
    python benchmarks/bench_evaluation.py --env percentile \
        --load-versions trained_model:<version>,baseline_model:<version>

Expects the full-data `data_processing`, `training` and (for the baseline row)
`training --env baseline` runs to have finished. ``--env`` evaluates another environment's
model (the default's recipe under its own file names, say) and reads that environment's
reports folder; ``--load-versions`` pins the models (a later sample run makes a newer
"latest"). Writes the "evaluation" section of docs/benchmarks.md from the latest versioned
reports.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd
from _common import (
    PROJECT,
    kedro_run,
    latest_version,
    pooled_search,
    reports_folder,
    write_section,
)


def table(frame: pd.DataFrame, columns: dict[str, str], percent: set[str]) -> str:
    """A markdown table of ``columns`` (name -> header); ``percent`` columns shown x100."""
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for row in frame.itertuples(index=False):
        cells = []
        for name in columns:
            value = getattr(row, name)
            if isinstance(value, float) and value != value:  # NaN: not set (e.g. outline)
                cells.append("-")
            elif name in percent:
                cells.append(f"{100 * value:.2f}")
            elif isinstance(value, float):
                cells.append(f"{value:.4f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def node_times(log: str) -> dict[str, float]:
    """``Node '<name>' took X s`` lines, also when the console wrapped them."""
    flat = re.sub(r"\s+", " ", re.sub(r"\S+\.py:\d+", " ", log))
    return {m[0]: float(m[1]) for m in re.findall(r"Node '(\w+)' took ([\d.]+) s", flat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--env", default="local", help="the Kedro environment to evaluate")
    parser.add_argument(
        "--load-versions", help="pinned models, as kedro run takes them (dataset:version,...)"
    )
    parser.add_argument("--wall", type=float, help="--report-only: measured wall seconds")
    parser.add_argument("--peak-gib", type=float, help="--report-only: measured peak GiB")
    args = parser.parse_args()
    reports = reports_folder(args.env)

    def latest(name: str) -> Path:
        """The newest version of a versioned report file."""
        return latest_version(reports, name, "run `kedro run --pipeline evaluation` first")

    log_path = PROJECT / "benchmark_evaluation.log"
    if args.report_only:
        # Node times from the last measured run's log, wall time and peak from the command line
        # (what that run printed), so a report can be rewritten without rerunning.
        log = log_path.read_text() if log_path.exists() else ""
        wall, peak = args.wall, args.peak_gib
    else:
        pinned = ["--load-versions", args.load_versions] if args.load_versions else []
        result = kedro_run("evaluation", "--env", args.env, *pinned, log_path=log_path)
        log, wall, peak = result["log"], result["wall"], result["peak"] / 2**30
    times = node_times(log)
    timing = "\n".join(
        [
            "| node | seconds |",
            "|---|---|",
            *[f"| `{name}` | {seconds:.1f} |" for name, seconds in times.items()],
            *([f"| whole `kedro run` (wall) | {wall:.1f} |"] if wall else []),
            "",
            *([f"Peak memory (process tree): {peak:.2f} GiB."] if peak else []),
        ]
    )
    comparison = pd.read_csv(latest("method_comparison.csv"))
    tta = pd.read_csv(latest("tta_comparison.csv"))
    modality = pd.read_csv(latest("evaluation_per_modality.csv"))
    acquisition = pd.read_csv(latest("evaluation_per_acquisition.csv"))
    groups = acquisition[acquisition["acquisition"] != "all"]
    search = pooled_search(pd.read_csv(latest("separation_search.csv")))
    scores = {
        "pa_pooled": "PA",
        "mpa_pooled": "MPA",
        "miou_pooled": "MIoU",
        "nucleus_iou_pooled": "nucleus IoU",
        "miou_per_image": "MIoU per image",
        "dsb_score": "DSB score",
        "f1": "F1 @ 0.5",
        "area_error": "area error",
    }
    percent = {
        "pa_pooled",
        "mpa_pooled",
        "miou_pooled",
        "nucleus_iou_pooled",
        "miou_per_image",
        "area_error",
    }
    options = f" --env {args.env}" if args.env != "local" else ""
    if args.load_versions:
        options += f" --load-versions {args.load_versions}"
    body = "\n\n".join(
        [
            f"Command: `python benchmarks/bench_evaluation.py{options}` (runs `kedro run "
            "--pipeline evaluation` with the same options; without them, on the default's "
            "latest full-data models), or `--report-only`. "
            "Held-out test split of "
            f"stage1_train ({int(comparison['images'].iloc[0])} images, grouped by acquisition: "
            "no acquisition on both sides; never trained or tuned on), every image segmented "
            "by the path inference runs and scored on its own pixel grid against its own "
            "labels; pixel scores in %, pooled over the test pixels unless marked per image; "
            "area error: mean signed (predicted - true) / true area of nuclei matched at IoU "
            "0.5, in %.",
            "**Comparison (paper Table 2 layout).** Paper, its own split: Otsu 79.24 / 81.15 / "
            "70.64, ref. [14] 82.54 / 84.17 / 75.69, U-Net 87.03 / 88.34 / 81.47, ours 89.97 / "
            "91.35 / 85.02 (PA / MPA / MIoU).",
            table(comparison, {"description": "method", **scores}, percent),
            "**Test-time augmentation** (the attention U-Net; `in_use`, the settings inference "
            "runs, feeds the table above):",
            table(
                tta, {"variant": "variant", "scales": "scales", "flips": "flips", **scores}, percent
            ),
            "**Per modality** (attention U-Net, variant in use):",
            table(
                modality,
                {"modality": "modality", "images": "images", **scores},
                percent,
            ),
            f"**Per acquisition group** of the test split ({len(groups)} groups; DSB score "
            f"from {groups['dsb_score'].min():.3f} to {groups['dsb_score'].max():.3f}, "
            f"nucleus IoU from {100 * groups['nucleus_iou_pooled'].min():.1f} to "
            f"{100 * groups['nucleus_iou_pooled'].max():.1f} %):",
            table(
                acquisition,
                {"acquisition": "acquisition group", "images": "images", **scores},
                percent,
            ),
            "**Nucleus separation tuned on validation** (best 5 of "
            f"{len(search)} settings, mean validation DSB score):",
            table(
                search.head(5),
                {
                    "threshold": "threshold",
                    "method": "relief",
                    "seed_depth": "seed depth",
                    "smoothing": "smoothing",
                    "min_size": "min size",
                    **({"outline": "outline"} if "outline" in search else {}),
                    "validation_dsb_score": "validation DSB score",
                },
                set(),
            ),
            *([f"**Run time** of the evaluation pipeline:\n\n{timing}"] if times else []),
        ]
    )
    print(write_section("evaluation", "Full-data evaluation (test split)", body))


if __name__ == "__main__":
    main()
