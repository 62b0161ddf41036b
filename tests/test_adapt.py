"""edge-adapt: a few labelled images per class teach a model a new line, on the device, without TensorFlow."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edge_runtime import Classifier, MetadataError, ModelLoadError
from edge_runtime.adapt import (DEFAULT_VIEWS, EMBEDDING, FEATURES, MIRRORS, UNLABELLED, AdaptedHead, Unlabelled,
                                 build_head, centred, fit_logistic, is_labelled, leave_one_out_distances,
                                 mirrored_views, transform)
from edge_runtime.adapt_cli import adapt, info, main
from edge_runtime.metadata import read_metadata
from edge_runtime.model_file import write_model
from edge_runtime.ood import build_spec, l2_normalize, threshold_from

REPO = Path(__file__).resolve().parents[1]
SIZE = 16
BASE = ["crazing", "inclusion", "patches"]
# one colour per class: the base model's three, and three a "new line" brings
COLOURS = {"crazing": (200, 40, 40), "inclusion": (40, 200, 40), "patches": (40, 40, 200),
           "red_iron": (30, 120, 230), "slag": (230, 230, 30), "oxide": (120, 30, 160)}


def _image(name: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.array(COLOURS[name], np.float32)
    return np.clip(base + rng.normal(0, 6, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


def _folders(root: Path, classes: list[str], per_class: int, first_seed: int = 0) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(root / name / f"{name}_{first_seed + i}.png"), _image(name, 1000 * first_seed + i + hash(name) % 97))
    return root


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> SimpleNamespace:
    """A tiny float TFLite with the exported outputs (3 probabilities, an 8-wide embedding, 12-wide pooled
    features), its unknown-score bank built from its own embeddings of the base classes' images."""
    import keras
    import tensorflow as tf

    from test_runtime import tiny_metadata

    base = tmp_path_factory.mktemp("adapt_base")
    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 64.0)(inputs)
    x = keras.layers.Conv2D(12, 3, activation="relu")(x)  # the runtime's caffe normalisation comes first
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    embedding = keras.layers.Dense(8, activation="relu")(pooled)
    probabilities = keras.layers.Dense(len(BASE), activation="softmax")(embedding)
    classes = keras.Model(inputs, probabilities)
    classes.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    images = np.stack([_image(c, s) for c in BASE for s in range(10)]).astype(np.float32)
    classes.fit(images, np.repeat(np.arange(len(BASE)), 10), epochs=40, batch_size=10, verbose=0)  # a trained base
    keras.Model(inputs, [probabilities, embedding, pooled]).export(str(base / "saved"), verbose=False)
    flatbuffer = tf.lite.TFLiteConverter.from_saved_model(str(base / "saved")).convert()
    bare = base / "bare.tflite"
    write_model(bare, flatbuffer, tiny_metadata("tflite_fp32"))
    classifier = Classifier.load(bare)
    train = [_image(c, s) for c in BASE for s in range(10)]
    val = [_image(c, 100 + s) for c in BASE for s in range(4)]

    def embed(images):
        outputs = classifier.backend.run_outputs(np.stack([classifier.prepare(i) for i in images]))
        return next(o for o in outputs if o.shape[1] == 8)

    spec = build_spec(embed(train), embed(val), k=1, quantile=0.95)
    meta = tiny_metadata("tflite_fp32")
    meta.extra["ood"] = spec.to_dict()
    model = write_model(base / "base.tflite", flatbuffer, meta)
    return SimpleNamespace(path=model, bare=bare, root=base)


def test_only_new_keeps_just_the_new_lines_classes_and_recognises_unseen_images_of_them(base_model, tmp_path):
    data = _folders(tmp_path / "line", ["red_iron", "slag", "oxide"], 10)
    head = adapt(data, tmp_path / "line.tflite", base_model.path, only_new=True)
    assert head.feature == FEATURES and not head.keep_base
    classifier = Classifier.load(tmp_path / "line.tflite")
    assert classifier.labels == ["oxide", "red_iron", "slag"]
    answers = {name: [classifier.predict(_image(name, 500 + s)) for s in range(5)] for name in classifier.labels}
    assert all(a.predicted == name for name, some in answers.items() for a in some)
    # the threshold is the enrolled images' own 99 % leave-one-out distance: a few unseen images may lie beyond
    assert sum(a.unknown for some in answers.values() for a in some) <= 3


