"""The training pipeline's step under the process's malloc choices: glibc as the package sets
it (keeping freed memory), glibc's defaults, and TCMalloc or jemalloc preloaded.

    python benchmarks/bench_malloc.py     # writes the "malloc" section of docs/benchmarks.md

Each variant is a real `kedro run --pipeline training` on the ingested full data (run
`data_processing` on stage1_train first), one fresh process, the variants in turn
(``--rounds`` times, alternating order), all with TensorFlow's BFC allocator (the project
default; `bench_allocator.py` measures that one). The process's CPU time in user and kernel
mode and its page faults are read from ``/proc/<pid>/stat`` when the progress line reports
step ``--from`` and again at step ``--to``; the run is then stopped, before it saves a model.
MLflow writes to a temporary store and checkpoints to a temporary folder; versions the run
wrote under ``data/`` (the class weights) are removed: run no other `kedro run` in this
checkout meanwhile. Linux only. Preloaded allocators are
the system's (`apt install libtcmalloc-minimal4 libjemalloc2` on Debian); one that is not
installed is left out of the table.
"""

from __future__ import annotations

import argparse
import ctypes.util
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import PROJECT, kedro_environment, vector_instructions, write_section

TICKS = os.sysconf("SC_CLK_TCK")
PROGRESS = re.compile(r"training steps: (\d+)/")
# Set by each variant alone: a value in the caller's environment would change the baseline.
ALLOCATOR_VARIABLES = ("NUCLEUS_SEGMENTATION_MALLOPT", "LD_PRELOAD", "TF_CPU_ALLOCATOR_USE_BFC")


def preloadable(*names: str) -> str | None:
    """The first of ``names`` the dynamic linker finds (a soname LD_PRELOAD accepts)."""
    return next(filter(None, map(ctypes.util.find_library, names)), None)


def variants() -> dict[str, dict[str, str]]:
    found = {
        "glibc, keeping freed memory (project default)": {},
        "glibc defaults (`NUCLEUS_SEGMENTATION_MALLOPT=0`)": {"NUCLEUS_SEGMENTATION_MALLOPT": "0"},
    }
    for name, libraries in (
        ("TCMalloc", ("tcmalloc_minimal", "tcmalloc")),
        ("jemalloc", ("jemalloc",)),
    ):
        library = preloadable(*libraries)
        if library:
            found[f"{name} (`LD_PRELOAD={library}`)"] = {"LD_PRELOAD": library}
    return found


def proc_counters(pid: int) -> tuple[float, float, int]:
    """(user s, kernel s, minor page faults) of one process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS, int(fields[7])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_for_step(process: subprocess.Popen, log: Path, step: int) -> int:
    """Poll the run's log until its progress line reports ``step`` or later; that step."""
    while process.poll() is None:
        reached = [int(m) for m in PROGRESS.findall(log.read_text(errors="replace"))]
        if reached and reached[-1] >= step:
            return reached[-1]
        time.sleep(0.2)
    sys.exit(
        f"the training run ended before step {step} (exit {process.returncode}):\n"
        f"{log.read_text(errors='replace')[-3000:]}"
    )


def data_versions() -> set[Path]:
    return {p for p in (PROJECT / "data").glob("*/*/*") if p.is_dir()}


