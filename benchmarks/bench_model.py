"""Model cost and CPU speed: parameters, multiply-adds, training throughput and inference
time in each precision, compute efficiency against this machine's best matmul peak (float32
or bfloat16), peak memory.

    python benchmarks/bench_model.py            # writes the "model" section of docs/benchmarks.md
    python benchmarks/bench_model.py --print-only   # prints it, leaves the file

Synthetic inputs (speed does not depend on pixel values); the network, loss and optimizer
built and compiled by the functions the training node calls (``model/recipe.py``) from
conf/base/parameters_training.yml, output classes included.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from _common import PROJECT, bf16_instructions, write_section  # noqa: E402
from complexity import count_multiply_adds  # noqa: E402

from nucleus_segmentation.model.precision import precision_scope  # noqa: E402
from nucleus_segmentation.model.predict import predict_probabilities  # noqa: E402
from nucleus_segmentation.model.recipe import (  # noqa: E402
    compile_training_model,
    training_model_config,
)
from nucleus_segmentation.model.unet import UNetConfig, build_attention_unet  # noqa: E402


def matmul_peak_gflops(size: int = 2048, repeats: int = 7) -> float:
    """Best float32 GFLOP/s of numpy's (BLAS) size x size matrix product."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    b = a.T.copy()
    a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def keras_matmul_peak_gflops(dtype: str, size: int = 2048, repeats: int = 7) -> float:
    """Best GFLOP/s of a size x size matrix product in ``dtype`` through the Keras backend
    (oneDNN on TensorFlow, where bfloat16 runs on AMX / AVX512-BF16)."""
    rng = np.random.default_rng(0)
    a = keras.ops.convert_to_tensor(rng.random((size, size), dtype=np.float32), dtype=dtype)
    b = keras.ops.convert_to_tensor(rng.random((size, size), dtype=np.float32), dtype=dtype)
    np.asarray(keras.ops.convert_to_numpy(keras.ops.matmul(a, b)))
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.matmul(a, b))
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def compiled_model(config: UNetConfig, params: dict) -> keras.Model:
    """The U-Net of ``config`` compiled as the training node compiles it (``params``: the
    ``training`` parameters), every class weighted 1 as the default ``class_weight_power: 0``
    gives (the weights' values do not change a step's cost)."""
    return compile_training_model(config, params, [1.0] * config.num_classes, 1000)


