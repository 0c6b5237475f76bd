"""Training speed of the CPU default U-Net with the project's BatchNormalization (closed-form
gradient, `nucleus_segmentation.model.layers`) against Keras' own BatchNormalization, same
model otherwise, measured in alternating rounds in one process (two runs of one step on a
2-core machine differ by 10 to 20 %, so the two layers are compared round by round).

    python benchmarks/bench_batchnorm.py     # writes the "batchnorm" section of docs/benchmarks.md

Synthetic crops (speed does not depend on pixel values), the training pipeline's loss,
optimizer and batch size (conf/base), as `bench_model.py` times them.
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
from bench_model import training_throughput  # noqa: E402

from nucleus_segmentation.model import layers as custom_layers  # noqa: E402
from nucleus_segmentation.model import unet  # noqa: E402
from nucleus_segmentation.model.precision import precision_scope  # noqa: E402
from nucleus_segmentation.model.unet import UNetConfig, build_attention_unet  # noqa: E402

VARIANTS = ("Keras BatchNormalization", "closed-form gradient")


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


def count_closed_form(config: UNetConfig) -> tuple[int, int]:
    """(closed-form layers, all BatchNormalization layers) of the built model, nested included."""
    model = build_attention_unet(config)
    norms = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    return sum(isinstance(layer, custom_layers.BatchNormalization) for layer in norms), len(norms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per round")
    parser.add_argument("--precision", default="float32", help="dtype policy")
    parser.add_argument("--no-write", action="store_true", help="print, leave docs alone")
    args = parser.parse_args()
    params = yaml.safe_load((PROJECT / "conf/base/parameters_training.yml").read_text())["training"]
    crop = yaml.safe_load((PROJECT / "conf/base/parameters_augmentation.yml").read_text())[
        "augmentation"
    ]["transforms"]["output_size"]
    batch = int(params["batch_size"])
    config = UNetConfig.from_params(params["model"])
    counts = {}
    for variant in VARIANTS:
        with norm_layer(variant):
            counts[variant] = count_closed_form(config)
    rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    start = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    with precision_scope(args.precision):
        for _ in range(args.rounds):
            for variant in VARIANTS:
                with norm_layer(variant):
                    rate = training_throughput(config, params, crop, batch, args.steps)
                rates[variant].append(rate)
                print(f"{variant}: {rate:.2f} images/s", flush=True)
    end = time.strftime("%H:%M", time.gmtime())
    medians = {variant: statistics.median(values) for variant, values in rates.items()}
    ratios = [new / old for old, new in zip(*rates.values(), strict=True)]
    rows = [
        f"| {variant} | {counts[variant][0]} of {counts[variant][1]} | "
        + " / ".join(f"{value:.2f}" for value in values)
        + f" | {medians[variant]:.2f} | {medians[variant] / medians[VARIANTS[0]]:.2f}x |"
        for variant, values in rates.items()
    ]
    body = "\n".join(
        [
            f"Command: `python benchmarks/bench_batchnorm.py --rounds {args.rounds} --steps "
            f"{args.steps} --precision {args.precision}`. Machine: {os.cpu_count()} cores, "
            f"{platform.processor() or platform.machine()} ({vector_instructions()}), Keras "
            f"{keras.__version__} on {keras.backend.backend()}; {start} to {end} UTC. The CPU "
            f"default U-Net trained on {batch} crops of {crop}x{crop} per step, "
            f"{args.precision}, the two normalisations in alternating rounds.",
            "",
            "| normalisation | closed-form layers of all norms | images/s, round by round | "
            "median | speed against Keras' |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "Round-by-round ratio (closed form over Keras'): "
            + ", ".join(f"{ratio:.2f}x" for ratio in ratios)
            + ".",
        ]
    )
    if args.no_write:
        print(body)
    else:
        print(write_section("batchnorm", "BatchNorm's gradient in closed form", body))


if __name__ == "__main__":
    main()
