"""The product's default against the plain int8 conversions a user could make of the same network, side by side.

    python -m benchmarks.plain_conversions runs/neu-cam-s0 --threads 2 --repeats 60 --json plain.json

From the run's Keras model (its probabilities output only), each runtime's own tools with default settings,
calibrated on ``--calibration`` training-split images preprocessed by :mod:`edge_runtime.preprocessing`:

* ``plain LiteRT int8``: ``TFLiteConverter.from_saved_model`` (after ``keras.Model.export``) with a
  representative dataset, int8 builtin ops, float input and output;
* ``plain ORT QDQ``: tf2onnx, ``quant_pre_process``, then ``quantize_static`` (QDQ, uint8 activations, int8
  per-channel weights);
* ``plain OpenVINO NNCF``: ``openvino.convert_model`` of that ONNX, ``nncf.quantize`` with its defaults,
  compiled for the CPU with only the thread count set.

They are timed in one process, round-robin with the product's default through ``Classifier.load()`` (the shipped
``edge_runtime/models/default.tflite`` and, where present, the run's ``export/model_int8.tflite`` and
``export/model_int8.onnx`` on ONNX Runtime and OpenVINO): the model call on a prepared batch-1 input
(``Classifier.device_outputs``) and, separately, ``Classifier.predict`` on the decoded image (preprocessing and
the unknown score included). Every candidate's top-1 answers are compared with the Keras float model's on the
run's validation and test images. Conversions go to ``--out`` or a temporary folder, never into the run folder
or ``edge_runtime/models``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.fileio import file_sha256
from edge_runtime.preprocessing import PreprocessConfig, normalize, prepare_pixels, read_image
from edge_runtime.system import cpu_description

log = logging.getLogger("plain-conversions")

PLAIN = "plain"
PRODUCT = "product"
MODELS_DIR = Path(__file__).resolve().parent.parent / "edge_runtime" / "models"


@dataclass
class Candidate:
    """One model on one engine: ``call`` runs it once on a prepared batch-1 input, ``answers`` gives top-1
    classes of prepared inputs (for agreement); product candidates also time ``predict`` on a decoded image."""

    name: str
    engine: str
    kind: str  # PLAIN or PRODUCT
    call: Callable[[], object]
    answers: Callable[[np.ndarray], np.ndarray] | None = None
    predict: Callable[[], object] | None = None
    path: str = ""
    note: str = ""
    source_model_sha256: str = ""  # product candidates: the Keras model their metadata names


@dataclass
class Row:
    """One line of the table: a candidate's model call (``measured="model"``) or full predict."""

    candidate: str
    engine: str
    kind: str
    measured: str
    samples_ms: list[float] = field(default_factory=list)
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    ratio_to_fastest_plain: float = 0.0
    agreement: float | None = None
    agreement_images: int = 0
    accuracy: float | None = None
    path: str = ""
    note: str = ""


# --- inputs ------------------------------------------------------------------------------------------------------


def _run_images(run_dir: Path, data_root: str | None, calibration: int) -> tuple[dict, list, list]:
    """The run's metadata, its calibration rows (training split) and its evaluation rows (validation + test)."""
    from export.calibration import calibration_rows
    from train.run_dir import TrainedRun

    run = TrainedRun.open(run_dir)
    root, rows = run.manifest(data_root)
    calib = calibration_rows(rows, calibration)[:calibration]
    evaluation = [r for r in rows if r.split in ("val", "test")]
    log.info("%d calibration images (train split), %d evaluation images (val + test) under %s",
             len(calib), len(evaluation), root)
    return {"run": run, "root": Path(root)}, calib, evaluation


def _float_inputs(rows: list, root: Path, config: PreprocessConfig) -> np.ndarray:
    """The product's preprocessing of each image: (N, H, W, 3) float32 model inputs."""
    return np.stack([normalize(prepare_pixels(read_image(root / r.path), config), config) for r in rows])


# --- conversions --------------------------------------------------------------------------------------------------


