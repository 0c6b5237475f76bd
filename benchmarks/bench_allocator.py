"""Training and inference speed of the CPU default U-Net under TensorFlow's two CPU memory
allocators: malloc (TensorFlow's own default) and its pooling BFC allocator (the project's
default since `nucleus_segmentation` sets ``TF_CPU_ALLOCATOR_USE_BFC=true`` on import).

    python benchmarks/bench_allocator.py     # writes the "allocator" section of docs/benchmarks.md

The allocator is chosen when TensorFlow first allocates, so each measurement is a fresh
process (``--worker``) started with the variable set; the two run in turn, ``--rounds``
times, in alternating order. Each times ``--steps`` training steps (synthetic crops: speed
does not depend on pixel values; the training pipeline's batch size and crop, compiled as
`bench_model.py` compiles) after two untimed ones, with the kernel time and the page faults
they cost, then whole 512x512 images through ``predict_probabilities``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VARIANTS = {"malloc (TensorFlow's default)": "false", "BFC pool (project default)": "true"}


def _usage() -> tuple[float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_stime, usage.ru_minflt


def worker(steps: int, images: int) -> dict:
    """One process's figures: per training step (wall s, kernel s, page faults), per 512x512
    image, and the peak resident memory."""
    import keras  # noqa: F401  (TensorFlow starts after the variable is set)
    import yaml
    from _common import PROJECT
    from bench_model import compiled_model, inference_seconds, synthetic_batch

    from nucleus_segmentation.model.recipe import training_model_config

    params = yaml.safe_load((PROJECT / "conf/base/parameters_training.yml").read_text())["training"]
    crop = yaml.safe_load((PROJECT / "conf/base/parameters_augmentation.yml").read_text())[
        "augmentation"
    ]["transforms"]["output_size"]
    batch = int(params["batch_size"])
    config = training_model_config(params)
    x, y = synthetic_batch(config, batch, crop)
    model = compiled_model(config, params)
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    wall, kernel, faults = [], [], []
    for _ in range(steps):
        system, faulted = _usage()
        begin = time.perf_counter()
        model.train_on_batch(x, y)
        wall.append(time.perf_counter() - begin)
        after_system, after_faulted = _usage()
        kernel.append(after_system - system)
        faults.append(after_faulted - faulted)
    return {
        "allocator": os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"),
        "step_seconds": wall,
        "kernel_seconds": kernel,
        "page_faults": faults,
        "batch": batch,
        "crop": crop,
        "inference_seconds": inference_seconds(config, 512, images),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "keras": f"{keras.__version__} on {keras.backend.backend()}",
    }


def measure(value: str, steps: int, images: int) -> dict:
    env = {**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": value}
    command = [sys.executable, __file__, "--worker", "--steps", str(steps)]
    command += ["--images", str(images)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker with TF_CPU_ALLOCATOR_USE_BFC={value} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["allocator"] != value:
        raise SystemExit(f"worker ran with TF_CPU_ALLOCATOR_USE_BFC={result['allocator']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per process")
    parser.add_argument("--images", type=int, default=4, help="timed 512x512 images per process")
    parser.add_argument("--rounds", type=int, default=2, help="processes per allocator")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print, leave docs alone")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.steps, args.images)))
        return
    from _common import vector_instructions, write_section

    start = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for round_index in range(args.rounds):
        order = list(VARIANTS) if round_index % 2 == 0 else list(VARIANTS)[::-1]
        for name in order:
            results[name].append(measure(VARIANTS[name], args.steps, args.images))
            step = statistics.median(results[name][-1]["step_seconds"])
            print(f"round {round_index + 1}, {name}: {step:.2f} s per step", flush=True)
    end = time.strftime("%H:%M", time.gmtime())
    reference = None
    rows = []
    for name, runs in results.items():
        steps = [s for run in runs for s in run["step_seconds"]]
        median = statistics.median(steps)
        reference = reference or median
        kernel = sum(k for run in runs for k in run["kernel_seconds"]) / sum(steps)
        faults = statistics.median(f for run in runs for f in run["page_faults"])
        rows.append(
            f"| {name} | "
            + " / ".join(f"{statistics.median(run['step_seconds']):.2f}" for run in runs)
            + f" | {median:.2f} | {reference / median:.2f}x | {100 * kernel:.0f} % | "
            f"{faults / 1000:.0f} k | "
            + " / ".join(f"{run['inference_seconds']:.3f}" for run in runs)
            + f" | {max(run['peak_rss_mb'] for run in runs):.0f} |"
        )
    first = results[list(VARIANTS)[0]][0]
    body = "\n".join(
        [
            f"Command: `python benchmarks/bench_allocator.py --steps {args.steps} --images "
            f"{args.images} --rounds {args.rounds}`. Machine: {os.cpu_count()} cores, "
            f"{platform.processor() or platform.machine()} ({vector_instructions()}), Keras "
            f"{first['keras']}; {start} to {end} UTC. The CPU default U-Net, float32: "
            f"training steps on {first['batch']} crops of {first['crop']}x{first['crop']} "
            f"(median of {args.steps} per process, after two untimed), then whole 512x512 "
            "images through `predict_probabilities` (network only); one fresh process per "
            "allocator and round, the allocators in turn.",
            "",
            "| allocator (`TF_CPU_ALLOCATOR_USE_BFC`) | seconds per step, by round | median | "
            "speed | kernel share of step time | page faults per step | s per 512x512 "
            "image, by round | peak memory, MB |",
            "|---|---|---:|---:|---:|---:|---|---:|",
            *rows,
        ]
    )
    if args.no_write:
        print(body)
    else:
        print(write_section("allocator", "Memory allocator", body))


if __name__ == "__main__":
    main()
