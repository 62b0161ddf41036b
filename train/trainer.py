"""Two-stage fine-tuning of the reference model, on cached trunk features.

Stage 1 trains the head on pooled features of the frozen backbone (Adam 1e-3). Stage 2 unfreezes the top of
the backbone (default: the conv5 stage, BatchNorm kept in inference mode) and trains it with the head on the
cached outputs of the layers below (Adam 1e-4). Each training image has ``aug_copies`` cached augmented
copies; every epoch draws one of them per image (two different ones with the camera-consistency term,
train/consistency.py). Both stages use EarlyStopping, ModelCheckpoint and
ReduceLROnPlateau on validation accuracy; the checkpoint keeps the first epoch of best validation accuracy
(with ``loss_tie_break``, the one of lowest validation loss among those tied; with ``average_tied_epochs``, the
mean of the tied epochs' weights: train/callbacks.py), and that epoch is the stage's result.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

from edge_runtime.preprocessing import PreprocessConfig
from train.augment import AugmentSpec
from train.callbacks import SELECTION_METRIC, CallbackState, HistoryCSV, SelectionScore, TiedEpochAverage
from train.consistency import ConsistencyTrainer
from train.features import CacheItem, FeatureCache
from train.model import Submodels, build_training_state, set_trainable
from train.run_dir import CHECKPOINT_DIR, HISTORY_FILE
from train.samplers import CopySampler, PairedCopySampler
from train.split import ManifestRow, rows_of

log = logging.getLogger(__name__)


@dataclass
class StageSettings:
    epochs: int
    learning_rate: float


@dataclass
class FitSettings:
    stage1: StageSettings = field(default_factory=lambda: StageSettings(30, 1e-3))
    stage2: StageSettings = field(default_factory=lambda: StageSettings(20, 1e-4))
    batch_size: int = 32
    patience: int = 5
    lr_patience: int = 2
    loss_tie_break: bool = False
    average_tied_epochs: bool = False
    lr_factor: float = 0.2
    min_lr: float = 1e-6
    aug_copies: int = 3
    consistency: float = 0.0  # weight of the camera-consistency term (train/consistency.py); 0: off
    unfreeze: str = "conv5"
    seed: int = 0
    progress: bool = True

    def sampler(self, features: np.ndarray, labels: np.ndarray, seed: int) -> keras.utils.PyDataset:
        """One copy per image per epoch, or two different ones when the consistency term is on."""
        kind = PairedCopySampler if self.consistency > 0 else CopySampler
        return kind(features, labels, self.batch_size, seed)


@dataclass
class StageResult:
    best_val_accuracy: float
    epochs_run: int
    seconds: float
    resumed: bool = False


def cache_items(rows: list[ManifestRow], data_root: Path, copies: range) -> list[CacheItem]:
    return [CacheItem(data_root / r.path, r.sha256, c) for r in rows for c in copies]


def features_per_image(cache: FeatureCache, kind: str, rows, data_root: Path, copies: range) -> np.ndarray:
    flat = cache.load(kind, cache_items(rows, data_root, copies))
    return flat.reshape(len(rows), len(copies), *flat.shape[1:])


def fit_two_stages(
    model: keras.Model,
    parts: Submodels,
    rows: list[ManifestRow],
    data_root: Path,
    classes: list[str],
    cache: FeatureCache,
    settings: FitSettings,
    out_dir: Path,
) -> dict:
    """Train ``model`` in place; returns timings and the best validation accuracy of each stage."""
    out_dir = Path(out_dir)
    ckpt = out_dir / CHECKPOINT_DIR
    ckpt.mkdir(parents=True, exist_ok=True)
    index = {name: i for i, name in enumerate(classes)}
    train_rows, val_rows = rows_of(rows, "train"), rows_of(rows, "val")
    y_train = np.array([index[r.label] for r in train_rows])
    y_val = np.array([index[r.label] for r in val_rows])
    augmented = range(1, settings.aug_copies + 1)
    clean = range(0, 1)

    started = time.perf_counter()
    needed = cache_items(train_rows, data_root, augmented) + cache_items(val_rows, data_root, clean)
    cache.ensure_trunk(parts.trunk, needed, progress=settings.progress)
    trunk_seconds = time.perf_counter() - started

    timings: dict = {"trunk_cache_seconds": round(trunk_seconds, 1)}
    # Stage 1: head only, on pooled features of the frozen backbone.
    started = time.perf_counter()
    set_trainable(model, 1, settings.unfreeze)
    stage1_full = ckpt / "stage1_model.weights.h5"
    stage1 = _read_stage_result(ckpt, 1)
    if stage1 is None:
        cache.ensure_pooled(parts.body, needed, progress=settings.progress)
        train_data = settings.sampler(
            features_per_image(cache, "pooled", train_rows, data_root, augmented), y_train, settings.seed
        )
        val_data = (features_per_image(cache, "pooled", val_rows, data_root, clean)[:, 0], y_val)
        stage1 = _run_stage(1, parts.head, parts.head_embedding, train_data, val_data, settings.stage1, settings,
                            out_dir)
        model.save_weights(stage1_full)
        _write_stage_result(ckpt, 1, stage1)
    else:
        model.load_weights(stage1_full)
    timings["stage1_seconds"] = round(time.perf_counter() - started, 1)

    # Stage 2: the unfrozen top of the backbone + head, on the cached trunk outputs.
    started = time.perf_counter()
    set_trainable(model, 2, settings.unfreeze)
    stage2_best = ckpt / "stage2_best.weights.h5"
    stage2 = _read_stage_result(ckpt, 2)
    if stage2 is None:
        train_data = settings.sampler(
            features_per_image(cache, "trunk", train_rows, data_root, augmented), y_train, settings.seed + 1
        )
        val_data = (features_per_image(cache, "trunk", val_rows, data_root, clean)[:, 0].astype(np.float32), y_val)
        stage2 = _run_stage(2, parts.top, parts.top_embedding, train_data, val_data, settings.stage2, settings,
                            out_dir)
        _write_stage_result(ckpt, 2, stage2)
        del train_data, val_data
    elif stage2_best.exists():
        parts.top.load_weights(stage2_best)
    timings["stage2_seconds"] = round(time.perf_counter() - started, 1)

    if stage2.best_val_accuracy >= stage1.best_val_accuracy:
        chosen = 2
    else:
        chosen = 1
        model.load_weights(stage1_full)
    log.info(
        "best validation accuracy: stage 1 %.4f, stage 2 %.4f -> keeping stage %d",
        stage1.best_val_accuracy, stage2.best_val_accuracy, chosen,
    )
    return {
        "stage1": asdict(stage1),
        "stage2": asdict(stage2),
        "chosen_stage": chosen,
        "timings": timings,
    }


def _run_stage(
    stage: int,
    stage_model: keras.Model,
    with_embedding: keras.Model | None,
    train_data: CopySampler | PairedCopySampler,
    val_data: tuple[np.ndarray, np.ndarray],
    stage_settings: StageSettings,
    settings: FitSettings,
    out_dir: Path,
) -> StageResult:
    ckpt = out_dir / CHECKPOINT_DIR
    keras.utils.set_random_seed(settings.seed + stage)
    trained = stage_model
    if settings.consistency > 0:
        trained = ConsistencyTrainer(stage_model, with_embedding, settings.consistency)
    trained.compile(
        optimizer=keras.optimizers.Adam(stage_settings.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    build_training_state(trained, val_data[0][:1], val_data[1][:1], stage_model.trainable_variables)
    trainable = sum(int(np.prod(w.shape)) for w in stage_model.trainable_weights)
    log.info("stage %d: %d trainable parameters, %d training images, lr %g%s",
             stage, trainable, len(train_data.labels), stage_settings.learning_rate,
             f", camera consistency {settings.consistency:g}" if settings.consistency > 0 else "")
    stopper = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=settings.patience)
    reducer = keras.callbacks.ReduceLROnPlateau(
        monitor="val_accuracy", mode="max", factor=settings.lr_factor, patience=settings.lr_patience,
        min_lr=settings.min_lr,
    )
    best_path = ckpt / f"stage{stage}_best.weights.h5"
    checkpoint = keras.callbacks.ModelCheckpoint(
        best_path, monitor=SELECTION_METRIC if settings.loss_tie_break else "val_accuracy", mode="max",
        save_best_only=True, save_weights_only=True,
    )
    backup_dir = ckpt / f"stage{stage}_backup"
    resumed = backup_dir.exists()
    callbacks = [
        SelectionScore(),
        stopper,
        reducer,
        checkpoint,
        keras.callbacks.BackupAndRestore(str(backup_dir)),
        CallbackState(ckpt / f"stage{stage}_callbacks.json",
                      {"early_stopping": stopper, "reduce_lr": reducer, "checkpoint": checkpoint}),
        HistoryCSV(out_dir / HISTORY_FILE, stage),
    ]
    average = TiedEpochAverage(ckpt / f"stage{stage}_tied_average.npz") if settings.average_tied_epochs else None
    if average is not None:
        callbacks.insert(0, average)
    started = time.perf_counter()
    history = trained.fit(
        train_data,
        validation_data=val_data,
        epochs=stage_settings.epochs,
        batch_size=settings.batch_size,
        callbacks=callbacks,
        verbose=1 if settings.progress else 0,
    )
    seconds = time.perf_counter() - started
    if not best_path.exists():  # zero epochs: the stage was skipped
        log.info("stage %d skipped (0 epochs)", stage)
        return StageResult(-1.0, 0, round(seconds, 1))
    stage_model.load_weights(best_path)
    epochs_run = len(history.history.get("val_accuracy", []))
    kept = "the lowest-loss epoch" if settings.loss_tie_break else "the first epoch"
    if average is not None and _keep_average(trained, average, val_data):
        stage_model.save_weights(best_path)
        kept = f"mean of {average.count} tied epochs"
    log.info("stage %d: best val accuracy %.4f after %d epochs (%.0f s); kept: %s", stage, stopper.best,
             epochs_run, seconds, kept)
    return StageResult(float(stopper.best), epochs_run, round(seconds, 1), resumed)


def _keep_average(stage_model: keras.Model, average: TiedEpochAverage,
                  val_data: tuple[np.ndarray, np.ndarray]) -> bool:
    """Loads the tied epochs' mean into ``stage_model`` if it is as right on validation as they were."""
    if average.count < 2:
        return False
    checkpoint = stage_model.get_weights()
    stage_model.set_weights(average.mean)
    accuracy = stage_model.evaluate(*val_data, verbose=0, return_dict=True)["accuracy"]
    if accuracy >= average.best - 1e-9:
        return True
    log.warning("the mean of the %d tied epochs is right for %.4f of validation (they were %.4f): keeping the "
                "checkpoint", average.count, accuracy, average.best)
    stage_model.set_weights(checkpoint)
    return False


def _write_stage_result(ckpt: Path, stage: int, result: StageResult) -> None:
    (ckpt / f"stage{stage}_result.json").write_text(json.dumps(asdict(result)))


def _read_stage_result(ckpt: Path, stage: int) -> StageResult | None:
    path = ckpt / f"stage{stage}_result.json"
    return StageResult(**json.loads(path.read_text())) if path.is_file() else None


def make_cache(root: Path, weights_id: str, parts: Submodels, preprocess: PreprocessConfig, seed: int,
               augment_spec: AugmentSpec = AugmentSpec()) -> FeatureCache:
    return FeatureCache(root, weights_id, parts.split_layer, preprocess, augment_spec, seed)
