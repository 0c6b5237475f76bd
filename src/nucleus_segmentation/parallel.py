"""Per-image work spread over this machine's processes, or over a Dask cluster.

Every per-image stage (ingestion, augmentation, separation tuning, inference) calls
:func:`parallel_map`. Where its work runs is the ``parallel`` parameter group, applied once
per run by :class:`nucleus_segmentation.hooks.ParallelHooks`:

- ``backend: processes`` (default): the stage's own ``n_workers`` spawned processes on this
  machine (one means in this process);
- ``backend: dask``: the workers of a ``dask.distributed`` cluster, either a running
  scheduler (``dask.scheduler``: ``tcp://host:8786``, e.g. one started by dask-jobqueue on
  SLURM or by the Dask Kubernetes operator) or a ``LocalCluster`` of ``dask.n_workers``
  processes on this machine, started for the run and closed after it.

Results come back in input order whatever the backend, and the work is deterministic per
item, so the outputs are byte-identical to a single-process run. Items are submitted a
bounded window ahead of the results consumed, so a folder of any size streams through with
flat memory.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from nucleus_segmentation.errors import ParameterError, refuse_unknown_keys
from nucleus_segmentation.progress import track

T = TypeVar("T")
R = TypeVar("R")
logger = logging.getLogger(__name__)
BACKENDS = ("processes", "dask")


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


@dataclass(frozen=True)
class ParallelSettings:
    """backend: processes | dask; scheduler: a Dask scheduler address, or None for a
    LocalCluster of ``n_workers`` single-threaded worker processes (``auto``: all cores)."""

    backend: str = "processes"
    scheduler: str | None = None
    n_workers: int | str = "auto"

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ParameterError(
                f"params:parallel: backend must be one of {BACKENDS}, got {self.backend!r}"
            )
        resolve_workers(self.n_workers)

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> ParallelSettings:
        params = dict(params or {})
        dask = dict(params.pop("dask", None) or {})
        refuse_unknown_keys(params, ["backend"], "params:parallel")
        refuse_unknown_keys(dask, ["scheduler", "n_workers"], "params:parallel.dask")
        return cls(
            backend=str(params.get("backend", "processes")),
            scheduler=dask.get("scheduler"),
            n_workers=dask.get("n_workers", "auto"),
        )


class _Dask:
    """The run's Dask client (and the LocalCluster it started, if any), opened on first use."""

    def __init__(self, settings: ParallelSettings):
        self.settings = settings
        self.client = None
        self.cluster = None

    def get(self):
        if self.client is None:
            from dask.distributed import Client, LocalCluster

            if self.settings.scheduler:
                self.client = Client(self.settings.scheduler)
            else:
                self.cluster = LocalCluster(
                    n_workers=resolve_workers(self.settings.n_workers),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
                self.client = Client(self.cluster)
            logger.info("Per-image work on Dask: %s", self.client)
        return self.client

    def workers(self) -> int:
        return max(1, len(self.get().scheduler_info(n_workers=-1)["workers"]))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None


_dask: _Dask | None = None


def configure(settings: ParallelSettings) -> None:
    """Use ``settings`` for this process's per-image work (once per run)."""
    global _dask
    shutdown()
    _dask = _Dask(settings) if settings.backend == "dask" else None


def shutdown() -> None:
    """Close the run's Dask client and the LocalCluster it started (at the end of a run)."""
    if _dask is not None:
        _dask.close()


def runs_in_process(n_workers: int | str | None, count: int) -> bool:
    """Whether :func:`parallel_map` with these workers runs ``count`` items in this process
    (so a function may hold objects that cannot travel, like a loaded model)."""
    return _dask is None and (resolve_workers(n_workers) == 1 or count <= 1)


def threads_per_worker(n_workers: int | str | None) -> int | None:
    """The cores each worker may use so that the workers share this machine's cores without
    oversubscribing them; None for the workers of a remote Dask scheduler (their machines)."""
    if _dask is not None:
        if _dask.settings.scheduler:
            return None
        return max(1, available_cores() // resolve_workers(_dask.settings.n_workers))
    return max(1, available_cores() // resolve_workers(n_workers))


def parallel_map(
    function: Callable[[T], R],
    items: Iterable[T],
    n_workers: int | str | None,
    chunksize: int = 4,
    progress: str | None = None,
    total: int | None = None,
) -> Iterator[R]:
    """``map(function, items)`` over worker processes or the Dask cluster, in input order.

    Local workers are spawned, not forked: the parent may already hold TensorFlow or MLflow
    threads, which do not survive a fork. ``function`` must be a picklable module-level
    callable (or a ``functools.partial`` of one). With one local worker everything runs in
    this process. ``items`` may be a lazy iterable (give ``total`` for progress); at most
    ``chunksize`` x 2 x workers items are in flight. ``progress`` names the work in progress
    lines (:func:`nucleus_segmentation.progress.track`).
    """
    if total is None:
        items = list(items)
        total = len(items)
    if _dask is not None:
        client = _dask.get()
        submit = functools.partial(client.submit, pure=False)
        results = _windowed(submit, function, items, 2 * _dask.workers(), max(1, chunksize))
    else:
        workers = resolve_workers(n_workers)
        if workers == 1 or total <= 1:
            results = map(function, items)
        else:
            results = _pool_map(function, items, min(workers, total), max(1, chunksize))
    yield from track(results, progress, total) if progress else results


def _pool_map(function, items, workers: int, chunksize: int) -> Iterator:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from _windowed(pool.submit, function, items, 2 * workers, chunksize)


def _apply(function: Callable[[T], R], chunk: list[T]) -> list[R]:
    """One task: ``function`` over a chunk of items (runs in a worker)."""
    return [function(item) for item in chunk]


def _windowed(
    submit: Callable[..., Any],
    function: Callable[[T], R],
    items: Iterable[T],
    window: int,
    chunksize: int,
) -> Iterator[R]:
    """``submit(task, chunk)`` (an executor's or a Dask client's) for every ``chunksize`` items,
    keeping at most ``window`` tasks pending; yield the results one item at a time, in input
    order.

    One task per chunk, not per item: ``function`` (often a partial carrying the raw data's
    index) is pickled and set up once per chunk; per item it cost ingestion 4x its time.
    """
    task = functools.partial(_apply, function)
    pending: collections.deque = collections.deque()
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, chunksize)):
        pending.append(submit(task, chunk))
        if len(pending) >= window:
            yield from pending.popleft().result()
    while pending:
        yield from pending.popleft().result()
