"""Training support in backend-neutral Keras 3: batch feeders, optimizers, callbacks.

Nothing here knows about Kedro or MLflow: the training node wires these together and
returns histories; the catalog and kedro-mlflow log them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from nucleus_segmentation.errors import ParameterError
from nucleus_segmentation.imaging.augment import AugmentConfig, augment_sample, sample_rng
from nucleus_segmentation.imaging.instances import separate_instances
from nucleus_segmentation.imaging.matching import dsb_score
from nucleus_segmentation.imaging.targets import class_targets, contact_weights
from nucleus_segmentation.model.metrics import evaluate_segmentation
from nucleus_segmentation.model.predict import to_network_input
from nucleus_segmentation.progress import ProgressLog, format_duration, track
from nucleus_segmentation.segment import (
    SegmentationSettings,
    check_separation,
    for_segmentation,
    nucleus_probability,
)

logger = logging.getLogger(__name__)


class SegmentationBatches(keras.utils.PyDataset):
    """Batches ``(x, y)`` from stored samples: x (B, S, S, 1 or 3) float32 0..1, y (B, S, S) int32
    class ids (``masks``: 0/1, or 0/1/2 boundary targets, :mod:`imaging.targets`); with
    ``pixel_weights`` (N, S, S) ``(x, y, w)``, w (B, S, S) float32 per-pixel loss weights
    (:func:`~nucleus_segmentation.imaging.targets.contact_weights`).

    ``steps`` batches make an epoch; samples are drawn in a fresh seeded permutation per
    pass over the data, continuing across epochs, so short epochs still see every sample.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        batch_size: int,
        steps: int,
        seed: int,
        pixel_weights: np.ndarray | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.images, self.masks, self.pixel_weights = images, masks, pixel_weights
        self.batch_size, self.steps, self.seed = int(batch_size), int(steps), int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps

    def _indices(self, step: int) -> np.ndarray:
        count = len(self.images)
        start = (self.epoch * self.steps + step) * self.batch_size
        positions = np.arange(start, start + self.batch_size)
        passes = positions // count
        out = np.empty(self.batch_size, dtype=np.int64)
        for one_pass in np.unique(passes):
            order = np.random.default_rng([self.seed, int(one_pass)]).permutation(count)
            selected = passes == one_pass
            out[selected] = order[positions[selected] % count]
        return out

    def __getitem__(self, step: int):
        chosen = self._indices(step)
        x = to_network_input([self.images[i] for i in chosen])
        y = np.stack([self.masks[i] for i in chosen]).astype(np.int32)
        if self.pixel_weights is None:
            return x, y
        return x, y, np.stack([self.pixel_weights[i] for i in chosen]).astype(np.float32)

    def on_epoch_end(self) -> None:
        self.epoch += 1


