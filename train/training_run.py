"""``edge-train`` end to end: data → split manifest → two-stage fit → model, metrics and figures.

Also K-fold cross-validation, which reuses the same trunk-feature cache for every fold.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from edge_runtime.fileio import file_sha256, write_json_atomic
from edge_runtime.preprocessing import PreprocessConfig
from train.augment import AugmentSpec
from train.features import FeatureCache
from train import figures
from train.callbacks import read_history
from train.data import check_images, discover
from train.embeddings import bank_embeddings
from train.metrics import report
from train.model import Submodels, build_model, resolve_weights, submodels
from train.output_cache import CACHE_DIR, KerasOutputCache
from train.predict import predict_files
from train.run_dir import (
    CONFIG_FILE,
    HISTORY_FILE,
    METADATA_FILE,
    METRICS_FILE,
    MODEL_FILE,
    tool_versions,
    utc_now,
)
from train.split import (
    MANIFEST_NAME,
    ManifestRow,
    kfold_splits,
    read_manifest,
    rows_of,
    stratified_split,
    verify_files,
    write_manifest,
)
from train.trainer import (
    FitSettings,
    StageSettings,
    features_per_image,
    cache_items,
    fit_two_stages,
    make_cache,
)

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """Every setting of a training run; stored as ``config.json`` so ``--resume`` continues identically."""

    data: str
    run_dir: str
    weights: str = "imagenet"
    classes: list[str] | None = None
    input_size: int = 224
    unfreeze: str = "conv5"
    epochs_stage1: int = 30
    epochs_stage2: int = 20
    lr_stage1: float = 1e-3
    lr_stage2: float = 1e-4
    batch_size: int = 32
    patience: int = 5
    lr_patience: int = 2
    loss_tie_break: bool = False  # checkpoint: among epochs tied on val accuracy, the lowest val loss (not the first)
    average_tied_epochs: bool = False  # keep the mean weights of the epochs tied on val accuracy
    aug_copies: int = 3
    consistency: float = 0.0  # weight of the camera-consistency term (train/consistency.py)
    contrast: str = "none"  # PreprocessConfig.contrast: "standardize" equalises each image's contrast
    camera_augment: bool = True  # AugmentSpec.camera: another camera's look in the augmented copies
    camera_recipe: int = 2  # 1: contrast, gamma, blur, noise; 2: also gain, motion blur, banding, resolution, JPEG;
    # 3: recipe 2 with noise up to 10 gray levels and motion blur along the rows or columns
    polarity_augment: bool = False  # AugmentSpec.polarity: half the augmented copies with inverted gray levels
    val_per_class: int = 12
    test_per_class: int = 12
    folds: int = 0
    seed: int = 0  # initialisation and augmentation
    split_seed: int = 0  # which images are validation and test: changes only when asked
    skip_bad: bool = False
    cache_dir: str | None = None
    progress: bool = True  # not stored in config.json (see _prepare)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainOptions":
        names = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in names}
        data.setdefault("split_seed", data.get("seed", 0))  # runs made before: one seed drew the split too
        data.setdefault("camera_recipe", 1)  # runs made before the camera recipe had a number
        data.setdefault("consistency", 0.0)  # runs made before the camera-consistency term
        return cls(**data)

    def fit_settings(self) -> FitSettings:
        return FitSettings(
            stage1=StageSettings(self.epochs_stage1, self.lr_stage1),
            stage2=StageSettings(self.epochs_stage2, self.lr_stage2),
            batch_size=self.batch_size,
            patience=self.patience,
            lr_patience=self.lr_patience,
            loss_tie_break=self.loss_tie_break,
            average_tied_epochs=self.average_tied_epochs,
            aug_copies=self.aug_copies,
            consistency=self.consistency,
            unfreeze=self.unfreeze,
            seed=self.seed,
            progress=self.progress,
        )

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(input_size=(self.input_size, self.input_size), contrast=self.contrast)

    @property
    def augment_spec(self) -> AugmentSpec:
        if self.camera_recipe not in CAMERA_RECIPES:
            raise ValueError(f"camera_recipe {self.camera_recipe} is not one of {sorted(CAMERA_RECIPES)}")
        return CAMERA_RECIPES[self.camera_recipe](camera=self.camera_augment, polarity=self.polarity_augment)


CAMERA_RECIPES = {1: AugmentSpec.first_camera_recipe, 2: AugmentSpec, 3: AugmentSpec.third_camera_recipe}


def load_options_for_resume(run_dir: str | Path, progress: bool = True) -> TrainOptions:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' not found: --resume needs a run folder started by edge-train")
    config = json.loads(path.read_text())
    if "soup_of" in config:
        raise ValueError(f"'{run_dir}' is a mean of other runs (edge-train soup): there is no training to resume")
    options = TrainOptions.from_dict(config)
    options.run_dir = str(run_dir)
    options.progress = progress
    return options


def _weights_identity(weights: str | None, seed: int) -> str:
    if weights is None:
        return f"random-seed{seed}"
    if weights == "imagenet":
        return "imagenet"
    return f"file-sha256:{file_sha256(weights)}"


def _prepare(options: TrainOptions):
    run_dir = Path(options.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in asdict(options).items() if k != "progress"}
    if (run_dir / CONFIG_FILE).is_file():
        # read as a resume reads it: settings added since the run was made take the values it was trained with
        saved = asdict(TrainOptions.from_dict(json.loads((run_dir / CONFIG_FILE).read_text())))
        changed = sorted(k for k in config if k != "run_dir" and saved.get(k) != config[k])
        if changed:
            raise ValueError(
                f"'{run_dir}' already holds a run with other settings ({changed}); "
                "use --resume RUN_DIR to continue it, or pick a new --name"
            )
    write_json_atomic(run_dir / CONFIG_FILE, config)
    weights = resolve_weights(options.weights)
    dataset = discover(options.data, options.classes)
    hashes = check_images(dataset, skip_bad=options.skip_bad, progress=options.progress)
    return run_dir, weights, dataset, hashes


def _build(options: TrainOptions, weights: str | None, num_classes: int):
    model = build_model(num_classes, (options.input_size, options.input_size), weights, seed=options.seed)
    parts = submodels(model, options.unfreeze)
    cache = make_cache(_cache_root(options), _weights_identity(weights, options.seed), parts, options.preprocess,
                       options.seed, options.augment_spec)
    return model, parts, cache


def _cache_root(options: TrainOptions) -> Path:
    return Path(options.cache_dir) if options.cache_dir else Path(options.run_dir).parent / ".feature-cache"


def run_feature_cache(run_dir: str | Path, model) -> tuple[FeatureCache, Submodels] | None:
    """The trunk-output cache a finished run was trained with, and ``model`` cut where it was cut, so that later
    steps (the unknown score's bank) reuse the trunk outputs of the training images and their augmented copies.
    None when the run has no config.json (not made by edge-train)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    options = TrainOptions.from_dict(json.loads(path.read_text()))
    options.run_dir = str(run_dir)
    parts = submodels(model, options.unfreeze)
    try:
        weights_id = _weights_identity(resolve_weights(options.weights), options.seed)
    except FileNotFoundError:  # the weights file has moved: key the trunk by the trained model's own file
        weights_id = f"model-sha256:{file_sha256(Path(run_dir) / MODEL_FILE)}"
        log.info("%s: weights file %s not found; the trunk cache is keyed by the model file", run_dir, options.weights)
    return make_cache(_cache_root(options), weights_id, parts, options.preprocess, options.seed,
                      options.augment_spec), parts


def train_run(options: TrainOptions) -> dict:
    """Train one model on the 276/12/12-style split; writes the whole run directory. Returns metrics."""
    started = time.perf_counter()
    run_dir, weights, dataset, hashes = _prepare(options)
    manifest = run_dir / MANIFEST_NAME
    if manifest.is_file():
        rows = read_manifest(manifest)
        verify_files(rows, dataset.root)
        log.info("resuming with the existing split manifest %s", manifest)
    else:
        rows = stratified_split(dataset, hashes, options.val_per_class, options.test_per_class,
                                  options.split_seed)
        write_manifest(manifest, rows)
    _log_split(rows)

    model, parts, cache = _build(options, weights, len(dataset.classes))
    fit = fit_two_stages(model, parts, rows, dataset.root, dataset.classes, cache, options.fit_settings(), run_dir)
    model.save(run_dir / MODEL_FILE)
    model_sha256 = file_sha256(run_dir / MODEL_FILE)
    fit["bank_seconds"] = prepare_bank(model, KerasOutputCache(run_dir / CACHE_DIR, model_sha256), (cache, parts),
                                       rows, dataset.root, options.preprocess, options.progress)

    metadata = {
        "classes": dataset.classes,
        "input_size": [options.input_size, options.input_size],
        "input_layout": "NHWC",
        "preprocessing": options.preprocess.to_dict(),
        "model": "ResNet-50 (include_top=False) + GAP + Dense512 relu + Dropout0.5 + Dense softmax",
        "weights": options.weights,
        "unfreeze": options.unfreeze,
        "seed": options.seed,
        "split_seed": options.split_seed,
        "data_root": str(dataset.root),
        "data_layout": dataset.layout,
        "split_manifest": MANIFEST_NAME,
        "split_manifest_sha256": file_sha256(manifest),
        "model_sha256": model_sha256,
        "skipped_bad_images": dataset.skipped,
        "created": utc_now(),
        "versions": tool_versions(),
    }
    write_json_atomic(run_dir / METADATA_FILE, metadata)

    metrics = {"fit": fit, **evaluate_splits(model, rows, dataset.root, dataset.classes, options.preprocess,
                                             run_dir, options.progress)}
    history = read_history(run_dir / HISTORY_FILE)
    metrics["epoch_seconds"] = _epoch_seconds(history)
    metrics["wall_seconds_this_invocation"] = round(time.perf_counter() - started, 1)
    write_json_atomic(run_dir / METRICS_FILE, metrics)
    figures.training_curves(history, run_dir / "training_curves.png")
    log.info("run saved in %s", run_dir)
    return metrics


def evaluate_splits(model, rows: list[ManifestRow], data_root: Path, classes: list[str],
                    preprocess: PreprocessConfig, run_dir: Path, progress: bool) -> dict:
    """Accuracy report of ``model`` on the manifest's validation and test images, with a confusion figure each
    in ``run_dir``: ``{"val": report, "test": report}``."""
    index = {name: i for i, name in enumerate(classes)}
    metrics = {}
    for split in ("val", "test"):
        split_rows = rows_of(rows, split)
        result = predict_files(model, [data_root / r.path for r in split_rows], preprocess, progress=progress,
                               desc=f"evaluating {split}")
        y_true = np.array([index[r.label] for r in split_rows])
        metrics[split] = report(y_true, result.probabilities.argmax(axis=1), classes)
        figures.confusion(metrics[split]["confusion_matrix"], classes,
                          f"NEU {'validation' if split == 'val' else 'test'}", run_dir / f"confusion_{split}.png")
    return metrics


def recorded_val_accuracy(run_dir: Path) -> float:
    """The validation accuracy a run recorded in its metrics.json (0 when it has none)."""
    path = Path(run_dir) / METRICS_FILE
    return json.loads(path.read_text())["val"]["accuracy"] if path.is_file() else 0.0


def discard_evaluation(run_dir: Path, created: bool) -> None:
    """Remove what :func:`evaluate_splits` wrote into ``run_dir``, and the folder itself when ``created``."""
    for split in ("val", "test"):
        (run_dir / f"confusion_{split}.png").unlink(missing_ok=True)
    if created:
        run_dir.rmdir()


def prepare_bank(model, cache: KerasOutputCache, trunk: tuple[FeatureCache, Submodels], rows, data_root: Path,
                 preprocess: PreprocessConfig, progress: bool) -> float:
    """The unknown score's bank as edge-export builds it by default (each training image as captured, its first
    augmented copies and its camera copies), through the trained model while it is loaded: the trunk outputs the
    training has not made yet, then the trained top over every row, kept in the run's Keras output cache so
    that the export only reads them (train.embeddings.bank_embeddings). Returns the seconds spent."""
    started = time.perf_counter()
    bank_embeddings(model, trunk, data_root, rows_of(rows, "train"), preprocess, progress=progress, cache=cache)
    seconds = round(time.perf_counter() - started, 1)
    log.info("unknown-score bank computed in %.0f s (kept for edge-export in %s)", seconds, cache.directory)
    return seconds


def _epoch_seconds(history: list[dict]) -> dict:
    out = {}
    for stage in (1, 2):
        secs = [float(r["seconds"]) for r in history if int(r["stage"]) == stage]
        if secs:
            out[f"stage{stage}"] = {"epochs": len(secs), "mean": round(float(np.mean(secs)), 2),
                                    "total": round(float(np.sum(secs)), 1)}
    return out


def _log_split(rows: list[ManifestRow]) -> None:
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row.label, {"train": 0, "val": 0, "test": 0})[row.split] += 1
    for label, c in counts.items():
        log.info("split %-16s train %d  val %d  test %d", label, c["train"], c["val"], c["test"])


