"""Run a Keras model over image files through edge_runtime's preprocessing (batched, never ``predict()``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.errors import ImageReadError
from edge_runtime.ood import OodSpec
from edge_runtime.preprocessing import PreprocessConfig, normalize, prepare_pixels, read_image


@dataclass
class FilePredictions:
    paths: list[Path]  # files that were classified, in order
    probabilities: np.ndarray  # (len(paths), classes)
    errors: list[tuple[Path, str]] = field(default_factory=list)  # unreadable files, with the reason
    inverted: np.ndarray | None = None  # test-time polarity "auto": per file, the inverted reading was kept


def read_pixels(paths: list[Path], preprocess: PreprocessConfig,
                errors: list[tuple[Path, str]]) -> tuple[list[Path], list[np.ndarray]]:
    """The readable files and their uint8 pixels at the model size; unreadable ones go to ``errors``."""
    done, pixels = [], []
    for path in paths:
        try:
            pixels.append(prepare_pixels(read_image(path), preprocess))
            done.append(Path(path))
        except (ImageReadError, ValueError) as exc:
            errors.append((Path(path), str(exc)))
    return done, pixels


def predict_files(
    model,
    paths: list[Path],
    preprocess: PreprocessConfig,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "classifying",
) -> FilePredictions:
    """Classify files in batches; an unreadable file is recorded in ``errors`` and the rest go on."""
    from tqdm.auto import tqdm

    done: list[Path] = []
    outputs: list[np.ndarray] = []
    errors: list[tuple[Path, str]] = []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            batch, pixels = read_pixels(paths[start : start + batch_size], preprocess, errors)
            if pixels:
                outputs.append(np.asarray(model(normalize(np.stack(pixels), preprocess), training=False)))
                done.extend(batch)
            bar.update(len(paths[start : start + batch_size]))
    probabilities = np.concatenate(outputs) if outputs else np.zeros((0, model.output_shape[-1]), np.float32)
    return FilePredictions(done, probabilities, errors)


def predict_files_with_polarity(model, paths: list[Path], preprocess: PreprocessConfig, ood: OodSpec,
                                polarity: str, progress: bool = True) -> FilePredictions:
    """Like :func:`predict_files`, read with test-time ``polarity`` (train.embeddings.polarity_outputs)."""
    from train.embeddings import polarity_outputs

    errors: list[tuple[Path, str]] = []
    done, pixels = read_pixels(paths, preprocess, errors)
    if not pixels:
        return FilePredictions([], np.zeros((0, model.output_shape[-1]), np.float32), errors, np.zeros(0, bool))
    probabilities, _, inverted = polarity_outputs(model, np.stack(pixels), preprocess, ood, polarity, progress)
    return FilePredictions(done, probabilities, errors, inverted)
