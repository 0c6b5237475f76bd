"""Progress of long per-item work: counts, elapsed time and an ETA.

In a terminal, a rich progress bar (rich ships with Kedro); elsewhere (CI, ``nohup``, a log
file) a plain log line every ``every_seconds`` seconds or ``every_percent`` percent of the
items, whichever comes first, so a long stage is never silent between its first and last
line. The intervals are the ``progress`` parameter group (``conf/base/parameters.yml``),
applied once per run by :class:`nucleus_segmentation.hooks.ProgressHooks`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from nucleus_segmentation.errors import ParameterError

T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressSettings:
    """every_seconds: longest silence between log lines (non-terminal output);
    every_percent: a line at least at every such step of the items; bar: ``auto`` (a
    progress bar when stderr is a terminal) | ``always`` | ``never``."""

    every_seconds: float = 30.0
    every_percent: float = 10.0
    bar: str = "auto"

    def __post_init__(self):
        if not self.every_seconds > 0 or not 0 < self.every_percent <= 100:
            raise ParameterError(
                "params:progress: every_seconds must be positive and every_percent in (0, 100], "
                f"got {self.every_seconds} and {self.every_percent}"
            )
        if self.bar not in ("auto", "always", "never"):
            raise ParameterError(f"params:progress: bar must be auto | always | never, {self.bar}")


_settings = ProgressSettings()


def configure(settings: ProgressSettings) -> None:
    """Set the intervals for this process (once per run, from ``params:progress``)."""
    global _settings
    _settings = settings


def format_duration(seconds: float) -> str:
    """``3m12s`` (``1h02m03s`` from an hour)."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class ProgressLog:
    """Decides when to write a progress line and writes it: ``update(done)`` after each item.

    The line reads ``<description>: 120/470 (26 %), elapsed 3m12s, ETA 8m53s`` (the ETA
    assumes the remaining items take as long as the done ones did on average).
    """

    def __init__(
        self,
        description: str,
        total: int,
        settings: ProgressSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[str], None] | None = None,
    ):
        self.description, self.total = description, max(0, int(total))
        self.settings = settings or _settings
        self.clock, self.write = clock, write or logger.info
        self.started = self.last_time = clock()
        self.last_done = 0

    def line(self, done: int, extra: str = "") -> str:
        elapsed = self.clock() - self.started
        percent = 100.0 * done / self.total if self.total else 100.0
        eta = elapsed / done * (self.total - done) if done else float("nan")
        text = f"{self.description}: {done}/{self.total} ({percent:.0f} %)"
        text += f", elapsed {format_duration(elapsed)}"
        if done < self.total and done:
            text += f", ETA {format_duration(eta)}"
        return text + (f", {extra}" if extra else "")

    def update(self, done: int, extra: str = "") -> bool:
        """Write a line if the interval in time or in items has passed (or all are done);
        returns whether it wrote one."""
        now = self.clock()
        step = self.settings.every_percent / 100.0 * self.total
        due = (
            done >= self.total
            or now - self.last_time >= self.settings.every_seconds
            or done - self.last_done >= max(1.0, step)
        )
        if not due or done == self.last_done:
            return False
        self.write(self.line(done, extra))
        self.last_time, self.last_done = now, done
        return True


def _bar_wanted(settings: ProgressSettings) -> bool:
    if settings.bar == "auto":
        return sys.stderr.isatty()
    return settings.bar == "always"


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Yield ``items`` unchanged while showing their progress (a bar in a terminal, log lines
    elsewhere). ``total`` defaults to ``len(items)``."""
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    settings = _settings
    if _bar_wanted(settings):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task(description, total=total)
            for item in items:
                yield item
                bar.advance(task)
        logger.info("%s: %d done", description, total)
        return
    log = ProgressLog(description, total, settings)
    for done, item in enumerate(items, start=1):
        yield item
        log.update(done)
