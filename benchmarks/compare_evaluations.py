"""Two evaluation runs on the same test split, paired image by image: the difference of each
per-image score, with a 95 % interval from a bootstrap over acquisition groups.

    python benchmarks/compare_evaluations.py 2026-12-04T11.00.08.652Z 2026-12-04T14.57.43.512Z

The versions are those of `kedro run --pipeline evaluation` (its
``data/08_reporting/evaluation_per_image.csv/<version>``, or the same under an environment's
own reports folder, e.g. ``data/08_reporting/no_smooth/``), or of a table kept in the
repository (``benchmarks/results/per_image/<version>.csv``), so an hour trained in a later
checkout pairs against one measured in an earlier one; the second is compared against the
first. Prints a table; with ``--keep``, also copies both tables into the repository's folder
(scores of the test images only, a few kilobytes each).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
from _common import PROJECT
from bench_scale_policy import interval_over_groups

SCORES = ("dsb_score", "miou", "nucleus_iou", "f1")
KEPT = Path("benchmarks/results/per_image")


def kept_path(version: str, root: Path = PROJECT) -> Path:
    """Where evaluation ``version``'s per-image table is kept in the repository."""
    return root / KEPT / f"{version}.csv"


def table_path(version: str, root: Path = PROJECT) -> Path:
    """The per-image table of evaluation ``version``: under ``root``'s reports folder or an
    environment's folder inside it (versions are timestamps, unique across both), else the
    copy kept in the repository (``benchmarks/results/per_image/<version>.csv``)."""
    reports = root / "data/08_reporting"
    pattern = f"evaluation_per_image.csv/{version}/evaluation_per_image.csv"
    found = sorted(reports.glob(pattern)) + sorted(reports.glob(f"*/{pattern}"))
    if not found and kept_path(version, root).is_file():
        found = [kept_path(version, root)]
    if len(found) != 1:
        what = "no such evaluation" if not found else f"{len(found)} evaluations"
        sys.exit(
            f"{reports}/[<environment>/]{pattern} or {root / KEPT}/{version}.csv: {what} "
            "(a version of `kedro run --pipeline evaluation`)"
        )
    return found[0]


def per_image(version: str, root: Path = PROJECT) -> pd.DataFrame:
    """Per-image scores of evaluation ``version`` (:func:`table_path`)."""
    return pd.read_csv(table_path(version, root)).set_index("image_id")


def keep(version: str, root: Path = PROJECT) -> Path:
    """Copy evaluation ``version``'s per-image table into the repository's kept tables,
    atomically; a table already kept is left as it is. Returns the kept copy's path."""
    target = kept_path(version, root)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        shutil.copyfile(table_path(version, root), partial)
        os.replace(partial, target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="evaluation version compared against")
    parser.add_argument("after", help="evaluation version compared")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="copy both per-image tables into benchmarks/results/per_image/",
    )
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
    if args.keep:
        for version in (args.before, args.after):
            print(f"kept: {keep(version).relative_to(PROJECT)}")


if __name__ == "__main__":
    main()
