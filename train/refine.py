"""``edge-train refine``: fine-tune every layer of a finished run on fresh camera-changed copies, with its own
pooled features held in place.

The two-stage recipe trains conv5 and the head on cached trunk outputs, so that it fits a small CPU; the layers
below never see a camera change. Refining trains them all (BatchNorm statistics kept), every epoch on new seeded
copies of the training images drawn with the run's own augmentation (``train.augment``; copy ``e`` in epoch
``e``, never repeated), with two terms:

- cross-entropy of the class, on the camera-changed copy;
- ``anchor`` x (1 - cosine) between the model's pooled features of that copy and the features the *starting*
  model gives the same copy without the camera look (same rotation, shift and flip).

The second term holds the features the unknown score reads (edge_runtime/ood.py) where the starting model had
them, so new kinds of defect stay apart from the known ones, and pulls a camera-changed image onto its clean
version, so the camera no longer moves it. Training every layer without it makes the classifier more robust but
lets NEU's six classes take over the features: new defects then land among them (docs/training.md).

Adam with a cosine decay to zero over all steps; the last step's weights are kept. Every layer trains, so the run
is slower than the two-stage recipe: 40–60 minutes for the default 12 epochs on a 2-core AVX-512 CPU, longer on
an AVX2-only one, where Keras runs about 3.4x slower (docs/training.md, docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import keras
import numpy as np

from edge_runtime.fileio import file_sha256, write_json_atomic
from edge_runtime.preprocessing import PreprocessConfig, normalize
from train.augment import AugmentSpec
from train.features import CacheItem, training_pixels
from train.model import POOL_LAYER, build_training_state, set_trainable
from train.output_cache import CACHE_DIR, KerasOutputCache
from train.refine_settings import RefineSettings
from train.run_dir import CONFIG_FILE, METADATA_FILE, METRICS_FILE, MODEL_FILE, TrainedRun, tool_versions, utc_now
from train.split import MANIFEST_NAME, ManifestRow, rows_of
from train.training_run import (
    TrainOptions,
    discard_evaluation,
    evaluate_splits,
    prepare_bank,
    recorded_val_accuracy,
    run_feature_cache,
)

log = logging.getLogger(__name__)


class CopyPixels:
    """The uint8 pixels of training copy ``copy`` of each row, drawn with the run's augmentation and seed; with
    ``camera=False`` the same copy's geometry only (the starting model's anchor input)."""

    def __init__(self, rows: list[ManifestRow], data_root: Path, preprocess: PreprocessConfig, spec: AugmentSpec,
                 seed: int, workers: int) -> None:
        self.items = [CacheItem(Path(data_root) / r.path, r.sha256, 0) for r in rows]
        self.preprocess, self.seed = preprocess, seed
        self.specs = {True: spec, False: replace(spec, camera=False, polarity=False)}
        self.pool = ThreadPoolExecutor(max(1, workers))

    def batch(self, indices: np.ndarray, copy: int, camera: bool = True) -> np.ndarray:
        spec = self.specs[camera]
        items = [replace(self.items[i], copy=copy) for i in indices]
        return np.stack(list(self.pool.map(lambda it: training_pixels(it, self.preprocess, spec, self.seed), items)))


class RefineBatches(keras.utils.PyDataset):
    """All epochs as one sequence, batch ``i`` = epoch ``i // steps``: the copy an image gets depends on the batch
    index alone, whatever order or thread the loader asks in. Targets: (class, anchor features)."""

    def __init__(self, pixels: CopyPixels, labels: np.ndarray, anchors: np.ndarray, batch_size: int, seed: int):
        super().__init__()
        self.pixels, self.labels, self.anchors = pixels, labels, anchors  # anchors: (epochs, N, features)
        self.batch_size, self.seed = batch_size, seed
        self.steps = int(np.ceil(len(labels) / batch_size))

    def __len__(self) -> int:
        return self.steps * len(self.anchors)

    def indices(self, index: int) -> tuple[int, np.ndarray]:
        epoch, step = divmod(index, self.steps)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.labels))
        return epoch, np.sort(order[step * self.batch_size:(step + 1) * self.batch_size])

    def __getitem__(self, index: int):
        epoch, idx = self.indices(index)
        x = normalize(self.pixels.batch(idx, epoch + 1), self.pixels.preprocess)
        return x, (self.labels[idx], self.anchors[epoch, idx])


def anchor_features(pooled: keras.Model, pixels: CopyPixels, epochs: int, batch_size: int,
                    progress: bool) -> np.ndarray:
    """The starting model's pooled features of every epoch's copies without the camera look: (epochs, N, F)."""
    from tqdm.auto import tqdm

    n = len(pixels.items)
    out = np.zeros((epochs, n, pooled.output.shape[-1]), np.float32)
    with tqdm(total=epochs * n, desc="anchor features", unit="img", disable=not progress) as bar:
        for epoch in range(epochs):
            for start in range(0, n, batch_size):
                idx = np.arange(start, min(start + batch_size, n))
                x = normalize(pixels.batch(idx, epoch + 1, camera=False), pixels.preprocess)
                out[epoch, idx] = np.asarray(pooled.predict_on_batch(x))
                bar.update(len(idx))
    return out


class EpochReport(keras.callbacks.Callback):
    """Validation accuracy at each epoch's end (the fit runs all epochs as one): logged and kept."""

    def __init__(self, model: keras.Model, steps: int, val: tuple[np.ndarray, np.ndarray]) -> None:
        super().__init__()
        self.classifier, self.steps, self.val = model, steps, val
        self.history: list[dict] = []
        self.running: dict[str, float] = {}  # Keras reports running means over the fit so far

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        self.running.update({k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"})
        if (batch + 1) % self.steps:
            return
        x, y = self.val
        probabilities = np.concatenate([np.asarray(self.classifier.predict_on_batch(x[s:s + 64]))
                                        for s in range(0, len(x), 64)])
        row = {"epoch": (batch + 1) // self.steps, "val_accuracy": float(np.mean(probabilities.argmax(1) == y)),
               **{f"mean_{k}": v for k, v in self.running.items()}}
        self.history.append(row)
        log.info("refine epoch %d: validation accuracy %.4f", row["epoch"], row["val_accuracy"])


def refine_model(model: keras.Model, rows: list[ManifestRow], data_root: Path, classes: list[str],
                 options: TrainOptions, settings: RefineSettings, progress: bool = True) -> list[dict]:
    """Train every layer of ``model`` in place (see the module docstring); returns the per-epoch history."""
    index = {name: i for i, name in enumerate(classes)}
    train_rows, val_rows = rows_of(rows, "train"), rows_of(rows, "val")
    labels = np.array([index[r.label] for r in train_rows])
    pixels = CopyPixels(train_rows, data_root, options.preprocess, options.augment_spec, options.seed,
                        settings.workers)
    pooled_output = model.get_layer(POOL_LAYER).output
    anchors = anchor_features(keras.Model(model.input, pooled_output), pixels, settings.epochs,
                              settings.batch_size, progress)
    val_pixels = CopyPixels(val_rows, data_root, options.preprocess, options.augment_spec, options.seed, 1)
    val = (normalize(val_pixels.batch(np.arange(len(val_rows)), 0), options.preprocess),
           np.array([index[r.label] for r in val_rows]))
    batches = RefineBatches(pixels, labels, anchors, settings.batch_size, options.seed)
    set_trainable(model, 2, "all")
    both = keras.Model(model.input, [model.output, pooled_output])
    keras.utils.set_random_seed(options.seed + 3)
    both.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(settings.learning_rate, len(batches))),
        loss=["sparse_categorical_crossentropy", "cosine_similarity"],
        loss_weights=[1.0, settings.anchor],
    )
    build_training_state(both, val[0][:1], (val[1][:1], anchors[0, :1]))
    report = EpochReport(model, batches.steps, val)
    log.info("refining every layer: %d epochs of %d training images, lr %g, anchor %g", settings.epochs,
             len(labels), settings.learning_rate, settings.anchor)
    both.fit(batches, epochs=1, callbacks=[report], verbose=1 if progress else 0)
    for drawer in (pixels, val_pixels):
        drawer.pool.shutdown()
    return report.history


