"""Inference on a large folder on a Dask LocalCluster: images/s and memory for 1 and 2 workers.

    python benchmarks/bench_inference_scale.py --images 10000 --workers 1 2
    python benchmarks/bench_inference_scale.py --report-only

The folder holds ``--images`` copies of the embedded sample's 30 images (hard links where the
file system allows, so the folder costs no space), in subfolders of 1,000. Each worker count
runs ``kedro run --pipeline inference`` with ``parallel.backend=dask`` and that many
single-threaded Dask workers, the model pinned (``--load-versions``; the latest by default),
while the memory of the whole process tree (scheduler and workers included) is sampled every
0.2 s: the peak over the first tenth of the run against the peak over all of it shows whether
memory stays flat as the images stream through. Results are kept in
``benchmarks/results/inference_scale.json`` and written to the "inference_scale" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _common import PROJECT, latest_version, tree_rss, write_section

SAMPLE = PROJECT / "data" / "01_raw" / "dsb2018_sample"
RESULTS = PROJECT / "benchmarks" / "results" / "inference_scale.json"


def make_folder(folder: Path, count: int) -> int:
    """``count`` copies of the sample's images; returns their total bytes."""
    sources = sorted(SAMPLE.glob("*/images/*.png"))
    total = 0
    for index in range(count):
        source = sources[index % len(sources)]
        target = folder / f"part{index // 1000:03d}" / f"{index:05d}_{source.stem[:8]}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        total += source.stat().st_size
    return total


def measure(command: list[str], log: Path) -> dict:
    """Run ``command``; wall seconds, peak tree RSS overall and over the first 10 %."""
    samples: list[tuple[float, int]] = []
    started = time.perf_counter()
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "COLUMNS": "200"}
    with open(log, "w") as output:
        process = subprocess.Popen(
            command, cwd=PROJECT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
        watcher = psutil.Process(process.pid)
        while process.poll() is None:
            samples.append((time.perf_counter() - started, tree_rss(watcher)))
            time.sleep(0.2)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed (exit {process.returncode}); see {log}")
    early = [rss for t, rss in samples if t <= wall / 10] or [0]
    return {
        "wall": wall,
        "peak": max(rss for _, rss in samples),
        "peak_first_tenth": max(early),
        "samples": len(samples),
    }


def run(images: int, workers: list[int], model_version: str) -> dict:
    results = {}
    with tempfile.TemporaryDirectory(dir=PROJECT / "data" / "07_model_output") as scratch:
        folder = Path(scratch) / "input"
        size = make_folder(folder, images)
        for count in workers:
            out = Path(scratch) / f"out{count}"
            params = (
                f"inference_input={folder},inference_output={out},"
                f"parallel.backend=dask,parallel.dask.n_workers={count}"
            )
            command = [sys.executable, "-m", "kedro", "run", "--pipeline", "inference"]
            command += ["--load-versions", f"trained_model:{model_version}", "--params", params]
            result = measure(command, PROJECT / f"benchmark_inference_scale_{count}.log")
            (written,) = out.iterdir()
            labels = sum(1 for _ in (written / "labels").rglob("*.tif"))
            results[str(count)] = {**result, "images": labels, "input_bytes": size}
            print(count, result, flush=True)
            shutil.rmtree(out)
    return results


def report(data: dict) -> str:
    rows = [
        "| Dask workers | images | wall | images/s | peak memory (first 10 %) | peak memory |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for count, r in sorted(data["runs"].items(), key=lambda kv: int(kv[0])):
        speed = r["images"] / r["wall"]
        rows.append(
            f"| {count} | {r['images']:,} | {r['wall'] / 60:.1f} min | {speed:.2f} "
            f"| {r['peak_first_tenth'] / 2**30:.2f} GiB | {r['peak'] / 2**30:.2f} GiB |"
        )
    return "\n".join(
        [
            f"Command: `python benchmarks/bench_inference_scale.py --images {data['images']} "
            f"--workers {' '.join(sorted(data['runs'], key=int))}`: `kedro run --pipeline "
            "inference` on a folder of copies of the embedded sample's 30 images (256x256 to "
            "1024x1024 px), `parallel.backend=dask` with a LocalCluster of single-threaded "
            f"workers, model `{data['model_version']}` pinned; {data['machine']}. Memory: the "
            "whole process tree (scheduler and workers included), sampled every 0.2 s; the "
            "first tenth of the run against all of it shows whether it stays flat while the "
            "images stream through (every image's masks, label map and overlay are written as "
            "it is segmented, only one window of images is in flight).",
            "",
            *rows,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model-version", help="trained_model version (default: latest)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if args.report_only:
        data = json.loads(RESULTS.read_text())
    else:
        version = (
            args.model_version
            or latest_version(
                PROJECT / "data" / "06_models",
                "attention_unet.keras",
                "train a model first (kedro run --pipeline training)",
            ).parent.name
        )
        data = {
            "images": args.images,
            "model_version": version,
            "machine": f"{psutil.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.machine()}",
            "runs": run(args.images, args.workers, version),
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(data, indent=1))
    print(write_section("inference_scale", "Inference at scale (Dask)", report(data)))


if __name__ == "__main__":
    main()
