"""One measurement in its own process, so that memory figures and thread settings never mix.

Parent side: :func:`call_worker` starts ``python -m benchmarks.worker JOB_JSON`` with the BLAS thread count
fixed in the environment, forwards its progress lines, and returns its result, or ``{"error": ...}`` when it
failed, crashed or ran out of time (the run goes on with the next one).

Worker side: ``main`` runs one job (``kind``: ``gemm``, ``artifact`` or ``keras``; see
:mod:`benchmarks.measure` and :mod:`benchmarks.gemm`) and prints one line ``RESULT_MARKER + JSON`` on stdout.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path

RESULT_MARKER = "EDGE_BENCH_RESULT "
PROGRESS_PREFIX = "progress: "
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("edge-bench")
worker_log = logging.getLogger("benchmarks.worker")  # worker side: "progress: ..." lines on stderr


def worker_environment(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    return env


def call_worker(job: dict, timeout_s: float, label: str, progress: bool = True) -> dict:
    """Run ``job`` in a fresh Python process; never raises for a failed measurement."""
    command = [sys.executable, "-m", "benchmarks.worker", json.dumps(job)]
    tail: deque[str] = deque(maxlen=15)
    with tempfile.TemporaryFile() as stdout:
        process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE, text=True, errors="replace",
                                   env=worker_environment(int(job["threads"])))
        reader = threading.Thread(target=_pump, args=(process.stderr, tail, label, progress), daemon=True)
        reader.start()
        try:
            returncode = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return {"error": f"timed out after {timeout_s:.0f} s"}
        except BaseException:  # Ctrl-C: do not leave the worker running
            process.kill()
            process.wait()
            raise
        finally:
            reader.join(timeout=5)
        stdout.seek(0)
        text = stdout.read().decode(errors="replace")
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    detail = " | ".join(line for line in tail if line.strip())[-400:]
    return {"error": f"worker crashed (exit {returncode})" + (f": {detail}" if detail else "")}


def _pump(stream, tail: deque, label: str, progress: bool) -> None:
    for line in stream:
        line = line.rstrip()
        if line.startswith(PROGRESS_PREFIX):
            if progress:
                log.info("  %s: %s", label, line[len(PROGRESS_PREFIX):])
        elif line:
            tail.append(line)
            log.debug("  %s | %s", label, line)


def run_job(job: dict) -> dict:
    kind, threads = job["kind"], int(job["threads"])
    if kind == "gemm":
        from benchmarks.gemm import int8_gemm_rate, sgemm_rate

        worker_log.info("progress: numpy sgemm %d×%d", job["n"], job["n"])
        sgemm = sgemm_rate(threads, job["n"], job["repeats"])
        worker_log.info("progress: int8 GEMM %d×%d", job["n"], job["n"])
        return {"sgemm": sgemm, "int8": int8_gemm_rate(threads, job["n"], job["repeats"])}

    from benchmarks.inputs import load_images
    from benchmarks.measure import measure_artifact, measure_keras

    images = load_images(job["inputs"])
    common = {"repeats": job["repeats"], "warmup": job["warmup"], "batch_sizes": job["batch_sizes"],
              "throughput_images": job["throughput_images"]}
    if kind == "artifact":
        return measure_artifact(job["path"], threads, images, video=job.get("video"), engine=job.get("engine"),
                                **common)
    if kind == "keras":
        return measure_keras(job["path"], threads, images, job["preprocessing"], **common)
    raise ValueError(f"unknown job kind {kind!r}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    worker_log.setLevel(logging.INFO)
    job = json.loads(argv[0])
    try:
        result, code = run_job(job), 0
    except Exception as exc:  # reported in the row: missing, corrupt or unloadable model, ...
        result, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
    sys.stdout.write(RESULT_MARKER + json.dumps(result, default=_jsonable) + "\n")
    sys.stdout.flush()
    return code


def _jsonable(value):
    try:
        return value.item()  # numpy scalars
    except AttributeError:
        return str(value)


if __name__ == "__main__":
    sys.exit(main())