def test_without_only_new_the_base_classes_stay_and_a_known_name_adds_examples(base_model, tmp_path):
    data = _folders(tmp_path / "line", ["inclusion", "slag"], 3)
    adapt(data, tmp_path / "both.tflite", base_model.path)
    classifier = Classifier.load(tmp_path / "both.tflite")
    assert classifier.labels == BASE + ["slag"]  # inclusion was extended, not added twice
    assert classifier.predict(_image("slag", 777)).predicted == "slag"
    base = Classifier.load(base_model.path)
    for name in BASE:  # what the base model answered, the adapted one still answers
        image = _image(name, 901)
        assert classifier.predict(image).predicted == base.predict(image).predicted


def test_an_image_of_a_class_nobody_enrolled_is_unknown(base_model, tmp_path):
    data = _folders(tmp_path / "line", ["red_iron", "slag"], 4)
    adapt(data, tmp_path / "line.tflite", base_model.path, only_new=True)
    classifier = Classifier.load(tmp_path / "line.tflite")
    answer = classifier.predict(_image("oxide", 5))
    assert answer.unknown and answer.label == "unknown" and answer.ood_score > classifier.threshold == 0.0


def test_adapting_an_adapted_model_extends_it_and_info_says_where_each_class_came_from(base_model, tmp_path):
    first = adapt(_folders(tmp_path / "a", ["red_iron", "slag"], 3), tmp_path / "line.tflite", base_model.path,
                  only_new=True)
    second = adapt(_folders(tmp_path / "b", ["slag", "oxide"], 2, first_seed=50), tmp_path / "line.tflite",
                   tmp_path / "line.tflite")
    assert second.labels == ["red_iron", "slag", "oxide"] and not second.keep_base
    assert len(second.enrolled) == len(first.enrolled) + 4 * DEFAULT_VIEWS  # four new images, each in every view
    assert second.base_model_sha256 == first.base_model_sha256 and len(second.history) == 2
    about = info(tmp_path / "line.tflite")
    assert {n: c["images"] for n, c in about["classes"].items()} == {"red_iron": 3, "slag": 5, "oxide": 2}
    assert about["classes"]["slag"]["folders"] == sorted([str(tmp_path / "a" / "slag"), str(tmp_path / "b" / "slag")])


def test_the_metadata_records_images_base_model_and_digest(base_model, tmp_path):
    from edge_runtime.fileio import file_sha256

    data = _folders(tmp_path / "line", ["red_iron", "slag"], 2)
    adapt(data, tmp_path / "line.tflite", base_model.path, only_new=True)
    meta = read_metadata(tmp_path / "line.tflite")
    head = AdaptedHead.from_dict(meta.extra["adapted"])
    assert head.base_model_sha256 == file_sha256(base_model.path)
    assert sorted({(e["class"], e["sha256"]) for e in head.enrolled}) == sorted(
        (p.parent.name, file_sha256(p)) for p in data.rglob("*.png"))
    assert meta.graph_sha256 == read_metadata(base_model.path).graph_sha256  # the same graph, new metadata
    again = AdaptedHead.from_dict(json.loads(json.dumps(head.to_dict())))
    assert again.labels == head.labels and np.array_equal(again.bank, head.bank) and again.threshold == head.threshold


