"""Training speed of the CPU default U-Net with the project's BatchNormalization (closed-form
gradient, `nucleus_segmentation.model.layers`) against Keras' own BatchNormalization, same
model otherwise: both models built and compiled in one process, then one training step of
each in turn, so both see the same machine state (separate `fit` calls on a 2-core machine
differed by 2x for the same model).

    python benchmarks/bench_batchnorm.py     # writes the "batchnorm" section of docs/benchmarks.md

Synthetic crops (speed does not depend on pixel values), the training pipeline's loss,
optimizer and batch size (conf/base), compiled as `bench_model.py` compiles them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import yaml  # noqa: E402
from _common import PROJECT, vector_instructions, write_section  # noqa: E402
from bench_model import compiled_model, synthetic_batch  # noqa: E402

from nucleus_segmentation.model import layers as custom_layers  # noqa: E402
from nucleus_segmentation.model import unet  # noqa: E402
from nucleus_segmentation.model.precision import precision_scope  # noqa: E402
from nucleus_segmentation.model.recipe import training_model_config  # noqa: E402

VARIANTS = ("Keras BatchNormalization", "closed-form gradient")
CLOSED_FORM = custom_layers.BatchNormalization


@contextlib.contextmanager
def norm_layer(variant: str):
    """Build models with ``variant``'s normalisation everywhere (conv blocks, ASPP, attention)."""
    if variant == VARIANTS[1]:
        yield
        return
    keras_norm = keras.layers.BatchNormalization
    with (
        mock.patch.object(unet, "BatchNormalization", keras_norm),
        mock.patch.object(custom_layers, "BatchNormalization", keras_norm),
    ):
        yield


def closed_form_layers(model: keras.Model) -> tuple[int, int]:
    """(closed-form layers, all BatchNormalization layers) of ``model``, nested included."""
    norms = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    return sum(isinstance(layer, CLOSED_FORM) for layer in norms), len(norms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=7, help="timed steps of each model")
    parser.add_argument("--precision", default="float32", help="dtype policy")
    parser.add_argument("--no-write", action="store_true", help="print, leave docs alone")
    args = parser.parse_args()
    params = yaml.safe_load((PROJECT / "conf/base/parameters_training.yml").read_text())["training"]
    crop = yaml.safe_load((PROJECT / "conf/base/parameters_augmentation.yml").read_text())[
        "augmentation"
    ]["transforms"]["output_size"]
    batch = int(params["batch_size"])
    config = training_model_config(params)
    x, y = synthetic_batch(config, batch, crop)
    start = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    seconds: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    with precision_scope(args.precision):
        models = {}
        for variant in VARIANTS:
            with norm_layer(variant):
                models[variant] = compiled_model(config, params)
        for model in models.values():
            model.train_on_batch(x, y)  # tracing and the first step's allocations
            model.train_on_batch(x, y)
        for _ in range(args.steps):
            for variant, model in models.items():
                begin = time.perf_counter()
                model.train_on_batch(x, y)
                seconds[variant].append(time.perf_counter() - begin)
            print({variant: f"{values[-1]:.2f} s" for variant, values in seconds.items()})
    end = time.strftime("%H:%M", time.gmtime())
    medians = {variant: statistics.median(values) for variant, values in seconds.items()}
    reference = medians[VARIANTS[0]]
    rows = []
    for variant, values in seconds.items():
        closed, norms = closed_form_layers(models[variant])
        rows.append(
            f"| {variant} | {closed} of {norms} | "
            + " / ".join(f"{value:.2f}" for value in values)
            + f" | {medians[variant]:.2f} | {batch / medians[variant]:.2f} | "
            f"{reference / medians[variant]:.2f}x |"
        )
    body = "\n".join(
        [
            f"Command: `python benchmarks/bench_batchnorm.py --steps {args.steps} --precision "
            f"{args.precision}`. Machine: {os.cpu_count()} cores, "
            f"{platform.processor() or platform.machine()} ({vector_instructions()}), Keras "
            f"{keras.__version__} on {keras.backend.backend()}; {start} to {end} UTC. The CPU "
            f"default U-Net, one training step on {batch} crops of {crop}x{crop}, "
            f"{args.precision}, the two models' steps in turn after two untimed ones each.",
            "",
            "| normalisation | closed-form layers of all norms | seconds per step, in turn | "
            "median | images/s | speed against Keras' |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    if args.no_write:
        print(body)
    else:
        print(write_section("batchnorm", "BatchNorm's gradient in closed form", body))


if __name__ == "__main__":
    main()
