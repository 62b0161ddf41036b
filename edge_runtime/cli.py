"""``edge-classify``: classify camera frames, video files/streams, folders or image files on the device.

    edge-classify --camera 0 --max-fps 5 --output line3.jsonl
    edge-classify --folder /data/drop --watch --output results.csv --sort-into /data/sorted
    edge-classify 'parts/*.png' --model model_int8.onnx --min-confidence 0.8
    edge-classify --genicam --device 22012345 --set ExposureTime=800 --trigger hardware --tiles auto

``build_parser()`` only describes the command line; ``main(argv)`` parses it and calls :func:`run`, the
typed entry point (the same call from Python). No TensorFlow is imported on this path.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from edge_runtime.backends import ENGINES
from edge_runtime.classifier import Classifier
from edge_runtime.fileio import write_json_atomic
from edge_runtime.cli_support import HelpFormatter, dispatch, setup_logging
from edge_runtime.engine_select import AUTO
from edge_runtime.line import LineOptions, LineOutputs
from edge_runtime.pipeline import StopFlag, Summary, run_pipeline, stop_on_signals
from edge_runtime.records import ModelInfo
from edge_runtime.sinks.base import Sink
from edge_runtime.sinks.files import open_record_writer, read_done_files
from edge_runtime.sinks.images import AnnotatedFrameWriter, Display, SortInto
from edge_runtime.sources import open_source
from edge_runtime.sources.base import CAPTURE_BACKENDS, SourceOptions, is_stream_url
from edge_runtime.sources.features import TRIGGERS, CameraConfig, parse_settings
from edge_runtime.sources.camera import CAMERA_KINDS, camera_summary_text
from edge_runtime.polarity import POLARITY_MODES
from edge_runtime.throughput import AUTO as AUTO_MODE, MAX_REQUESTS, MODES, THROUGHPUT
from edge_runtime.tiles import TileSpec

log = logging.getLogger("edge-classify")

EPILOG = """\
records (one per frame or file, JSON Lines on stdout or --output .jsonl/.csv):
  time, source, frame, file, file_size, file_mtime_ns, label, confidence, uncertain (confidence below
  --min-confidence; the label is kept), unknown (the image is unlike every training image: label "unknown",
  the threshold is stored in the model), ood_score, predicted (best class, also when unknown), inverted
  (--polarity auto kept the inverted reading), top3, error (set instead of a label when the frame or file could
  not be classified), read_ms, preprocess_ms, inference_ms, latency_ms (capture/read -> result), engine,
  model, model_sha256. Logs and the final summary go to stderr.

resuming: an existing --output is appended to; file inputs already recorded there with the same path,
  size and mtime are skipped (restart a --watch run with the same --output and nothing is done twice or
  left out). --overwrite starts the file afresh.

exit codes: 0 finished, or stopped by SIGINT/SIGTERM, --frames, --duration; 1 a stream was lost for good
  or the output could not be written (the summary is still printed); 2 setup error (bad arguments, missing
  or corrupt model, metadata that does not match it, camera that does not open, missing folder).
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _gray_levels(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"must be 0 to 255 gray levels, got {text}")
    return value


def run_defaults() -> dict[str, Any]:
    """The defaults of :func:`run`'s parameters: the command line takes its defaults from here."""
    return {name: parameter.default for name, parameter in inspect.signature(run).parameters.items()
            if parameter.default is not inspect.Parameter.empty}


