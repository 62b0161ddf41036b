"""The model that ships in the package: present, self-describing, small, and right on NEU test images."""

from __future__ import annotations

import csv

import pytest

from conftest import NEU, NEU_CLASSES, needs_neu
from edge_runtime import Classifier, default_model_path, read_metadata
from edge_runtime.fileio import file_sha256

MODELS = default_model_path().parent


def test_the_default_model_ships_with_card_and_manifest():
    model = default_model_path()
    # the int8 graph is 25.4 MB; the unknown score's bank and projection in the metadata about 6 MB more
    assert model.is_file() and model.stat().st_size <= 32 * 1024 * 1024
    meta = read_metadata(model)
    assert meta.labels == NEU_CLASSES and meta.format == "tflite_int8" and meta.preprocessing_in_graph
    card = (MODELS / "MODEL_CARD.md").read_text()
    assert file_sha256(model) in card and "Known limits" in card
    assert file_sha256(MODELS / "split_manifest.csv") == meta.split_manifest_sha256


@pytest.mark.data
@needs_neu
def test_the_default_model_classifies_the_manifest_test_images_correctly():
    with open(MODELS / "split_manifest.csv", newline="") as handle:
        test_rows = [r for r in csv.DictReader(handle) if r["split"] == "test"][::6]  # 12 of the 72
    classifier = Classifier.load()
    answers = []
    for row in test_rows:
        assert file_sha256(NEU / row["path"]) == row["sha256"]
        result = classifier.predict_file(NEU / row["path"])
        assert result.predicted == row["class"], row["path"]
        answers.append(result.label)
    # the operating point answers unknown to about 2 % of known defects: one of these 12 at most
    assert sum(a != row["class"] for a, row in zip(answers, test_rows)) <= 1 and set(answers) <= {*NEU_CLASSES, "unknown"}
