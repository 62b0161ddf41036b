"""``edge-bench EXPORT_DIR``: every artifact (and the Keras float model) measured side by side, one table.

:func:`run` is the typed entry point (the CLI calls it with the same parameter names). Order of work:

1. find the artifacts (:mod:`benchmarks.artifacts`) and count the model's FLOPs from a graph (:mod:`.flops`);
2. write the fixed inputs and the video (:mod:`.inputs`) into a temporary folder;
3. per thread count, the machine's fp32 and int8 GEMM rates in a worker process (:mod:`.gemm`);
4. per artifact and thread count, one worker process (:mod:`.worker`, :mod:`.measure`); a missing, corrupt
   or crashing artifact gives a row with an error and the others go on;
5. ``bench.json``, ``bench.md``, ``bench.png`` in ``out`` (default ``EXPORT_DIR/bench``), and with
   ``results`` the RESULTS.md page.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from benchmarks import chart, table
from benchmarks.artifacts import Artifact, discover, keras_reference
from benchmarks.flops import FlopCountError, count_flops
from benchmarks.inputs import fixed_inputs, save_images, write_video
from benchmarks.worker import call_worker
from edge_runtime.fileio import file_sha256
from edge_runtime.shipped import default_model_path
from edge_runtime.system import cpu_description, cpu_info
from export.formats import FORMATS

log = logging.getLogger("edge-bench")

JSON_NAME, MARKDOWN_NAME, CHART_NAME = "bench.json", "bench.md", "bench.png"


def run(
    export_dir: str | Path,
    *,
    out: str | Path | None = None,
    formats: Sequence[str] | None = None,
    threads: Sequence[int] = (1, 2),
    repeats: int = 50,
    warmup: int = 5,
    batch_sizes: Sequence[int] = (1, 2, 4, 8),
    throughput_images: int = 16,
    images: int = 16,
    video_frames: int = 60,
    gemm_size: int = 2048,
    gemm_repeats: int = 5,
    keras: bool = True,
    results: str | Path | None = None,
    timeout: float = 1800.0,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Measure every artifact of ``export_dir``; write the outputs and return the whole result (bench.json)."""
    _check(threads, repeats, warmup, batch_sizes, throughput_images, images, video_frames, gemm_size, timeout)
    started = time.perf_counter()
    export_dir = Path(export_dir)
    out = Path(out) if out is not None else export_dir / "bench"
    artifacts, report = discover(export_dir, list(formats) if formats else None)
    notes: list[str] = []
    preprocessing = None
    if keras:
        reference, preprocessing, why_not = keras_reference(export_dir, report)
        if reference is not None:
            artifacts.insert(0, reference)
        else:
            notes.append(why_not)
            log.warning("%s", why_not)
    if not artifacts:
        raise FileNotFoundError(f"no model artifacts (.tflite/.onnx) in '{export_dir}'; "
                                "run 'edge-export RUN_DIR' first")
    machine = {**cpu_info(), "description": cpu_description(), "python": platform.python_version(),
               "load_average_start": _load_average()}
    log.info("machine: %s", machine["description"])
    log.info("measuring %d model(s) × threads %s: %s", len(artifacts), list(threads),
             ", ".join(a.name for a in artifacts))
    flops = _count_flops(artifacts, notes)
    shipped = _shipped_sha256()

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        fixed = fixed_inputs(export_dir.resolve().parent, images)
        log.info("inputs: %s", fixed.description)
        inputs_path = save_images(fixed.images, Path(tmp) / "inputs.npz")
        video = write_video(fixed.images, video_frames, Path(tmp) / "frames.avi") if video_frames else None
        gemm = {}
        for t in threads:
            log.info("GEMM rates, %d thread(s)", t)
            gemm[str(t)] = call_worker({"kind": "gemm", "threads": t, "n": gemm_size, "repeats": gemm_repeats},
                                       timeout, f"gemm/{t}t", progress)
            _log_gemm(t, gemm[str(t)])
        rows = []
        jobs = [(a, t) for a in artifacts for t in threads]
        for i, (artifact, t) in enumerate(jobs, 1):
            log.info("[%d/%d] %s, %d thread(s)", i, len(jobs), artifact.name, t)
            measured = _measure(artifact, t, inputs_path, video, preprocessing, timeout, progress,
                                repeats=repeats, warmup=warmup, batch_sizes=list(batch_sizes),
                                throughput_images=throughput_images)
            row = _row(artifact, t, measured, flops, gemm.get(str(t)) or {}, shipped)
            rows.append(row)
            _log_row(row)

    machine["load_average_end"] = _load_average()
    result = {
        "export_dir": str(export_dir),
        "command": command or f"edge-bench {export_dir}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "versions": _versions(),
        "settings": {"threads": list(threads), "repeats": repeats, "warmup": warmup, "batch_sizes": list(batch_sizes),
                     "throughput_images": throughput_images, "images": images, "video_frames": video_frames,
                     "gemm_size": gemm_size, "gemm_repeats": gemm_repeats, "keras": keras},
        "inputs": {"description": fixed.description, "files": fixed.files,
                   "video": f"{video_frames}-frame MJPG .avi of those images" if video else None},
        "flops": flops,
        "gemm": gemm,
        "rows": rows,
        "complete": all(r["error"] is None for r in rows),
        "notes": notes + table.standard_notes(rows, flops, video_frames),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    write_outputs(result, out, results)
    return result


def write_outputs(result: dict, out: Path, results: str | Path | None = None) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON_NAME, "markdown": out / MARKDOWN_NAME, "chart": out / CHART_NAME}
    result["outputs"] = {k: str(v) for k, v in paths.items()}
    if results is not None:
        result["outputs"]["results"] = str(results)
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    paths["markdown"].write_text(table.markdown_report(result))
    try:
        chart.latency_chart(result, paths["chart"])
    except ImportError:
        log.warning("matplotlib is not installed: no %s (pip install matplotlib)", CHART_NAME)
        del paths["chart"], result["outputs"]["chart"]
        paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    if results is not None:
        Path(results).parent.mkdir(parents=True, exist_ok=True)
        Path(results).write_text(table.results_page(result))
        paths["results"] = Path(results)
    for what, path in paths.items():
        log.info("wrote %s: %s", what, path)
    return paths


