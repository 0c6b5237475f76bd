"""Training to the time budget: the learning-rate decay fitted to it, or over all epochs.

Where the budget cuts training short, the same budgeted training run twice, with
`training.fit_schedule_to_budget` off (Keras' PolynomialDecay over all `training.epochs`,
stopped by the budget wherever it runs out) and on (the decay reaches 0 at the end of the
epochs that fit), same seed, data and environment; each run's per-epoch validation (the
segmentation path on the whole validation images, default separation) as its checkpoint
history records it.

    python benchmarks/bench_budget_schedule.py --env no_aspp_seed43     # two trainings
    python benchmarks/bench_budget_schedule.py --report-only \\
        --off data/06_models/checkpoints/<run>/state.json:1 --on <dir>/state.json
        # tabulate existing checkpoint histories; `:N` keeps the first N epochs (a run of
        # more epochs, whose first N are what the budget-stopped run with the decay off
        # trains: the budget does not change the rates before it stops a run)

Expects `kedro run --env <env> --pipeline data_processing` to have run. Writes the "budget"
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime
from pathlib import Path

from _common import PROJECT, kedro_run, vector_instructions, write_section

COLUMNS = (
    ("val_miou_pooled", "MIoU", 100),
    ("val_nucleus_iou_pooled", "nucleus IoU", 100),
    ("val_dsb_score", "DSB score", 1),
    ("val_loss", "validation loss", 1),
)


def checkpoint_dir(env: str, fitted: bool) -> Path:
    return (
        PROJECT / "data" / "06_models" / "checkpoints" / f"budget_{env}_{'on' if fitted else 'off'}"
    )


def train(env: str, minutes: float, fitted: bool) -> dict:
    directory = checkpoint_dir(env, fitted)
    params = (
        f"training.fit_schedule_to_budget={str(fitted).lower()},"
        f"training.max_minutes={minutes},training.checkpoint_dir={directory.relative_to(PROJECT)}"
    )
    log = PROJECT / f"benchmark_budget_{env}_{'on' if fitted else 'off'}.log"
    result = kedro_run("training", "--env", env, "--params", params, log_path=log)
    return {"state": directory / "state.json", "minutes": result["wall"] / 60}


def history(spec: str) -> tuple[str, list[dict]]:
    """``path[:N]`` -> (path, the first N epochs of its checkpoint history, or all)."""
    path, _, keep = spec.partition(":")
    epochs = json.loads(Path(path).read_text())["history"]
    return path, epochs[: int(keep)] if keep else epochs


def table(runs: dict[str, tuple[list[dict], float | None]]) -> str:
    head = "| learning-rate decay | epochs run | minutes | " + " | ".join(
        f"{label}, epoch by epoch" for _, label, _ in COLUMNS
    )
    lines = [head + " |", "|---|---:|---:|" + "---|" * len(COLUMNS)]
    for name, (epochs, minutes) in runs.items():
        cells = [
            " / ".join(
                f"{row[key] * scale:.3f}" if scale == 1 else f"{row[key] * scale:.1f}"
                for row in epochs
            )
            for key, _, scale in COLUMNS
        ]
        spent = "-" if minutes is None else f"{minutes:.1f}"
        lines.append(f"| {name} | {len(epochs)} | {spent} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="local")
    parser.add_argument("--minutes", type=float, default=55.0, help="training.max_minutes")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--off", help="state.json[:N] of the run with the decay over all epochs")
    parser.add_argument("--on", help="state.json[:N] of the run with the decay fitted")
    args = parser.parse_args()
    minutes: dict[str, float | None] = {"off": None, "on": None}
    if args.report_only:
        if not (args.off and args.on):
            parser.error("--report-only needs --off and --on")
        specs = {"off": args.off, "on": args.on}
        command = (
            f"python benchmarks/bench_budget_schedule.py --env {args.env} --minutes "
            f"{args.minutes:g} --report-only --off {args.off} --on {args.on}"
        )
    else:
        specs = {}
        for name, fitted in (("off", False), ("on", True)):
            run = train(args.env, args.minutes, fitted)
            specs[name] = str(run["state"].relative_to(PROJECT))
            minutes[name] = run["minutes"]
        command = (
            f"python benchmarks/bench_budget_schedule.py --env {args.env} --minutes "
            f"{args.minutes:g}"
        )
    histories = {name: history(spec) for name, spec in specs.items()}
    runs = {
        "over all `training.epochs`, cut by the budget (`fit_schedule_to_budget: false`)": (
            histories["off"][1],
            minutes["off"],
        ),
        "to 0 over the epochs that fit (`fit_schedule_to_budget: true`)": (
            histories["on"][1],
            minutes["on"],
        ),
    }
    body = (
        f"Command: `{command}` (environment `{args.env}`, `training.max_minutes={args.minutes:g}`"
        f"). Machine: {os.cpu_count()} cores, {platform.machine()}, vector instructions: "
        f"{vector_instructions()}; {datetime.now():%Y-%m-%d}. Validation split (grouped by "
        "acquisition), whole images through the segmentation path, default separation, scores "
        "after each epoch (MIoU and nucleus IoU pooled, in %; DSB score 0..1); checkpoint "
        f"histories: off `{histories['off'][0]}`, on `{histories['on'][0]}`.\n\n" + table(runs)
    )
    print(write_section("budget", "Training to the time budget", body))


if __name__ == "__main__":
    main()