def build_parser() -> argparse.ArgumentParser:
    """The command line of :func:`run`: one option per parameter, with the same default."""
    defaults = run_defaults()
    p = argparse.ArgumentParser(
        prog="edge-classify",
        description="Classify steel-surface images on the device (LiteRT, ONNX Runtime or OpenVINO; no TensorFlow) "
        "from a camera, a video file or stream, a folder (optionally watched for new files) or image files, and write "
        "one record per frame/file. Runs unattended: bad files become error records, streams reconnect, "
        "SIGINT/SIGTERM stop cleanly.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("inputs", nargs="*", default=defaults["inputs"], metavar="IMAGE",
                   help="image files, folders or glob patterns ('*.png')")
    src = p.add_argument_group("source (exactly one: IMAGE..., --camera, --video, --folder, --genicam or --gige)")
    one = src.add_mutually_exclusive_group()
    one.add_argument("--camera", type=int, metavar="N", help="camera index (OpenCV VideoCapture)")
    one.add_argument("--video", metavar="PATH|URL", help="video file, or rtsp://, http(s):// ... stream")
    one.add_argument("--folder", metavar="DIR", help="folder of images")
    one.add_argument("--genicam", nargs="?", const="", metavar="PRODUCER",
                     help="GenICam camera (GigE Vision, USB3 Vision) through the camera maker's GenTL producer: a "
                     ".cti file or a folder of them (default: those in $GENICAM_GENTL64_PATH); needs the genicam "
                     "extra. See docs/cameras.md")
    one.add_argument("--gige", metavar="ADDRESS",
                     help="GigE Vision camera at ADDRESS (IP address or Aravis device id) through Aravis; needs the "
                     "Debian packages gir1.2-aravis-0.8 and python3-gi")
    src.add_argument("--recursive", action="store_true", help="include sub-folders")
    src.add_argument("--watch", action="store_true",
                     help="keep watching --folder and classify each new file once it is completely written")
    src.add_argument("--poll", type=_positive_float, default=defaults["poll"], metavar="S",
                     help="--watch: seconds between scans")
    src.add_argument("--max-megapixels", type=_positive_float, default=defaults["max_megapixels"], metavar="MP",
                     help="image files larger than this (read from the header, before decoding) get an error "
                     "record instead of exhausting the memory")
    src.add_argument("--settle", type=float, default=defaults["settle"], metavar="S",
                     help="--watch: seconds a file that looks incomplete (0 bytes, JPEG without end marker) must "
                     "stay unchanged before it is reported as an error")
    cam = p.add_argument_group("camera and stream")
    cam.add_argument("--backend", choices=CAPTURE_BACKENDS, default=defaults["backend"], help="OpenCV capture backend")
    cam.add_argument("--width", type=_positive_int, help="requested frame width")
    cam.add_argument("--height", type=_positive_int, help="requested frame height")
    cam.add_argument("--fps", type=_positive_float, help="requested camera frame rate")
    cam.add_argument("--retries", type=_non_negative_int, default=defaults["retries"], metavar="N",
                     help="open/reconnect attempts, with exponential back-off (0.5 s doubling, at most 30 s)")
    gen = p.add_argument_group("industrial cameras (--genicam, --gige; --width, --height, --fps set Width, Height, "
                               "AcquisitionFrameRate)")
    gen.add_argument("--device", metavar="SERIAL|INDEX",
                     help="--genicam: the camera's serial number, device id or user-defined name, or its index in the "
                     "device list (default: the first)")
    gen.add_argument("--set", dest="settings", action="append", default=defaults["settings"],
                     metavar="FEATURE=VALUE",
                     help="set a camera feature before acquisition (ExposureTime=800, Gain=2, PixelFormat=Mono8, "
                     "...), checked against the camera's range and read back; repeat for several, applied in order")
    gen.add_argument("--trigger", choices=TRIGGERS, default=defaults["trigger"],
                     help="free: the camera runs at its frame rate; software: one TriggerSoftware per frame (at "
                     "--fps if given); hardware: frames on the camera's trigger line (the line's encoder), waited "
                     "for without polling; --set TriggerSource=LineN picks the line")
    mod = p.add_argument_group("model")
    mod.add_argument("--model", metavar="PATH",
                     help=".tflite or .onnx file from edge-export (default: the model shipped in the package)")
    mod.add_argument("--engine", choices=[AUTO, *sorted(ENGINES)], default=defaults["engine"],
                     help="inference engine. auto: the fastest on this machine among the engine/model pairs that "
                     "passed the export's accuracy gates (the shipped models, or the engines recorded as passing in "
                     "--model's metadata), measured once and cached per machine in "
                     "~/.cache/steel-edge-inspect/engine-choice.json ($EDGE_RUNTIME_CACHE_DIR overrides); records "
                     "name the engine and model file used")
    mod.add_argument("--threads", type=_positive_int, help="inference threads (default: all cores)")
    mod.add_argument("--mode", choices=MODES, default=defaults["mode"],
                     help="latency: one frame at a time on all --threads, each as soon as it comes (cameras and streams "
                     "keep only the newest frame). throughput: --requests copies of the model share "
                     "the threads and classify consecutive images at once while the next ones are decoded; records "
                     "stay in input order (folders, image files, video files: more images per second once the "
                     "copies are made, which takes seconds on a small CPU: a few hundred images can finish sooner "
                     "in latency mode, docs/runtime.md). auto: throughput for folders read once, image files and "
                     "video files unless --max-fps paces them, latency for the others")
    mod.add_argument("--requests", type=_positive_int, metavar="N",
                     help="throughput mode: parallel inference requests, each with --threads/N threads and chunks of "
                     "up to 4 images (default: LiteRT 1 request, batching on every thread; ONNX Runtime and OpenVINO "
                     f"one single-threaded request per --threads thread, at most {MAX_REQUESTS})")
    mod.add_argument("--tiles", metavar="SPEC",
                     help="classify large frames by windows: 'auto' (squares of the short edge; 2048x1000 -> 3), "
                     "ROWSxCOLS (e.g. 1x4) or a window size in pixels; the frame's answer combines the windows "
                     "that are not unknown (see --tile-aggregate)")
    mod.add_argument("--tile-aggregate", choices=("max", "mean"), default=defaults["tile_aggregate"],
                     help="--tiles: per class the highest probability of any window, or the mean")
    mod.add_argument("--polarity", choices=POLARITY_MODES,
                     help="test-time polarity. auto: classify every image as captured and with inverted gray levels "
                     "and keep the reading closer to the training images (for a plant whose lighting makes "
                     "defects dark where the training plant's were bright; twice the inference time; needs a "
                     "model with the unknown score). Default: the model's own setting (edge-export --polarity), "
                     "as-is if it has none")
    mod.add_argument("--unknown-rate", type=_probability, metavar="R",
                     help="operating point of the unknown answer: the share of images like the training images "
                     "(also from a brighter, softer or noisier camera) answered unknown, e.g. 0.01; higher catches "
                     "more new defects (docs/unknown.md has the trade-off). Default: the model's own, set at export")
    mod.add_argument("--defect-pixel-threshold", type=_gray_levels, metavar="LEVELS",
                     help="hot and dead sensor pixels: a pixel brighter than all its neighbours, or darker, by more "
                     "than LEVELS gray levels takes the nearest neighbour's value before the image is resized; 0 "
                     "turns the correction off (a camera that corrects its own). Default: the model's own (40)")
    out = p.add_argument_group("results")
    out.add_argument("--output", metavar="FILE", help="write records to FILE (.jsonl or .csv) instead of stdout")
    out.add_argument("--overwrite", action="store_true", help="start --output afresh instead of appending/resuming")
    out.add_argument("--min-confidence", type=_probability, metavar="P",
                     help="mark results below this confidence as uncertain (the label is kept)")
    out.add_argument("--sort-into", metavar="DIR",
                     help="copy input files to DIR/<label>/ (DIR/_uncertain/<label>/, DIR/_errors/)")
    out.add_argument("--save-dir", metavar="DIR", help="save every classified frame, annotated, as JPEG here")
    out.add_argument("--show", action="store_true", help="show annotated frames in a window (if a display exists)")
    out.add_argument("--summary", metavar="FILE", help="also write the final summary as JSON here")
    line = p.add_argument_group("results to the line, as they happen (docs/line-integration.md)")
    line.add_argument("--mqtt", metavar="URL",
                      help="publish to an MQTT broker: mqtt://[user[:pass]@]host[:port]/PREFIX (mqtts:// for TLS; "
                      "the password may come from $EDGE_MQTT_PASSWORD): every record on PREFIX/result (QoS 1), a "
                      "retained PREFIX/status (online/offline), alarms on PREFIX/alarm. A broker that is down "
                      "never stops the run: results wait in a queue and go out in order")
    line.add_argument("--mqtt-queue", type=_positive_int, default=defaults["mqtt_queue"], metavar="N",
                      help="--mqtt: results kept while the broker is away; when full, the oldest is dropped")
    line.add_argument("--mqtt-tls-ca", metavar="PEM", help="--mqtt: CA certificate of the broker (turns TLS on)")
    line.add_argument("--mqtt-tls-cert", metavar="PEM", help="--mqtt: client certificate (with --mqtt-tls-key)")
    line.add_argument("--mqtt-tls-key", metavar="PEM", help="--mqtt: the client certificate's private key")
    line.add_argument("--alarm", dest="alarms", action="append", default=defaults["alarms"], metavar="RULE",
                      help="raise an alarm (log, PREFIX/alarm, page, OPC UA, /metrics): label:LABEL[:HOLD_S] "
                      "(a class seen), unknown:PCT/N (over PCT %% unknown in the last N results), errors:PCT/N, "
                      "camera-lost:S (no result for S seconds); repeat for several rules")
    line.add_argument("--opcua", metavar="URL",
                      help="serve the newest result, counters and status as OPC UA nodes: opc.tcp://HOST:PORT "
                      "(needs the opcua extra)")
    line.add_argument("--serve", metavar="[HOST:]PORT",
                      help="serve the operator page (live annotated frames, counts, alarms), /status.json, "
                      "/metrics (Prometheus) and /healthz; HOST defaults to 127.0.0.1 (this machine only)")
    run_ = p.add_argument_group("how much to process")
    run_.add_argument("--every", type=_positive_int, default=defaults["every"], metavar="N",
                      help="classify every N-th frame/file")
    run_.add_argument("--max-fps", type=_positive_float, metavar="F",
                      help="at most F frames per second (live sources skip frames, files are paced)")
    run_.add_argument("--frames", type=_positive_int, metavar="N", help="stop after N records")
    run_.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def run(
    inputs: Sequence[str | Path] = (),
    *,
    camera: int | None = None,
    video: str | None = None,
    folder: str | Path | None = None,
    genicam: str | Path | None = None,
    gige: str | None = None,
    recursive: bool = False,
    watch: bool = False,
    poll: float = 0.5,
    settle: float = 10.0,
    max_megapixels: float = 64.0,
    backend: str = "any",
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    retries: int = 5,
    device: str | None = None,
    settings: Sequence[str] | None = None,
    trigger: str = "free",
    model: str | Path | None = None,
    engine: str | None = AUTO,
    threads: int | None = None,
    mode: str = AUTO_MODE,
    requests: int | None = None,
    tiles: str | None = None,
    tile_aggregate: str = "max",
    polarity: str | None = None,
    unknown_rate: float | None = None,
    defect_pixel_threshold: int | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    min_confidence: float | None = None,
    sort_into: str | Path | None = None,
    save_dir: str | Path | None = None,
    show: bool = False,
    summary: str | Path | None = None,
    mqtt: str | None = None,
    mqtt_queue: int = 10_000,
    mqtt_tls_ca: str | Path | None = None,
    mqtt_tls_cert: str | Path | None = None,
    mqtt_tls_key: str | Path | None = None,
    alarms: Sequence[str] | None = None,
    opcua: str | None = None,
    serve: str | None = None,
    every: int = 1,
    max_fps: float | None = None,
    frames: int | None = None,
    duration: float | None = None,
    stop: StopFlag | None = None,
) -> Summary:
    """Classify one source into the outputs and return the run's summary (also logged to stderr).

    Parameters are the command line's options, with the same defaults (``engine="auto"``: the fastest engine
    that passed the model's accuracy gates; ``None``: the file's default engine, no measuring).
    The model is loaded (and checked against its metadata) before any output or source is opened. Raises
    ValueError for inconsistent arguments and EdgeRuntimeError subclasses for setup errors (model, output,
    source); problems with single frames or files become error records instead.
    """
    spec, kind = _source_spec(inputs, camera, video, folder, genicam, gige)
    camera_config = _camera_config(kind, device, settings, trigger, fps, width, height)
    _check_arguments(kind, watch, recursive, sort_into, min_confidence, frames, duration)
    _check_mode(mode, kind, video)
    line = LineOptions(mqtt, mqtt_queue, mqtt_tls_ca, mqtt_tls_cert, mqtt_tls_key, alarms, opcua, serve)
    line_options = {"mqtt": mqtt, "opcua": opcua, "serve": serve}
    stop = stop or StopFlag()
    with stop_on_signals(stop):
        tile_spec = TileSpec.parse(tiles, tile_aggregate) if tiles else None
        classifier = Classifier.load(model, engine=engine, threads=threads)
        classifier.tiles = tile_spec
        if polarity:
            classifier.polarity = polarity
        if unknown_rate is not None:
            classifier.unknown_rate = unknown_rate
        if defect_pixel_threshold is not None:
            classifier.defect_pixel_threshold = defect_pixel_threshold
        info = ModelInfo.of(classifier)
        log.info("model %s: %s, %d labels, sha256 %s", info.path, info.engine, len(classifier.labels), info.sha256)
        outputs = LineOutputs(line, info, classifier.labels)
        with ExitStack() as stack:
            writer = stack.enter_context(open_record_writer(output, overwrite))
            resumable = output not in (None, "-") and not overwrite and kind in ("folder", "files")
            done = read_done_files(output) if resumable else {}
            if done:
                log.info("resuming: %d file(s) already recorded in %s are skipped", len(done), output)
            options = SourceOptions(
                every=every, max_fps=max_fps, recursive=recursive, watch=watch, poll_s=poll, settle_s=settle,
                retries=retries, backend=backend, width=width, height=height, fps=fps, done=done,
                max_pixels=int(max_megapixels * 1_000_000),
                exclude=tuple(os.path.abspath(d) for d in (sort_into, save_dir) if d is not None),
            )
            records_out = output is not None or mqtt is None  # --mqtt alone: no records on stdout
            sinks: list[Sink] = [writer] if records_out else []
            if sort_into is not None:
                sinks.append(stack.enter_context(SortInto(sort_into)))
            if save_dir is not None:
                sinks.append(stack.enter_context(AnnotatedFrameWriter(save_dir)))
            if show:
                sinks.append(stack.enter_context(Display(on_quit=lambda: stop.request("q pressed"))))
            sinks.extend(stack.enter_context(outputs).sinks)
            source = stack.enter_context(open_source(spec, options, kind, should_stop=stop, camera=camera_config))
            outputs.started(source)
            log.info("classifying %s -> %s", source.name, ", ".join(
                [writer.where] * records_out + [f"--{k}" for k in ("mqtt", "opcua", "serve") if line_options[k]]))
            if duration is not None:
                stop.deadline = time.monotonic() + duration
            result = run_pipeline(source, classifier, sinks, info, min_confidence=min_confidence,
                                  max_frames=frames, stop=stop, mode=mode, requests=requests)
            camera_report = _camera_report(source, result)
            outputs.finished(result)
        result.outputs.update(outputs.summary())
    camera_text = "\n" + camera_summary_text(camera_report) if camera_report else ""
    (log.error if result.failed else log.info)("%s%s", result.text(), camera_text)
    if summary is not None:
        _write_summary(Path(summary), result, info, camera_report)
    return result