def convert_litert(saved_model: Path, samples: np.ndarray, out: Path) -> Path:
    """Full-int8 TFLite with float input/output, as TensorFlow's post-training quantisation guide does it."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path = out / "plain_int8.tflite"
    path.write_bytes(converter.convert())
    return path


def convert_onnx(saved_model: Path, out: Path) -> Path:
    """tf2onnx's command line on the SavedModel (float32), as export.convert runs it."""
    from export.convert import onnx_fp32

    return onnx_fp32(saved_model, out / "plain_fp32.onnx")


def convert_ort_qdq(fp32: Path, samples: np.ndarray, out: Path) -> Path:
    """ONNX Runtime's static QDQ quantisation: uint8 activations, int8 per-channel weights, after its
    ``quant_pre_process`` (skipped with a warning where it fails)."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    source = fp32
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepared = out / "plain_fp32_pre.onnx"
        quant_pre_process(str(fp32), str(prepared))
        source = prepared
    except Exception as exc:  # onnxruntime raises assorted types; the plain model still quantises
        log.warning("quant_pre_process failed (%s); quantising the tf2onnx model as it is", exc)
    input_name = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(samples)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: x[None]}

    path = out / "plain_qdq.onnx"
    quantize_static(str(source), str(path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    return path


def convert_openvino(fp32: Path, samples: np.ndarray, out: Path) -> Path:
    """``openvino.convert_model`` of the ONNX, then ``nncf.quantize`` with its default settings."""
    import nncf
    import openvino as ov

    model = ov.convert_model(str(fp32))
    model.reshape([1, *samples.shape[1:]])
    quantized = nncf.quantize(model, nncf.Dataset(list(samples), lambda x: x[None]), subset_size=len(samples))
    path = out / "plain_nncf.xml"
    ov.save_model(quantized, str(path))
    return path


def make_conversions(model, samples: np.ndarray, out: Path) -> dict[str, Path]:
    """Every plain conversion of ``model`` (probabilities output only) into ``out``; a failed one is logged."""
    saved_model = out / "saved_model"
    started = time.perf_counter()
    model.export(str(saved_model), verbose=False)
    log.info("SavedModel written in %.0f s", time.perf_counter() - started)
    made: dict[str, Path] = {}
    steps: list[tuple[str, Callable[[], Path]]] = [
        ("litert", lambda: convert_litert(saved_model, samples, out)),
        ("onnx_fp32", lambda: convert_onnx(saved_model, out)),
        ("ort_qdq", lambda: convert_ort_qdq(made["onnx_fp32"], samples, out)),
        ("openvino", lambda: convert_openvino(made["onnx_fp32"], samples, out)),
    ]
    for name, step in steps:
        if name in ("ort_qdq", "openvino") and "onnx_fp32" not in made:
            continue
        started = time.perf_counter()
        try:
            made[name] = step()
            log.info("%s conversion done in %.0f s: %s", name, time.perf_counter() - started, made[name])
        except Exception as exc:  # one failed conversion must not hide the others
            log.error("%s conversion failed: %s", name, exc)
    return made


# --- candidates ---------------------------------------------------------------------------------------------------


def _litert_candidate(path: Path, threads: int, sample: np.ndarray) -> Candidate:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    batch = np.ascontiguousarray(sample[None], dtype=inp["dtype"])

    def call() -> np.ndarray:
        interpreter.set_tensor(inp["index"], batch)
        interpreter.invoke()
        return interpreter.get_tensor(outp["index"])

    def answers(inputs: np.ndarray) -> np.ndarray:
        top = []
        for x in inputs:
            interpreter.set_tensor(inp["index"], np.ascontiguousarray(x[None], dtype=inp["dtype"]))
            interpreter.invoke()
            top.append(int(interpreter.get_tensor(outp["index"])[0].argmax()))
        return np.array(top)

    return Candidate("plain LiteRT int8", "litert", PLAIN, call, answers, path=str(path))


def _ort_candidate(path: Path, threads: int, sample: np.ndarray) -> Candidate:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    batch = np.ascontiguousarray(sample[None], dtype=np.float32)

    def answers(inputs: np.ndarray) -> np.ndarray:
        return np.array([int(session.run(None, {name: x[None].astype(np.float32)})[0][0].argmax()) for x in inputs])

    return Candidate("plain ORT QDQ", "onnxruntime", PLAIN, lambda: session.run(None, {name: batch}), answers,
                     path=str(path))


def _openvino_candidate(path: Path, threads: int, sample: np.ndarray) -> Candidate:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    output = compiled.outputs[0]
    batch = np.ascontiguousarray(sample[None], dtype=np.float32)

    def call() -> np.ndarray:
        request.infer({0: batch})
        return request.get_tensor(output).data

    def answers(inputs: np.ndarray) -> np.ndarray:
        return np.array([int(request.infer({0: x[None].astype(np.float32)})[output][0].argmax()) for x in inputs])

    return Candidate("plain OpenVINO NNCF", "openvino", PLAIN, call, answers, path=str(path))


def plain_candidates(made: dict[str, Path], threads: int, sample: np.ndarray) -> list[Candidate]:
    """The plain conversions loaded with each runtime's plain API and ``threads`` threads."""
    makers = {"litert": _litert_candidate, "ort_qdq": _ort_candidate, "openvino": _openvino_candidate}
    found = []
    for key, maker in makers.items():
        if key in made:
            try:
                found.append(maker(made[key], threads, sample))
            except Exception as exc:  # a runtime that rejects its own conversion is a finding: log, go on
                log.error("cannot load %s (%s): %s", made[key], key, exc)
    return found


