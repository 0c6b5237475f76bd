"""Two evaluation runs on the same test split, paired image by image: the difference of each
per-image score, with a 95 % interval from a bootstrap over acquisition groups.

    python benchmarks/compare_evaluations.py 2026-12-04T11.00.08.652Z 2026-12-04T14.57.43.512Z

The versions are those of `kedro run --pipeline evaluation` (its
``data/08_reporting/evaluation_per_image.csv/<version>``); the second is compared against the
first. Prints a table; writes nothing.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
from _common import PROJECT
from bench_scale_policy import interval_over_groups

SCORES = ("dsb_score", "miou", "nucleus_iou", "f1")


def per_image(version: str) -> pd.DataFrame:
    path = PROJECT / "data/08_reporting/evaluation_per_image.csv" / version
    path = path / "evaluation_per_image.csv"
    if not path.exists():
        sys.exit(f"{path}: no such evaluation (a version of `kedro run --pipeline evaluation`)")
    return pd.read_csv(path).set_index("image_id")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="evaluation version compared against")
    parser.add_argument("after", help="evaluation version compared")
    args = parser.parse_args()
    before, after = per_image(args.before), per_image(args.after)
    if set(before.index) != set(after.index):
        sys.exit("the two evaluations scored different images: not the same test split")
    before = before.loc[after.index]
    print(f"{args.after} against {args.before}, {len(after)} test images, paired")
    print("| score | before | after | difference (95 % interval over acquisition groups) |")
    print("|---|---:|---:|---|")
    for score in SCORES:
        change = interval_over_groups(after[score] - before[score], after["acquisition"])
        print(
            f"| {score} | {before[score].mean():.3f} | {after[score].mean():.3f} | "
            f"{change['mean']:+.3f} ({change['low']:+.3f} to {change['high']:+.3f}, "
            f"{change['groups']} groups) |"
        )


if __name__ == "__main__":
    main()
