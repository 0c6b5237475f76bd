"""Progress lines: when they are written, what they say, and that tracking changes nothing."""

import logging

import pytest

from nucleus_segmentation import progress
from nucleus_segmentation.progress import ProgressLog, ProgressSettings, format_duration, track


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_line_every_percent_step_and_at_the_end_with_an_eta():
    clock, lines = Clock(), []
    log = ProgressLog(
        "work", 20, ProgressSettings(every_seconds=1e9, every_percent=25), clock, lines.append
    )
    for done in range(1, 21):
        clock.now = 2.0 * done  # two seconds an item
        log.update(done)
    assert [line.split(":")[1].split(" (")[0].strip() for line in lines] == [
        "5/20",
        "10/20",
        "15/20",
        "20/20",
    ]
    # 5 items in 10 s: the other 15 take 30 s more.
    assert lines[0] == "work: 5/20 (25 %), elapsed 0m10s, ETA 0m30s"
    assert lines[-1] == "work: 20/20 (100 %), elapsed 0m40s"


def test_a_line_after_every_seconds_of_silence_even_between_percent_steps():
    clock, lines = Clock(), []
    log = ProgressLog(
        "slow", 1000, ProgressSettings(every_seconds=30, every_percent=50), clock, lines.append
    )
    for done, now in ((1, 10.0), (2, 29.0), (3, 31.0), (4, 50.0), (5, 62.0)):
        clock.now = now
        log.update(done, "loss 0.5")
    assert [line.split(" (")[0] for line in lines] == ["slow: 3/1000", "slow: 5/1000"]
    assert lines[0].endswith(", loss 0.5")


def test_track_yields_every_item_unchanged_and_logs_progress(caplog):
    progress.configure(ProgressSettings(every_seconds=1e9, every_percent=50, bar="never"))
    try:
        with caplog.at_level(logging.INFO, logger="nucleus_segmentation.progress"):
            assert list(track(iter("abcd"), "letters", total=4)) == ["a", "b", "c", "d"]
    finally:
        progress.configure(ProgressSettings())
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "letters: 2/4",
        "letters: 4/4",
    ]


def test_durations_and_bad_settings():
    assert format_duration(59.4) == "0m59s"
    assert format_duration(3723) == "1h02m03s"
    with pytest.raises(ValueError, match="every_percent in"):
        ProgressSettings(every_percent=0)
    with pytest.raises(ValueError, match="bar must be"):
        ProgressSettings(bar="sometimes")


def test_training_steps_report_progress_within_an_epoch(caplog):
    from nucleus_segmentation.model.training import StepLog

    clock = Clock()
    callback = StepLog(epochs=3, steps=4, clock=clock)
    progress.configure(ProgressSettings(every_seconds=1e9, every_percent=50))
    try:
        with caplog.at_level(logging.INFO, logger="nucleus_segmentation.progress"):
            callback.on_epoch_begin(1)
            for batch in range(4):
                clock.now += 5.0
                callback.on_train_batch_end(batch, {"loss": 0.25})
    finally:
        progress.configure(ProgressSettings())
    assert [r.getMessage() for r in caplog.records] == [
        "epoch 2/3: training steps: 2/4 (50 %), elapsed 0m10s, ETA 0m10s, loss 0.2500",
        "epoch 2/3: training steps: 4/4 (100 %), elapsed 0m20s, loss 0.2500",
    ]