def test_each_image_is_enrolled_as_captured_and_mirrored_and_its_mirrors_are_not_its_neighbours(
        base_model, tmp_path):
    pixels = np.arange(2 * 3 * 3).reshape(2, 3, 3)
    views = dict(mirrored_views(pixels))
    assert list(views) == list(MIRRORS) and np.array_equal(views["as captured"], pixels)
    assert np.array_equal(views["left-right"], pixels[:, ::-1]) and np.array_equal(views["top-bottom"], pixels[::-1])
    assert np.array_equal(views["both"], pixels[::-1, ::-1])
    assert [name for name, _ in mirrored_views(pixels, 2)] == ["as captured", "left-right"]
    with pytest.raises(ValueError, match="views"):
        mirrored_views(pixels, 0)

    data = _folders(tmp_path / "line", ["red_iron", "slag"], 3)
    head = adapt(data, tmp_path / "line.tflite", base_model.path, only_new=True)
    assert len(head.enrolled) == 6 * DEFAULT_VIEWS
    assert {e["view"] for e in head.enrolled} == set(MIRRORS) and head.history[-1]["views"] == DEFAULT_VIEWS
    # the leave-one-out threshold compares each image with the *other* images, never with its own mirrors
    bank = centred(head.bank, head.centre)
    images = np.array([e["sha256"] for e in head.enrolled])
    nearest_other_image = [1 - (bank[images != images[i]] @ bank[i]).max() for i in range(len(bank))]
    assert np.allclose(leave_one_out_distances(bank, list(images)), nearest_other_image, atol=1e-6)
    single = adapt(data, tmp_path / "single.tflite", base_model.path, only_new=True, views=1)
    assert len(single.enrolled) == 6 and {e["view"] for e in single.enrolled} == {"as captured"}
    assert info(tmp_path / "line.tflite")["classes"]["slag"]["images"] == 3


def test_the_threshold_comes_from_the_enrolled_images_only():
    rng = np.random.default_rng(0)
    rows = transform(np.abs(rng.normal(size=(6, 12))))
    enrolled = [{"sha256": str(i), "class": c} for i, c in enumerate("aabbcc")]
    head = build_head(rows, rows, list("aabbcc"), enrolled, BASE, False, EMBEDDING, quantile=1.0)
    loo = leave_one_out_distances(centred(head.bank, head.centre), [e["sha256"] for e in enrolled])
    assert head.threshold == pytest.approx(loo.max())  # quantile 1: the farthest leave-one-out distance
    duplicates = [{"sha256": "same", "class": c} for c in "ab"]  # one file enrolled twice is not a neighbour
    with pytest.raises(ValueError, match="copy of the same file"):
        build_head(rows[:2], rows[:2], ["a", "b"], duplicates, BASE, False, EMBEDDING)


def test_the_head_is_the_same_whether_fitted_on_the_rows_or_on_their_gram_matrix():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(3), 6)
    narrow = transform(np.abs(rng.normal(size=(18, 12)) + 2 * np.eye(12)[labels * 4]))  # more rows than features
    wide = np.concatenate([narrow, np.zeros((18, 20))], axis=1)  # the same rows, more features than rows
    (w_rows, b_rows), (w_gram, b_gram) = fit_logistic(narrow, labels, 3), fit_logistic(wide, labels, 3)
    assert ((narrow @ w_rows + b_rows).argmax(1) == labels).all()
    assert np.allclose(w_gram[:12], w_rows, atol=1e-5) and not w_gram[12:].any()
    assert np.allclose(b_gram, b_rows, atol=1e-5)


def test_the_head_works_on_features_centred_on_the_enrolled_classes():
    rng = np.random.default_rng(1)
    common = 5.0 * np.abs(rng.normal(size=32))  # what every image of the new line shares, in the base model's eyes
    a, b = (np.abs(common + rng.normal(scale=0.3, size=(4, 32)) + shift) for shift in (0.0, 0.4 * np.eye(32)[0]))
    rows = transform(np.concatenate([a, b, a[:1] + 0.0]))  # class a has one more image than b
    labels = list("aaaabbbb") + ["a"]
    head = build_head(rows, rows, labels, [{"sha256": str(i), "class": c} for i, c in enumerate(labels)], BASE,
                      False, EMBEDDING)
    assert np.allclose(head.centre, (rows[[0, 1, 2, 3, 8]].mean(0) + rows[4:8].mean(0)) / 2, atol=1e-3)
    probabilities, _ = head.decide(np.zeros((2, len(BASE))), np.stack([a[1], b[1]]), None, None)
    assert [head.labels[i] for i in probabilities.argmax(1)] == ["a", "b"]
    one_class = build_head(rows[:4], rows[:4], list("aaaa"), [{"sha256": str(i), "class": "a"} for i in range(4)],
                           BASE, True, EMBEDDING)
    assert not one_class.centre.any()  # a single class has no centre to move to
    legacy = AdaptedHead.from_dict({k: v for k, v in head.to_dict().items() if k != "centre"})
    assert legacy.centre is None  # heads written before centring decide on the features as they are
    assert AdaptedHead.from_dict(head.to_dict()).centre == pytest.approx(head.centre)


