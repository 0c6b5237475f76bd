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
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

PROJECT = Path(__file__).resolve().parents[1]
NODE_TIME = re.compile(r"Node '(\w+)' took ([\d.]+) s")
BEGIN, END = "<!-- data_processing:begin -->", "<!-- data_processing:end -->"


def tree_rss(process: psutil.Process) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run(raw_data: str, copies: int, workdir: Path) -> dict:
    shutil.copytree(PROJECT / "conf", workdir / "conf", ignore=shutil.ignore_patterns("local"))
    (workdir / "conf" / "local").mkdir()
    (workdir / "src").mkdir()  # the package itself is imported from the installed project
    shutil.copy(PROJECT / "pyproject.toml", workdir / "pyproject.toml")
    shutil.copy(PROJECT / ".telemetry", workdir / ".telemetry")
    raw = str(Path(raw_data).resolve())
    command = [
        sys.executable, "-m", "kedro", "run", "--pipeline", "data_processing",
        "--params", f"raw_data={raw},augmentation.copies_per_image={copies}",
    ]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "COLUMNS": "200",
           "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    log_path = workdir / "run.log"
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
        watcher = psutil.Process(process.pid)
        peak = 0
        while process.poll() is None:
            peak = max(peak, tree_rss(watcher))
            time.sleep(0.1)
    wall = time.perf_counter() - started
    text = log_path.read_text()
    if process.returncode != 0:
        sys.exit(f"kedro run failed (exit {process.returncode}):\n{text[-3000:]}")
    nodes = {name: float(seconds) for name, seconds in NODE_TIME.findall(text)}
    counts = re.search(r"Split: (\{.*?\})", text)
    return {"wall": wall, "peak": peak, "nodes": nodes, "split": counts.group(1) if counts else "",
            "command": " ".join(["kedro run --pipeline data_processing --params",
                                 f"raw_data={raw_data},augmentation.copies_per_image={copies}"])}


def report(result: dict, args: argparse.Namespace) -> str:
    nodes = result["nodes"]
    ingest_pre = sum(nodes.get(n, 0.0) for n in ("ingest_dsb_images", "preprocess_images"))
    lines = [
        BEGIN,
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
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-data", default="../shared/dsb2018/stage1_train.zip")
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--output", default=str(PROJECT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.raw_data, args.copies, Path(tmp))
    section = report(result, args)
    print(section)
    output = Path(args.output)
    text = output.read_text() if output.exists() else "# Benchmarks\n"
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n## Data stages (`data_processing`)\n\n" + section + "\n"
    output.write_text(text)


if __name__ == "__main__":
    main()