def cross_validate(options: TrainOptions) -> dict:
    """K-fold cross-validation: the recipe trained once per fold, test accuracy per fold and mean ± std.

    Fold test sets are scored on the cached clean trunk features through the trained top of the model (the
    same computation as the full model on the image, without re-running the frozen trunk).
    """
    run_dir, weights, dataset, hashes = _prepare(options)
    folds = kfold_splits(dataset, hashes, options.folds, options.val_per_class, options.split_seed)
    index = {name: i for i, name in enumerate(dataset.classes)}
    per_fold = []
    for k, rows in enumerate(folds):
        fold_dir = run_dir / f"fold_{k + 1}"
        fold_dir.mkdir(exist_ok=True)
        if (fold_dir / METRICS_FILE).is_file():
            per_fold.append(json.loads((fold_dir / METRICS_FILE).read_text()))
            log.info("fold %d already finished (resumed)", k + 1)
            continue
        write_manifest(fold_dir / MANIFEST_NAME, rows)
        log.info("fold %d/%d", k + 1, options.folds)
        model, parts, cache = _build(options, weights, len(dataset.classes))
        fit = fit_two_stages(model, parts, rows, dataset.root, dataset.classes, cache, options.fit_settings(), fold_dir)
        test_rows = rows_of(rows, "test")
        cache.ensure_trunk(parts.trunk, cache_items(test_rows, dataset.root, range(0, 1)), progress=options.progress)
        features = features_per_image(cache, "trunk", test_rows, dataset.root, range(0, 1))[:, 0]
        probabilities = np.concatenate(
            [np.asarray(parts.top(features[i : i + 64].astype(np.float32), training=False))
             for i in range(0, len(features), 64)]
        )
        y_true = np.array([index[r.label] for r in test_rows])
        fold_metrics = {"fold": k + 1, "fit": fit, "test": report(y_true, probabilities.argmax(1), dataset.classes)}
        write_json_atomic(fold_dir / METRICS_FILE, fold_metrics)
        log.info("fold %d test accuracy %.4f", k + 1, fold_metrics["test"]["accuracy"])
        per_fold.append(fold_metrics)
    accuracies = np.array([f["test"]["accuracy"] for f in per_fold])
    summary = {
        "folds": options.folds,
        "test_accuracy_per_fold": accuracies.tolist(),
        "test_accuracy_mean": float(accuracies.mean()),
        "test_accuracy_std": float(accuracies.std(ddof=1)) if len(accuracies) > 1 else 0.0,
        "test_correct": int(sum(f["test"]["correct"] for f in per_fold)),
        "test_total": int(sum(f["test"]["total"] for f in per_fold)),
        "confusion_matrix_all_folds": np.sum([f["test"]["confusion_matrix"] for f in per_fold], axis=0).tolist(),
        "classes": dataset.classes,
    }
    write_json_atomic(run_dir / "cv_metrics.json", summary)
    return summary
