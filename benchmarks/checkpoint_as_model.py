"""A training run's checkpoint (e.g. its final-epoch ``last.keras``), or the average of
several, saved as a model version of its own, so
`kedro run --pipeline evaluation --load-versions trained_model:<new>` scores those weights on
the path users run.

    python benchmarks/checkpoint_as_model.py 2026-12-04T16.41.59.173Z \
        data/06_models/checkpoints/attention_unet/last.keras

The first argument is the run's model version (``data/06_models/attention_unet.keras/<v>``):
its architecture and recorded preprocessing are kept, its weights replaced by the
checkpoint's. Given two or more checkpoints of that run, the weights are their element-wise
mean (BatchNorm statistics included; integer state such as seed counters from the first).
Writes a new version (the current UTC time), never over an existing one, and prints it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _common import PROJECT
from kedro.io.core import Version, generate_timestamp

MODEL = "data/06_models/attention_unet.keras"


def _mean(arrays: tuple[np.ndarray, ...]) -> np.ndarray:
    """Element-wise mean of one variable across checkpoints; integer state from the first."""
    if not np.issubdtype(arrays[0].dtype, np.floating):
        return arrays[0]
    return np.mean(np.stack(arrays), axis=0).astype(arrays[0].dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version", help="model version of the training run")
    parser.add_argument(
        "checkpoints", type=Path, nargs="+", help=".keras checkpoints of that run (averaged)"
    )
    args = parser.parse_args()
    for checkpoint in args.checkpoints:
        if not checkpoint.is_file():
            sys.exit(f"{checkpoint}: no such checkpoint")

    import keras

    from nucleus_segmentation.datasets.keras_model import KerasModelDataset

    filepath = str(PROJECT / MODEL)
    model = KerasModelDataset(filepath=filepath, version=Version(args.version, None)).load()
    weight_sets = []
    for checkpoint in args.checkpoints:
        try:
            weights = keras.saving.load_model(checkpoint, safe_mode=True).get_weights()
            model.set_weights(weights)
        except ValueError as exc:
            sys.exit(f"{checkpoint}: not a checkpoint of model {args.version} ({exc})")
        weight_sets.append(weights)
    model.set_weights([_mean(arrays) for arrays in zip(*weight_sets, strict=True)])
    target = generate_timestamp()
    KerasModelDataset(filepath=filepath, version=Version(None, target)).save(model)
    print(target)


if __name__ == "__main__":
    main()
