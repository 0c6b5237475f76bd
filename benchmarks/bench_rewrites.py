"""What the prediction-time rewrites of a trained model buy: the network of the segmentation
path as built, with its BatchNorms folded into their convolutions (model/folding.py), and
with each x2 upsampling and its convolution computed at low resolution as well
(model/upsampling.py), which is what ``for_prediction`` gives every segmentation path.

    python benchmarks/bench_rewrites.py     # writes the "rewrites" section of docs/benchmarks.md

Synthetic weights and images (speed does not depend on their values; the BatchNorm
statistics are drawn away from 0 / 1 so the outputs check is not trivial), whole 512x512
images through ``predict_probabilities`` (batch 1) as segmentation calls it, in the precision
``segmentation.precision: auto`` resolves to on this machine. The variants are timed in
interleaved rounds, so a machine that slows down or speeds up meanwhile moves them alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from _common import PROJECT, vector_instructions, write_section  # noqa: E402
from bench_model import plain_unet  # noqa: E402
from complexity import count_multiply_adds  # noqa: E402

from nucleus_segmentation.model.folding import fold_batch_norms, for_prediction  # noqa: E402
from nucleus_segmentation.model.precision import resolve_precision, with_precision  # noqa: E402
from nucleus_segmentation.model.predict import predict_probabilities  # noqa: E402
from nucleus_segmentation.model.recipe import training_model_config  # noqa: E402
from nucleus_segmentation.model.unet import build_attention_unet  # noqa: E402


def with_trained_statistics(model, seed: int = 0):
    """``model`` with every BatchNorm's scale, shift and moving statistics drawn as after
    training (a fold that dropped a term would change the outputs)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shapes = [w.shape for w in layer.get_weights()]
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, shapes[0]),
                    rng.normal(0.0, 0.5, shapes[1]),
                    rng.normal(0.0, 0.5, shapes[2]),
                    rng.uniform(0.2, 3.0, shapes[3]),
                ]
            )
    return model


def time_variants(variants: dict, image: np.ndarray, rounds: int) -> dict[str, float]:
    """Median seconds per image of each variant, timed in interleaved rounds after a warm-up
    call each (graph tracing happens once per shape)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for model in variants.values():
        predict_probabilities(model, [image], batch_size=1)
    for _ in range(rounds):
        for name, model in variants.items():
            started = time.perf_counter()
            predict_probabilities(model, [image], batch_size=1)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed calls per variant")
    parser.add_argument("--size", type=int, default=512, help="image side, pixels")
    args = parser.parse_args()
    params = yaml.safe_load((PROJECT / "conf/base/parameters_training.yml").read_text())["training"]
    configs = {
        "attention U-Net, CPU default": training_model_config(params),
        "plain U-Net baseline": training_model_config(plain_unet(params)),
    }
    precision = resolve_precision("auto")
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size), dtype=np.uint8)
    rows = []
    for name, config in configs.items():
        keras.utils.set_random_seed(0)
        model = with_trained_statistics(build_attention_unet(config))
        variants = {
            "as built (training graph)": with_precision(model, precision),
            "BatchNorm folded": with_precision(fold_batch_norms(model), precision),
            "BatchNorm folded, upsampling phased (what segmentation runs)": for_prediction(
                model, precision
            ),
        }
        reference = predict_probabilities(variants["as built (training graph)"], [image], 16, 1)
        seconds = time_variants(variants, image, args.rounds)
        built = seconds["as built (training graph)"]
        for variant, prepared in variants.items():
            output = predict_probabilities(prepared, [image], 16, 1)
            difference = float(np.abs(output[0] - reference[0]).max())
            macs = count_multiply_adds(prepared, args.size)
            rows.append(
                f"| {name} | {variant} | {macs / 1e9:.1f} | {seconds[variant]:.3f} | "
                f"{built / seconds[variant]:.2f}x | {difference:.1e} |"
            )
    shown = vector_instructions()
    body = "\n".join(
        [
            f"Command: `python benchmarks/bench_rewrites.py --rounds {args.rounds} --size "
            f"{args.size}`. Machine: {os.cpu_count()} cores, "
            f"{platform.processor() or platform.machine()}, vector instructions: {shown}; "
            f"Keras {keras.__version__} on {keras.backend.backend()}, {precision} (what "
            f"`segmentation.precision: auto` picks here). Whole {args.size}x{args.size} image, "
            f"batch 1, median of {args.rounds} interleaved calls; synthetic weights.",
            "",
            f"| model | network | multiply-adds, {args.size}x{args.size} (G) | seconds per "
            "image | speed-up over as built | largest probability difference |",
            "|---|---|---:|---:|---:|---:|",
            *rows,
        ]
    )
    print(write_section("rewrites", "Prediction-time rewrites of the network", body))


if __name__ == "__main__":
    main()