def _arc(rng: np.random.Generator, angles: np.ndarray, centre: np.ndarray, axis: int) -> np.ndarray:
    """Raw non-negative features of images spread along an arc in the plane of ``axis`` and ``axis + 1``."""
    raw = np.repeat(centre[None], len(angles), axis=0) + rng.normal(scale=0.02, size=(len(angles), len(centre)))
    raw[:, axis], raw[:, axis + 1] = 1 + np.cos(angles), 1 + np.sin(angles)
    return np.abs(raw)


def _three_arcs(seed: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray, list[str], list[dict[str, str]]]:
    """(generator, centre, rows, names, records): three classes, each along an arc of its own, only one end of
    each labelled (four images)."""
    rng = np.random.default_rng(seed)
    centre = np.full(24, 0.5)
    rows = transform(np.concatenate([_arc(rng, np.linspace(0.0, 0.3, 4), centre, axis) for axis in (0, 4, 8)]))
    names = list("aaaabbbbcccc")
    return rng, centre, rows, names, [{"sha256": str(i), "class": n} for i, n in enumerate(names)]


def test_unlabelled_images_the_head_names_confidently_train_the_head_but_never_the_unknown_distance():
    rng, centre, rows, names, enrolled = _three_arcs(4)
    far_end = _arc(rng, np.array([0.75]), centre, 0)  # raw features, as the graph outputs them
    stranger = np.abs(centre + 3 * np.eye(24)[12])[None]  # a defect nobody labelled: another direction
    pool = transform(np.concatenate([_arc(rng, np.linspace(0.3, 0.7, 9), centre, 0), stranger]))
    unlabelled = Unlabelled(pool, pool, [{"sha256": f"u{i}", "file": f"u{i}.png"} for i in range(len(pool))])

    alone = build_head(rows, rows, names, enrolled, BASE, False, EMBEDDING)
    widened = build_head(rows, rows, names, enrolled, BASE, False, EMBEDDING, unlabelled=unlabelled)

    taken = [i for i, e in enumerate(widened.enrolled) if not is_labelled(e)]
    assert len(taken) >= 2 and all(widened.enrolled[i]["source"] == UNLABELLED for i in taken)
    assert {widened.enrolled[i]["class"] for i in taken} == {"a"}
    assert "u9" not in {widened.enrolled[i]["sha256"] for i in taken}  # the stranger is not enrolled under any name
    def lead_of_a(head):  # how far class a's logit leads the others' for the far end of a's arc
        logits = centred(transform(far_end), head.centre) @ head.weights + head.bias
        return logits[0, 0] - logits[0, 1:].max()

    assert lead_of_a(widened) > lead_of_a(alone) > 0  # the head learnt where class a's images go...
    # ...but distances are to labelled images only: a taken image is not its own neighbour
    _, margins = widened.enrolled_answers(widened.bank[taken])
    labelled_bank = centred(widened.bank[widened.labelled], widened.centre)
    nearest_labelled = 1 - (centred(widened.bank[taken], widened.centre) @ labelled_bank.T).max(axis=1)
    assert np.allclose(margins, nearest_labelled - widened.threshold, atol=1e-5) and (nearest_labelled > 1e-3).all()
    assert widened.decide(np.zeros((1, 3)), stranger, None, None)[1][0] > 0  # still unknown
    # the threshold: the labelled rows' leave-one-out distances among themselves, their quantile
    loo = leave_one_out_distances(labelled_bank, [e["sha256"] for e in widened.enrolled if is_labelled(e)])
    assert len(loo) == len(rows) and widened.threshold == pytest.approx(threshold_from(loo, widened.quantile))