def measure(env: dict[str, str], first: int, last: int, steps: int) -> dict:
    before = data_versions()
    with tempfile.TemporaryDirectory(prefix="bench_malloc_") as scratch:
        log = Path(scratch) / "run.log"
        params = (
            f"raw_data=../shared/dsb2018/stage1_train.zip,training.steps_per_epoch={steps},"
            "training.epochs=1,training.max_minutes=null,training.resume=false,"
            f"training.checkpoint_dir={scratch}/checkpoints"
        )
        inherited = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARIABLES}
        environment = kedro_environment(
            inherited, {"MLFLOW_TRACKING_URI": f"sqlite:///{scratch}/mlflow.db", **env}
        )
        command = [sys.executable, "-m", "kedro", "run", "--pipeline", "training"]
        with open(log, "w") as out:
            process = subprocess.Popen(
                [*command, "--params", params],
                cwd=PROJECT,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            step0 = wait_for_step(process, log, first)
            user0, kernel0, faults0 = proc_counters(process.pid)
            clock0 = time.perf_counter()
            step1 = wait_for_step(process, log, last)
            user1, kernel1, faults1 = proc_counters(process.pid)
            clock1 = time.perf_counter()
            peak = peak_rss_mb(process.pid)
            preloaded = env.get("LD_PRELOAD")
            maps = Path(f"/proc/{process.pid}/maps").read_text()
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for version in data_versions() - before:  # the stopped run's, not a result
                shutil.rmtree(version)
    if preloaded and preloaded not in maps:
        sys.exit(f"LD_PRELOAD={preloaded} was not loaded into the training process")
    done = step1 - step0
    cpu = (user1 - user0) + (kernel1 - kernel0)
    return {
        "step_seconds": (clock1 - clock0) / done,
        "kernel_share": (kernel1 - kernel0) / cpu,
        "faults_per_step": (faults1 - faults0) / done,
        "cpu_per_step": cpu / done,
        "steps": f"{step0} to {step1}",
        "peak_mb": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="steps of the run's one epoch")
    parser.add_argument("--from", dest="first", type=int, default=8, help="first step timed")
    parser.add_argument("--to", dest="last", type=int, default=28, help="last step timed")
    parser.add_argument("--rounds", type=int, default=1, help="runs per variant")
    parser.add_argument("--no-write", action="store_true", help="print, leave docs alone")
    args = parser.parse_args()
    if not 0 < args.first < args.last <= args.steps:
        sys.exit("needs 0 < --from < --to <= --steps")
    if not sys.platform.startswith("linux"):
        sys.exit("reads /proc: Linux only")
    start = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    chosen = variants()
    results: dict[str, list[dict]] = {name: [] for name in chosen}
    for round_index in range(args.rounds):
        order = list(chosen) if round_index % 2 == 0 else list(chosen)[::-1]
        for name in order:
            result = measure(chosen[name], args.first, args.last, args.steps)
            results[name].append(result)
            print(
                f"round {round_index + 1}, {name}: {result['step_seconds']:.2f} s per step",
                flush=True,
            )
    end = time.strftime("%H:%M", time.gmtime())
    reference = None
    rows = []
    for name, runs in results.items():
        seconds = sum(r["step_seconds"] for r in runs) / len(runs)
        reference = reference or seconds
        rows.append(
            f"| {name} | "
            + " / ".join(f"{r['step_seconds']:.2f}" for r in runs)
            + f" | {reference / seconds:.2f}x | "
            + f"{100 * sum(r['kernel_share'] for r in runs) / len(runs):.0f} % | "
            + f"{sum(r['faults_per_step'] for r in runs) / len(runs) / 1000:.0f} k | "
            + f"{sum(r['cpu_per_step'] for r in runs) / len(runs):.2f} | "
            + f"{max(r['peak_mb'] for r in runs):.0f} |"
        )
    body = "\n".join(
        [
            f"Command: `python benchmarks/bench_malloc.py --steps {args.steps} --from "
            f"{args.first} --to {args.last} --rounds {args.rounds}`. Machine: "
            f"{os.cpu_count()} cores, {platform.processor() or platform.machine()} "
            f"({vector_instructions()}), {platform.libc_ver()[0]} "
            f"{platform.libc_ver()[1]}; {start} to {end} UTC. `kedro run --pipeline "
            "training` on the full stage1_train, CPU default recipe, float32, TensorFlow's "
            f"BFC allocator; steps from the first progress line at or after step {args.first} "
            f"to the first at or after step {args.last} (wall clock, "
            "and the process's CPU time and page faults from `/proc/<pid>/stat`); one fresh "
            "run per variant and round, stopped there.",
            "",
            "| malloc | seconds per step, by round | speed | kernel share of CPU time | "
            f"page faults per step | CPU seconds per step ({os.cpu_count()} cores) | "
            "peak memory, MB |",
            "|---|---|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    if args.no_write:
        print(body)
    else:
        print(write_section("malloc", "Memory allocator: the pipeline's step", body))


if __name__ == "__main__":
    main()
