"""Benchmark of the data stages on the full DSB stage1_train.

    python benchmarks/bench_data_processing.py --raw-data ../shared/dsb2018/stage1_train.zip

Runs ``kedro run --pipeline data_processing`` as a user would, in a throw-away copy of the
project's conf/ (so the project's data/ and mlflow.db are untouched), samples the memory of
the whole process tree (workers included) every 0.1 s, reads each node's time from the
project's ``Node '<name>' took`` log lines, and writes the figures into docs/benchmarks.md
between the ``data_processing`` markers.
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import tempfile
from pathlib import Path

import psutil
from _common import PROJECT, kedro_run, write_section

NODE_TIME = re.compile(r"Node '(\w+)' took ([\d.]+) s")


def run(raw_data: str, copies: int, workdir: Path) -> dict:
    shutil.copytree(PROJECT / "conf", workdir / "conf", ignore=shutil.ignore_patterns("local"))
    (workdir / "conf" / "local").mkdir()
    (workdir / "src").mkdir()  # the package itself is imported from the installed project
    shutil.copy(PROJECT / "pyproject.toml", workdir / "pyproject.toml")
    shutil.copy(PROJECT / ".telemetry", workdir / ".telemetry")
    raw = str(Path(raw_data).resolve())
    result = kedro_run(
        "data_processing",
        "--params",
        f"raw_data={raw},augmentation.copies_per_image={copies}",
        log_path=workdir / "run.log",
        cwd=workdir,
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"},
    )
    text, wall, peak = result["log"], result["wall"], result["peak"]
    nodes = {name: float(seconds) for name, seconds in NODE_TIME.findall(text)}
    counts = re.search(r"Split by acquisition: (\d+ groups); images (\{.*?\})", text)
    return {
        "wall": wall,
        "peak": peak,
        "nodes": nodes,
        "split": f"{counts.group(2)} in {counts.group(1)}" if counts else "(not logged)",
        "command": " ".join(
            [
                "kedro run --pipeline data_processing --params",
                f"raw_data={raw_data},augmentation.copies_per_image={copies}",
            ]
        ),
    }


def report(result: dict, args: argparse.Namespace) -> str:
    nodes = result["nodes"]
    ingest_pre = sum(nodes.get(n, 0.0) for n in ("ingest_dsb_images", "preprocess_images"))
    lines = [
        f"Command: `python benchmarks/bench_data_processing.py --raw-data {args.raw_data}"
        f" --copies {args.copies}`, which runs `{result['command']}`.",
        "",
        f"Machine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB,"
        f" {platform.processor() or platform.machine()}, Python {platform.python_version()}.",
        f"Split: {result['split']}.",
        "",
        "| node | seconds |",
        "|---|---|",
        *[f"| `{name}` | {seconds:.2f} |" for name, seconds in nodes.items()],
        "",
        "| figure | measured | target |",
        "|---|---|---|",
        f"| ingestion + preprocessing node time | {ingest_pre:.1f} s | < 30 s |",
        f"| whole `kedro run` wall time (start-up, loads and saves included) |"
        f" {result['wall']:.1f} s | < 240 s |",
        f"| peak memory, process tree (workers included) | {result['peak'] / 2**30:.2f} GiB |"
        " < 4 GiB |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-data", default="../shared/dsb2018/stage1_train.zip")
    parser.add_argument("--copies", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.raw_data, args.copies, Path(tmp))
    print(write_section("data_processing", "Data stages (`data_processing`)", report(result, args)))


if __name__ == "__main__":
    main()
