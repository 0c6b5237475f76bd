"""Per-image work spread over processes (the machine's cores), with in-process fallback."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from nucleus_segmentation.progress import track

T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """Cores this process may run on (respects CPU affinity and container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def resolve_workers(n_workers: int | str | None) -> int:
    """``"auto"``/``None``/``0`` -> all available cores; otherwise the positive integer given."""
    if n_workers in (None, "auto", 0):
        return available_cores()
    count = int(n_workers)
    if count < 1:
        raise ValueError(f"n_workers must be 'auto' or a positive integer, got {n_workers!r}")
    return count


def parallel_map(
    function: Callable[[T], R],
    items: Iterable[T],
    n_workers: int | str | None,
    chunksize: int = 4,
    progress: str | None = None,
) -> Iterator[R]:
    """``map(function, items)`` over ``n_workers`` processes, results in input order.

    Workers are spawned, not forked: the parent may already hold TensorFlow or MLflow threads,
    which do not survive a fork. ``function`` must be a picklable module-level callable (or a
    ``functools.partial`` of one). With one worker everything runs in this process.
    ``progress`` names the work in progress lines (:func:`nucleus_segmentation.progress.track`).
    """
    workers = resolve_workers(n_workers)
    items = list(items)
    if workers == 1 or len(items) <= 1:
        results: Iterator[R] = map(function, items)
        yield from track(results, progress, len(items)) if progress else results
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=context) as pool:
        results = pool.map(function, items, chunksize=max(1, chunksize))
        yield from track(results, progress, len(items)) if progress else results
