"""``edge-train soup``: one model whose weights are the mean of several runs that started from the same weights.

Runs of one split, one set of pretrained weights and one seed start from identical weights (the seed draws the
head's first values). Fine-tuned with different settings, for example with and without ``--consistency``, they
stay close enough that the mean of their weights is itself a model, often more robust to input changes than
each run ("model soups", Wortsman et al., 2022). It costs nothing on the device: the result is one model, in
a run directory that ``edge-export`` takes as it takes any other. Measured: docs/training.md.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edge_runtime.fileio import file_sha256, write_json_atomic
from train.output_cache import CACHE_DIR, KerasOutputCache
from train.run_dir import CONFIG_FILE, METADATA_FILE, METRICS_FILE, MODEL_FILE, TrainedRun, tool_versions, utc_now
from train.split import MANIFEST_NAME
from train.training_run import (
    TrainOptions,
    discard_evaluation,
    evaluate_splits,
    prepare_bank,
    recorded_val_accuracy,
    run_feature_cache,
)

log = logging.getLogger(__name__)

# settings that decide the weights a run starts from and what its model means; runs in one soup share them
SHARED_SETTINGS = ("weights", "seed", "split_seed", "input_size", "unfreeze", "contrast")
RUN_PLACES = ("run_dir", "data", "cache_dir")  # where a run was, not how it was trained


def _settings(run: TrainedRun) -> dict:
    """The run's config.json as a resume reads it: settings added since the run was made take the values it was
    trained with."""
    options = asdict(TrainOptions.from_dict(run.config("a soup")))
    return {k: v for k, v in options.items() if k != "progress"}


def check_same_start(runs: list[TrainedRun]) -> list[dict]:
    """Raise ValueError, naming the runs and the setting, unless every run started from the same weights with
    the same split, classes and preprocessing. Returns each run's settings (``_settings``)."""
    if len(runs) < 2:
        raise ValueError("a soup needs at least two runs")
    configs = [_settings(run) for run in runs]
    first, first_options = runs[0], configs[0]
    manifest_sha = file_sha256(first.directory / MANIFEST_NAME)
    for run, options in zip(runs[1:], configs[1:]):
        differ = [k for k in SHARED_SETTINGS if options.get(k) != first_options.get(k)]
        if run.classes != first.classes:
            differ.append("classes")
        if file_sha256(run.directory / MANIFEST_NAME) != manifest_sha:
            differ.append("split manifest")
        if differ:
            raise ValueError(
                f"'{run.directory}' and '{first.directory}' differ in {', '.join(differ)}: only runs that start "
                "from the same weights (same --weights, --seed, split and recipe layers) can be averaged; retrain "
                "one with the other's settings"
            )
    return configs


def mean_weights(models: list) -> list[np.ndarray]:
    """The element-wise mean of the models' weights (every variable, in the models' order)."""
    per_model = [m.get_weights() for m in models]
    shapes = [[w.shape for w in weights] for weights in per_model]
    if any(s != shapes[0] for s in shapes[1:]):
        raise ValueError("the runs' models do not have the same layers; only runs of one architecture can be averaged")
    return [np.mean(np.stack(ws), axis=0).astype(ws[0].dtype) for ws in zip(*per_model)]


def soup_run(run_dirs: list[str | Path], out_dir: str | Path, progress: bool = True) -> dict:
    """Average the runs' weights into a new run directory ``out_dir`` (model, metadata, config, split manifest,
    metrics, the unknown score's bank). Refuses, writing nothing, when the mean is less right on the validation
    images than the least right run. Returns the metrics."""
    out_dir = Path(out_dir)
    if (out_dir / MODEL_FILE).exists():
        raise ValueError(f"'{out_dir}' already holds a model; pick a new --name")
    runs = [TrainedRun.open(d) for d in run_dirs]
    configs = check_same_start(runs)
    data_root, rows = runs[0].manifest()
    models = [run.load_model() for run in runs]
    soup = models[0]
    soup.set_weights(mean_weights(models))
    del models[1:]

    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = evaluate_splits(soup, rows, data_root, runs[0].classes, runs[0].preprocess, out_dir, progress)
    ingredients_val = [recorded_val_accuracy(r.directory) for r in runs]
    if metrics["val"]["accuracy"] < min(ingredients_val):
        discard_evaluation(out_dir, created)
        raise ValueError(
            f"the mean of {', '.join(str(r.directory) for r in runs)} is right on {100 * metrics['val']['accuracy']:.1f} % "
            f"of the validation images, the runs on {', '.join(f'{100 * a:.1f} %' for a in ingredients_val)}: their "
            "weights are too far apart to average; nothing was written"
        )

    soup.save(out_dir / MODEL_FILE)
    shutil.copyfile(runs[0].directory / MANIFEST_NAME, out_dir / MANIFEST_NAME)
    sources = [str(r.directory.resolve()) for r in runs]
    varying = sorted(k for k in configs[0] if k not in RUN_PLACES and len({json.dumps(c[k]) for c in configs}) > 1)
    config = {**configs[0], "run_dir": str(out_dir), "soup_of": sources,
              "soup_settings": [{k: c[k] for k in varying} for c in configs]}
    write_json_atomic(out_dir / CONFIG_FILE, config)
    model_sha256 = file_sha256(out_dir / MODEL_FILE)
    options = TrainOptions.from_dict(config)
    bank_seconds = prepare_bank(soup, KerasOutputCache(out_dir / CACHE_DIR, model_sha256),
                                run_feature_cache(out_dir, soup), rows, data_root, options.preprocess, progress)
    metadata = {**runs[0].metadata, "model_sha256": model_sha256, "soup_of": sources, "created": utc_now(),
                "versions": tool_versions()}
    write_json_atomic(out_dir / METADATA_FILE, metadata)
    metrics["soup_of"] = {src: {"val_accuracy": a} for src, a in zip(sources, ingredients_val)}
    metrics["bank_seconds"] = bank_seconds
    write_json_atomic(out_dir / METRICS_FILE, metrics)
    log.info("mean of %d runs saved in %s", len(runs), out_dir)
    return metrics
