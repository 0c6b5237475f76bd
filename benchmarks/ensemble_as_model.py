"""Two or more trained model versions averaged into one model version (their class
probabilities averaged, :func:`nucleus_segmentation.model.ensemble.average_models`), so
`kedro run --pipeline evaluation --load-versions trained_model:<new>` scores the ensemble on
the path users run (and inference can use it like any model).

    python benchmarks/ensemble_as_model.py 2026-12-05T23.03.38.243Z 2026-12-06T03.33.07.445Z

The members must have been trained on the same preprocessing (their recorded settings are
compared); the ensemble records it. Writes a new version of
``data/06_models/attention_unet.keras`` (the current UTC time), never over an existing one,
and prints it.
"""

from __future__ import annotations

import argparse
import sys

from _common import PROJECT
from checkpoint_as_model import MODEL
from kedro.io.core import Version, generate_timestamp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="+", help="model versions to average (two or more)")
    args = parser.parse_args()
    if len(args.versions) < 2:
        sys.exit("an ensemble needs two or more model versions")

    from nucleus_segmentation.datasets.keras_model import KerasModelDataset
    from nucleus_segmentation.errors import InputProblem
    from nucleus_segmentation.model.ensemble import average_models

    filepath = str(PROJECT / MODEL)
    try:
        members = [
            KerasModelDataset(filepath=filepath, version=Version(v, None)).load()
            for v in args.versions
        ]
    except InputProblem as exc:
        sys.exit(str(exc))
    preprocessing = members[0].trained_preprocessing
    for version, member in zip(args.versions, members, strict=True):
        if member.trained_preprocessing != preprocessing:
            sys.exit(
                f"{version}: trained on other preprocessing ({member.trained_preprocessing}) "
                f"than {args.versions[0]} ({preprocessing})"
            )
    try:
        ensemble = average_models(members)
    except ValueError as exc:
        sys.exit(str(exc))
    ensemble.trained_preprocessing = preprocessing
    target = generate_timestamp()
    KerasModelDataset(filepath=filepath, version=Version(None, target)).save(ensemble)
    print(target)


if __name__ == "__main__":
    main()
