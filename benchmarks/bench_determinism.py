"""Whether two trainings with the same seed give the same weights on this machine.

    python benchmarks/bench_determinism.py [--steps 4] [--runs 4]

The CPU default network (``conf/base`` ``training.model``, the builder's two-class head) is
built and fitted ``runs`` times in one process per setting, each time after
``keras.utils.set_random_seed(seed)``, on the same random batches; the largest absolute weight
difference from the first run is reported, with the intra-op thread count and TensorFlow's
op determinism switch. Each setting runs in its own process (thread counts and op
determinism are fixed at TensorFlow start-up). Writes the "determinism" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import yaml
from _common import PROJECT, write_section

SETTINGS = (
    {"threads": 0, "op_determinism": False},
    {"threads": 0, "op_determinism": True},
    {"threads": 1, "op_determinism": False},
)


def repeat_fits(threads: int, op_determinism: bool, steps: int, runs: int, seed: int = 42) -> dict:
    """Fit the default network ``runs`` times from ``seed``; how many repeats end with the
    first run's weights, and the largest weight difference from it."""
    import numpy as np
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    if op_determinism:
        tf.config.experimental.enable_op_determinism()
    import keras

    from nucleus_segmentation.model.unet import build_attention_unet

    training = yaml.safe_load((PROJECT / "conf/base/parameters_training.yml").read_text())
    config = training["training"]["model"]
    batch = 8
    rng = np.random.default_rng(seed)
    x = rng.random((batch * steps, 128, 128, 1), dtype=np.float32)
    y = rng.integers(0, 2, (batch * steps, 128, 128)).astype("int32")

    def fit() -> tuple[list, list]:
        keras.utils.set_random_seed(seed)
        model = build_attention_unet(config)
        initial = [w.copy() for w in model.get_weights()]
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
        return initial, model.get_weights()

    (first_init, first), *others = [fit() for _ in range(runs)]
    differences = [
        max(float(np.abs(p - q).max()) for p, q in zip(first, weights, strict=True))
        for _, weights in others
    ]
    return {
        "threads": threads or "default",
        "op_determinism": op_determinism,
        "same_initial_weights": all(
            np.array_equal(p, q)
            for init, _ in others
            for p, q in zip(first_init, init, strict=True)
        ),
        "identical": sum(d == 0.0 for d in differences),
        "repeats": len(differences),
        "max_weight_difference": max(differences),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="training steps per fit")
    parser.add_argument("--runs", type=int, default=4, help="fits per setting")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a JSON setting, in a child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(repeat_fits(**json.loads(args.one), steps=args.steps, runs=args.runs)))
        return
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    rows = []
    for setting in SETTINGS:
        out = subprocess.run(
            [sys.executable, __file__, "--steps", str(args.steps), "--runs", str(args.runs)]
            + ["--one", json.dumps(setting)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    table = [
        "| intra-op threads | op determinism | same initial weights | repeats ending with the "
        "first run's weights | largest weight difference from it |",
        "|---|---|---|---:|---:|",
    ] + [
        f"| {r['threads']} | {r['op_determinism']} | {r['same_initial_weights']} | "
        f"{r['identical']} of {r['repeats']} | {r['max_weight_difference']:.2g} |"
        for r in rows
    ]
    body = "\n\n".join(
        [
            f"Command: `python benchmarks/bench_determinism.py --steps {args.steps} --runs "
            f"{args.runs}`. The CPU default network fitted {args.runs} times per row for "
            f"{args.steps} steps (batch 8, 128x128, "
            "Adam) after `keras.utils.set_random_seed(42)`, on identical batches; Keras "
            f"{__import__('keras').__version__}, {os.cpu_count()} cores.",
            "\n".join(table),
        ]
    )
    print(write_section("determinism", "Same seed, same weights?", body))


if __name__ == "__main__":
    main()
