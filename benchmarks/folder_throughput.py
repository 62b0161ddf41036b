"""Images per second of ``edge-classify --folder`` in latency mode (one image at a time) and throughput mode
(parallel inference requests), on the same folder and model, in one run.

    python -m benchmarks.folder_throughput --folder ../shared/datasets/neu
    python -m benchmarks.folder_throughput --folder ../shared/datasets/neu --model edge_runtime/models/onnx_int8.onnx --engine openvino

Both modes go through :func:`edge_runtime.pipeline.run_pipeline` (decoding, preprocessing, inference, records),
interleaved as latency, throughput, throughput, latency, ... so that a load that drifts during the run (another
job on the machine) weighs on both alike; images/s is the pipeline summary's figure (model loading excluded).
The labels of the two modes are compared image by image.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
from pathlib import Path

from edge_runtime.classifier import Classifier
from edge_runtime.pipeline import run_pipeline
from edge_runtime.records import ModelInfo
from edge_runtime.sources.base import SourceOptions
from edge_runtime.sources.files import FilesSource, list_images
from edge_runtime.system import cpu_description
from edge_runtime.throughput import LATENCY, THROUGHPUT, default_requests

log = logging.getLogger(__name__)


class _Labels:
    """A sink that keeps (file, label) of every record."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str | None]] = []

    def emit(self, result) -> None:
        self.seen.append((result.frame.path, result.prediction.label if result.prediction else None))


def one_pass(classifier: Classifier, paths: list[str], mode: str, requests: int | None) -> tuple[float, list]:
    """(images/s, [(file, label)]) of one pipeline run over ``paths`` in ``mode``."""
    labels = _Labels()
    with FilesSource(paths, SourceOptions(), name="benchmark") as source:
        summary = run_pipeline(source, classifier, [labels], ModelInfo.of(classifier), mode=mode,
                               requests=requests if mode == THROUGHPUT else None)
    return summary.fps, labels.seen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.folder_throughput", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--folder", required=True, help="folder of images (sub-folders included)")
    p.add_argument("--model", help="model file (default: the shipped default model)")
    p.add_argument("--engine", help="engine (default: the model file's default engine)")
    p.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    p.add_argument("--requests", type=int, help="throughput mode's requests (default: edge-classify's)")
    p.add_argument("--repeats", type=int, default=2, help="latency/throughput pairs (run as L T T L ...)")
    p.add_argument("--limit", type=int, help="use only the first N images of the folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    paths = list_images(args.folder, recursive=True)[: args.limit]
    if not paths:
        p.error(f"no images in {args.folder}")
    classifier = Classifier.load(args.model, engine=args.engine, threads=args.threads)
    requests = args.requests or default_requests(classifier.backend.threads)
    print(f"CPU: {cpu_description()}; load average {os.getloadavg()[0]:.2f} at the start")
    print(f"model {Path(classifier.path).name} on {classifier.backend.name}, {classifier.backend.threads} threads; "
          f"throughput mode: {requests} requests; {len(paths)} images per pass")
    one_pass(classifier, paths[:16], LATENCY, None)  # warm-up: first calls of both paths are not timed
    one_pass(classifier, paths[:16], THROUGHPUT, requests)

    rates: dict[str, list[float]] = {LATENCY: [], THROUGHPUT: []}
    answers: dict[str, list] = {}
    order = [LATENCY, THROUGHPUT]
    for repeat in range(args.repeats):
        for mode in order if repeat % 2 == 0 else order[::-1]:
            fps, seen = one_pass(classifier, paths, mode, requests)
            rates[mode].append(fps)
            answers.setdefault(mode, seen)
            print(f"  pass {repeat + 1} {mode:10s} {fps:7.1f} images/s")
    lat, thr = statistics.median(rates[LATENCY]), statistics.median(rates[THROUGHPUT])
    pair_ratios = [t / l for l, t in zip(rates[LATENCY], rates[THROUGHPUT])]
    differ = sum(a != b for a, b in zip(answers[LATENCY], answers[THROUGHPUT]))
    print(f"latency (one image at a time): {lat:.1f} images/s (median of {len(rates[LATENCY])})")
    print(f"throughput ({requests} requests):   {thr:.1f} images/s (median of {len(rates[THROUGHPUT])})")
    print(f"ratio {thr / lat:.2f}x (per pair: {', '.join(f'{r:.2f}' for r in pair_ratios)}); "
          f"records that differ between the modes: {differ} of {len(answers[LATENCY])}; "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