class OnlineAugmentedBatches(SegmentationBatches):
    """Like :class:`SegmentationBatches`, but every sample is a fresh augmented crop of a
    preprocessed training image, drawn with the offline augmentation's transforms (the
    paper's future work: nothing stored). Seeded by (seed, image, draw number). ``targets``
    = (kind, boundary width) of :func:`~nucleus_segmentation.imaging.targets.class_targets`,
    made from each crop's own labels; ``contact`` = (weight, sigma) of
    :func:`~nucleus_segmentation.imaging.targets.contact_weights` adds each crop's per-pixel
    loss weights as a third element (None: none)."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        ids: Sequence[str],
        config: AugmentConfig,
        batch_size: int,
        steps: int,
        seed: int,
        targets: tuple[str, int] = ("binary", 2),
        contact: tuple[float, float] | None = None,
        **kwargs,
    ):
        super().__init__(images, labels, batch_size, steps, seed, **kwargs)
        self.ids, self.config, self.targets = list(ids), config, tuple(targets)
        self.contact = contact

    def __getitem__(self, step: int):
        chosen = self._indices(step)
        base = (self.epoch * self.steps + step) * self.batch_size
        pairs = [
            augment_sample(
                self.images[i],
                self.masks[i],
                self.config,
                sample_rng(self.seed, self.ids[i], base + k),
            )
            for k, i in enumerate(chosen)
        ]
        x = to_network_input([image for image, _ in pairs])
        y = np.stack([class_targets(labels, *self.targets) for _, labels in pairs])
        y = y.astype(np.int32)
        if self.contact is None:
            return x, y
        return x, y, np.stack([contact_weights(labels, *self.contact) for _, labels in pairs])


def schedule_name(params: Mapping[str, Any]) -> str:
    """The learning-rate schedule of optimizer ``params``: ``schedule``, by default constant
    for adam and poly for sgd (as in the paper)."""
    name = str(params["name"]).lower()
    return str(params.get("schedule") or ("poly" if name == "sgd" else "constant"))


def make_optimizer(
    params: Mapping[str, Any], total_steps: int, fitted: bool = False
) -> keras.optimizers.Optimizer:
    """Adam (paper 3.4) or SGD with momentum (paper 3.1), constant or poly learning rate.

    ``params``: ``name`` (adam | sgd), ``learning_rate``, ``weight_decay``, ``momentum``
    (sgd), ``schedule`` (constant | poly; default constant for adam, poly for sgd as in the
    paper), ``poly_power`` (lr = lr0 * (1 - step / total_steps) ** power), ``clipnorm``.
    ``fitted``: the poly rate is set step by step by :class:`FittedPolyDecay` (fitted to a
    time budget), so the optimizer holds a plain rate starting at ``learning_rate``.
    ``ema_momentum`` (null: off): the optimizer also keeps an exponential moving average of
    the weights (Keras ``use_ema``), which validation scores and the saved model carries
    (:func:`averaged_weights`).
    """
    name = str(params["name"]).lower()
    if name not in ("adam", "sgd"):
        raise ParameterError(f"unknown optimizer {name!r}: use 'adam' or 'sgd'")
    schedule = schedule_name(params)
    rate: float | keras.optimizers.schedules.LearningRateSchedule = float(params["learning_rate"])
    if schedule == "poly" and not fitted:
        rate = keras.optimizers.schedules.PolynomialDecay(
            rate,
            decay_steps=max(1, total_steps),
            end_learning_rate=0.0,
            power=float(params.get("poly_power", 0.99)),
        )
    elif schedule not in ("constant", "poly"):
        raise ParameterError(f"unknown learning-rate schedule {schedule!r}: use constant or poly")
    decay = float(params.get("weight_decay") or 0.0) or None
    common = {"weight_decay": decay, "clipnorm": params.get("clipnorm")}
    momentum = params.get("ema_momentum")
    if momentum is not None:
        if isinstance(momentum, bool) or not isinstance(momentum, int | float):
            raise ParameterError(
                f"training.optimizer.ema_momentum must be a number in (0, 1) or null, "
                f"got {momentum!r}"
            )
        if not 0.0 < float(momentum) < 1.0:
            raise ParameterError(
                f"training.optimizer.ema_momentum must lie in (0, 1) (e.g. 0.995), got {momentum}"
            )
        common.update(use_ema=True, ema_momentum=float(momentum))
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=rate, **common)
    return keras.optimizers.SGD(learning_rate=rate, momentum=float(params["momentum"]), **common)


def averaged_weights(model: keras.Model) -> list[np.ndarray] | None:
    """``model.get_weights()`` with each trainable weight replaced by the optimizer's
    exponential moving average of it (``make_optimizer`` with ``ema_momentum``), or None
    when the optimizer keeps no average or is not built yet (no ``fit`` started).
    Non-trainable weights (BatchNorm statistics, already running averages) are the model's
    own."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    if not getattr(optimizer, "use_ema", False) or not getattr(optimizer, "built", False):
        return None
    # Keras keeps them here (its own SwapEMAWeights callback reads the same attributes).
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    variables = getattr(optimizer, "_trainable_variables", None)
    if not averages or not variables:
        raise RuntimeError(
            f"Keras {keras.__version__}: the optimizer has use_ema on but no moving averages "
            "where this package reads them; set training.optimizer.ema_momentum: null"
        )
    by_variable = {
        id(variable): average
        for variable, average in zip(variables, averages, strict=True)
        if average is not None
    }
    return [
        keras.ops.convert_to_numpy(by_variable.get(id(weight), weight)) for weight in model.weights
    ]