def _source_spec(inputs: Sequence[str | Path], camera: int | None, video: str | None,
                 folder: str | Path | None, genicam: str | Path | None = None,
                 gige: str | None = None) -> tuple[object, str]:
    given = [(list(inputs), "files") if inputs else None, (camera, "camera") if camera is not None else None,
             (video, "video") if video is not None else None, (folder, "folder") if folder is not None else None,
             (genicam, "genicam") if genicam is not None else None, (gige, "gige") if gige is not None else None]
    chosen = [g for g in given if g is not None]
    if len(chosen) != 1:
        raise ValueError("give exactly one source: image files, --camera N, --video PATH|URL, --folder DIR, "
                         f"--genicam [PRODUCER] or --gige ADDRESS (got {len(chosen)})")
    return chosen[0]


def _camera_config(kind: str, device: str | None, settings: Sequence[str] | None, trigger: str,
                   fps: float | None, width: int | None, height: int | None) -> CameraConfig | None:
    """The GenICam camera set-up of --genicam/--gige; ValueError if camera options come without such a camera."""
    if kind not in CAMERA_KINDS:
        if device is not None or settings or trigger != "free":
            raise ValueError("--device, --set and --trigger apply to --genicam and --gige cameras")
        return None
    if device is not None and kind == "gige":
        raise ValueError("--gige names its camera by address; --device applies to --genicam")
    return CameraConfig(device, parse_settings(settings), trigger, fps, width, height)


