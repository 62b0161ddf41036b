"""Measuring one model inside its own worker process: load time, batch-1 latency, throughput, memory, end to end.

* **latency**: ``warmup`` untimed runs, then ``repeats`` timed batch-1 runs (``time.perf_counter``) of the
  engine call on the fixed inputs in turn (already preprocessed, so this is inference only: for quantised
  graphs it includes quantising the input and dequantising the output, as on the device).
* **throughput**: images/s for each batch size; batch 1 is the latency loop. Graphs with a fixed batch of 1
  (all LiteRT artifacts) run larger batches as a loop of single images, which is no measurement of batching,
  so only batch 1 is reported for them.
* **memory**: peak resident set size (see :func:`peak_rss_mb`) before the model is loaded, after the batch-1 runs, and
  after the throughput runs.
* **end to end**: ``edge_runtime.cli.run`` (edge-classify's own code) on a video file, records to a JSONL
  file: decode + preprocess + infer + write, wall time per frame.
"""

from __future__ import annotations

import gc
import importlib
import logging
import math
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("benchmarks.worker")

def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB.

    Linux: ``VmHWM`` of /proc/self/status. ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used there because
    the kernel carries the parent's peak across fork + exec into it, so a worker started by a large process
    (a test run holding TensorFlow) would report the parent's figure. Elsewhere ``ru_maxrss`` (bytes on
    macOS, KiB otherwise).
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def percentiles(samples_ms: Sequence[float]) -> dict:
    values = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(values.mean()),
            "min": float(values.min()), "max": float(values.max()), "runs": int(values.size)}


def time_latency(infer: Callable[[np.ndarray], object], inputs: list[np.ndarray], repeats: int,
                 warmup: int) -> dict:
    """Batch-1 latency in ms over ``repeats`` runs after ``warmup`` runs, cycling through ``inputs``."""
    singles = [x[None] for x in inputs]
    for i in range(warmup):
        infer(singles[i % len(singles)])
    samples = []
    for i in range(repeats):
        batch = singles[i % len(singles)]
        start = time.perf_counter()
        infer(batch)
        samples.append((time.perf_counter() - start) * 1000)
    return {**percentiles(samples), "samples": [round(s, 4) for s in samples]}


def time_throughput(infer: Callable[[np.ndarray], object], inputs: list[np.ndarray], batch_sizes: Sequence[int],
                    images: int, latency: dict, fixed_batch: bool) -> dict:
    """Images/s per batch size (batch 1 always, from the latency runs) and the best one."""
    per_batch = {1: 1000.0 / latency["mean"]}
    note = None
    if fixed_batch:
        note = "batch fixed at 1 in the graph: throughput is the batch-1 loop"
    else:
        for size in sorted(b for b in batch_sizes if b > 1):
            batch = np.stack([inputs[i % len(inputs)] for i in range(size)])
            infer(batch)  # warm-up at this size (buffers are sized on first use)
            runs = max(2, math.ceil(images / size))
            start = time.perf_counter()
            for _ in range(runs):
                infer(batch)
            per_batch[size] = runs * size / (time.perf_counter() - start)
    best = max(per_batch, key=per_batch.get)
    return {"images_per_s": {str(k): v for k, v in per_batch.items()}, "best_batch": best,
            "best_images_per_s": per_batch[best], "note": note}


def measure_artifact(path: str, threads: int, images: list[np.ndarray], *, repeats: int, warmup: int,
                     batch_sizes: Sequence[int], throughput_images: int, video: str | None,
                     engine: str | None = None) -> dict:
    """Everything for one .tflite/.onnx artifact at one thread count on ``engine`` (default: the file's
    usual engine), through edge_runtime."""
    from edge_runtime.backends import ENGINES, engine_for
    from edge_runtime.classifier import Classifier

    engine = engine or engine_for(path)
    importlib.import_module(ENGINES[engine].module)  # so that the load time is the model's, not the import's
    result = {"engine": engine, "size_mb": Path(path).stat().st_size / 1e6,
              "rss_mb": {"before_load": peak_rss_mb()}}
    log.info("progress: loading %s (%d threads)", Path(path).name, threads)
    start = time.perf_counter()
    classifier = Classifier.load(path, engine=engine, threads=threads)
    result["load_s"] = time.perf_counter() - start
    backend = classifier.backend
    result.update(input_shape=list(backend.input_shape), input_dtype=backend.input_dtype.name,
                  preprocessing_in_graph=classifier.metadata.preprocessing_in_graph)
    start = time.perf_counter()
    inputs = [classifier.prepare(image) for image in images]
    result["preprocess_ms"] = (time.perf_counter() - start) * 1000 / len(images)
    _measure_speed(result, backend.run, inputs, repeats, warmup, batch_sizes, throughput_images,
                   fixed_batch=backend.input_shape[0] == 1)
    del classifier, backend, inputs
    gc.collect()
    result["e2e"] = end_to_end(path, threads, video, engine) if video else None
    return result


