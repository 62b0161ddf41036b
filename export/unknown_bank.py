"""Rebuild an exported model's unknown score from the model itself, without TensorFlow: the bank of training
embeddings with camera-changed copies, and the per-class leave-one-out thresholds with their rate table
(train/embeddings.py, edge_runtime/ood.py), written into a copy of the artifact's metadata.

    python -m export.unknown_bank edge_runtime/models/default.tflite --data ../shared/datasets/neu --out default.tflite
    python -m export.unknown_bank MODEL.onnx --data NEU --manifest split_manifest.csv --out MODEL_rebank.onnx

This is how a model exported before the camera-changed bank gets it: the embeddings come from the artifact's
own engine (its int8 embeddings, so no float-to-int8 threshold shift is needed), only the manifest's *train*
images are read, and nothing else in the file changes (the graph digest is kept). ``edge-export`` does the same
with the Keras float model for every new export.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np

from edge_runtime.ood import EMBEDDING, FEATURES

log = logging.getLogger("unknown-bank")


def rebuild(model: str | Path, data_root: str | Path, out: str | Path, manifest: str | Path | None = None,
            copies: int = 2, k: int = 2, rate: float = 0.02, per_class: bool = True, engine: str | None = None,
            threads: int | None = None, batch: int = 32, progress: bool = True, feature: str | None = None) -> dict:
    """Write ``out``: ``model`` with its ``ood`` metadata rebuilt from its own ``feature`` output (default: the
    one its score reads now) of the manifest's training images (default manifest: ``split_manifest.csv`` beside
    the model). Returns the new ``ood`` dict."""
    from edge_runtime.classifier import Classifier
    from edge_runtime.model_file import write_model
    from edge_runtime.preprocessing import read_image
    from train.embeddings import BANK_WIDTH, BankCameras, camera_bank_spec
    from train.split import read_manifest, rows_of

    model = Path(model)
    classifier = Classifier.load(model, engine=engine, threads=threads)
    if classifier.ood is None:
        raise ValueError(f"{model} has no unknown score (no embedding output); re-export it with edge-export")
    feature = feature or classifier.ood.feature
    manifest = Path(manifest) if manifest else model.parent / "split_manifest.csv"
    rows = rows_of(read_manifest(manifest), "train")
    if not rows:
        raise ValueError(f"{manifest} lists no training images")
    images = [read_image(Path(data_root) / r.path) for r in rows]

    def embed(pixels: np.ndarray) -> np.ndarray:
        parts = []
        for start in range(0, len(pixels), batch):
            inputs = np.stack([classifier._model_input(p) for p in pixels[start : start + batch]])
            outputs = classifier.device_outputs(inputs)
            if feature not in outputs:
                raise ValueError(f"{model} has no '{feature}' output (it has {sorted(outputs)}); re-export it with "
                                 "edge-export")
            parts.append(outputs[feature])
        return np.concatenate(parts)

    spec = camera_bank_spec(embed, images, [r.label for r in rows], classifier.labels, classifier.metadata.preprocess,
                            BankCameras(copies=copies), k, 1.0 - rate, per_class, progress, feature, BANK_WIDTH)
    ood = {**spec.to_dict(), "checked_on": classifier.backend.name,
           "threshold_rule": "the artifact's own bank: leave-one-out scores of its training images and camera copies"}
    extra = {**classifier.metadata.extra, "ood": ood}
    write_model(out, model.read_bytes(), dataclasses.replace(classifier.metadata, extra=extra))
    log.info("%s: bank %s, k=%d, threshold %.4f at unknown rate %.3f%s -> %s", model, list(spec.bank.shape), spec.k,
             spec.threshold, rate, " (per class)" if per_class else "", out)
    return ood


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.unknown_bank", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="a .tflite/.onnx from edge-export (with the embedding output)")
    p.add_argument("--data", required=True, help="NEU folder the manifest's paths are relative to")
    p.add_argument("--out", required=True, help="where to write the model with the rebuilt metadata")
    p.add_argument("--manifest", help="split manifest (default: split_manifest.csv beside the model)")
    p.add_argument("--copies", type=int, default=2, help="camera-changed copies of each training image in the bank")
    p.add_argument("--k", type=int, default=2, help="the score uses the k-th nearest bank embedding")
    p.add_argument("--unknown-rate", type=float, default=0.02,
                   help="default operating point: share of in-distribution calibration images answered unknown")
    p.add_argument("--one-threshold", action="store_true", help="one threshold for every class (no per-class rule)")
    p.add_argument("--engine", help="engine to compute the embeddings with (default: the file's own)")
    p.add_argument("--threads", type=int)
    p.add_argument("--feature", choices=(EMBEDDING, FEATURES),
                   help="the graph output the score reads: the 512-wide embedding or the backbone's pooled features "
                   "(projected to 256 values; edge-export's default). Default: the one the model's score reads now")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if Path(args.out).resolve() == Path(args.model).resolve():
        print("--out must differ from the model (write a copy, check it, then replace)", file=sys.stderr)
        return 2
    rebuild(args.model, args.data, args.out, args.manifest, args.copies, args.k, args.unknown_rate,
            not args.one_threshold, args.engine, args.threads, feature=args.feature)
    return 0


if __name__ == "__main__":
    sys.exit(main())
