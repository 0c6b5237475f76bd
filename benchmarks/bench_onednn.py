"""oneDNN settings that could run float32 work in bfloat16: do they close the gap to the
bfloat16 matmul peak?

    python benchmarks/bench_onednn.py [--steps 24]    # writes the "onednn" section

Two levers, both TensorFlow-only (the package's model code stays backend-neutral):

1. ``ONEDNN_DEFAULT_FPMATH_MODE=BF16``, oneDNN's own switch that lets float32 primitives
   compute in bfloat16: a 2048x2048 matmul in float32 and bfloat16 and its error against a
   float64 product, in a fresh process with and without the variable (oneDNN reads it once).
2. TensorFlow's graph rewrite ``auto_mixed_precision_onednn_bfloat16`` (grappler): a float32
   model's graphs run in bfloat16 where oneDNN allows, without Keras' casts at every layer.
   One training step of the CPU default network (a batch of 256x256 crops, built and compiled by
   ``model/recipe.py`` as the training node does) timed with ``train_on_batch`` in four ways,
   interleaved step by step so drifts of the machine hit each alike: float32, float32 with
   the rewrite, Keras' ``mixed_bfloat16``, ``mixed_bfloat16`` with the rewrite. TensorFlow
   reads the option when it runs a function, so the same compiled model serves both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REWRITE = "auto_mixed_precision_onednn_bfloat16"
FPMATH = "ONEDNN_DEFAULT_FPMATH_MODE"


def matmul_probe(size: int = 2048, repeats: int = 7) -> dict:
    """Best GFLOP/s of a size^3 matmul in float32 and bfloat16 in this process, and the float32
    product's largest error against float64 (larger when float32 ran in bfloat16)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b = rng.random((size, size)), rng.random((size, size))
    result = {}
    for dtype in ("float32", "bfloat16"):
        x, y = tf.constant(a, dtype=dtype), tf.constant(b, dtype=dtype)
        tf.matmul(x, y).numpy()
        best = 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            tf.matmul(x, y).numpy()
            best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
        result[dtype] = best
    product = tf.matmul(tf.constant(a, tf.float32), tf.constant(b, tf.float32)).numpy()
    result["float32_error"] = float(np.abs(product - a @ b).max())
    return result


def matmul_rows() -> list[str]:
    """The matmul probe in fresh processes without and with ``ONEDNN_DEFAULT_FPMATH_MODE``."""
    rows = []
    for value in (None, "BF16"):
        env = {k: v for k, v in os.environ.items() if k != FPMATH}
        if value:
            env[FPMATH] = value
        out = subprocess.run(
            [sys.executable, __file__, "--matmul-probe"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        probe = json.loads(out.strip().splitlines()[-1])
        rows.append(
            f"| {FPMATH}={value or '(unset)'} | {probe['float32']:.0f} | "
            f"{probe['bfloat16']:.0f} | {probe['float32_error']:.2e} |"
        )
    return rows


def step_rows(steps: int, size: int = 256) -> tuple[list[str], int]:
    """Seconds per training step on ``size`` x ``size`` crops, four ways, interleaved
    (medians of ``steps`` each), and the batch (training's ``batch_size``)."""
    import tensorflow as tf
    import yaml
    from _common import PROJECT
    from bench_model import compiled_model, synthetic_batch

    from nucleus_segmentation.model.precision import precision_scope
    from nucleus_segmentation.model.recipe import training_model_config

    params = yaml.safe_load((PROJECT / "conf/base/parameters_training.yml").read_text())
    params = params["training"]
    config = training_model_config(params)
    models = {}
    for precision in ("float32", "mixed_bfloat16"):
        with precision_scope(precision):
            models[precision] = compiled_model(config, params)
    batch = int(params["batch_size"])
    x, y = synthetic_batch(config, batch, size)
    ways = [(p, rewrite) for p in models for rewrite in (False, True)]

    def step(precision: str, rewrite: bool) -> float:
        tf.config.optimizer.set_experimental_options({REWRITE: rewrite})
        start = time.perf_counter()
        models[precision].train_on_batch(x, y)
        return time.perf_counter() - start

    for way in ways:  # trace and warm each
        step(*way), step(*way)
    times = {way: [] for way in ways}
    for _ in range(steps):
        for way in ways:
            times[way].append(step(*way))
    tf.config.optimizer.set_experimental_options({REWRITE: False})
    base = statistics.median(times[("float32", False)])
    rows = []
    for (precision, rewrite), values in times.items():
        median = statistics.median(values)
        rows.append(
            f"| {precision} | {'yes' if rewrite else 'no'} | {median:.3f} | "
            f"{min(values):.3f} to {max(values):.3f} | {base / median:.2f}x |"
        )
    return rows, batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24, help="timed steps per way")
    parser.add_argument("--matmul-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.matmul_probe:
        print(json.dumps(matmul_probe()))
        return
    import keras
    from _common import bf16_instructions, write_section

    matmuls = matmul_rows()
    steps, batch = step_rows(args.steps)
    body = "\n".join(
        [
            f"Command: `python benchmarks/bench_onednn.py --steps {args.steps}`. Machine: "
            f"{os.cpu_count()} cores, CPU bfloat16 instructions: {bf16_instructions()}; "
            f"Keras {keras.__version__} on {keras.backend.backend()}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
            "",
            "| oneDNN math mode | float32 matmul, GFLOP/s | bfloat16 matmul, GFLOP/s | "
            "float32 product's largest error |",
            "|---|---:|---:|---:|",
            *matmuls,
            "",
            f"One training step of the CPU default network, {batch} crops of 256x256 "
            f"(`train_on_batch`, {args.steps} steps per way, interleaved):",
            "",
            f"| Keras dtype policy | graph rewrite `{REWRITE}` | median s/step | range | "
            "speed against float32 |",
            "|---|---|---:|---|---:|",
            *steps,
        ]
    )
    print(write_section("onednn", "oneDNN settings for bfloat16", body))


if __name__ == "__main__":
    main()
