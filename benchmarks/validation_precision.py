"""Training's per-pass validation of checkpoints, scored in each segmentation precision:
does the precision validation predicts in (``segmentation.precision``) move the scores the
kept pass is chosen by?

    python benchmarks/validation_precision.py \
        data/06_models/checkpoints/attention_unet/last.keras [more.keras ...] \
        [--data <data_split version>] [--precisions float32 mixed_bfloat16]

Each checkpoint (a ``.keras`` file a training run wrote, e.g. a copy of ``last.keras`` taken
after a pass) is scored by :class:`~nucleus_segmentation.model.training.ValidationMetrics`,
the callback training validates with, on the validation images of the ``data_split`` version
(the latest unless pinned; the ingested images of the same version; at most
``training.max_validation_images``), with the project's ``preprocessing``, ``segmentation``
and ``training`` parameters and the latest ``class_weights`` (which only ``val_loss`` uses),
once per precision. The checkpoint's trained weights are scored (a run with
``ema_momentum`` kept and scored its moving average instead, which a checkpoint does not
hold). Prints
one table row per checkpoint and precision (val_loss, MIoU, nucleus IoU, DSB score before
tuning, seconds) and the command; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import catalog_filepath, parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", type=Path, nargs="+", help=".keras checkpoints")
    parser.add_argument("--data", default=None, help="data_split version (default: latest)")
    parser.add_argument(
        "--precisions", nargs="+", default=["float32", "mixed_bfloat16"], help="to score in"
    )
    args = parser.parse_args()
    for checkpoint in args.checkpoints:
        if not checkpoint.is_file():
            sys.exit(f"{checkpoint}: no such checkpoint")

    import keras
    from kedro.io.core import Version
    from kedro_datasets.json import JSONDataset
    from kedro_datasets.pandas import CSVDataset

    from nucleus_segmentation import bundle
    from nucleus_segmentation.datasets import NpzDataset
    from nucleus_segmentation.model.recipe import class_names, target_settings
    from nucleus_segmentation.model.training import ValidationMetrics
    from nucleus_segmentation.segment import SegmentationSettings

    params = parameters("base")
    training = params["training"]
    split_data = CSVDataset(
        filepath=str(catalog_filepath("base", "data_split")), version=Version(args.data, None)
    )
    version = split_data.resolve_load_version()
    split = split_data.load()
    ingested = NpzDataset(
        filepath=str(catalog_filepath("base", "ingested_images")), version=Version(version, None)
    ).load()
    weights_file = JSONDataset(
        filepath=str(catalog_filepath("base", "class_weights")), version=Version(None, None)
    )
    class_weights = weights_file.load()
    names = class_names(training)
    if set(class_weights) != set(names):
        sys.exit(
            f"class_weights {weights_file.resolve_load_version()}: for {sorted(class_weights)}, "
            f"training.targets needs {list(names)}: rerun the compute_class_weights node"
        )
    ids = split.loc[split["split"] == "validation", "image_id"].tolist()
    ids = ids[: training["max_validation_images"]]
    images = [bundle.field(ingested, i, "image") for i in ids]
    labels = [bundle.field(ingested, i, "labels") for i in ids]
    weights = [float(class_weights[name]) for name in names]

    print(f"data_split {version}, {len(ids)} validation images")
    print("| checkpoint | precision | val_loss | MIoU | nucleus IoU | DSB (untuned) | seconds |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for checkpoint in args.checkpoints:
        model = keras.saving.load_model(checkpoint, compile=False, safe_mode=True)
        for precision in args.precisions:
            segmentation = {**params["segmentation"], "precision": precision}
            validation = ValidationMetrics(
                images,
                labels,
                weights,
                params["preprocessing"],
                SegmentationSettings.from_params(segmentation),
                segmentation["separation"],
                monitor=training["monitor"],
                targets=target_settings(training),
            )
            validation.set_model(model)
            logs: dict = {}
            started = time.perf_counter()
            validation.on_epoch_end(0, logs)
            seconds = time.perf_counter() - started
            print(
                f"| {checkpoint} | {precision} | {logs['val_loss']:.4f} "
                f"| {100 * logs['val_miou_pooled']:.1f} "
                f"| {100 * logs['val_nucleus_iou_pooled']:.1f} "
                f"| {logs['val_dsb_score']:.3f} | {seconds:.0f} |"
            )
    print("Command: python benchmarks/validation_precision.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