def measure_keras(path: str, threads: int, images: list[np.ndarray], preprocessing: dict, *, repeats: int,
                  warmup: int, batch_sizes: Sequence[int], throughput_images: int) -> dict:
    """The Keras float model (TensorFlow) as reference: same inputs, same preprocessing, predict_on_batch."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    from edge_runtime.preprocessing import PreprocessConfig, preprocess

    result = {"engine": f"keras {keras.__version__} / tensorflow {tf.__version__}",
              "size_mb": Path(path).stat().st_size / 1e6, "rss_mb": {"before_load": peak_rss_mb()}}
    log.info("progress: loading %s with Keras (%d threads)", Path(path).name, threads)
    start = time.perf_counter()
    model = keras.saving.load_model(path, compile=False)
    result["load_s"] = time.perf_counter() - start
    config = PreprocessConfig.from_dict(preprocessing)
    start = time.perf_counter()
    inputs = [preprocess(image, config) for image in images]
    result["preprocess_ms"] = (time.perf_counter() - start) * 1000 / len(images)
    result.update(input_shape=[-1, *inputs[0].shape], input_dtype="float32", preprocessing_in_graph=False)
    _measure_speed(result, model.predict_on_batch, inputs, repeats, warmup, batch_sizes, throughput_images,
                   fixed_batch=False)
    result["e2e"] = {"error": "not applicable: edge-classify runs .tflite/.onnx artifacts only"}
    return result


def _measure_speed(result: dict, infer: Callable, inputs: list[np.ndarray], repeats: int, warmup: int,
                   batch_sizes: Sequence[int], throughput_images: int, fixed_batch: bool) -> None:
    log.info("progress: batch-1 latency, %d warm-up + %d timed runs", warmup, repeats)
    result["latency_ms"] = time_latency(infer, inputs, repeats, warmup)
    result["rss_mb"]["batch1_peak"] = peak_rss_mb()
    if not fixed_batch:
        log.info("progress: throughput at batch sizes %s", ", ".join(map(str, batch_sizes)))
    result["throughput"] = time_throughput(infer, inputs, batch_sizes, throughput_images, result["latency_ms"],
                                           fixed_batch)
    result["rss_mb"]["overall_peak"] = peak_rss_mb()
    result["batch_fixed"] = fixed_batch


def end_to_end(path: str, threads: int, video: str, engine: str | None = None) -> dict:
    """edge-classify's pipeline on ``video``: per-frame wall time of decode + preprocess + infer + write."""
    from edge_runtime.cli import run as classify

    log.info("progress: end to end through edge-classify on %s", Path(video).name)
    with tempfile.TemporaryDirectory(prefix="edge-bench-e2e-") as tmp:
        output = Path(tmp) / "records.jsonl"
        try:
            summary = classify(video=video, model=path, engine=engine, threads=threads, output=output,
                               overwrite=True)
        except Exception as exc:  # reported in the row; the rest of the measurements stand
            return {"error": f"edge-classify failed: {exc}"}
        records = sum(1 for _ in open(output))
    if summary.frames == 0 or summary.errors:
        return {"error": f"edge-classify wrote {summary.frames} records with {summary.errors} errors"}
    return {
        "frames": summary.frames,
        "records": records,
        "per_frame_ms": summary.elapsed_s * 1000 / summary.frames,
        "fps": summary.fps,
        "latency_p50_ms": summary.latency_p50_ms,
        "read_ms_mean": summary.read_ms_mean,
        "preprocess_ms_mean": summary.preprocess_ms_mean,
        "inference_ms_mean": summary.inference_ms_mean,
    }
