"""``edge-export check``: re-validate existing artifacts on labelled folders and/or against a float model."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from edge_runtime.classifier import ood_spec_of
from edge_runtime.errors import MetadataError
from edge_runtime.metadata import read_metadata
from edge_runtime.polarity import AS_IS
from edge_runtime.preprocessing import PreprocessConfig
from export import checks
from export.gates import Gates

log = logging.getLogger(__name__)


def _reference_probabilities(reference: str, data: checks.EvalData, preprocess: PreprocessConfig, threads, progress,
                             polarity: str | None = None, first_artifact: str | None = None):
    """The float reference's probabilities, read with the same test-time polarity as the artifacts."""
    path = Path(reference)
    if path.is_dir():  # a training run: Keras float model (workstation only)
        from train.run_dir import TrainedRun

        run = TrainedRun.open(path)
        metadata = _metadata_or_none(first_artifact)
        polarity = polarity or (metadata.extra.get("polarity", AS_IS) if metadata else AS_IS)
        if polarity != AS_IS:  # the unknown score's bank comes with the artifacts, not with the run
            if first_artifact and metadata is None:
                metadata = read_metadata(first_artifact)  # raises the MetadataError that says what is wrong
            ood = ood_spec_of(metadata, first_artifact) if metadata else None
            if ood is None:
                raise ValueError(f"--polarity {polarity} with a run directory as --reference needs an artifact "
                                 "with the unknown score to take its training embeddings from")
            probabilities, _ = checks.float_outputs(run.load_model(), data, run.preprocess, ood, polarity, progress,
                                                    run.output_cache())
            return probabilities, run.classes
        return (checks.keras_probabilities(run.load_model(), data, run.preprocess, progress=progress,
                                           cache=run.output_cache()), run.classes)
    probabilities, _, labels = checks.artifact_probabilities(path, data, threads, progress=progress, polarity=polarity)
    return probabilities, labels


def _metadata_or_none(artifact: str | None):
    """An artifact's metadata, or None when there is no artifact or its metadata is unreadable."""
    try:
        return read_metadata(artifact) if artifact else None
    except MetadataError:
        return None


def _expected_contract(first_artifact: str, reference: str | None, labels: list[str] | None):
    """Class order and preprocessing everything is judged by: the reference's, else the first artifact's."""
    if reference and Path(reference).is_dir():
        from train.run_dir import TrainedRun

        run = TrainedRun.open(reference)
        return run.classes, run.preprocess
    source = reference or first_artifact
    try:
        meta = read_metadata(source)
        return meta.labels, meta.preprocess
    except MetadataError:
        if not labels or source == reference:
            raise
        return labels, PreprocessConfig()


def check_artifacts(
    artifacts: list[str],
    data_dir: str,
    reference: str | None = None,
    mapping: dict[str, str] | None = None,
    labels: list[str] | None = None,
    gates: Gates = Gates(),
    threads: int | None = None,
    json_path: str | None = None,
    progress: bool = True,
    polarity: str | None = None,
) -> dict:
    """Accuracy per folder for every artifact; with a reference also drop, agreement and gates.

    ``polarity`` ("as-is"/"auto", edge_runtime.polarity) overrides the artifacts' own test-time polarity, and
    the reference is read the same way: run it once with each to see what ``--polarity auto`` does on your
    images."""
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"--data folder '{data_dir}' does not exist")
    classes, preprocess = _expected_contract(artifacts[0], reference, labels)
    items = checks.labelled_folder_images(Path(data_dir), classes, mapping)
    if not items:
        raise FileNotFoundError(f"no images found under '{data_dir}'")
    data = checks.load_eval_data(items, preprocess, progress)
    ref = None
    if reference:
        ref, _ = _reference_probabilities(reference, data, preprocess, threads, progress, polarity, artifacts[0])
    results, passed = [], True
    for artifact in artifacts:
        probabilities, load_seconds, art_labels = checks.artifact_probabilities(
            Path(artifact), data, threads, progress=progress, labels=labels, polarity=polarity)
        row = {"artifact": artifact, "load_seconds": round(load_seconds, 3),
               "scores": checks.score(data.items, classes, probabilities)}
        failures = [] if art_labels == classes else [f"label order {art_labels} differs from {classes}"]
        if ref is not None:
            overall = [checks.EvalImage(i.path, "all", i.expected) for i in data.items]
            row["comparison"] = checks.compare(data.items, classes, ref, probabilities)
            row["overall"] = checks.compare(overall, classes, ref, probabilities)
            cross = dataclasses.replace(gates, max_drop_neu_pp=gates.max_drop_cross_pp)
            failures += cross.failures(row["comparison"])
        row["failures"], row["passed"] = failures, not failures
        passed &= row["passed"]
        results.append(row)
    result = {"data": str(data_dir), "reference": reference, "polarity": polarity, "results": results,
              "passed": passed, "unreadable": data.errors, "table": _table(results, data.groups, ref is not None)}
    if json_path:
        Path(json_path).write_text(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=2,
                                              default=_plain))
    return result


def _plain(value):
    return value.item() if isinstance(value, np.generic) else str(value)


def _table(results: list[dict], groups: list[str], with_reference: bool) -> str:
    header = ["artifact", *groups] + (["agreement", "max Δp"] if with_reference else []) + ["verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results:
        cells = [Path(row["artifact"]).name]
        for group in groups:
            s = row["scores"].get(group, {})
            cells.append("–" if s.get("accuracy") is None else f"{100 * s['accuracy']:.1f} % ({s['correct']}/{s['images']})")
        if with_reference:
            cells += [f"{100 * row['overall']['agreement']:.2f} %", f"{row['overall']['max_abs_dprob']:.4f}"]
        cells.append("pass" if row["passed"] else "FAIL: " + "; ".join(row["failures"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
