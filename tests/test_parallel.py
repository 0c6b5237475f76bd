"""Per-image work on local processes or a Dask cluster: same results, same order, bounded
memory (a window of items in flight)."""

import pytest

from nucleus_segmentation import parallel
from nucleus_segmentation.parallel import ParallelSettings, parallel_map, runs_in_process


class Counted:
    """A lazy iterable that records how many items were taken."""

    def __init__(self, count):
        self.count, self.taken = count, 0

    def __iter__(self):
        for value in range(-self.count, 0):
            self.taken += 1
            yield value


def test_processes_keep_the_order_and_take_items_a_window_ahead():
    items = Counted(40)
    results = parallel_map(abs, items, n_workers=2, chunksize=1, total=40)
    assert next(results) == 40
    assert items.taken <= 2 * 2 * 1 + 1  # the window: 2 x workers x chunksize
    assert list(results) == list(range(39, 0, -1))
    assert runs_in_process(1, 40) and runs_in_process(4, 1) and not runs_in_process(2, 40)


def test_chunks_of_items_go_to_one_task_and_come_back_in_order():
    items = Counted(40)  # 13 chunks of 3 and one of 1
    results = parallel_map(abs, items, n_workers=2, chunksize=3, total=40)
    assert next(results) == 40
    assert items.taken == 2 * 2 * 3  # the window: 2 x workers chunks of chunksize
    assert list(results) == list(range(39, 0, -1))
    assert parallel._apply(abs, [-2, -1]) == [2, 1]


def test_a_dask_local_cluster_gives_the_same_results_in_order():
    parallel.configure(ParallelSettings(backend="dask", n_workers=2))
    try:
        assert not runs_in_process(1, 40)  # the cluster's workers, whatever n_workers says
        items = Counted(30)
        results = list(parallel_map(abs, items, n_workers=1, chunksize=1, total=30))
        assert results == list(range(30, 0, -1))
        client = parallel._dask.get()
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")  # loopback only
    finally:
        parallel.shutdown()
        parallel.configure(ParallelSettings())
    assert parallel._dask is None


def test_parallel_settings_are_checked():
    assert ParallelSettings.from_params(
        {"backend": "dask", "dask": {"scheduler": "tcp://10.0.0.5:8786", "n_workers": 4}}
    ) == ParallelSettings("dask", "tcp://10.0.0.5:8786", 4)
    with pytest.raises(ValueError, match="backend must be one of"):
        ParallelSettings.from_params({"backend": "spark"})
    with pytest.raises(ValueError, match=r"params:parallel.dask: unknown keys \['workers'\]"):
        ParallelSettings.from_params({"backend": "dask", "dask": {"workers": 2}})


def test_workers_share_this_machines_cores():
    cores = parallel.available_cores()
    assert parallel.threads_per_worker(1) == cores
    assert parallel.threads_per_worker(cores * 4) == 1
    parallel.configure(ParallelSettings(backend="dask", scheduler="tcp://10.0.0.5:8786"))
    try:
        assert parallel.threads_per_worker(1) is None  # the cluster's machines decide
    finally:
        parallel.configure(ParallelSettings())