def _check(threads, repeats, warmup, batch_sizes, throughput_images, images, video_frames, gemm_size, timeout) -> None:
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0),
                             ("throughput_images", throughput_images, 1), ("images", images, 1),
                             ("video_frames", video_frames, 0), ("gemm_size", gemm_size, 16)):
        if int(value) < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if not threads or any(int(t) < 1 for t in threads):
        raise ValueError(f"threads must be one or more counts >= 1, got {list(threads)}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 s, got {timeout}")


def _count_flops(artifacts: list[Artifact], notes: list[str]) -> dict | None:
    """FLOPs from the first graph that can be read: fp32 ONNX, then fp32 TFLite, then any other."""
    preference = ["onnx_fp32", "tflite_fp32"] + [n for n in FORMATS if n not in ("onnx_fp32", "tflite_fp32")]
    candidates = sorted((a for a in artifacts if a.path is not None and not a.is_reference),
                        key=lambda a: preference.index(a.name) if a.name in preference else len(preference))
    problems = []
    for artifact in candidates:
        try:
            count = count_flops(artifact.path)
        except (FlopCountError, OSError) as exc:
            problems.append(str(exc))
            continue
        if count.flops > 0:
            log.info("model: %s per image (%d conv/matmul layers, counted from %s)",
                     table.flops_text(count.flops), count.layers, artifact.path.name)
            if count.uncounted:
                notes.append(f"FLOPs: {len(count.uncounted)} layer(s) without static shapes were not counted.")
            return count.to_dict()
    notes.append("FLOPs could not be counted from any graph: " + ("; ".join(problems) or "no readable graph")
                 + ". The limit columns are empty.")
    log.warning("%s", notes[-1])
    return None


def _measure(artifact: Artifact, threads: int, inputs: Path, video: Path | None, preprocessing: dict | None,
             timeout: float, progress: bool, **settings) -> dict:
    if artifact.error:
        return {"error": artifact.error}
    job = {"threads": threads, "path": str(artifact.path), "engine": artifact.engine, "inputs": str(inputs),
           **settings}
    if artifact.is_reference:
        job.update(kind="keras", preprocessing=preprocessing)
    else:
        job.update(kind="artifact", video=str(video) if video else None)
    return call_worker(job, timeout, f"{artifact.name}/{threads}t", progress)