def _camera_report(source: object, result: Summary) -> dict[str, Any] | None:
    """A GenICam source's settings and frame rates (configured, delivered, classified) for the summary."""
    report = getattr(source, "camera_summary", None)
    return report(result.elapsed_s, result.fps) if report is not None else None


def _check_arguments(kind: str, watch: bool, recursive: bool, sort_into: object, min_confidence: float | None,
                     frames: int | None, duration: float | None) -> None:
    if watch and kind != "folder":
        raise ValueError("--watch needs --folder DIR")
    if recursive and kind not in ("folder", "files"):
        raise ValueError("--recursive applies to --folder (or folders given as inputs)")
    if sort_into is not None and kind not in ("folder", "files"):
        raise ValueError("--sort-into copies input files; use it with --folder or image files, not a camera/video")
    if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"--min-confidence must be between 0 and 1, got {min_confidence}")
    if frames is not None and frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    if duration is not None and not duration > 0:
        raise ValueError(f"--duration must be > 0 s, got {duration}")


def _check_mode(mode: str, kind: str, video: str | None) -> None:
    """Refuse --mode throughput for live sources (cameras, streams, devices), which keep only the newest frame."""
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    live = kind in ("camera", *CAMERA_KINDS) or (kind == "video" and video is not None and (
        is_stream_url(video) or video.startswith("/dev/")))
    if mode == THROUGHPUT and live:
        raise ValueError("--mode throughput applies to folders, image files and video files; a camera or stream is "
                         "classified newest frame first (--mode latency or auto)")


def _write_summary(path: Path, summary: Summary, model: ModelInfo, camera: dict[str, Any] | None = None) -> None:
    data = {**summary.to_dict(), "model": model.name, "model_sha256": model.sha256, "engine": model.engine}
    if camera is not None:
        data["camera"] = camera
    try:
        write_json_atomic(path, data)
    except OSError as exc:
        log.error("cannot write --summary '%s': %s", path, exc.strerror or exc)


def _classify(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    kwargs = vars(args)
    kwargs.pop("verbose")
    inputs = kwargs.pop("inputs")
    summary = run(inputs, **kwargs)
    return 1 if summary.failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return dispatch(argv, {}, _classify, log)


if __name__ == "__main__":
    sys.exit(main())
