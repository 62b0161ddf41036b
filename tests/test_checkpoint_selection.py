"""Which epoch a training stage keeps: the first of best validation accuracy, or with ``--loss-tie-break`` the
one of lowest validation loss among those tied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from train.callbacks import SELECTION_METRIC, SelectionScore  # noqa: E402


def _kept_epoch(tmp_path: Path, epochs: list[tuple[float, float]], monitor: str = SELECTION_METRIC) -> int:
    """Run the stage's selection and checkpoint callbacks over (val_accuracy, val_loss) per epoch; the weights
    saved last tell which epoch was kept (each epoch's weights hold its own number)."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    best = tmp_path / "best.weights.h5"
    callbacks = keras.callbacks.CallbackList(
        [SelectionScore(), keras.callbacks.ModelCheckpoint(best, monitor=monitor, mode="max", save_best_only=True,
                                                           save_weights_only=True)],
        model=model)
    for epoch, (accuracy, loss) in enumerate(epochs):
        model.layers[0].kernel.assign(np.full((1, 1), epoch, np.float32))
        callbacks.on_epoch_end(epoch, {"val_accuracy": accuracy, "val_loss": loss})
    model.load_weights(best)
    return int(model.layers[0].kernel.numpy()[0, 0])


def test_among_epochs_that_tie_on_accuracy_the_one_with_the_lowest_loss_is_kept(tmp_path):
    epochs = [(0.97, 0.07), (1.0, 0.009), (1.0, 0.003), (1.0, 6e-5), (1.0, 4e-7), (1.0, 2e-6)]
    assert _kept_epoch(tmp_path, epochs) == 4
    assert _kept_epoch(tmp_path, epochs, monitor="val_accuracy") == 1  # the default: the first perfect epoch


def test_a_lower_loss_never_outweighs_a_better_accuracy(tmp_path):
    epochs = [(1 - 1 / 72, 1e-6), (1.0, 2.5), (1 - 2 / 72, 0.0)]  # one validation image more right, at any loss
    assert _kept_epoch(tmp_path, epochs) == 1


def test_the_first_perfect_epoch_is_kept_unless_the_run_asks_for_the_loss_tie_break(tmp_path):
    from dataclasses import asdict

    from train.training_run import TrainOptions

    saved = asdict(TrainOptions(data=str(tmp_path), run_dir=str(tmp_path / "run")))
    assert TrainOptions.from_dict(saved).fit_settings().loss_tie_break is False
    saved.pop("loss_tie_break")  # a run made before the option resumes as it was trained
    assert TrainOptions.from_dict(saved).fit_settings().loss_tie_break is False
    asked = TrainOptions(data=str(tmp_path), run_dir=str(tmp_path / "run"), loss_tie_break=True)
    assert TrainOptions.from_dict(asdict(asked)).fit_settings().loss_tie_break is True


def _averaged(tmp_path: Path, epochs: list[float], resume_after: int | None = None):
    """Run TiedEpochAverage over epochs of the given val_accuracy; each epoch's weight is its own number."""
    from train.callbacks import TiedEpochAverage

    tmp_path.mkdir(exist_ok=True)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    average = TiedEpochAverage(tmp_path / "mean.npz")
    average.set_model(model)
    average.on_train_begin()
    for epoch, accuracy in enumerate(epochs):
        if epoch == resume_after:  # a new process continues the stage from the saved mean
            average = TiedEpochAverage(tmp_path / "mean.npz")
            average.set_model(model)
            average.on_train_begin()
        model.layers[0].kernel.assign(np.full((1, 1), epoch, np.float32))
        average.on_epoch_end(epoch, {"val_accuracy": accuracy})
    return average


def test_the_average_is_over_the_epochs_tied_at_the_best_accuracy_only(tmp_path):
    average = _averaged(tmp_path, [0.9, 0.97, 1.0, 1.0, 0.98, 1.0])
    assert average.count == 3 and average.best == 1.0
    assert average.mean[0][0, 0] == pytest.approx((2 + 3 + 5) / 3)


def test_a_resumed_stage_goes_on_with_the_saved_average(tmp_path):
    uninterrupted = _averaged(tmp_path / "a", [1.0, 1.0, 1.0, 1.0])
    resumed = _averaged(tmp_path / "b", [1.0, 1.0, 1.0, 1.0], resume_after=2)
    assert resumed.count == uninterrupted.count == 4
    assert resumed.mean[0][0, 0] == pytest.approx(uninterrupted.mean[0][0, 0]) == pytest.approx(1.5)


def test_the_tied_epochs_average_is_kept_only_when_the_run_asks_for_it(tmp_path):
    from dataclasses import asdict

    from train.training_run import TrainOptions

    saved = asdict(TrainOptions(data=str(tmp_path), run_dir=str(tmp_path / "run")))
    saved.pop("average_tied_epochs")  # a run made before the option resumes as it was trained
    assert TrainOptions.from_dict(saved).fit_settings().average_tied_epochs is False
    asked = TrainOptions(data=str(tmp_path), run_dir=str(tmp_path / "run"), average_tied_epochs=True)
    assert TrainOptions.from_dict(asdict(asked)).fit_settings().average_tied_epochs is True


def test_the_mean_of_the_tied_epochs_replaces_the_checkpoint_only_if_it_is_as_right_on_validation(tmp_path):
    from train.callbacks import TiedEpochAverage
    from train.trainer import _keep_average

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax", use_bias=False)])
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])  # as the stage compiles it
    x, y = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), np.array([0, 1])
    right = [np.eye(2, dtype=np.float32)]  # class = the larger input
    average = TiedEpochAverage(tmp_path / "mean.npz")
    average.best, average.count = 1.0, 3

    average.mean = [np.array([[1.0, 0.5], [0.5, 1.0]], np.float32)]  # as right as the epochs were
    model.set_weights(right)
    assert _keep_average(model, average, (x, y))
    np.testing.assert_array_equal(model.get_weights()[0], average.mean[0])

    average.mean = [np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)]  # wrong for every validation image
    model.set_weights(right)
    assert not _keep_average(model, average, (x, y))
    np.testing.assert_array_equal(model.get_weights()[0], right[0])  # the checkpoint stays

    average.count = 1  # a single best epoch: nothing to average
    assert not _keep_average(model, average, (x, y))
