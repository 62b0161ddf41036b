"""``edge-bench EXPORT_DIR``: latency, throughput, memory and accuracy of every exported format, one table.

    edge-bench runs/neu-resnet50/export
    edge-bench runs/neu-resnet50/export --formats tflite_int8 onnx_int8 --threads 2 --repeats 100
    edge-bench runs/neu-resnet50/export --results benchmarks/RESULTS.md
    edge-bench --select                       # what --engine auto measures on this machine, in full

``build_parser()`` only describes the command line; ``main(argv)`` parses it and calls
:func:`benchmarks.runner.run` with the same parameter names, then prints the markdown table.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from edge_runtime.cli_support import HelpFormatter, dispatch, setup_logging
from export.formats import FORMATS

log = logging.getLogger("edge-bench")

EPILOG = f"""\
formats: {', '.join(FORMATS)} (default: every artifact of EXPORT_DIR/export_report.json, including
  those in rejected/, else every .tflite/.onnx there); the Keras float model EXPORT_DIR/../model.keras is
  measured too where TensorFlow is installed (--no-keras to leave it out).

every model runs in a process of its own per thread count, so memory figures and thread settings never
  mix; a missing, corrupt or crashing artifact gets an error in its row and the others go on.

outputs (in --out, default EXPORT_DIR/bench): bench.md (the table), bench.json (everything, with every
  latency sample), bench.png (latency per format, accuracy written beside); --results PATH also writes the
  RESULTS.md page (machine, exact command, table, notes).

--select: no benchmark; instead the measurement behind edge-classify --engine auto, cache bypassed: every
  (artifact, engine) pair of the shipped models (or of EXPORT_DIR when given) timed on a fixed input, with its
  accuracy-gate status and the pair auto would choose; uses only EXPORT_DIR, --formats, --threads (one; default
  all cores, as edge-classify), --budget and --out (select.json).

exit codes: 0 every row measured (--select: a pair was chosen); 1 at least one row has an error (see its error
  cell; --select: no eligible pair could be measured); 2 setup error.
"""


def _int_at_least(low: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value

    return parse


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


class _Given(argparse.Action):
    """Stores the value and notes that the option was given (``threads_given``), for --select's own default."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.threads_given = True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-bench",
        description="Measure every exported model of EXPORT_DIR on this machine: file size, load time, batch-1 "
        "latency p50/p90/p99 per thread count, throughput at the best batch size, peak RSS, end-to-end time per "
        "frame through edge-classify, and each format's time against the machine's fp32/int8 matrix-multiply "
        "limit; accuracy columns from the export report, so speed and accuracy sit in one row.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("export_dir", metavar="EXPORT_DIR", nargs="?",
                   help="folder written by edge-export (runs/NAME/export); optional with --select")
    p.add_argument("--select", action="store_true",
                   help="compare the engine/artifact pairs of --engine auto instead (see below)")
    p.add_argument("--budget", type=_positive_float, metavar="S",
                   help="--select: total seconds for the measurement (default: 12, as --engine auto; with "
                   "EXPORT_DIR at least 4 per pair)")
    p.add_argument("--out", metavar="DIR", help="where to write bench.md/.json/.png (default: EXPORT_DIR/bench)")
    p.add_argument("--results", metavar="PATH", help="also write the RESULTS.md page here "
                   "(e.g. benchmarks/RESULTS.md)")
    p.add_argument("--formats", nargs="+", metavar="NAME", help="only these formats (default: all found)")
    p.add_argument("--no-keras", dest="keras", action="store_false",
                   help="leave out the Keras float reference (TensorFlow)")
    m = p.add_argument_group("measurement")
    m.add_argument("--threads", nargs="+", type=_int_at_least(1), default=[1, 2], metavar="N",
                   action=_Given, help="thread counts to measure each model at")
    m.add_argument("--repeats", type=_int_at_least(1), default=50, metavar="N", help="timed batch-1 runs per row")
    m.add_argument("--warmup", type=_int_at_least(0), default=5, metavar="N", help="untimed runs before timing")
    m.add_argument("--batch-sizes", nargs="+", type=_int_at_least(1), default=[1, 2, 4, 8], metavar="B",
                   help="batch sizes for throughput (graphs with a fixed batch of 1 run batch 1 only)")
    m.add_argument("--throughput-images", type=_int_at_least(1), default=16, metavar="N",
                   help="images per batch size in the throughput runs (at least 2 batches)")
    m.add_argument("--images", type=_int_at_least(1), default=16, metavar="N",
                   help="fixed inputs: N test images of the run's split manifest (class by class) where the "
                   "data is present, else N synthetic textures")
    m.add_argument("--video-frames", type=_int_at_least(0), default=60, metavar="N",
                   help="frames of the end-to-end video through edge-classify (0: skip end to end)")
    m.add_argument("--gemm-size", type=_int_at_least(16), default=2048, metavar="N",
                   help="matrix size of the sgemm / int8 GEMM rate measurements")
    m.add_argument("--gemm-repeats", type=_int_at_least(1), default=5, metavar="N", help="GEMM runs (best counts)")
    m.add_argument("--timeout", type=_positive_float, default=1800.0, metavar="S",
                   help="seconds one model may take before its row becomes an error")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress lines from inside each measurement (one line per row stays)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (worker output too)")
    p.set_defaults(threads_given=False)
    return p


def _bench(argv: list[str]) -> int:
    from benchmarks.runner import run
    from benchmarks.table import markdown_table

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.select:
        return _select(parser, args)
    if args.export_dir is None:
        parser.error("EXPORT_DIR is required (or use --select)")
    kwargs = vars(args)
    for key in ("verbose", "select", "budget", "threads_given"):
        kwargs.pop(key)
    export_dir = kwargs.pop("export_dir")
    result = run(export_dir, command=shlex.join(["edge-bench", *argv]), **kwargs)
    print(markdown_table(result["rows"]))
    return 0 if result["complete"] else 1


def _select(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from benchmarks.select import run_select, select_text

    if args.threads_given and len(args.threads) != 1:
        parser.error("--select measures at one thread count; give one --threads N")
    threads = args.threads[0] if args.threads_given else None
    result = run_select(args.export_dir, threads=threads, budget_s=args.budget, formats=args.formats, out=args.out)
    print(select_text(result))
    return 0 if result["chosen"] else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return dispatch(argv, {}, _bench, log)


if __name__ == "__main__":
    sys.exit(main())
