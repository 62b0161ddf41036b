"""``edge-export RUN_DIR``: every format, metadata inside each artifact, accuracy gates, report."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.backends import ENGINES, engines_for
from edge_runtime.fileio import file_sha256 as sha256_of
from edge_runtime.metadata import ModelMetadata
from edge_runtime.model_file import write_model
from edge_runtime.ood import OodSpec
from edge_runtime.polarity import AS_IS, check_mode
from edge_runtime.system import cpu_description
from export import checks, convert
from export.activation_ranges import DEFAULT_QUANTILE
from export.bias_correction import BiasCorrection, correct_int8_biases
from export.calibration import CalibrationSet, calibration_rows
from export.crossplant_figures import write_crossplant_figures
from export.formats import FORMATS, ExportFormat, parse_formats
from export.gates import Gates, failing
from export.report import write_report
from train.augment import BANK_CAMERA_KINDS
from train.embeddings import (BANK_FEATURE, BANK_TRAINING_COPIES, BANK_WIDTH, DEFAULT_OOD_QUANTILE,
                              training_copies_ood_spec)
from train.run_dir import MODEL_FILE, TrainedRun, tool_versions, utc_now
from train.training_run import run_feature_cache

log = logging.getLogger(__name__)

INT8_INPUTS = ("pixels", "normalized")


@dataclass
class ExportOptions:
    run_dir: str
    out: str | None = None
    formats: list[str] | None = None
    calibration_count: int = 240
    neu: str | None = None  # dataset root of the run's manifest (default: the one recorded at training)
    gc10: str | None = None
    xsdd: str | None = None
    gates: Gates = field(default_factory=Gates)
    threads: int | None = None
    int8_input: str = "pixels"
    onnx_quantizer: str = "nncf"  # one of convert.ONNX_QUANTIZERS
    polarity: str = AS_IS  # test-time polarity written into every artifact (edge_runtime.polarity)
    ood_k: int = 2
    ood_quantile: float = DEFAULT_OOD_QUANTILE  # 1 - the default operating point's target unknown rate
    ood_bank_copies: int = BANK_TRAINING_COPIES  # augmented training copies per training image in the bank
    ood_camera_copies: tuple[str, ...] = BANK_CAMERA_KINDS  # one more bank copy per kind (train.augment)
    ood_per_class: bool = True  # a threshold per class (edge_runtime.ood)
    ood_feature: str = BANK_FEATURE  # the graph output the unknown score reads (edge_runtime.ood)
    seed: int = 0
    progress: bool = True
    cache: bool = True  # reuse the Keras model's outputs from RUN_DIR/cache (train.output_cache)
    bias_correction: bool = True  # full-int8 TFLite: correct each layer's bias for weight rounding
    onnx_float_first_conv: bool = True  # ONNX int8: keep the first convolution in float (convert.onnx_int8)
    tflite_float_first_conv: bool = True  # full-int8 TFLite: input path (normalisation, padding) and first conv in float
    tflite_range_quantile: float | None = DEFAULT_QUANTILE  # full-int8 TFLite activation ranges (None: extremes)
    onnx_beside_tflite: bool = True  # make the ONNX formats in a second process while the TFLite ones convert
    float_check_share: float = 0.25  # share of each other plant's images a float artifact is checked on


@dataclass
class Built:
    fmt: ExportFormat
    path: Path
    metadata: ModelMetadata
    payload: bytes | None  # TFLite flatbuffer without metadata (to re-embed updated metadata)
    seconds: float


def _metadata(run: TrainedRun, fmt: ExportFormat, in_graph: bool, dtype: str, extra: dict) -> ModelMetadata:
    height, width = run.preprocess.input_size
    return ModelMetadata(
        labels=run.classes,
        input_shape=[1, height, width, 3],
        input_dtype=dtype,
        preprocessing=run.preprocess.to_dict(),
        preprocessing_in_graph=in_graph,
        format=fmt.name,
        source_model_sha256=run.model_sha256,
        split_manifest_sha256=run.metadata["split_manifest_sha256"],
        versions=_export_versions(),
        created=utc_now(),
        extra={"description": fmt.description, **extra},
    )


def _export_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import tf2onnx

    return {**tool_versions(), "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def _write(built: Built) -> None:
    """The artifact with its metadata and graph digest (edge_runtime.model_file), written atomically."""
    data = built.payload if built.payload is not None else built.path.read_bytes()
    write_model(built.path, data, built.metadata)


def build_artifacts(run: TrainedRun, model, formats: list[ExportFormat], out: Path, options: ExportOptions,
                    calibration: CalibrationSet | None, ood: OodSpec | None = None,
                    timings: dict | None = None) -> list[Built]:
    """Convert the run's Keras ``model`` to every format in ``formats``, metadata embedded. ``timings`` gets
    ``onnx_process_seconds``: the wall time of the process that makes the ONNX formats beside the TFLite
    conversions (convert.OnnxJob; each Built's ``seconds`` is the time its format added to the export)."""
    work = Path(tempfile.mkdtemp(prefix="edge-export-", dir=out))
    built: list[Built] = []
    names = [f.name for f in formats]
    onnx = None
    try:
        float_dir = convert.export_saved_model(model, work / "float")
        if {"onnx_fp32", "onnx_int8"} & set(names):  # made in their own process, beside the TFLite conversions
            onnx = convert.OnnxJob(
                float_dir, out / FORMATS["onnx_fp32"].filename if "onnx_fp32" in names else work / "model_fp32.onnx",
                work, out / FORMATS["onnx_int8"].filename if "onnx_int8" in names else None,
                calibration.as_float if "onnx_int8" in names else None, options.onnx_quantizer,
                options.onnx_float_first_conv)
            if not options.onnx_beside_tflite:
                onnx.result()  # one conversion at a time: finished before the TFLite ones start
        calib_note = {}
        if calibration is not None:
            calib_note = {"calibration": {"images": len(calibration.rows), "split": "train",
                                          "note": "range pinned to 0..255 pixels (see export/calibration.py)"}}
        for fmt in formats:
            log.info("exporting %s", fmt.name)
            started = time.perf_counter()
            path = out / fmt.filename
            in_graph, dtype, payload, notes = False, "float32", None, {}
            if fmt.name == "tflite_fp32":
                payload = convert.tflite_fp32(float_dir)
            elif fmt.name == "tflite_fp16":
                payload = convert.tflite_fp16(float_dir)
            elif fmt.name == "tflite_dynamic":
                payload = convert.tflite_dynamic(float_dir)
            elif fmt.name == "tflite_int8":
                if options.int8_input == "pixels":
                    source = convert.export_pixel_saved_model(model, work / "pixels", run.preprocess)
                    inputs, in_graph, dtype = calibration.as_pixels, True, "uint8"
                else:
                    source, inputs, dtype = float_dir, calibration.as_float, "int8"
                payload, notes = convert.tflite_int8(source, inputs, dtype, options.tflite_float_first_conv,
                                                     options.tflite_range_quantile)
                if options.bias_correction:
                    payload, corrected = _bias_corrected(payload, built, source, inputs)
                    notes["bias_correction"] = corrected.to_dict()
            elif fmt.name == "onnx_fp32":
                onnx.result()
            elif fmt.name == "onnx_int8":
                notes["float_nodes"] = onnx.result()["float_nodes"]
            extra = {**(calib_note if fmt.quantized and fmt.name != "tflite_dynamic" else {}), **notes}
            if ood is not None:
                extra = {**extra, "ood": ood.to_dict()}
            if options.polarity != AS_IS:
                extra = {**extra, "polarity": options.polarity}
            item = Built(fmt, path, _metadata(run, fmt, in_graph, dtype, extra), payload,
                         time.perf_counter() - started)
            _write(item)
            log.info("%s: %.1f MB in %.0f s", path.name, path.stat().st_size / 1e6, item.seconds)
            built.append(item)
    finally:
        if onnx is not None:
            onnx.close()
        shutil.rmtree(work, ignore_errors=True)
    if onnx is not None and onnx.seconds is not None:
        stages = onnx.result().get("seconds", {})
        log.info("ONNX formats: %.0f s in their own process, beside the TFLite conversions (%s)", onnx.seconds,
                 ", ".join(f"{name} {value:.0f} s" for name, value in stages.items()))
        if timings is not None:
            timings["onnx_process_seconds"] = round(onnx.seconds, 3)
            timings["onnx_process_stages"] = stages
    return built


def _bias_corrected(payload: bytes, built: list[Built], source: Path, inputs) -> tuple[bytes, BiasCorrection]:
    """Bias correction of a full-int8 flatbuffer against an fp32 conversion of the same weights: the
    tflite_fp32 artifact already built when there is one (the pixel-input SavedModel holds the same layers and
    weights, which correct_int8_biases verifies weight by weight; measured: the same corrected bytes), otherwise
    an fp32 conversion of ``source``."""
    fp32 = next((b.payload for b in built if b.fmt.name == "tflite_fp32"), None)
    if fp32 is not None:
        try:
            return correct_int8_biases(payload, fp32, inputs())
        except ValueError as exc:  # layers that do not correspond: convert the int8 model's own source
            log.info("bias correction: the tflite_fp32 artifact does not match (%s); converting %s", exc, source)
    return correct_int8_biases(payload, convert.tflite_fp32(source), inputs())


def export_run(options: ExportOptions) -> dict:
    """Export, check and report; returns the report (``report["passed"]`` is False if any artifact failed)."""
    started = time.perf_counter()
    if options.int8_input not in INT8_INPUTS:
        raise ValueError(f"--int8-input must be one of {INT8_INPUTS}")
    if options.onnx_quantizer not in convert.ONNX_QUANTIZERS:
        raise ValueError(f"--onnx-quantizer must be one of {convert.ONNX_QUANTIZERS}")
    check_mode(options.polarity)
    if not 0 < options.float_check_share <= 1:
        raise ValueError(f"--float-check-share must be in (0, 1], not {options.float_check_share}")
    run = TrainedRun.open(options.run_dir)
    out = Path(options.out or run.directory / "export")
    out.mkdir(parents=True, exist_ok=True)
    formats = parse_formats(options.formats)
    data_root, rows = run.manifest(options.neu)

    calibration = None
    if any(f.quantized and f.name != "tflite_dynamic" for f in formats):
        chosen = calibration_rows(rows, options.calibration_count, options.seed)
        assert all(r.split == "train" for r in chosen)
        calibration = CalibrationSet(chosen, data_root, run.preprocess)
    model = run.load_model()  # loaded once: the OOD bank, every conversion and the float reference use it
    cache = run.output_cache() if options.cache else None
    setup_seconds = time.perf_counter() - started
    ood = training_copies_ood_spec(model, run_feature_cache(run.directory, model), data_root, rows, run.preprocess,
                                   options.ood_bank_copies,
                                   options.ood_k, options.ood_quantile, run.classes, options.ood_per_class,
                                   options.progress, cache, tuple(options.ood_camera_copies), options.ood_feature,
                                   BANK_WIDTH)
    bank_seconds = time.perf_counter() - started - setup_seconds
    converting = time.perf_counter()
    background: dict = {}
    built = build_artifacts(run, model, formats, out, options, calibration, ood, background)
    convert_seconds = time.perf_counter() - converting

    checked = time.perf_counter()
    items = checks.standard_eval_images(run, options.neu and Path(options.neu), _path(options.gc10),
                                        _path(options.xsdd))
    data = checks.load_eval_data(items, run.preprocess, options.progress)
    decode_seconds = time.perf_counter() - checked
    referenced = time.perf_counter()
    reference, reference_scores_ood = checks.float_outputs(model, data, run.preprocess, ood, options.polarity,
                                                           options.progress, cache)
    reference_seconds = time.perf_counter() - referenced
    # the float model's unknown threshold is the bank's (training split, leave-one-out), computed once in
    # training_copies_ood_spec; every artifact's is that one moved by its median shift on NEU validation
    reference_unknown = _unknown(data.items, run.classes, reference, reference_scores_ood, options, ood.threshold)
    reference_answers = checks.answers(reference, reference_scores_ood, reference_unknown["threshold"])
    figures = write_crossplant_figures(out, data, run.classes, reference, reference_scores_ood,
                                       reference_unknown["threshold"])
    reference_set = checks.Reference(reference, reference_answers, reference_unknown, reference_scores_ood,
                                     checks.score(data.items, run.classes, reference))
    rows_out, all_passed = [], True
    rejected = out / "rejected"
    sample = None
    for item in built:
        checked_on, against = data, reference_set
        if not item.fmt.quantized and options.float_check_share < 1:
            if sample is None:
                indices = checks.conversion_sample(data.items, options.float_check_share)
                sample = data.subset(indices), _reference_on(reference_set, data, indices, run.classes, options)
                log.info("float artifacts: checked on %d of the %d images (every held-out NEU image, %.0f %% of "
                         "each larger set) and held to their probability differences", len(indices),
                         len(data.items), 100 * options.float_check_share)
            checked_on, against = sample
        engine_rows = [_check_on_engine(item, engine, checked_on, run, against, options)
                       for engine in installed_engines(item.path, item.fmt.engine)]
        # each engine that can run the file is judged on its own; the file is kept if any passes
        verdicts = {r["engine"]: r["passed"] for r in engine_rows}
        first = engine_rows[0]
        item.metadata.extra["validation"] = {
            "passed": first["passed"], "failures": first["failures"], "comparison": first["comparison"],
            "gates": asdict(options.gates), "engines": {r["engine"]: {"passed": r["passed"], "failures": r["failures"]}
                                                        for r in engine_rows},
        }
        _write(item)
        for row in engine_rows:
            row.update(size_mb=item.path.stat().st_size / 1e6, sha256=sha256_of(item.path))
        if not any(verdicts.values()):
            all_passed = False
            rejected.mkdir(exist_ok=True)
            target = rejected / item.path.name
            shutil.move(str(item.path), target)
            for row in engine_rows:
                row["file"] = str(target)
            log.error("%s FAILS the gates on every engine (%s); moved to %s", item.fmt.name,
                      "; ".join(f"{r['engine']}: {', '.join(r['failures'])}" for r in engine_rows), rejected)
        elif not all(verdicts.values()):
            all_passed = False
            log.error("%s fails the gates on %s (kept for %s)", item.fmt.name,
                      [e for e, ok in verdicts.items() if not ok], [e for e, ok in verdicts.items() if ok])
        rows_out += engine_rows

    reference_scores = reference_set.groups
    report = {
        "run_dir": str(run.directory),
        "source_model_sha256": run.model_sha256,
        "split_manifest_sha256": run.metadata["split_manifest_sha256"],
        "calibration": {"images": len(calibration.rows) if calibration else 0,
                        "per_class": len(calibration.rows) // len(run.classes) if calibration else 0,
                        "split": "train", "int8_input": options.int8_input,
                        "onnx_quantizer": options.onnx_quantizer,
                        "tflite_bias_correction": options.bias_correction,
                        "onnx_float_first_conv": options.onnx_float_first_conv,
                        "tflite_float_first_conv": options.tflite_float_first_conv,
                        "tflite_range_quantile": options.tflite_range_quantile},
        "polarity": options.polarity,
        "gates": asdict(options.gates),
        "float_reference": {"size_mb": (run.directory / MODEL_FILE).stat().st_size / 1e6,
                            "groups": reference_scores, "unknown": reference_unknown},
        "ood": {"kind": ood.kind, "feature": ood.feature, "feature_width": ood.width, "bank_width": int(ood.bank.shape[1]),
                "k": ood.k, "bank": len(ood.bank),
                "quantile": ood.quantile, "per_class": ood.class_offsets is not None, "bank_info": ood.bank_info,
                "threshold_from": "NEU training split only (float: leave-one-out scores of the training images and "
                                  "their augmented training copies; artifacts: the float threshold plus their median score shift "
                                  "on the NEU validation images)"},
        "artifacts": rows_out,
        "images": len(data.items),
        "image_groups": {g: sum(i.group == g for i in data.items) for g in data.groups},
        "unreadable": data.errors,
        "passed": all_passed,
        "timings": _timings(started, setup_seconds, bank_seconds, convert_seconds, built, decode_seconds,
                            reference_seconds, checked, rows_out, cache is not None) | background,
        "machine": cpu_description(),
        "notes": _notes(options, data) + ([] if sample is None else [
            f"Float artifacts (fp32, fp16 weights) were checked on {len(sample[0].items)} of the {len(data.items)} "
            "images (every held-out NEU image, a fixed share of each larger set: --float-check-share) and held to "
            "their probability differences from the float model (--max-float-dprob)."]),
        "figures": [str(f) for f in figures],
        "created": utc_now(),
    }
    md, js = write_report(report, out)
    report["report_files"] = [str(md), str(js)]
    return report


def _timings(started: float, setup: float, bank: float, convert: float, built: list[Built], decode: float,
             reference: float, checked: float, rows: list[dict], cached: bool) -> dict:
    """Where the time went, stage by stage (seconds; docs/export.md, "Where the time goes")."""
    now = time.perf_counter()
    return {
        "setup_seconds": round(setup, 3),  # reading the run and the calibration images, loading the Keras model
        "unknown_score_bank_seconds": round(bank, 3),
        "convert_seconds": round(convert, 3),
        "conversions": {b.fmt.name: round(b.seconds, 3) for b in built},
        "eval_images_decode_seconds": round(decode, 3),
        "float_reference_seconds": round(reference, 3),
        "check_seconds": round(now - checked, 3),  # decoding, float reference and every artifact x engine check
        "checks": {f"{r['format']} on {r['engine']}": r["check_seconds"] for r in rows},
        "total_seconds": round(now - started, 3),
        "keras_output_cache": cached,
    }


def installed_engines(path: Path, preferred: str) -> list[str]:
    """The engines installed here that can run ``path``, ``preferred`` (the format's engine) first."""
    import importlib.util

    able = [e for e in engines_for(path) if importlib.util.find_spec(ENGINES[e].module) is not None]
    return sorted(able, key=lambda e: e != preferred) or [preferred]


def _check_on_engine(item: Built, engine: str, data: checks.EvalData, run: TrainedRun,
                     reference: checks.Reference, options: ExportOptions) -> dict:
    """One report row: ``item`` run by ``engine`` through edge_runtime, compared with the float model.

    The first engine checked (the format's own) sets the artifact's unknown threshold in its metadata (the
    float model's, matched on NEU validation: checks.matched_threshold); other engines are judged with that
    same threshold, as the device would run them.
    """
    row = {"format": item.fmt.name, "file": str(item.path), "engine": engine,
           "quantized": item.fmt.quantized, "convert_seconds": round(item.seconds, 1)}
    started = time.perf_counter()
    load_seconds, margins = 0.0, []
    try:
        outputs = checks.artifact_outputs(item.path, data, options.threads, progress=options.progress, engine=engine)
        probabilities, load_seconds, labels = outputs.probabilities, outputs.load_seconds, outputs.labels
        candidate_answers, unknown = None, None
        if outputs.ood_scores is not None:
            ood = item.metadata.extra["ood"]
            own_threshold = ood.get("checked_on") is None
            threshold = ood["threshold"]
            if own_threshold:
                threshold = checks.matched_threshold(data.items, reference.scores, outputs.ood_scores,
                                                     reference.unknown["threshold"])
                ood.update(threshold=threshold, checked_on=engine, threshold_rule="float + median validation shift")
            unknown = _unknown(data.items, run.classes, probabilities, outputs.ood_scores, options, threshold)
            candidate_answers = checks.answers(probabilities, outputs.ood_scores, unknown["threshold"])
        comparison = checks.compare(data.items, run.classes, reference.probabilities, probabilities,
                                    reference.answers if unknown else None, candidate_answers, reference.groups)
        if unknown:
            comparison["unknown"] = unknown
        comparison["float_format"] = not item.fmt.quantized
        margins = options.gates.margins(comparison, reference.unknown)
        failures = failing(margins)
        if labels != run.classes:
            failures.append(f"label order {labels} differs from the model's {run.classes}")
    except Exception as exc:  # a broken artifact is reported in its row; the others go on
        log.error("%s on %s: %s", item.path.name, engine, exc)
        comparison, failures = None, [f"could not be evaluated: {exc}"]
    row.update(load_seconds=round(load_seconds, 3), check_seconds=round(time.perf_counter() - started, 3),
               comparison=comparison, margins=margins, failures=failures, passed=not failures)
    if comparison is None:
        row["error"] = failures[0]
    log.info("%-16s %-12s %s%s", item.fmt.name, engine, "PASS" if not failures else "FAIL: " + "; ".join(failures),
             "" if not margins else " (closest gate: " + _closest(margins) + ")")
    return row


def _reference_on(reference: checks.Reference, data: checks.EvalData, indices: list[int], classes: list[str],
                  options: ExportOptions) -> checks.Reference:
    """The float model's results restricted to the images ``indices`` of ``data`` (the same threshold)."""
    items, at = [data.items[i] for i in indices], np.asarray(indices, int)
    probabilities = reference.probabilities[at]
    scores = reference.scores[at] if reference.scores is not None else None
    unknown = None
    if scores is not None and reference.unknown is not None:
        unknown = _unknown(items, classes, probabilities, scores, options, reference.unknown["threshold"])
    return checks.Reference(probabilities, reference.answers[at] if reference.answers is not None else None,
                            unknown, scores, checks.score(items, classes, probabilities))


def _closest(margins: list[dict]) -> str:
    nearest = min(margins, key=lambda m: m["margin"] / max(abs(m["limit"]), 1e-9))
    return f"{nearest['gate']} {nearest['figure']:g}, limit {nearest['limit']:g}"


def _unknown(items, classes, probabilities, scores, options: ExportOptions, threshold: float | None = None) -> dict:
    if threshold is None:
        threshold = checks.unknown_threshold(items, scores, options.ood_quantile)
    summary = checks.unknown_summary(items, classes, probabilities, scores, threshold)
    summary["called_as"] = checks.called_as(items, classes, probabilities, ~(scores <= threshold))
    return summary


def _notes(options: ExportOptions, data: checks.EvalData) -> list[str]:
    notes = []
    for name, value, group in (("GC10", options.gc10, "gc10_inclusion"), ("X-SDD", options.xsdd, "xsdd")):
        if not value:
            notes.append(f"{name} not given (--{name.lower().replace('-', '')}): its gate was not checked.")
        elif group not in data.groups:
            notes.append(f"{name}: no images found under {value}.")
    gc10 = sum(i.group == "gc10_inclusion" for i in data.items)
    if 0 < gc10 < 20:
        notes.append(f"GC10 inclusion has only {gc10} image(s) here: one wrong image moves its share by "
                     f"{100 / gc10:.0f} pp, so that gate is coarse.")
    return notes


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None