def product_candidates(run_dir: Path, threads: int, image: np.ndarray,
                       shipped: bool = True) -> list[Candidate]:
    """The product's default through ``Classifier.load()`` and, where present, the run's int8 exports."""
    from edge_runtime.classifier import Classifier

    export = run_dir / "export"
    wanted: list[tuple[str, Path | None, str | None]] = []
    if shipped:
        wanted += [("product default (--engine auto)", None, "auto"), ("product default.tflite", None, None)]
    wanted += [("run export model_int8.tflite", export / "model_int8.tflite", "litert"),
               ("run export model_int8.onnx", export / "model_int8.onnx", "onnxruntime"),
               ("run export model_int8.onnx", export / "model_int8.onnx", "openvino")]
    found, seen = [], {}
    for name, path, engine in wanted:
        if path is not None and not path.is_file():
            continue
        try:
            classifier = Classifier.load(path, engine=engine, threads=threads)
        except Exception as exc:  # a missing engine or a rejected file: the other candidates go on
            log.error("cannot load %s on %s: %s", path or "the shipped default", engine or "its default engine", exc)
            continue
        key = (file_sha256(classifier.path), classifier.backend.name)
        if key in seen:  # e.g. the run's export that was shipped as the default: one row, not two
            log.info("%s is the same file as %s on %s: timed once", classifier.path, seen[key], key[1])
            continue
        seen[key] = classifier.path
        batch = classifier.prepare(image)[None]

        def answers(inputs: np.ndarray, c=classifier) -> np.ndarray:  # inputs: uint8 pixels, one per image
            return np.array([int(c.device_outputs(c._model_input(x)[None])["probabilities"][0].argmax())
                             for x in inputs])

        found.append(Candidate(name, classifier.backend.name, PRODUCT,
                               lambda c=classifier, b=batch: c.device_outputs(b), answers,
                               predict=lambda c=classifier: c.predict(image), path=str(classifier.path),
                               note=f"source model {classifier.metadata.source_model_sha256[:12]}",
                               source_model_sha256=classifier.metadata.source_model_sha256))
    return found


# --- measuring ----------------------------------------------------------------------------------------------------