@contextlib.contextmanager
def weights_in_place(model: keras.Model, weights: list[np.ndarray] | None) -> Iterator[None]:
    """``model`` holding ``weights`` (``get_weights()`` order) inside the block, its own
    again after it; ``None``: its own throughout."""
    if weights is None:
        yield
        return
    own = model.get_weights()
    model.set_weights(weights)
    try:
        yield
    finally:
        model.set_weights(own)


def weighted_cross_entropy_numpy(
    probabilities: np.ndarray,
    truth: np.ndarray,
    class_weights: Sequence[float],
    epsilon: float = 1e-7,
) -> float:
    """Mean over pixels of -w[y] log p[y] (the training loss, for validation in numpy)."""
    picked = np.take_along_axis(probabilities, truth[..., None].astype(np.int64), axis=-1)[..., 0]
    weights = np.asarray(class_weights, dtype=np.float32)[truth]
    return float(np.mean(-weights * np.log(np.clip(picked, epsilon, 1.0))))


def class_probabilities(maps: np.ndarray) -> np.ndarray:
    """The segmentation path's maps back to class probabilities: HxW nucleus -> HxWx2
    (background, nucleus); HxWx2 (nucleus, interior) -> HxWx3 (background, interior,
    boundary = nucleus - interior)."""
    if maps.ndim == 2:
        return np.stack([1.0 - maps, maps], axis=-1)
    nucleus, interior = maps[..., 0], maps[..., 1]
    return np.stack([1.0 - nucleus, interior, np.clip(nucleus - interior, 0.0, 1.0)], axis=-1)


class ValidationMetrics(keras.callbacks.Callback):
    """After each epoch, segment the whole validation images exactly as inference does
    (in ``segmentation.precision``, whatever precision the model trains in;
    :func:`nucleus_segmentation.segment.nucleus_probability` on the raw image, then the
    watershed with ``separation``), score them against their own-grid labels, and add to the
    logs ``val_loss`` (the weighted cross-entropy against the training targets of
    ``targets`` = (kind, boundary width), no Dice term), ``val_<score>_<pooled|per_image>``
    (PA, MPA, MIoU, nucleus IoU, of the
    mask ``instances > 0`` that users get) and ``val_dsb_score``. Keeps the weights of the
    best ``monitor`` epoch. With a moving average of the weights (``ema_momentum``) the
    average is scored as ``val_*`` and kept, the trained weights are scored too, as
    ``val_raw_*`` (a ``val_raw_*`` monitor keeps the trained weights)."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        class_weights: Sequence[float],
        preprocessing: Mapping[str, Any],
        settings: SegmentationSettings,
        separation: Mapping[str, Any],
        monitor: str = "val_miou_pooled",
        best: float = -math.inf,
        targets: tuple[str, int] = ("binary", 2),
    ):
        super().__init__()
        self.images, self.labels = list(images), list(labels)
        self.masks = [(np.asarray(t) > 0).astype(np.int64) for t in self.labels]
        self.targets = [class_targets(t, *targets).astype(np.int64) for t in self.labels]
        self.class_weights, self.monitor = list(class_weights), monitor
        self.preprocessing, self.settings = dict(preprocessing), settings
        self.separation = check_separation(separation, "segmentation.separation")
        self.best, self.best_weights, self.best_epoch = best, None, None

    def _scores(self, description: str) -> dict[str, float]:
        """``val_*`` scores of the model's current weights."""
        # In segmentation.precision, with the model's weights of the moment.
        model = for_segmentation(self.model, self.settings, refresh=True)
        probabilities = [
            nucleus_probability(model, image, self.preprocessing, self.settings)
            for image in track(self.images, description)
        ]
        instances = [separate_instances(p, **self.separation) for p in probabilities]
        scores = evaluate_segmentation(self.masks, [(i > 0).astype(np.int64) for i in instances])
        losses = [
            weighted_cross_entropy_numpy(class_probabilities(p), t, self.class_weights)
            for p, t in zip(probabilities, self.targets, strict=True)
        ]
        logs = {"val_loss": float(np.mean(losses))}
        logs.update({f"val_{k}": float(v) for k, v in scores.items() if k != "images"})
        logs["val_dsb_score"] = float(
            np.mean([dsb_score(t, i) for t, i in zip(self.labels, instances, strict=True)])
        )
        return logs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        averaged = averaged_weights(self.model)
        if averaged is None:
            logs.update(self._scores(f"epoch {epoch + 1}: validating"))
        else:
            # Scored and kept: the moving average; the trained weights' scores as val_raw_*.
            raw = self._scores(f"epoch {epoch + 1}: validating the trained weights")
            logs.update({f"val_raw_{k.removeprefix('val_')}": v for k, v in raw.items()})
            with weights_in_place(self.model, averaged):
                logs.update(self._scores(f"epoch {epoch + 1}: validating their moving average"))
        if self.monitor not in logs:
            known = sorted(k for k in logs if k.startswith("val_"))
            raise ParameterError(f"training.monitor {self.monitor!r} is not one of {known}")
        if logs[self.monitor] > self.best:
            self.best, self.best_epoch = logs[self.monitor], epoch
            kept_raw = averaged is None or self.monitor.startswith("val_raw_")
            self.best_weights = self.model.get_weights() if kept_raw else averaged