def synthetic_batch(
    config: UNetConfig, count: int, size: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random size x size images (``config.input_channels``) and class maps with
    ids in ``0..config.num_classes - 1``, as a training batch of that network."""
    rng = np.random.default_rng(seed)
    x = rng.random((count, size, size, config.input_channels), dtype=np.float32)
    y = rng.integers(0, config.num_classes, (count, size, size), dtype=np.int32)
    return x, y


def plain_unet(params: dict) -> dict:
    """``params`` (the ``training`` parameters) with the paper's modules removed: no
    attention, no channel expansion, no ASPP; output classes as in ``params``."""
    model = {**params["model"], "attention": "none", "channel_expansion": False, "aspp": False}
    return {**params, "model": model}


def training_throughput(
    config: UNetConfig, params: dict, size: int, batch: int, steps: int
) -> float:
    """Images per second of ``fit`` steps after a warm-up (graph tracing excluded)."""
    model = compiled_model(config, params)
    x, y = synthetic_batch(config, batch * steps, size)
    model.fit(x[: batch * 2], y[: batch * 2], batch_size=batch, verbose=0)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, verbose=0)
    return batch * steps / (time.perf_counter() - start)


def inference_seconds(config: UNetConfig, size: int = 512, images: int = 8) -> float:
    """Seconds per whole size x size image through :func:`predict_probabilities` (batch 1)."""
    model = build_attention_unet(config)
    data = [
        np.random.default_rng(i).integers(0, 256, (size, size), dtype=np.uint8)
        for i in range(images)
    ]
    predict_probabilities(model, data[:2], batch_size=1)
    start = time.perf_counter()
    predict_probabilities(model, data, batch_size=1)
    return (time.perf_counter() - start) / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed training steps")
    parser.add_argument(
        "--precisions", nargs="+", default=["float32", "mixed_bfloat16"], help="dtype policies"
    )
    parser.add_argument(
        "--print-only", action="store_true", help="print the table, leave docs/benchmarks.md"
    )
    args = parser.parse_args()
    params = yaml.safe_load((PROJECT / "conf/base/parameters_training.yml").read_text())["training"]
    crop = yaml.safe_load((PROJECT / "conf/base/parameters_augmentation.yml").read_text())[
        "augmentation"
    ]["transforms"]["output_size"]
    paper = yaml.safe_load((PROJECT / "conf/paper/parameters_training.yml").read_text())["training"]
    batch = int(params["batch_size"])
    configs = {
        "attention U-Net, CPU default": training_model_config(params),
        "plain U-Net baseline": training_model_config(plain_unet(params)),
        "attention U-Net, paper (base 64)": training_model_config(
            {**params, **paper, "model": {**params["model"], **paper["model"]}}
        ),
    }
    peaks = {
        "numpy float32": matmul_peak_gflops(),
        "Keras float32": keras_matmul_peak_gflops("float32"),
        "Keras bfloat16": keras_matmul_peak_gflops("bfloat16"),
    }
    peak = max(peaks.values())
    rows, speed = [], []
    for name, config in configs.items():
        model = build_attention_unet(config)
        macs = count_multiply_adds(model, 512)
        rows.append(
            f"| {name} | {model.count_params():,} | {macs / 1e9:.1f} | {2 * macs / 1e9:.1f} |"
        )
        if "paper" in name:
            continue
        per_crop = 2 * count_multiply_adds(model, crop)
        for precision in args.precisions:
            with precision_scope(precision):
                for size, size_batch in ((crop, batch), (512, max(1, batch // 4))):
                    rate = training_throughput(config, params, size, size_batch, args.steps)
                    flops = 3 * (per_crop if size == crop else 2 * macs) * rate
                    speed.append(
                        f"| {name}: training | {precision} | {size}x{size} | {size_batch} | "
                        f"{rate:.2f} | {flops / 1e9:.0f} | {100 * flops / 1e9 / peak:.0f} % |"
                    )
                seconds = inference_seconds(config)
            speed.append(
                f"| {name}: inference, whole image | {precision} | 512x512 | 1 | "
                f"{1 / seconds:.2f} ({seconds:.3f} s/image) | {2 * macs / seconds / 1e9:.0f} | "
                f"{100 * 2 * macs / seconds / 1e9 / peak:.0f} % |"
            )
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    body = "\n".join(
        [
            "Command: `python benchmarks/bench_model.py`. Machine: "
            f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
            f"Keras {keras.__version__} on {keras.backend.backend()}; CPU bfloat16 "
            f"instructions: {bf16_instructions()}.",
            "",
            "| model | parameters | multiply-adds, 512x512 (G) | FLOPs, 512x512 (G) |",
            "|---|---|---|---|",
            *rows,
            "",
            "Matmul peaks of this machine (2048x2048): "
            + ", ".join(f"{k} **{v:.0f} GFLOP/s**" for k, v in peaks.items())
            + f". Fractions below are of the best one ({peak:.0f} GFLOP/s).",
            "Training FLOPs are taken as 3x the forward FLOPs (forward + two backward products).",
            "",
            "| what | precision | input | batch | images/s | achieved GFLOP/s | of best peak |",
            "|---|---|---|---|---|---|---|",
            *speed,
            "",
            f"Peak memory of the benchmark process: {peak_rss:.2f} GiB.",
        ]
    )
    if args.print_only:
        print(body)
    else:
        print(write_section("model", "Model cost and CPU speed", body))


if __name__ == "__main__":
    main()