def time_round_robin(candidates: list[Candidate], repeats: int, rounds: int, warmup: int = 3) -> list[Row]:
    """``repeats`` timed calls per measurement, spread over ``rounds`` rounds that visit every candidate in turn
    (so a change of load hits all of them alike)."""
    jobs: list[tuple[Row, Callable[[], object]]] = []
    for c in candidates:
        jobs.append((Row(c.name, c.engine, c.kind, "model", path=c.path, note=c.note), c.call))
        if c.predict is not None:
            jobs.append((Row(c.name, c.engine, c.kind, "predict", path=c.path, note=c.note), c.predict))
    for _, fn in jobs:
        for _ in range(warmup):
            fn()
    rounds = max(1, min(rounds, repeats))
    for r in range(rounds):
        per_round = repeats // rounds + (1 if r < repeats % rounds else 0)
        for row, fn in jobs:
            for _ in range(per_round):
                start = time.perf_counter()
                fn()
                row.samples_ms.append((time.perf_counter() - start) * 1000)
        log.info("round %d/%d done", r + 1, rounds)
    for row, _ in jobs:
        row.p50_ms = float(np.percentile(row.samples_ms, 50))
        row.p90_ms = float(np.percentile(row.samples_ms, 90))
    plain = [row.p50_ms for row, _ in jobs if row.kind == PLAIN and row.measured == "model"]
    fastest = min(plain) if plain else float("nan")
    for row, _ in jobs:
        row.ratio_to_fastest_plain = row.p50_ms / fastest if plain else float("nan")
    return [row for row, _ in jobs]


def agreement_of(candidates: list[Candidate], reference: np.ndarray, labels: np.ndarray,
                 float_inputs: np.ndarray, pixel_inputs: np.ndarray,
                 same_model: Callable[[Candidate], bool]) -> dict[str, tuple[float, float]]:
    """Top-1 agreement with the Keras float answers and accuracy, per candidate (product ones only when they
    come from the same Keras model: another network's agreement would mean nothing)."""
    found = {}
    for c in candidates:
        if c.answers is None or (c.kind == PRODUCT and not same_model(c)):
            continue
        top = c.answers(float_inputs if c.kind == PLAIN else pixel_inputs)
        found[f"{c.name}|{c.engine}"] = (float(np.mean(top == reference)), float(np.mean(top == labels)))
    return found


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


# --- the run ------------------------------------------------------------------------------------------------------


def compare(run_dir: str | Path, calibration: int = 100, threads: int = 2, repeats: int = 60, rounds: int = 6,
            out: str | Path | None = None, data_root: str | None = None, shipped: bool = True) -> dict:
    """Convert, check agreement and time everything; returns the result (rows, machine, load) as a dict."""
    run_dir = Path(run_dir).resolve()
    out_dir = Path(out).resolve() if out else None
    if out_dir is not None:
        for forbidden in (run_dir, MODELS_DIR.resolve()):
            if out_dir == forbidden or forbidden in out_dir.parents:
                raise ValueError(f"--out {out_dir} is inside {forbidden}; choose a folder of its own")
    load_start = load_average()
    log.info("load average at start: %.2f %.2f %.2f", *load_start)
    with tempfile.TemporaryDirectory(prefix="plain-conversions-") as tmp:
        work = out_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        setup, calib_rows, eval_rows = _run_images(run_dir, data_root, calibration)
        run, root = setup["run"], setup["root"]
        config = run.preprocess
        samples = _float_inputs(calib_rows, root, config)
        pixels = np.stack([prepare_pixels(read_image(root / r.path), config) for r in eval_rows])
        float_inputs = np.stack([normalize(p, config) for p in pixels])
        labels = np.array([run.classes.index(r.label) for r in eval_rows])

        started = time.perf_counter()
        model = run.load_model()
        reference = np.asarray(model.predict(float_inputs, batch_size=16, verbose=0)).argmax(axis=1)
        log.info("Keras float answers on %d images in %.0f s (accuracy %.3f)", len(reference),
                 time.perf_counter() - started, float(np.mean(reference == labels)))
        with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: keep stdout for the table
            made = make_conversions(model, samples, work)
        del model
        gc.collect()

        sample_image = read_image(root / eval_rows[0].path)
        prepared = float_inputs[0]
        candidates = plain_candidates(made, threads, prepared)
        candidates += product_candidates(run_dir, threads, sample_image, shipped=shipped)
        if not candidates:
            raise RuntimeError("no candidate could be made or loaded; see the errors above")
        model_sha = run.model_sha256
        agreement = agreement_of(candidates, reference, labels, float_inputs, pixels,
                                 lambda c: c.source_model_sha256 == model_sha)
        log.info("timing %d candidates: %d calls each, %d rounds, %d threads", len(candidates), repeats, rounds,
                 threads)
        rows = time_round_robin(candidates, repeats, rounds)
        for row in rows:
            figures = agreement.get(f"{row.candidate}|{row.engine}")
            if figures is not None:
                row.agreement, row.accuracy = figures
                row.agreement_images = len(reference)
    load_end = load_average()
    log.info("load average at end: %.2f %.2f %.2f", *load_end)
    return {
        "run_dir": str(run_dir), "machine": cpu_description(), "threads": threads, "repeats": repeats,
        "rounds": rounds, "calibration_images": len(calib_rows), "evaluation_images": len(eval_rows),
        "keras_accuracy": float(np.mean(reference == labels)),
        "load_average_start": list(load_start), "load_average_end": list(load_end),
        "conversions_kept_in": str(out_dir) if out_dir else None,
        "failed_conversions": [k for k in ("litert", "onnx_fp32", "ort_qdq", "openvino") if k not in made],
        "rows": [asdict(r) for r in rows],
    }