class Checkpoint(keras.callbacks.Callback):
    """Every epoch, atomically: ``last.keras`` (weights and optimizer state), ``best.keras``
    when the monitored score improved, and ``state.json`` (epoch, history, fingerprint).
    An interrupted run restarts from these (see :func:`load_checkpoint`)."""

    def __init__(
        self,
        directory: str | os.PathLike,
        fingerprint: str,
        validation: ValidationMetrics,
        history: list[dict],
    ):
        super().__init__()
        self.directory, self.fingerprint = Path(directory), fingerprint
        self.validation, self.history = validation, history

    def _save_model(self, name: str, weights: list[np.ndarray] | None = None) -> None:
        """Save the model, with ``weights`` in place of its own when given."""
        target = self.directory / name
        partial = self.directory / f".{name}.partial.keras"
        with weights_in_place(self.model, weights):
            self.model.save(partial)
        os.replace(partial, target)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.history.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
        self._save_model("last.keras")
        if self.validation.best_epoch == epoch:
            # The weights validation kept (with use_ema their moving average).
            self._save_model("best.keras", self.validation.best_weights)
        state = {
            "fingerprint": self.fingerprint,
            "epoch": epoch + 1,
            "best": self.validation.best,
            "best_epoch": self.validation.best_epoch,
            "history": self.history,
        }
        partial = self.directory / ".state.json.partial"
        partial.write_text(json.dumps(state, indent=1))
        os.replace(partial, self.directory / "state.json")


def load_checkpoint(directory: str | os.PathLike, fingerprint: str) -> dict | None:
    """The saved state of an interrupted run with the same fingerprint, with its models
    loaded (``last``, ``best``), or None when there is nothing to resume."""
    directory = Path(directory)
    state_path = directory / "state.json"
    if not state_path.is_file():
        return None
    state = json.loads(state_path.read_text())
    if state.get("complete"):
        return None
    if state.get("fingerprint") != fingerprint:
        logger.info("Checkpoint in %s is for other settings or data: starting afresh", directory)
        return None
    state["last"] = keras.saving.load_model(directory / "last.keras", safe_mode=True)
    best_path = directory / "best.keras"
    state["best_model"] = (
        keras.saving.load_model(best_path, safe_mode=True) if best_path.is_file() else None
    )
    return state


def mark_checkpoint_complete(directory: str | os.PathLike) -> None:
    """Flag a finished run's checkpoint so the next run starts afresh instead of resuming."""
    state_path = Path(directory) / "state.json"
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        state["complete"] = True
        partial = state_path.with_name(".state.json.partial")
        partial.write_text(json.dumps(state, indent=1))
        os.replace(partial, state_path)


