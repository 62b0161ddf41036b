"""edge-train soup: the mean of runs that started from the same weights, as a run directory of its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from train.cli import main
from train.run_dir import TrainedRun

ARTIFACTS = ["model.keras", "metadata.json", "config.json", "split_manifest.csv", "metrics.json",
             "confusion_val.png", "confusion_test.png"]


def sibling_run(run: Path, where: Path, shift: float, drop: tuple[str, ...] = (), **config_changes) -> Path:
    """A copy of ``run`` whose every weight is moved by ``shift`` x its own value (a run trained a little
    differently from the same start), with ``config_changes`` in its config.json and the settings ``drop``
    left out of it (as a run made before they existed writes it)."""
    other = where / f"{run.name}-{shift}"
    shutil.copytree(run, other)
    model = TrainedRun.open(other).load_model()
    model.set_weights([w * (1 + shift) for w in model.get_weights()])
    model.save(other / "model.keras")
    config = json.loads((other / "config.json").read_text())
    config.update(config_changes)
    for name in drop:
        config.pop(name)
    (other / "config.json").write_text(json.dumps(config))
    return other


def weights_of(run: Path) -> list[np.ndarray]:
    return TrainedRun.open(run).load_model().get_weights()


def test_the_soup_is_a_run_whose_weights_are_the_mean_of_the_runs(trained_run: Path, tmp_path: Path, capsys):
    # made before the split seed and the consistency term had settings of their own: read with their defaults
    other = sibling_run(trained_run, tmp_path, 0.02, drop=("split_seed", "consistency"), lr_stage2=5e-5)
    assert main(["soup", str(trained_run), str(other), "--runs", str(tmp_path / "runs"), "--name", "soup",
                 "--no-progress"]) == 0
    soup = tmp_path / "runs" / "soup"
    assert all((soup / name).is_file() for name in ARTIFACTS)
    for mean, a, b in zip(weights_of(soup), weights_of(trained_run), weights_of(other)):
        np.testing.assert_allclose(mean, (a + b) / 2, rtol=1e-6, atol=1e-7)
    metadata = json.loads((soup / "metadata.json").read_text())
    assert metadata["soup_of"] == [str(trained_run.resolve()), str(other.resolve())]
    assert metadata["classes"] == TrainedRun.open(trained_run).classes
    lr = json.loads((trained_run / "config.json").read_text())["lr_stage2"]
    assert json.loads((soup / "config.json").read_text())["soup_settings"] == [{"lr_stage2": lr}, {"lr_stage2": 5e-5}]
    assert (soup / "split_manifest.csv").read_bytes() == (trained_run / "split_manifest.csv").read_bytes()
    assert any((soup / "cache").iterdir()), "the unknown score's bank is left for edge-export"
    assert "val accuracy" in capsys.readouterr().out


def test_runs_from_other_starts_are_refused_naming_the_setting(trained_run: Path, tmp_path: Path, caplog):
    other = sibling_run(trained_run, tmp_path, 0.02, seed=7)
    assert main(["soup", str(trained_run), str(other), "--runs", str(tmp_path / "runs"), "--name", "soup"]) == 2
    assert "seed" in caplog.text and str(other) in caplog.text
    assert not (tmp_path / "runs" / "soup").exists()


def test_a_mean_less_right_than_its_runs_is_refused_and_nothing_written(trained_run: Path, tmp_path: Path, caplog):
    # weights of opposite sign average to zero: a model that answers one class for every image
    other = sibling_run(trained_run, tmp_path, -2.0)
    for run in (trained_run, other):
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["val"]["total"] > metrics["val"]["confusion_matrix"][0][0]  # more than one class in val
    first = tmp_path / "first"
    shutil.copytree(trained_run, first)
    for run in (first, other):
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["val"]["accuracy"] = 1.0
        (run / "metrics.json").write_text(json.dumps(metrics))
    assert main(["soup", str(first), str(other), "--runs", str(tmp_path / "runs"), "--name", "soup"]) == 2
    assert "too far apart" in caplog.text
    assert not (tmp_path / "runs" / "soup").exists()


def test_one_run_is_not_a_soup(trained_run: Path, tmp_path: Path, caplog):
    assert main(["soup", str(trained_run), "--runs", str(tmp_path), "--name", "soup"]) == 2
    assert "at least two runs" in caplog.text


def test_a_soup_has_no_training_to_resume(trained_run: Path, tmp_path: Path, caplog):
    soup = tmp_path / "soup"
    shutil.copytree(trained_run, soup)
    config = json.loads((soup / "config.json").read_text())
    (soup / "config.json").write_text(json.dumps({**config, "soup_of": [str(trained_run)]}))
    assert main(["--resume", str(soup)]) == 2
    assert "no training to resume" in caplog.text


def test_soup_help_is_available(capsys):
    with pytest.raises(SystemExit) as info:
        main(["soup", "--help"])
    assert info.value.code == 0
    assert "same weights" in capsys.readouterr().out


def test_the_model_card_says_the_weights_are_a_mean_and_of_which_settings():
    from export.model_card import weights_text

    text = weights_text({"soup_of": ["a", "b"], "soup_settings": [{"consistency": 0.0}, {"consistency": 0.3}]})
    assert "mean of 2" in text and "`consistency` 0.0" in text and "`consistency` 0.3" in text
    assert "0.3" in weights_text({"consistency": 0.3}) and weights_text({"consistency": 0.0}) == ""
