"""``edge-export``: export a trained run to TFLite/ONNX with accuracy gates, re-check artifacts, ship one.

    edge-export RUN_DIR [--formats ...] [--gc10 DIR] [--xsdd DIR] [--max-drop-neu PP] ...
    edge-export check ARTIFACT... --data DIR [--reference RUN_DIR|FLOAT_ARTIFACT] [--map FOLDER=CLASS]
    edge-export ship EXPORT_DIR [--formats tflite_int8 onnx_int8] [--dest edge_runtime/models]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edge_runtime.cli_support import HelpFormatter, dispatch, setup_logging
from edge_runtime.polarity import AS_IS, POLARITY_MODES
from export.activation_ranges import DEFAULT_QUANTILE
from export.convert import ONNX_QUANTIZERS
from export.formats import FORMATS
from train.augment import BANK_CAMERA_KINDS
from edge_runtime.ood import EMBEDDING, FEATURES
from train.embeddings import BANK_FEATURE, BANK_TRAINING_COPIES, BANK_WIDTH, DEFAULT_OOD_QUANTILE

log = logging.getLogger("edge-export")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, help="inference threads per artifact (default: the engine's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    p.add_argument("-v", "--verbose", action="store_true")


def _gates(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("accuracy gates (a failing artifact makes the command exit 1)")
    g.add_argument("--max-drop-neu", type=float, default=0.5, help="max top-1 drop vs float on NEU, pp")
    g.add_argument("--max-drop-cross", type=float, default=2.0,
                   help="max drop vs float on each cross-plant set (GC10, X-SDD; folders for 'check'), pp")
    g.add_argument("--min-agreement", type=float, default=99.0,
                   help="min agreement with float on the model's own held-out images (all images for 'check'), %%: of "
                   "the reported answer (class, or unknown above the model's unknown threshold); top-1 class for "
                   "models without the unknown score")
    g.add_argument("--min-foreign-agreement", type=float, default=95.0,
                   help="min agreement with float on another plant's images (GC10, X-SDD), %%")
    g.add_argument("--max-drop-caught", type=float, default=2.0,
                   help="max drop vs float in images of new classes answered unknown, pp")
    g.add_argument("--max-rise-confident-wrong", type=float, default=2.0,
                   help="max rise vs float in another plant's images named as a wrong class, pp")
    g.add_argument("--max-float-dprob", type=float, default=0.05,
                   help="float artifacts (fp32, fp16 weights) of edge-export: max 99th percentile of |probability "
                   "- float's| over the checked images (measured: about 1e-5 for fp32, 0.006-0.010 for fp16 weights; "
                   "pixels 8 levels off, 0.11)")


def build_export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-export",
        description="Export a trained edge-train run to TFLite (fp32, fp16, dynamic-range, full-int8) and ONNX "
        "(fp32, int8 QDQ), with metadata inside every artifact, and check each one through the device code path "
        "against the float model on NEU validation+test, GC10 inclusion and X-SDD. Failing artifacts are moved "
        "to rejected/ and the command exits 1. Subcommands: 'check' re-validates artifacts on your own images; "
        "'ship' installs one as the package's default model.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("run_dir", help="a finished edge-train run directory")
    p.add_argument("--out", help="output folder (default: RUN_DIR/export)")
    p.add_argument("--formats", nargs="+", metavar="FORMAT", help=f"subset of {list(FORMATS)} (default: all)")
    p.add_argument("--calibration-count", type=int, default=240,
                   help="int8 calibration images, from the manifest's train split only, equal per class")
    p.add_argument("--int8-input", choices=("pixels", "normalized"), default="pixels",
                   help="full-int8 TFLite input: raw uint8 BGR pixels with preprocessing in the graph, or "
                   "int8 normalised input with quantisation parameters in the model")
    p.add_argument("--onnx-quantizer", choices=ONNX_QUANTIZERS, default=ONNX_QUANTIZERS[0],
                   help="ONNX int8 by NNCF (bias-corrected; agrees better with float) or ONNX Runtime's "
                   "quantize_static; both static QDQ, uint8 activations, int8 per-channel 7-bit weights")
    p.add_argument("--polarity", choices=POLARITY_MODES, default=AS_IS,
                   help="test-time polarity stored in every artifact (edge-classify's default for it) and used "
                   "by the checks, float reference included. auto: classify each image as captured and inverted, "
                   "keep the reading closer to the training images (2 inferences per image)")
    p.add_argument("--unknown-rate", type=float, default=round(1.0 - DEFAULT_OOD_QUANTILE, 6),
                   help="default operating point stored in every artifact: the share of the bank's training images "
                   "and augmented copies (leave-one-out, training split only) answered unknown; edge-classify "
                   "--unknown-rate moves it on the device (docs/unknown.md)")
    p.add_argument("--bank-copies", type=int, default=BANK_TRAINING_COPIES,
                   help="augmented training copies (the training recipe's camera and geometric changes) of each "
                   "training image in the unknown score's bank")
    p.add_argument("--bank-camera-copies", nargs="*", default=list(BANK_CAMERA_KINDS), choices=BANK_CAMERA_KINDS,
                   metavar="KIND", help="one more bank copy of every training image per KIND (noise: sigma up to "
                   "10 gray levels; motion: 2-9 px along the rows or columns; banding: row offsets up to sigma 6): "
                   "fewer unknown answers under those camera changes, and int8 answers closer to float's "
                   "(docs/unknown.md). Default: all three; the option alone, without KIND, leaves them out")
    p.add_argument("--unknown-feature", choices=(FEATURES, EMBEDDING), default=BANK_FEATURE,
                   help=f"the graph output the unknown score reads: the backbone's pooled {FEATURES} (projected to "
                   f"{BANK_WIDTH} values: more new classes caught at the same in-domain rate) or the head's "
                   f"{EMBEDDING} (models exported before; docs/unknown.md)")
    p.add_argument("--neu", help="NEU dataset root for the manifest's images (default: the one used in training)")
    p.add_argument("--gc10", help="GC10-DET root (its inclusion/ folder is checked)")
    p.add_argument("--xsdd", help="X-SDD root (slag_inclusion -> inclusion, surface_scratch -> scratches)")
    p.add_argument("--no-bias-correction", action="store_true",
                   help="full-int8 TFLite without correcting each layer's bias for its weights' rounding (on by "
                   "default: each conv/dense bias absorbs the mean output shift that rounding its weights causes on "
                   "calibration images; measurements in docs/quantisation.md)")
    p.add_argument("--tflite-int8-first-conv", action="store_true",
                   help="quantise full-int8 TFLite's input normalisation and first convolution too (by default they "
                   "stay float, as in ONNX int8: one int8 scale cannot hold the three channels' normalised pixels on "
                   "their own grid, and that rounding made the unknown score noisy on other plants' images; "
                   "measurements in docs/quantisation.md)")
    p.add_argument("--tflite-int8-range-quantile", type=float, default=DEFAULT_QUANTILE, metavar="Q",
                   help="full-int8 TFLite: each activation's int8 range is its Q and 1-Q quantiles over the calibration "
                   "images instead of its extremes, so that a few extreme values do not coarsen the rounding of all the "
                   "others (export/activation_ranges.py; docs/quantisation.md); 0 keeps the converter's extremes")
    p.add_argument("--onnx-int8-first-conv", action="store_true",
                   help="quantise ONNX int8's first convolution too (by default it stays float: quantising it rounds "
                   "the normalised input to a grid that is not the pixels' own; measurements in docs/quantisation.md)")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute the Keras model's outputs (unknown-score bank, float reference) instead of "
                   "reusing them from RUN_DIR/cache/, where they are keyed by the model file's and the input "
                   "pixels' hashes")
    p.add_argument("--float-check-share", type=float, default=0.25, metavar="SHARE",
                   help="float artifacts (fp32, fp16 weights) are checked on every held-out NEU image and this share "
                   "of each other plant's set, and held to a bound on their probability differences from the float "
                   "model (a conversion error is systematic); 1 checks them on every image like the quantised ones")
    p.add_argument("--onnx-after-tflite", action="store_true",
                   help="make the ONNX formats after the TFLite ones instead of in a second process beside them "
                   "(slower; for machines short of memory: that process holds TensorFlow, then NNCF, while this "
                   "one converts)")
    _gates(p)
    _common(p)
    return p


def build_check_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-export check",
        description="Re-validate exported artifacts on labelled image folders (one sub-folder per class) and, "
        "with --reference, against a float model: this is how to validate quantized vs float accuracy on your "
        "own plant's images. Runs without TensorFlow when the reference is a float artifact.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("artifacts", nargs="+", help=".tflite / .onnx files from edge-export")
    p.add_argument("--data", required=True, help="folder with one sub-folder per class (or plain images)")
    p.add_argument("--reference", help="float reference: a run directory (needs TensorFlow) or an fp32 artifact")
    p.add_argument("--map", nargs="+", default=[], metavar="FOLDER=CLASS",
                   help="expected model class for folders whose names differ, e.g. slag_inclusion=inclusion")
    p.add_argument("--labels", nargs="+", help="labels for artifacts without metadata (in output order)")
    p.add_argument("--json", help="also write the results as JSON here")
    p.add_argument("--polarity", choices=POLARITY_MODES,
                   help="test-time polarity for every artifact and the reference (default: each artifact's own "
                   "setting); compare as-is with auto on your own line's images")
    _gates(p)
    _common(p)
    return p


def build_ship_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-export ship",
        description="Install a checked artifact as the package's default model (edge_runtime/models/) with a model "
        "card and the split manifest. Refuses artifacts that failed their gates unless --waive states why.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("export_dir", help="an edge-export output folder (with export_report.json)")
    p.add_argument("--format", "--formats", dest="formats", nargs="+", default=["tflite_int8"], choices=list(FORMATS),
                   metavar="FORMAT", help="artifacts to ship; the first becomes default.<ext>, the others "
                   "<format>.<ext>, all listed in manifest.json for --engine auto")
    p.add_argument("--dest", help="destination folder (default: the installed edge_runtime/models)")
    p.add_argument("--waive", metavar="REASON",
                   help="ship even though the artifact failed a gate; REASON is written into the model card")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _gates_from(args):
    from export.gates import Gates

    return Gates(args.max_drop_neu, args.max_drop_cross, args.min_agreement,
                 max_drop_caught_pp=args.max_drop_caught, max_rise_confident_wrong_pp=args.max_rise_confident_wrong,
                 min_foreign_agreement_pct=args.min_foreign_agreement, max_float_p99_dprob=args.max_float_dprob)


def _export(argv: list[str]) -> int:
    args = build_export_parser().parse_args(argv)
    setup_logging(args.verbose)
    from export.export_run import ExportOptions, export_run

    report = export_run(ExportOptions(
        run_dir=args.run_dir, out=args.out, formats=args.formats, calibration_count=args.calibration_count,
        neu=args.neu, gc10=args.gc10, xsdd=args.xsdd, gates=_gates_from(args), threads=args.threads,
        int8_input=args.int8_input, onnx_quantizer=args.onnx_quantizer, polarity=args.polarity,
        progress=not args.no_progress, cache=not args.no_cache, bias_correction=not args.no_bias_correction,
        onnx_float_first_conv=not args.onnx_int8_first_conv, tflite_float_first_conv=not args.tflite_int8_first_conv,
        onnx_beside_tflite=not args.onnx_after_tflite, float_check_share=args.float_check_share,
        tflite_range_quantile=args.tflite_int8_range_quantile or None,
        ood_quantile=1.0 - args.unknown_rate, ood_bank_copies=args.bank_copies,
        ood_camera_copies=tuple(args.bank_camera_copies), ood_feature=args.unknown_feature,
    ))
    print(open(report["report_files"][0]).read())
    for row in report["artifacts"]:
        status = "PASS" if row["passed"] else "FAIL: " + "; ".join(row["failures"])
        print(f"{row['format']:16s} {row['engine']:12s} {status}")
    print(f"export + checks: {report['timings']['total_seconds']:.0f} s on {report['machine']}")
    if not report["passed"]:
        out = Path(report["report_files"][0]).parent
        passing = list(dict.fromkeys(r["format"] for r in report["artifacts"] if r["passed"]))
        log.error("some artifacts failed their gates (see FAIL above; the failing ones are in %s). Next: %s; for "
                  "a failing int8 format, export it again with more calibration images (--calibration-count) or "
                  "another recipe (--int8-input, --onnx-quantizer), then re-check it on your own labelled images "
                  "with 'edge-export check FILE --data DIR'", out / "rejected",
                  f"'edge-export ship {out} --formats {' '.join(passing)}' installs the passing ones" if passing
                  else "no artifact passed: check the run's own accuracy (metrics.json) before exporting again")
    return 0 if report["passed"] else 1


def _check(argv: list[str]) -> int:
    args = build_check_parser().parse_args(argv)
    setup_logging(args.verbose)
    from export.recheck import check_artifacts

    mapping = dict(item.split("=", 1) for item in args.map)
    result = check_artifacts(args.artifacts, args.data, reference=args.reference, mapping=mapping,
                             labels=args.labels, gates=_gates_from(args), threads=args.threads,
                             json_path=args.json, progress=not args.no_progress, polarity=args.polarity)
    print(result["table"])
    return 0 if result["passed"] else 1


def _ship(argv: list[str]) -> int:
    args = build_ship_parser().parse_args(argv)
    setup_logging(args.verbose)
    from export.ship import ship

    target = ship(args.export_dir, args.formats, args.dest, waive=args.waive)
    print(f"default model installed: {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return dispatch(argv, {"check": _check, "ship": _ship}, _export, log)


if __name__ == "__main__":
    sys.exit(main())