def test_unlabelled_frames_of_the_line_are_enrolled_under_the_heads_answer(base_model, tmp_path, caplog):
    data = _folders(tmp_path / "line", ["red_iron", "slag"], 4)
    frames = _folders(tmp_path / "frames", ["red_iron", "slag"], 5, first_seed=20)  # sub-folders: any layout
    (frames / "broken.png").write_bytes(b"not an image")
    (frames / "again.png").write_bytes((data / "slag" / "slag_0.png").read_bytes())  # already labelled
    for i in range(3):  # a defect nobody labelled
        cv2.imwrite(str(frames / f"oxide_{i}.png"), _image("oxide", 300 + i))
    head = adapt(data, tmp_path / "line.tflite", base_model.path, only_new=True, unlabelled=frames)
    taken = [e for e in head.enrolled if not is_labelled(e)]
    assert taken and all(e["class"] == Path(e["folder"]).name for e in taken)  # the frames' folders: the truth
    assert not any(e["file"].startswith("oxide") for e in taken) and all(e["view"] == "as captured" for e in taken)
    record = head.history[-1]["unlabelled"]
    assert record["read"] == 13 and record["skipped"] == 1 and sum(record["taken"].values()) == len(taken)
    assert "broken.png" in caplog.text
    about = info(tmp_path / "line.tflite")["classes"]
    assert {n: c["from_unlabelled"] for n, c in about.items()} == record["taken"] | {
        n: 0 for n in about if n not in record["taken"]}
    assert Classifier.load(tmp_path / "line.tflite").predict(_image("oxide", 400)).unknown


def test_a_frame_once_named_from_the_unlabelled_ones_can_be_labelled_later(base_model, tmp_path):
    out = tmp_path / "line.tflite"
    frames = _folders(tmp_path / "frames", ["red_iron", "slag"], 4, first_seed=60)
    first = adapt(_folders(tmp_path / "a", ["red_iron", "slag"], 3), out, base_model.path, only_new=True,
                  unlabelled=frames)
    named = next(e for e in first.enrolled if not is_labelled(e))
    (tmp_path / "b" / "oxide").mkdir(parents=True)  # a person labels that frame, under another name even
    (tmp_path / "b" / "oxide" / named["file"]).write_bytes((Path(named["folder"]) / named["file"]).read_bytes())
    second = adapt(tmp_path / "b", out, out)
    rows = [e for e in second.enrolled if e["sha256"] == named["sha256"]]
    assert len(rows) == DEFAULT_VIEWS and all(is_labelled(e) and e["class"] == "oxide" for e in rows)


def test_a_large_unlabelled_folder_is_read_up_to_the_limit_evenly_spaced(base_model, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    frames = _folders(tmp_path / "frames", ["red_iron", "slag"], 6, first_seed=40)
    head = adapt(_folders(tmp_path / "line", ["red_iron", "slag"], 3), tmp_path / "line.tflite", base_model.path,
                 only_new=True, unlabelled=frames, unlabelled_limit=4)
    assert head.history[-1]["unlabelled"]["read"] == 4 and "reading 4 of them" in caplog.text
    folders = {Path(e["folder"]).name for e in head.enrolled if not is_labelled(e)}
    assert folders <= {"red_iron", "slag"}


def test_with_the_base_classes_kept_an_unlabelled_image_nearer_the_training_images_stays_the_base_models():
    rng, centre, rows, names, enrolled = _three_arcs(5)
    gate = np.abs(rng.normal(size=(12, 8))) + np.eye(8)[0] * 4  # the enrolled images' embeddings
    base_bank = l2_normalize(np.abs(rng.normal(size=(5, 8))) + np.eye(8)[5] * 4)  # the training images'
    pool = transform(np.repeat(_arc(rng, np.array([0.32]), centre, 0), 2, axis=0))  # one look, two embeddings
    unlabelled = Unlabelled(pool, np.stack([gate[0], base_bank[0]]), [{"sha256": "near-enrolled"},
                                                                     {"sha256": "near-training"}])
    head = build_head(rows, gate, names, enrolled, BASE, True, EMBEDDING, unlabelled=unlabelled, base_bank=base_bank)
    assert [e["sha256"] for e in head.enrolled if not is_labelled(e)] == ["near-enrolled"]


def test_a_crash_while_writing_leaves_the_previous_model(base_model, tmp_path, monkeypatch):
    out = tmp_path / "line.tflite"
    adapt(_folders(tmp_path / "a", ["red_iron", "slag"], 2), out, base_model.path, only_new=True)
    before = out.read_bytes()
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    assert main(["--data", str(_folders(tmp_path / "b", ["oxide"], 2)), "--model", str(out), "--out", str(out)]) == 2
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "line.tflite"]


