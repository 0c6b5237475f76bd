"""Where a training step's time goes: the CPU default's attention U-Net, layer by layer,
forward and backward, in each precision, summed by layer type.

    python benchmarks/bench_step_profile.py     # writes the "step profile" section of
                                                # docs/benchmarks.md

Each layer is timed alone on the activations it receives in the real network (taken from one
forward pass of a batch of ``--batch`` ``--size`` x ``--size`` crops), as a compiled
(``tf.function``) forward pass and as forward + gradients with respect to its inputs and
weights; the median of ``--repeats`` timings. The whole training step (``fit`` on the same
batch size, the project's loss and optimizer) is timed too: what the per-layer sum leaves is
the loss, the optimizer update and the framework's own work. TensorFlow backend only (the
gradient tape); the figures are for this machine's cores (2 here), nothing else running.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import yaml  # noqa: E402
from _common import PROJECT, bf16_instructions, write_section  # noqa: E402
from bench_model import training_throughput  # noqa: E402

from nucleus_segmentation.model.precision import precision_scope  # noqa: E402
from nucleus_segmentation.model.recipe import training_model_config  # noqa: E402
from nucleus_segmentation.model.unet import build_attention_unet  # noqa: E402


def _median_seconds(function, arguments, repeats: int) -> float:
    function(*arguments)  # trace and warm up
    function(*arguments)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*arguments)
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def layer_inputs(model, batch: np.ndarray) -> dict[str, list]:
    """Each layer's input tensors when ``batch`` goes through ``model`` (its own dtypes)."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    wanted = [list(layer._inbound_nodes[0].input_tensors) for layer in layers]
    probe = keras.Model(model.inputs, [t for group in wanted for t in group])
    flat = probe([batch], training=True)
    flat = flat if isinstance(flat, list | tuple) else [flat]
    out, index = {}, 0
    for layer, group in zip(layers, wanted, strict=True):
        out[layer.name] = [tf.convert_to_tensor(t) for t in flat[index : index + len(group)]]
        index += len(group)
    return out


def profile_layers(model, inputs: dict[str, list], repeats: int) -> list[dict]:
    """Forward and forward + backward seconds of every layer on its own inputs."""
    rows = []
    for layer in model.layers:
        if layer.name not in inputs:
            continue
        tensors = inputs[layer.name]
        many = len(tensors) > 1

        def call(*xs, layer=layer, many=many):
            return layer(list(xs) if many else xs[0], training=True)

        @tf.function
        def forward(*xs, call=call):
            return call(*xs)

        @tf.function
        def backward(*xs, call=call, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(xs)
                total = tf.reduce_sum(tf.cast(call(*xs), tf.float32))
            return tape.gradient(total, [*xs, *layer.trainable_weights])

        rows.append(
            {
                "type": type(layer).__name__,
                "forward": _median_seconds(forward, tensors, repeats),
                "step": _median_seconds(backward, tensors, repeats),
            }
        )
    return rows


def table(profiles: dict[str, list[dict]], steps: dict[str, float]) -> list[str]:
    precisions = list(profiles)
    sums = {p: defaultdict(lambda: [0, 0.0, 0.0]) for p in precisions}
    for precision, rows in profiles.items():
        for row in rows:
            entry = sums[precision][row["type"]]
            entry[0] += 1
            entry[1] += row["forward"]
            entry[2] += row["step"]
    order = sorted(sums[precisions[0]], key=lambda k: -sums[precisions[0]][k][2])
    header = "| layer type | count | " + " | ".join(
        f"{p}: forward / forward + backward, ms (share of step)" for p in precisions
    )
    lines = [header + " |", "|---|---:|" + "---:|" * len(precisions)]

    def cells(values: dict[str, tuple[float, float]]) -> str:
        return " | ".join(
            f"{1e3 * values[p][0]:.1f} / {1e3 * values[p][1]:.1f} "
            f"({100 * values[p][1] / steps[p]:.0f} %)"
            for p in precisions
        )

    for kind in order:
        count = sums[precisions[0]][kind][0]
        values = {p: tuple(sums[p][kind][1:]) for p in precisions}
        lines.append(f"| {kind} | {count} | {cells(values)} |")
    layer_sum = {
        p: (sum(r["forward"] for r in profiles[p]), sum(r["step"] for r in profiles[p]))
        for p in precisions
    }
    lines.append(f"| all layers | | {cells(layer_sum)} |")
    rest = {p: (float("nan"), steps[p] - layer_sum[p][1]) for p in precisions}
    lines.append(
        "| the rest: loss, optimizer update, framework | | "
        + " | ".join(
            f"- / {1e3 * rest[p][1]:.1f} ({100 * rest[p][1] / steps[p]:.0f} %)" for p in precisions
        )
        + " |"
    )
    lines.append(
        "| whole training step (`fit`) | | "
        + " | ".join(f"- / {1e3 * steps[p]:.1f} (100 %)" for p in precisions)
        + " |"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="crop side, pixels")
    parser.add_argument("--batch", type=int, default=None, help="default: training.batch_size")
    parser.add_argument("--repeats", type=int, default=7, help="timings per layer (median)")
    parser.add_argument(
        "--precisions", nargs="+", default=["float32", "mixed_bfloat16"], help="dtype policies"
    )
    parser.add_argument("--no-write", action="store_true", help="print, leave docs alone")
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("bench_step_profile.py times gradients with TensorFlow's tape")
    params = yaml.safe_load((PROJECT / "conf/base/parameters_training.yml").read_text())["training"]
    batch = args.batch or int(params["batch_size"])
    config = training_model_config(params)
    data = np.random.default_rng(0).random((batch, args.size, args.size, 1), dtype=np.float32)
    profiles, steps = {}, {}
    for precision in args.precisions:
        with precision_scope(precision):
            model = build_attention_unet(config)
            profiles[precision] = profile_layers(model, layer_inputs(model, data), args.repeats)
            rate = training_throughput(config, params, args.size, batch, steps=args.repeats)
            steps[precision] = batch / rate
    body = "\n".join(
        [
            f"Command: `python benchmarks/bench_step_profile.py --size {args.size} --batch "
            f"{batch} --repeats {args.repeats}`: the CPU default's attention U-Net, "
            f"{batch} crops of {args.size}x{args.size}, {os.cpu_count()} cores (CPU bfloat16 "
            f"instructions: {bf16_instructions()}), Keras {keras.__version__} on "
            f"{keras.backend.backend()}. Each layer timed alone on the "
            "activations it gets in the network (compiled, median of the repeats); forward + "
            "backward includes the gradients for its inputs and its weights. Shares are of the "
            "whole training step in the same precision.",
            "",
            *table(profiles, steps),
        ]
    )
    if args.no_write:
        print(body)
    else:
        print(write_section("step-profile", "Where a training step's time goes", body))


if __name__ == "__main__":
    main()