def _row(artifact: Artifact, threads: int, measured: dict, flops: dict | None, gemm: dict, shipped: str | None) -> dict:
    path = artifact.path
    sha = _sha256(str(path)) if path is not None and not artifact.is_reference else None
    fmt = FORMATS.get(artifact.name)
    row = {
        "format": artifact.name,
        "description": fmt.description if fmt else ("Keras float model (TensorFlow)" if artifact.is_reference else ""),
        "threads": threads,
        "file": str(path) if path is not None else artifact.listed_as,
        "engine": measured.get("engine", artifact.engine),
        "quantized": artifact.quantized,
        "rejected": artifact.rejected,
        "shipped": sha is not None and sha == shipped,
        "sha256": sha,
        "accuracy": artifact.accuracy,
        "size_mb": measured.get("size_mb", path.stat().st_size / 1e6 if path is not None else None),
        "error": measured.get("error"),
    }
    for key in ("load_s", "preprocess_ms", "latency_ms", "throughput", "rss_mb", "e2e", "input_shape", "input_dtype",
                "preprocessing_in_graph", "batch_fixed"):
        row[key] = measured.get(key)
    row["limit"] = _limits(row, flops, gemm)
    return row


def _limits(row: dict, flops: dict | None, gemm: dict) -> dict:
    """The model's time against the machine's GEMM rate: x = p50 / (FLOPs / rate)."""
    latency = row.get("latency_ms") or {}
    p50 = latency.get("p50")
    limits = {"fp32_ms": None, "x_fp32": None, "int8_ms": None, "x_int8": None, "achieved_gflops": None}
    if not flops or not p50:
        return limits
    limits["achieved_gflops"] = flops["flops"] / (p50 / 1000) / 1e9
    sgemm = (gemm.get("sgemm") or {}).get("gflops")
    if sgemm:
        limits["fp32_ms"] = flops["flops"] / (sgemm * 1e9) * 1000
        limits["x_fp32"] = p50 / limits["fp32_ms"]
    int8 = (gemm.get("int8") or {}).get("gops")
    if int8 and row["quantized"]:
        limits["int8_ms"] = flops["flops"] / (int8 * 1e9) * 1000
        limits["x_int8"] = p50 / limits["int8_ms"]
    return limits


@lru_cache(maxsize=None)
def _sha256(path: str) -> str:
    return file_sha256(path)


def _shipped_sha256() -> str | None:
    path = default_model_path()
    return file_sha256(path) if path.is_file() else None


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for package in ("numpy", "opencv-python-headless", "opencv-python", "ai-edge-litert", "onnxruntime", "onnx",
                    "tensorflow-cpu", "tensorflow", "keras"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _log_gemm(threads: int, gemm: dict) -> None:
    if "error" in gemm:
        log.warning("GEMM rates at %d thread(s) not measured: %s", threads, gemm["error"])
        return
    int8 = gemm["int8"].get("gops")
    log.info("  sgemm %.1f GFLOP/s, int8 GEMM %s at %d thread(s)", gemm["sgemm"]["gflops"],
             f"{int8:.1f} GOP/s" if int8 else gemm["int8"].get("note", "not measured"), threads)


def _log_row(row: dict) -> None:
    if row["error"]:
        log.error("  %s, %d thread(s): %s", row["format"], row["threads"], row["error"])
        return
    lat, e2e = row["latency_ms"], row.get("e2e") or {}
    log.info("  p50 %.2f / p90 %.2f / p99 %.2f ms, %.1f img/s (batch %s), e2e %s, peak RSS %.0f MB",
             lat["p50"], lat["p90"], lat["p99"], row["throughput"]["best_images_per_s"],
             row["throughput"]["best_batch"],
             f"{e2e['per_frame_ms']:.2f} ms/frame" if "per_frame_ms" in e2e else "-", row["rss_mb"]["batch1_peak"])