def refine_run(run_dir: str | Path, out_dir: str | Path, settings: RefineSettings = RefineSettings(),
               progress: bool = True) -> dict:
    """Refine the run ``run_dir`` into a new run directory ``out_dir`` (model, metadata, config, split manifest,
    metrics, the unknown score's bank). Refuses, writing nothing, when the result is less right on the
    validation images than the run it started from. Returns the metrics."""
    out_dir = Path(out_dir)
    if (out_dir / MODEL_FILE).exists():
        raise ValueError(f"'{out_dir}' already holds a model; pick a new --name")
    run = TrainedRun.open(run_dir)
    options = TrainOptions.from_dict(run.config("refine"))
    data_root, rows = run.manifest()
    model = run.load_model()
    started = time.perf_counter()
    history = refine_model(model, rows, data_root, run.classes, options, settings, progress)
    return save_refined(model, run, out_dir, settings, history, round(time.perf_counter() - started, 1), progress,
                        manifest=(data_root, rows))


def save_refined(model: keras.Model, run: TrainedRun, out_dir: Path, settings: RefineSettings, history: list[dict],
                 seconds: float, progress: bool = True,
                 manifest: tuple[Path, list[ManifestRow]] | None = None) -> dict:
    """Write the refined ``model`` of ``run`` as the run directory ``out_dir`` (see :func:`refine_run`);
    ``manifest``: the run's data root and rows, when already read and verified."""
    out_dir = Path(out_dir)
    config = run.config("refine")
    options = TrainOptions.from_dict(config)
    data_root, rows = manifest or run.manifest()
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = evaluate_splits(model, rows, data_root, run.classes, run.preprocess, out_dir, progress)
    before = recorded_val_accuracy(run.directory)
    if metrics["val"]["accuracy"] < before:
        discard_evaluation(out_dir, created)
        raise ValueError(
            f"the refined model is right on {100 * metrics['val']['accuracy']:.1f} % of the validation images, "
            f"'{run.directory}' on {100 * before:.1f} %: nothing was written; try a smaller --lr or a larger --anchor"
        )

    model.save(out_dir / MODEL_FILE)
    shutil.copyfile(run.directory / MANIFEST_NAME, out_dir / MANIFEST_NAME)
    source = str(run.directory.resolve())
    # every layer has changed: the trunk cache that later steps share is the model input itself
    new_config = {**config, "run_dir": str(out_dir), "unfreeze": "all", "refine_of": source,
                  "refine": asdict(settings)}
    write_json_atomic(out_dir / CONFIG_FILE, new_config)
    model_sha256 = file_sha256(out_dir / MODEL_FILE)
    bank_seconds = prepare_bank(model, KerasOutputCache(out_dir / CACHE_DIR, model_sha256),
                                run_feature_cache(out_dir, model), rows, data_root, options.preprocess, progress)
    # the metadata keeps the starting run's recipe ("unfreeze" of its second stage) and adds the refinement
    metadata = {**run.metadata, "model_sha256": model_sha256, "refine_of": source, "refine": asdict(settings),
                "created": utc_now(), "versions": tool_versions()}
    write_json_atomic(out_dir / METADATA_FILE, metadata)
    metrics.update(refine_of={"run": source, "val_accuracy": before}, refine_history=history,
                   refine_seconds=seconds, bank_seconds=bank_seconds)
    write_json_atomic(out_dir / METRICS_FILE, metrics)
    log.info("refined model saved in %s", out_dir)
    return metrics