def test_a_changed_byte_in_an_adapted_model_is_refused(base_model, tmp_path):
    out = tmp_path / "line.tflite"
    adapt(_folders(tmp_path / "a", ["red_iron", "slag"], 2), out, base_model.path, only_new=True)
    data = bytearray(out.read_bytes())
    data[len(data) // 4] ^= 0x01
    out.write_bytes(bytes(data))
    with pytest.raises((ModelLoadError, MetadataError)):
        Classifier.load(out)


@pytest.mark.parametrize("case", ["no_folder", "no_classes", "empty_class", "unreadable_class", "no_embedding",
                                  "wrong_suffix", "unwritable", "no_unlabelled_folder", "no_unlabelled_image"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(base_model, tmp_path, caplog, case):
    data = _folders(tmp_path / "line", ["red_iron", "slag"], 2)
    out, model = tmp_path / "out" / "line.tflite", base_model.path
    if case == "no_folder":
        data = tmp_path / "missing"
    elif case == "no_classes":
        data = tmp_path / "flat"
        data.mkdir()
    elif case == "empty_class":
        (data / "oxide").mkdir()
    elif case == "unreadable_class":
        (data / "oxide").mkdir()
        (data / "oxide" / "broken.png").write_bytes(b"not an image")
    elif case == "no_embedding":
        model = base_model.bare
    elif case == "wrong_suffix":
        out = tmp_path / "line.onnx"
    elif case == "unwritable":
        (tmp_path / "out").write_text("a file where the folder should be")
    extra = []
    if case.startswith("no_unlabelled"):
        frames = tmp_path / "frames"
        if case == "no_unlabelled_image":
            frames.mkdir()
            (frames / "broken.jpg").write_bytes(b"not an image")
        extra = ["--unlabelled", str(frames)]
    assert main(["--data", str(data), "--model", str(model), "--out", str(out), *extra]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    expected = {"no_folder": "missing", "no_classes": "no class folders", "empty_class": "oxide",
                "unreadable_class": "oxide", "no_embedding": "bare.tflite", "wrong_suffix": "suffix",
                "unwritable": "line.tflite", "no_unlabelled_folder": "frames",
                "no_unlabelled_image": "frames"}[case]
    assert expected in errors[0]
    assert not out.exists() or case == "unwritable"


def test_unreadable_files_are_listed_skipped_and_counted(base_model, tmp_path, caplog):
    data = _folders(tmp_path / "line", ["red_iron", "slag"], 3)
    (data / "slag" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    head = adapt(data, tmp_path / "line.tflite", base_model.path, only_new=True)
    assert len({e["sha256"] for e in head.enrolled}) == 6 and head.history[-1]["skipped"] == 1
    assert head.history[-1]["added"] == 6
    assert "truncated.png" in caplog.text


def test_info_piped_into_a_reader_that_stops_early_ends_quietly(base_model, tmp_path):
    adapt(_folders(tmp_path / "line", ["red_iron", "slag"], 2), tmp_path / "line.tflite", base_model.path,
          only_new=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "edge_runtime.adapt_cli", "--info", str(tmp_path / "line.tflite")]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before anything is written, as `| head` after its first lines
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 141 and b"Traceback" not in stderr


def test_an_adapted_model_runs_through_edge_classify_and_edge_export_check(base_model, tmp_path):
    data = _folders(tmp_path / "line", ["red_iron", "slag"], 6)
    out = tmp_path / "line.tflite"
    adapt(data, out, base_model.path, only_new=True)
    check = data  # the enrolled images themselves: known by construction, whatever the threshold
    in_process = Classifier.load(out)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    records = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--folder", str(check), "--recursive",
                              "--model", str(out), "--engine", "litert", "--output", str(tmp_path / "r.jsonl")],
                             env=env, capture_output=True, text=True, timeout=120)
    assert records.returncode == 0, records.stderr
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["label"] == Path(r["file"]).parent.name for r in rows)
    for row in rows:  # the same answers as the Python API gives
        answer = in_process.predict_file(row["file"])
        assert (row["label"], row["unknown"]) == (answer.label, answer.unknown)
    from export.cli import main as export_main

    assert export_main(["check", str(out), "--data", str(check), "--no-progress"]) == 0


def test_the_camera_enrolment_benchmark_teaches_a_changed_camera_and_measures_it_beside_the_base(base_model,
                                                                                                   tmp_path):
    """benchmarks.camera_enrolment: a few training images per class, as the changed camera sees them, enrolled
    with the real edge-adapt; the held-out images answered under the same change by the adapted and the base
    model; new-class images under the change stay unknown."""
    from benchmarks.camera_enrolment import run, summary, write_camera_images
    from benchmarks.nuisance import exposure, Nuisance
    from train.split import ManifestRow, write_manifest

    data = tmp_path / "data"
    for c, name in enumerate(BASE):
        (data / name).mkdir(parents=True)
        for i in range(12):
            cv2.imwrite(str(data / name / f"{name}_{i}.png"), _image(name, 100 * c + i))
    rows = [ManifestRow(f"{name}/{name}_{i}.png", name, "train" if i < 6 else ("val" if i < 9 else "test"), "x")
            for name in BASE for i in range(12)]
    write_manifest(tmp_path / "manifest.csv", rows)
    darker = Nuisance("darker", "trained", exposure(0.8))

    write_camera_images(darker, data, tmp_path / "manifest.csv", 2, 1, 0, tmp_path / "camera")
    labelled = sorted(p.relative_to(tmp_path / "camera/labelled").as_posix()
                      for p in (tmp_path / "camera/labelled").rglob("*.png"))
    assert len(labelled) == 2 * len(BASE) and {p.split("/")[0] for p in labelled} == set(BASE)
    assert all(int(p.split("_")[-1][:-4]) < 6 for p in labelled)  # training images only
    assert len(list((tmp_path / "camera/unlabelled").glob("*.png"))) == len(BASE)
    written = cv2.imread(str(tmp_path / "camera/labelled" / labelled[0]))
    original = cv2.imread(str(data / labelled[0]))
    assert written.mean() < 0.85 * original.mean()  # as the darker camera sees it

    new_class = [_image("slag", 500 + s) for s in range(4)]
    result = run(base_model.path, data, tmp_path / "manifest.csv", [darker], [4], 1, 0, new_class)
    assert [(r["shots"], r["draw"]) for r in result] == [(0, -1), (4, 0)]  # the base model's row, then the draw's
    base, adapted = result
    assert base["change"] == adapted["change"] == "darker"
    assert base["unknown"] >= 0.9  # the base model has never seen the darker camera
    assert adapted["right"] == 1.0 and adapted["unknown"] <= 0.25  # four images per class taught it
    # the training camera's images are answered as before
    assert (base["as_captured_right"], base["as_captured_unknown"]) == (adapted["as_captured_right"],
                                                                        adapted["as_captured_unknown"])
    assert base["new_classes_unknown"] == adapted["new_classes_unknown"] == 1.0  # still nothing new is known
    assert "| darker | base model |" in summary(result) and "| darker | 4 |" in summary(result)