class TimeBudget(keras.callbacks.Callback):
    """Stops training after the epoch that would otherwise overrun ``minutes``."""

    def __init__(
        self,
        minutes: float | None,
        first_epoch: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        self.seconds = None if minutes is None else float(minutes) * 60.0
        self.first_epoch, self.clock = first_epoch, clock
        self.started = clock()
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.seconds is None:
            return
        elapsed = self.clock() - self.started
        per_epoch = elapsed / (epoch + 1 - self.first_epoch)
        if elapsed + per_epoch > self.seconds:
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True
            logger.info(
                "Time budget of %.0f min reached after epoch %d", self.seconds / 60, epoch + 1
            )


def _step_and_rate(optimizer) -> tuple[int, float]:
    """(steps taken, current learning rate) of a Keras optimizer, on any backend."""
    iterations = int(keras.ops.convert_to_numpy(optimizer.iterations))
    return iterations, float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def has_fixed_schedule(optimizer) -> bool:
    """Whether ``optimizer`` computes its learning rate from a ``LearningRateSchedule`` set
    when it was made (e.g. a checkpoint of a run of fixed length), rather than holding a rate
    that :class:`FittedPolyDecay` can set step by step."""
    return isinstance(
        getattr(optimizer, "_learning_rate", None), keras.optimizers.schedules.LearningRateSchedule
    )


class FittedPolyDecay(TimeBudget):
    """The poly learning rate ``lr * (1 - step / horizon) ** power`` set step by step,
    decayed to zero at the last step that fits the time budget (``minutes``, with ``fit``),
    not at the end of all ``epochs``.

    Under a budget, a schedule planned for ``epochs`` passes stops wherever the budget runs
    out: on a CPU that trains half as fast, after one of three passes with the rate still at
    two thirds of its start. Training to a budget pays when the rate reaches zero at the end
    of the budget instead (Li, Yumer and Ramanan, "Budgeted training", ICLR 2020). So, after
    ``probe_steps`` steps of this run (the first ``warmup_steps`` not timed: graph building),
    the measured step time, plus ``overhead`` of an epoch's steps for each epoch end's
    validation and checkpoint, says how many steps fit; the horizon becomes the last of
    them, and the run stops there, in the middle of an epoch if that is where the budget
    ends (that epoch is validated and checkpointed as a whole one is). After every epoch the
    plan is checked against the measured step time and the measured time of that epoch's
    validation and checkpoint, and moved where fewer or more steps fit; each move continues
    from the rate of the moment (``lr_a`` at step ``a``: ``lr_a * (1 - (step - a) / (horizon
    - a)) ** power``), so the rate never jumps. With fewer than ``probe_steps`` steps per
    epoch the first plan is made at the end of the first epoch. Without a change of plan
    these are the rates of Keras' ``PolynomialDecay`` over ``epochs`` passes; without a
    budget or ``fit``, that decay with no planning (a run whose checkpoint holds a plain rate,
    resumed with the budget off, still decays to 0).

    The optimizer must hold a plain learning rate (:func:`make_optimizer` with
    ``fitted=True``); a resumed run continues from the rate its checkpoint saved, which
    was set for the step before the first one it takes.
    """

    def __init__(
        self,
        minutes: float | None,
        epochs: int,
        steps_per_epoch: int,
        power: float,
        first_epoch: int = 0,
        fit: bool = True,
        probe_steps: int = 12,
        warmup_steps: int = 2,
        overhead: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(minutes, first_epoch, clock)
        self.fit = bool(fit) and self.seconds is not None
        self.epochs, self.steps, self.power = int(epochs), int(steps_per_epoch), float(power)
        self.warmup_steps = max(0, int(warmup_steps))
        self.probe_steps = max(int(probe_steps), self.warmup_steps + 1)
        self.overhead = float(overhead)
        self.last_epoch = self.epochs  # the plan: training ends in this epoch
        self.anchor: tuple[int, float] | None = None  # (a, lr_a)
        self.horizon = self.epochs * self.steps  # ... after this optimizer step
        self.epoch = first_epoch
        self.warm_at: float | None = None
        # Seconds and steps timed since warm-up (validation excluded), the end of the last step.
        self.step_time, self.timed_steps, self.batch_end = 0.0, 0, 0.0
        self.step = self.first_step = 0  # optimizer steps taken: now, at the start of this run

    def measured_step_seconds(self) -> float:
        """Mean seconds of the steps timed since warm-up; where all were warm-up (an epoch
        shorter than it), of all this run's steps."""
        if self.timed_steps:
            return self.step_time / self.timed_steps
        return (self.batch_end - self.started) / max(1, self.step - self.first_step)

    def _plan(self, horizon: int, reason: str) -> None:
        """Decay to zero at optimizer step ``horizon``, from the rate the plan so far gives
        the next step."""
        step, _ = _step_and_rate(self.model.optimizer)
        rate = self.rate_at(step)
        self.anchor = (step, rate)
        self.horizon = max(int(horizon), step + 1)
        self.last_epoch = min(self.epochs, math.ceil(self.horizon / max(1, self.steps)))
        logger.info(
            "Time budget of %.0f min: %s; training ends after step %d (in epoch %d of %d), "
            "the learning rate decaying from %.3g at step %d to 0 there",
            self.seconds / 60,
            reason,
            self.horizon,
            self.last_epoch,
            self.epochs,
            rate,
            step,
        )

    def steps_that_fit(self, step: int, step_seconds: float, epoch_end_seconds: float) -> int:
        """The last optimizer step the budget left fits, now at ``step`` in epoch
        ``self.epoch``: each further step takes ``step_seconds``, each epoch end reached
        (the one of a partial last epoch included) ``epoch_end_seconds``; never more than
        ``epochs`` passes, never before ``step``."""
        left = self.seconds - (self.clock() - self.started)
        end = self.epochs * self.steps
        more = min(end - step, math.floor(max(0.0, left) / max(step_seconds, 1e-9)))
        while more > 0:
            epoch_ends = math.ceil((step + more) / self.steps) - self.epoch
            if more * step_seconds + max(1, epoch_ends) * epoch_end_seconds <= left:
                break
            more -= 1
        return step + more

    def rate_at(self, step: int) -> float:
        """The planned learning rate for optimizer step ``step`` (counted from the start)."""
        anchor, rate = self.anchor
        left = max(0.0, 1.0 - (step - anchor) / max(1, self.horizon - anchor))
        return rate * left**self.power

    def on_train_begin(self, logs: dict | None = None) -> None:
        # Until the probe has measured the speed: all epochs, from the rate of the start or,
        # resumed, from the rate the checkpoint saved (set for the step before this one).
        self.started = self.clock()
        step, rate = _step_and_rate(self.model.optimizer)
        self.anchor = (max(0, step - 1), rate)
        self.step = self.first_step = step

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch
        self.batch_end = self.clock()
        if self.warm_at is None and (epoch > self.first_epoch or self.warmup_steps == 0):
            self.warm_at = self.batch_end  # warm-up over (epochs shorter than it included)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        optimizer = self.model.optimizer
        self.step, _ = _step_and_rate(optimizer)
        optimizer.learning_rate = self.rate_at(self.step)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if not self.fit:
            return
        now = self.clock()
        if self.warm_at is not None:
            self.step_time += now - self.batch_end
            self.timed_steps += 1
        self.batch_end = now
        self.step = step = self.step + 1  # the step just taken (no read back from the backend)
        if step >= self.horizon and self.horizon < self.epochs * self.steps:
            self.stopped_epoch = self.epoch + 1
            self.model.stop_training = True
            return
        if self.epoch != self.first_epoch:
            return
        if batch + 1 == self.warmup_steps:
            self.warm_at = now
        if batch + 1 != self.probe_steps or self.warm_at is None:
            return
        step_seconds = self.measured_step_seconds()
        epoch_end_seconds = self.overhead * step_seconds * self.steps
        # Logged even when all epochs fit: re-anchoring on the same horizon keeps every rate
        # (the power law is self-similar).
        self._plan(
            self.steps_that_fit(step, step_seconds, epoch_end_seconds),
            f"{step_seconds:.2f} s per step, about {epoch_end_seconds:.0f} s per epoch end",
        )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.fit:
            super().on_epoch_end(epoch, logs)
            return
        if self.model.stop_training:  # stopped at the planned step (or by another callback)
            step = self.step
            if step >= self.horizon:
                logger.info(
                    "Time budget of %.0f min: stopping after step %d, in epoch %d",
                    self.seconds / 60,
                    step,
                    epoch + 1,
                )
            return
        if epoch + 1 >= self.epochs:  # the last epoch: Keras ends the run
            return
        step = self.step
        # This epoch's validation and checkpoint: their callbacks come before this one.
        epoch_end_seconds = self.clock() - self.batch_end
        step_seconds = self.measured_step_seconds()
        self.epoch = epoch + 1  # where the next step falls
        horizon = self.steps_that_fit(step, step_seconds, epoch_end_seconds)
        if horizon <= step:  # out of time
            self.stopped_epoch = epoch + 1
            self.model.stop_training = True
            logger.info(
                "Time budget of %.0f min: stopping after epoch %d", self.seconds / 60, epoch + 1
            )
        elif horizon != self.horizon:
            self._plan(
                horizon,
                f"measured {step_seconds:.2f} s per step and {epoch_end_seconds:.0f} s for "
                "validation and checkpoint",
            )


def _planned_epochs(epochs: int, plan: TimeBudget | None, epoch: int) -> int:
    """The epochs a run now at ``epoch`` (0-based) will take: ``epochs``, or fewer where a
    :class:`FittedPolyDecay` ``plan`` has fitted the run to its time budget (its
    ``last_epoch``, never above ``epochs``)."""
    return max(epoch + 1, getattr(plan, "last_epoch", epochs))


def _planned_steps(steps: int, plan: TimeBudget | None, epoch: int) -> int:
    """The steps epoch ``epoch`` (0-based) of ``steps`` will take: fewer where a fitted
    :class:`FittedPolyDecay` ``plan`` ends the run inside it."""
    if not getattr(plan, "fit", False):
        return steps
    return max(1, min(steps, plan.horizon - epoch * steps))


class EpochLog(keras.callbacks.Callback):
    """One log line per epoch with the main scores, elapsed time and ETA (for CI logs and
    terminals alike; Keras' own progress bar is shown when stdout is a terminal). With a
    ``plan`` (:class:`FittedPolyDecay`), epochs and ETA count up to the planned last epoch."""

    def __init__(
        self,
        epochs: int,
        first_epoch: int = 0,
        clock=time.monotonic,
        plan: TimeBudget | None = None,
    ):
        super().__init__()
        self.epochs, self.first_epoch, self.clock, self.plan = epochs, first_epoch, clock, plan
        self.started = clock()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        done = epoch + 1 - self.first_epoch
        elapsed = self.clock() - self.started
        total = _planned_epochs(self.epochs, self.plan, epoch)
        eta = elapsed / done * (total - epoch - 1)
        if getattr(self.plan, "fit", False):  # counted in steps: the last epoch may be short
            left = max(0, self.plan.horizon - (epoch + 1) * self.plan.steps)
            eta = elapsed / (done * self.plan.steps) * left
        raw = logs.get("val_raw_dsb_score")  # with a moving average: the trained weights'
        logger.info(
            "epoch %d/%d  loss %.4f  val_loss %.4f  val MIoU %.4f  val nucleus IoU %.4f  "
            "val DSB %.4f%s  elapsed %s  ETA %s",
            epoch + 1,
            total,
            logs.get("loss", float("nan")),
            logs.get("val_loss", float("nan")),
            logs.get("val_miou_pooled", float("nan")),
            logs.get("val_nucleus_iou_pooled", float("nan")),
            logs.get("val_dsb_score", float("nan")),
            "" if raw is None else f" (of the average; trained weights {raw:.4f})",
            format_duration(elapsed),
            format_duration(eta),
        )


class StepLog(keras.callbacks.Callback):
    """Progress within an epoch (steps, loss, elapsed, ETA) as periodic log lines when no
    progress bar shows it (not a terminal), so a long epoch is not silent in CI or nohup."""

    def __init__(
        self, epochs: int, steps: int, clock=time.monotonic, plan: TimeBudget | None = None
    ):
        super().__init__()
        self.epochs, self.steps, self.clock, self.plan = epochs, steps, clock, plan
        self.log: ProgressLog | None = None
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        total = _planned_epochs(self.epochs, self.plan, epoch)
        description = f"epoch {epoch + 1}/{total}: training steps"
        steps = _planned_steps(self.steps, self.plan, epoch)
        self.log = ProgressLog(description, steps, clock=self.clock)
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if self.log is not None:
            self.log.total = _planned_steps(self.steps, self.plan, self.epoch)  # plans move
            self.log.update(batch + 1, f"loss {float(loss):.4f}" if loss is not None else "")


def progress_verbosity() -> int:
    """Keras fit verbosity: a progress bar in a terminal, nothing extra otherwise (the
    :class:`EpochLog` line is the one line per epoch in CI logs)."""
    return 1 if sys.stdout.isatty() else 0


def fit_with_checkpoints(
    build: Callable[[], keras.Model],
    feeder: SegmentationBatches,
    validation: ValidationMetrics,
    *,
    epochs: int,
    directory: str | os.PathLike,
    fingerprint: str,
    resume: bool = True,
    max_minutes: float | None = None,
    poly_power: float | None = None,
    fit_to_budget: bool = False,
    description: str = "",
) -> tuple[keras.Model, list[dict]]:
    """Fit a compiled model from ``build()`` on ``feeder`` for ``epochs``, validating with
    ``validation`` after every epoch, checkpointing to ``directory`` (:class:`Checkpoint`)
    and stopping early by the ``max_minutes`` budget; with ``resume``, an interrupted run of
    the same ``fingerprint`` continues from its last epoch (model, optimizer state, best
    epoch so far, history and the feeder's position in its sample order). ``poly_power``:
    the poly schedule's power; where the optimizer holds a plain rate (``make_optimizer(...,
    fitted=True)``, or a checkpoint of such a run) :class:`FittedPolyDecay` sets it, decayed
    to zero at the last step that fits ``max_minutes`` with ``fit_to_budget`` (the run stops
    there), at the end of all ``epochs`` otherwise; an optimizer with a fixed schedule (a
    checkpoint of a run of fixed length) keeps it.

    Keras' ``BackupAndRestore`` restores the model, optimizer and epoch, but not the best
    epoch's weights and score, the per-epoch history or the check that the data and
    settings are the same, and it deletes its backup when training ends; hence
    :class:`Checkpoint` / :func:`load_checkpoint` here.

    Returns:
        ``(model, history)``: the model with the weights of the best validation epoch, and one
        dict per epoch (``epoch`` and the logs).
    """
    state = load_checkpoint(directory, fingerprint) if resume else None
    history: list[dict] = []
    first_epoch = 0
    if state is not None:
        model, first_epoch, history = state["last"], int(state["epoch"]), state["history"]
        feeder.epoch = first_epoch
        validation.best, validation.best_epoch = state["best"], state["best_epoch"]
        if state["best_model"] is not None:
            validation.best_weights = state["best_model"].get_weights()
        logger.info("Resuming from %s after epoch %d", directory, first_epoch)
    else:
        model = build()
    logger.info(
        "Training %s (%d parameters) on %s, %d steps x %d epochs",
        model.name,
        model.count_params(),
        description,
        feeder.steps,
        epochs,
    )
    budget = TimeBudget(max_minutes, first_epoch)
    if poly_power is not None:
        if has_fixed_schedule(model.optimizer):
            if fit_to_budget and max_minutes is not None:
                logger.info("The checkpoint's optimizer has a fixed learning-rate schedule: kept")
        else:
            budget = FittedPolyDecay(
                max_minutes,
                epochs,
                feeder.steps,
                poly_power,
                first_epoch=first_epoch,
                fit=fit_to_budget,
            )
    callbacks = [
        validation,
        Checkpoint(directory, fingerprint, validation, history),
        EpochLog(epochs, first_epoch, plan=budget),
        budget,
    ]
    verbose = progress_verbosity()
    if not verbose:
        callbacks.append(StepLog(epochs, feeder.steps, plan=budget))
    model.fit(
        feeder,
        epochs=epochs,
        initial_epoch=first_epoch,
        callbacks=callbacks,
        verbose=verbose,
    )
    if validation.best_weights is not None:
        model.set_weights(validation.best_weights)
    mark_checkpoint_complete(directory)
    return model, history
