"""Shared by the benchmark scripts: run a command while sampling its memory, and write a
marked section of docs/benchmarks.md."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
from kedro.config import OmegaConfigLoader

PROJECT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = PROJECT / "docs" / "benchmarks.md"
# The summary scores the split and scale-policy tables show: column -> header.
SCORES = {
    "miou_pooled": "MIoU",
    "nucleus_iou_pooled": "nucleus IoU",
    "dsb_score": "DSB score",
    "precision": "P @ 0.5",
    "recall": "R @ 0.5",
    "f1": "F1 @ 0.5",
    "area_error": "area error",
}


def bf16_instructions() -> str:
    """The CPU's bfloat16 instructions, as the tables' machine line names them: bfloat16 pays
    on CPUs with AMX and loses without it (docs/running.md, "Precision")."""
    from nucleus_segmentation.hardware import cpu_flags

    shown = cpu_flags() & {"amx_bf16", "amx_tile", "avx512_bf16"}
    return ", ".join(sorted(shown)) or "none"


VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def vector_instructions() -> str:
    """The CPU's vector instructions that set its speed, as the machine lines name them (a
    2-core AVX2 CPU trains about 2.5x slower than one with AVX-512)."""
    from nucleus_segmentation.hardware import cpu_flags

    flags = cpu_flags()
    shown = [flag for flag in VECTOR_FLAGS if flag in flags]
    return ", ".join(shown) or "none of " + ", ".join(VECTOR_FLAGS)


def cell(name: str, value: float) -> str:
    """One score as a table shows it: pixel scores in %, area error as a signed %; ``-``
    where there is nothing to score (no nucleus matched)."""
    if value != value:  # NaN
        return "-"
    if name == "area_error":
        return f"{100 * value:+.1f} %"
    if name in ("dsb_score", "precision", "recall", "f1"):
        return f"{value:.3f}"
    return f"{100 * value:.1f}"


def tree_rss(process: psutil.Process) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def run_measured(command: list[str], cwd: Path, env: dict, log_path: Path) -> dict:
    """Run ``command``, log to ``log_path``; wall seconds, peak tree RSS, exit code, log text."""
    started = time.perf_counter()
    peak = 0
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        watcher = psutil.Process(process.pid)
        while process.poll() is None:
            peak = max(peak, tree_rss(watcher))
            time.sleep(0.1)
    return {
        "wall": time.perf_counter() - started,
        "peak": peak,
        "returncode": process.returncode,
        "log": log_path.read_text(),
    }


def kedro_environment(base: dict, extra: dict | None = None) -> dict:
    """``base`` with telemetry off and wide log lines (one line per progress or node time,
    which the scripts parse), then ``extra``."""
    quiet = {"KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "COLUMNS": "200"}
    return {**base, **quiet, **(extra or {})}


def kedro_run(
    pipeline: str, *args: str, log_path: Path, cwd: Path = PROJECT, env: dict | None = None
) -> dict:
    """``python -m kedro run --pipeline <pipeline> <args>`` under :func:`run_measured`, with
    telemetry off and wide log lines (one line per node time, which the scripts parse); ends
    the script with the log's tail when the run fails."""
    command = [sys.executable, "-m", "kedro", "run", "--pipeline", pipeline, *args]
    result = run_measured(command, cwd, kedro_environment(os.environ, env), log_path)
    if result["returncode"] != 0:
        sys.exit(
            f"{' '.join(command)} failed (exit {result['returncode']}):\n{result['log'][-3000:]}"
        )
    return result


def _config(env: str) -> OmegaConfigLoader:
    """The configuration a ``kedro run --env <env>`` reads (the project's merge settings)."""
    from nucleus_segmentation.settings import CONFIG_LOADER_ARGS

    return OmegaConfigLoader(
        str(PROJECT / "conf"), **{**CONFIG_LOADER_ARGS, "default_run_env": env}
    )


@functools.cache  # read once per environment, however many reports a script opens
def reports_folder(env: str) -> Path:
    """Where an environment's reports go: its ``reports`` global (conf/<env>/globals.yml,
    else conf/base's), so a benchmark reads the folder the run wrote to."""
    return PROJECT / _config(env)["globals"]["reports"]


def catalog_filepath(env: str, name: str) -> Path:
    """Where a catalog entry of ``env`` lives (its globals resolved: model and separation
    names differ between environments)."""
    return PROJECT / _config(env)["catalog"][name]["filepath"]


def parameters(env: str) -> dict:
    """An environment's parameters as its runs see them (conf/base overlaid by conf/<env>)."""
    return _config(env)["parameters"]


def latest_version(folder: Path, name: str, hint: str) -> Path:
    """The newest version ``folder/name/<version>/name`` of a versioned file; ends the script
    naming the folder and ``hint`` (what to run first) when there is none."""
    versions = sorted((folder / name).glob(f"*/{name}"))
    if not versions:
        sys.exit(f"{folder / name}: no version yet; {hint}")
    return versions[-1]


def pooled_search(search):
    """The rows of an evaluation's ``separation_search.csv`` for the search on every
    validation image (evaluation also searches each modality, rows marked by ``modality``),
    best first, without that column."""
    if "modality" not in search.columns:
        return search
    return search[search["modality"] == "all"].drop(columns="modality").reset_index(drop=True)


def pooled_separation(search) -> tuple[float, dict]:
    """(validation DSB score, settings) of the best setting of the pooled search; the
    settings per modality are in that evaluation's ``instance_postprocessing.json``."""
    best = pooled_search(search).iloc[0]
    return float(best["validation_dsb_score"]), best.drop(
        ["validation_dsb_score", "images"]
    ).to_dict()


def write_section(name: str, title: str, body: str, output: Path = BENCHMARKS_MD) -> str:
    """Replace (or append) the ``<!-- name:begin -->`` .. ``end`` section; returns it."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    section = f"{begin}\n{body.strip()}\n{end}"
    text = output.read_text() if output.exists() else "# Benchmarks\n"
    if begin in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n{section}\n"
    output.write_text(text)
    return section