def markdown_table(result: dict) -> str:
    """The result as a markdown table, with the machine and load average above it."""
    start, end = result["load_average_start"], result["load_average_end"]
    lines = [
        f"CPU: {result['machine']}; {result['threads']} threads, batch 1, {result['repeats']} calls per row in "
        f"{result['rounds']} round-robin rounds; load average {start[0]:.2f} -> {end[0]:.2f} (1 min)",
        f"agreement: top-1 equal to the Keras float model on {result['evaluation_images']} val+test images "
        f"(Keras accuracy {result['keras_accuracy']:.3f})",
        "",
        "| candidate | engine | measured | p50 ms | p90 ms | × fastest plain | agreement | accuracy |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        agree = "—" if r["agreement"] is None else f"{r['agreement']:.3f}"
        acc = "—" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        lines.append(f"| {r['candidate']} | {r['engine']} | {r['measured']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} "
                     f"| {r['ratio_to_fastest_plain']:.2f} | {agree} | {acc} |")
    if result["failed_conversions"]:
        lines += ["", f"failed conversions: {', '.join(result['failed_conversions'])} (see the log)"]
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.plain_conversions",
        description="Time the product's default model against plain int8 conversions of the same Keras model "
                    "(LiteRT full-int8, ONNX Runtime QDQ, OpenVINO+NNCF), interleaved in one run, batch 1, and "
                    "check each against the Keras float answers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="rows: 'model' = the engine call on a prepared input (plain API, or Classifier.device_outputs); "
               "'predict' = Classifier.predict on the decoded image (preprocessing and unknown score included).\n"
               "× fastest plain = p50 / the fastest plain conversion's model p50. Conversions are written to --out "
               "or a temporary folder (deleted); never into RUN_DIR or edge_runtime/models.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="an edge-train run folder (model.keras, "
                        "split_manifest.csv, metadata.json); RUN_DIR/export/ artifacts are timed where present")
    parser.add_argument("--calibration", type=_positive, default=100, metavar="N",
                        help="training-split images to calibrate the plain conversions on (default: 100)")
    parser.add_argument("--threads", type=_positive, default=2, help="threads of every engine (default: 2)")
    parser.add_argument("--repeats", type=_positive, default=60, metavar="R",
                        help="timed calls per candidate and measurement (default: 60)")
    parser.add_argument("--rounds", type=_positive, default=6, help="round-robin rounds the repeats are spread "
                        "over (default: 6)")
    parser.add_argument("--out", metavar="DIR", help="keep the plain conversions here (default: a temporary folder)")
    parser.add_argument("--json", metavar="FILE", help="write the whole result, every latency sample included")
    parser.add_argument("--data", metavar="DIR", help="dataset root of the run's manifest (default: the one "
                        "recorded at training)")
    parser.add_argument("--no-shipped", action="store_true", help="leave out the shipped default model "
                        "(edge_runtime/models/default.tflite)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    result = compare(args.run_dir, args.calibration, args.threads, args.repeats, args.rounds, args.out,
                     args.data, shipped=not args.no_shipped)
    print(markdown_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 1 if result["failed_conversions"] else 0


if __name__ == "__main__":
    sys.exit(main())
