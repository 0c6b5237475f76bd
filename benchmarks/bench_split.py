"""How far the test split can be trusted: random split against the split by acquisition, and
leave-one-group-out (LOGO) for the largest acquisition groups.

    python benchmarks/bench_split.py random [--raw-data ZIP]
    python benchmarks/bench_split.py logo --groups 3 --epochs 1 [--raw-data ZIP]
    python benchmarks/bench_split.py --report-only

``random`` trains and evaluates the default recipe in ``--env random_split`` (every image its
own group, so tiles of one acquisition fall on both sides) and sets it beside the latest
evaluation of the default environment (split by acquisition, same recipe), which must have
run first (``python benchmarks/bench_evaluation.py``).

``logo`` holds out, one at a time, each of the ``--groups`` largest acquisition groups of the
default split (``--env logo --params split.hold_out=<group>``): the group is the whole test
split, the other groups are split into training and validation, the model is trained for
``--epochs`` passes and evaluated on the held-out group. Their spread shows how much accuracy
moves from one acquisition to the next.

Every score comes from ``kedro run --pipeline evaluation``: the path inference runs, each
image scored on its own pixel grid. Results are kept in ``benchmarks/results/split.json``
and written to the "split" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from _common import (
    PROJECT,
    SCORES,
    cell,
    kedro_run,
    latest_version,
    reports_folder,
    write_section,
)

RESULTS = PROJECT / "benchmarks" / "results" / "split.json"
SPLITS = PROJECT / "data/03_primary"
HINT = "run the evaluation first"


def latest_report(env: str, name: str) -> Path:
    return latest_version(reports_folder(env), name, HINT)


def evaluation_summary(env: str) -> dict:
    """The latest evaluation of ``env``: its ``all`` row, modality rows, tuned separation and
    the report version they come from."""
    modality = pd.read_csv(latest_report(env, "evaluation_per_modality.csv"))
    search = pd.read_csv(latest_report(env, "separation_search.csv"))
    return {
        "report_version": latest_report(env, "evaluation_per_modality.csv").parent.name,
        "per_modality": modality.to_dict("records"),
        "validation_dsb_score": float(search["validation_dsb_score"].iloc[0]),
    }


def split_counts(suffix: str) -> dict:
    split = pd.read_csv(latest_version(SPLITS, f"data_split{suffix}.csv", HINT))
    return {
        "images": split["split"].value_counts().to_dict(),
        "groups": int(split["group"].nunique()),
    }


def run_env(env: str, raw_data: str, extra: list[str], training: list[str]) -> float:
    """data_processing, training and evaluation in ``env``; total wall seconds."""
    params = ",".join([f"raw_data={raw_data}", *extra])
    wall = 0.0
    for pipeline, more in (("data_processing", []), ("training", training), ("evaluation", [])):
        joined = ",".join([params, *more]) if more else params
        result = kedro_run(
            pipeline,
            "--env",
            env,
            "--params",
            joined,
            log_path=PROJECT / f"benchmark_split_{env}_{pipeline}.log",
        )
        wall += result["wall"]
    return wall


def measure_random(raw_data: str) -> dict:
    grouped = {**evaluation_summary("local"), "split": split_counts("")}
    # every pass of the default recipe, however loaded the machine is: the same number of
    # passes as the grouped run it is set beside
    wall = run_env("random_split", raw_data, [], ["training.max_minutes=null"])
    random = {
        **evaluation_summary("random_split"),
        "split": split_counts("_random_split"),
        "wall_seconds": wall,
    }
    return {"grouped": grouped, "random": random}


def largest_groups(count: int) -> list[tuple[str, int]]:
    split = pd.read_csv(latest_version(SPLITS, "data_split.csv", HINT))
    sizes = split.groupby("group").size().sort_values(ascending=False, kind="stable")
    return [(str(name), int(n)) for name, n in sizes.head(count).items()]


def measure_logo(raw_data: str, groups: int, epochs: int) -> dict:
    results = {}
    for group, size in largest_groups(groups):
        wall = run_env("logo", raw_data, [f"split.hold_out={group}"], [f"training.epochs={epochs}"])
        results[group] = {
            **evaluation_summary("logo"),
            "images": size,
            "epochs": epochs,
            "wall_seconds": wall,
        }
        print(group, overall(results[group])["dsb_score"], flush=True)
    return results


def overall(summary: dict) -> dict:
    return next(r for r in summary["per_modality"] if r["modality"] == "all")


def score_cells(row: dict) -> str:
    return " | ".join(cell(k, row[k]) for k in SCORES)


def report(results: dict) -> str:
    header = " | ".join(SCORES.values())
    parts = [
        "Command: `python benchmarks/bench_split.py random` and `python benchmarks/bench_split.py "
        "logo --groups N --epochs E` (each runs `kedro run` data_processing, training and "
        "evaluation in its environment), or `--report-only`. Every score is from `kedro run "
        "--pipeline evaluation`: the path inference runs, each image scored on its own pixel "
        "grid; separation tuned on each run's own validation split. Pixel scores in %, pooled; "
        "instance scores averaged over images; area error: mean signed (predicted - true) / "
        "true area of nuclei matched at IoU 0.5.",
    ]
    if "random" in results:
        both = results["random"]
        rows = [
            f"| split | test images | groups | validation DSB (tuned) | {header} |",
            "|---|---:|---:|---:|" + "---:|" * len(SCORES),
        ]
        for key, name in (
            ("random", "random (every image its own group: near-twins on both sides)"),
            ("grouped", "by acquisition (**default**: no acquisition on both sides)"),
        ):
            run = both[key]
            rows.append(
                f"| {name} | {run['split']['images'].get('test', 0)} | {run['split']['groups']} "
                f"| {run['validation_dsb_score']:.3f} | {score_cells(overall(run))} |"
            )
        modality_rows = [
            f"| split | modality | images | {header} |",
            "|---|---|---:|" + "---:|" * len(SCORES),
        ]
        for key in ("random", "grouped"):
            for row in both[key]["per_modality"]:
                if row["modality"] != "all":
                    modality_rows.append(
                        f"| {key} | {row['modality']} | {int(row['images'])} | {score_cells(row)} |"
                    )
        parts += [
            "**Random split against the split by acquisition**, same recipe (the CPU default, "
            "same time budget), each trained, tuned and tested on its own split (report "
            f"versions: random `{both['random']['report_version']}`, grouped "
            f"`{both['grouped']['report_version']}`):",
            "\n".join(rows),
            "\n".join(modality_rows),
        ]
    if "logo" in results:
        rows = [
            f"| held-out group | images | epochs | validation DSB (tuned) | {header} |",
            "|---|---:|---:|---:|" + "---:|" * len(SCORES),
        ]
        dsb = []
        for group, run in results["logo"].items():
            row = overall(run)
            dsb.append(row["dsb_score"])
            rows.append(
                f"| `{group}` | {run['images']} | {run['epochs']} "
                f"| {run['validation_dsb_score']:.3f} | {score_cells(row)} |"
            )
        parts += [
            "**Leave one acquisition group out** (the largest groups of the default split; "
            "each held out in turn as the whole test split, the model trained on the other "
            "groups for the epochs shown):",
            "\n".join(rows),
            f"DSB score over the held-out groups: min {min(dsb):.3f}, max {max(dsb):.3f}, "
            f"spread {max(dsb) - min(dsb):.3f}.",
        ]
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocol", nargs="?", choices=("random", "logo"))
    parser.add_argument("--raw-data", default="../shared/dsb2018/stage1_train.zip")
    parser.add_argument("--groups", type=int, default=3, help="logo: the N largest groups")
    parser.add_argument("--epochs", type=int, default=1, help="logo: training passes")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not args.report_only:
        if args.protocol is None:
            parser.error("name a protocol (random | logo) or pass --report-only")
        raw = str(Path(args.raw_data).resolve())
        if args.protocol == "random":
            results["random"] = measure_random(raw)
        else:
            results["logo"] = measure_logo(raw, args.groups, args.epochs)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1, default=str))
    if not results:
        raise SystemExit(f"{RESULTS}: no results yet; run a protocol first")
    title = "How far the test split can be trusted (issue 8)"
    print(write_section("split", title, report(results)))


if __name__ == "__main__":
    main()
