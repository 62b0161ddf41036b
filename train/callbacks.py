"""Keras callbacks that make a stage resumable and leave a per-epoch history with wall times."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import keras
import numpy as np

HISTORY_FIELDS = ("stage", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")

# Attributes that EarlyStopping / ReduceLROnPlateau / ModelCheckpoint reset or accumulate across epochs.
_STATE_ATTRS = ("best", "wait", "best_epoch", "cooldown_counter", "stopped_epoch")


class CallbackState(keras.callbacks.Callback):
    """Saves the monitoring state of other callbacks each epoch and restores it when a stage resumes.

    Must come after the callbacks it watches in the list (their ``on_train_begin`` resets the state).
    """

    def __init__(self, path: Path, watched: dict[str, keras.callbacks.Callback]) -> None:
        super().__init__()
        self.path = Path(path)
        self.watched = watched

    def on_train_begin(self, logs=None):
        if not self.path.is_file():
            return
        saved = json.loads(self.path.read_text())
        for name, callback in self.watched.items():
            for attr, value in saved.get(name, {}).items():
                setattr(callback, attr, value)

    def on_epoch_end(self, epoch, logs=None):
        state = {
            name: {a: _plain(getattr(cb, a)) for a in _STATE_ATTRS if hasattr(cb, a)}
            for name, cb in self.watched.items()
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.path)


def _plain(value):
    try:
        return float(value) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        return None


SELECTION_METRIC = "val_selection"
LOSS_TIE_WEIGHT = 1e-3  # far below one validation image's share of accuracy for any loss below 10


class SelectionScore(keras.callbacks.Callback):
    """Adds ``val_selection`` to each epoch's logs: validation accuracy, ties broken by the lower validation loss.

    A small validation set is classified perfectly after an epoch or two, and from then on every epoch ties on
    accuracy: a checkpoint on accuracy alone keeps the *first* perfect epoch, trained least on the augmented
    copies; a checkpoint on this keeps the best-fitting one (``edge-train --loss-tie-break``; measured in
    docs/training.md). Placed before the callbacks that read it."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and "val_accuracy" in logs and "val_loss" in logs:
            logs[SELECTION_METRIC] = float(logs["val_accuracy"]) - LOSS_TIE_WEIGHT * float(logs["val_loss"])


class TiedEpochAverage(keras.callbacks.Callback):
    """Keeps the mean of the weights of every epoch tied at the best validation accuracy so far.

    A small validation set is classified perfectly after an epoch or two; instead of one of the tied epochs
    (the first, or the lowest-loss one), ``edge-train --average-tied-epochs`` keeps their average: the weights
    at the centre of the stretch of training the validation set cannot tell apart (stochastic weight
    averaging over those epochs; BatchNorm is frozen, so no statistics need recomputing). A new best accuracy
    restarts the mean. The mean is saved after every epoch (``path``, numpy) so that a resumed stage goes on
    with it. Measured in docs/training.md."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.best = -1.0
        self.count = 0
        self.mean: list[np.ndarray] = []

    def on_train_begin(self, logs=None):
        if not self.path.is_file():
            return
        with np.load(self.path) as saved:
            self.best, self.count = float(saved["best"]), int(saved["count"])
            self.mean = [saved[f"w{i}"] for i in range(len(saved.files) - 2)]

    def on_epoch_end(self, epoch, logs=None):
        accuracy = float((logs or {}).get("val_accuracy", -1.0))
        weights = [np.asarray(w, np.float32) for w in self.model.get_weights()]
        if accuracy > self.best + 1e-9:
            self.best, self.count, self.mean = accuracy, 1, weights
        elif accuracy >= self.best - 1e-9:
            self.count += 1
            self.mean = [m + (w - m) / self.count for m, w in zip(self.mean, weights)]
        else:
            return
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, best=self.best, count=self.count, **{f"w{i}": m for i, m in enumerate(self.mean)})
        tmp.replace(self.path)


class HistoryCSV(keras.callbacks.Callback):
    """Appends one row per epoch (with its wall time) to ``history.csv``; drops rows a resume will redo."""

    def __init__(self, path: Path, stage: int) -> None:
        super().__init__()
        self.path = Path(path)
        self.stage = stage
        self._start = 0.0

    def on_train_begin(self, logs=None):
        first_epoch = getattr(self.model, "_initial_epoch", None) or 0
        rows = read_history(self.path)
        kept = [r for r in rows if not (int(r["stage"]) == self.stage and int(r["epoch"]) >= first_epoch + 1)]
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, HISTORY_FIELDS)
            writer.writeheader()
            writer.writerows(kept)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        row = {"stage": self.stage, "epoch": epoch + 1, "seconds": round(time.perf_counter() - self._start, 2)}
        if "learning_rate" not in logs:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        for key in HISTORY_FIELDS[2:-1]:
            if key in logs:
                row[key] = f"{float(logs[key]):.6g}"
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, HISTORY_FIELDS).writerow(row)


def read_history(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
