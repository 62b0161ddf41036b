"""The machine's physical limit: the fp32 matrix-multiply rate (numpy sgemm) and an int8 GEMM rate.

Both run inside a benchmark worker process whose BLAS thread count was fixed through the environment
(``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS``) before numpy was imported; threadpoolctl
is used in addition where it is installed. Rates are 2·n³ operations over the best of ``repeats`` timed runs.

The int8 rate is ONNX Runtime's ``MatMulInteger`` (uint8 × int8 -> int32, the kernel family its quantised
convolutions use) on a generated one-node graph; it needs the ``onnx`` package to build that graph and is
reported as not measured without it.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np


def _thread_limit(threads: int):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads)


def blas_name() -> str:
    """The BLAS library numpy was built with, as numpy reports it ("openblas", "mkl", ... or "unknown")."""
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name', 'unknown')} {blas.get('version', '')}".strip()
    except Exception:  # the layout of numpy's build information is not a stable API
        return "unknown"


def sgemm_rate(threads: int, n: int = 2048, repeats: int = 5) -> dict:
    """numpy float32 ``n×n @ n×n``: best GFLOP/s over ``repeats`` runs after one warm-up."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    with _thread_limit(threads):
        np.matmul(a, b, out=c)
        best = min(_timed(lambda: np.matmul(a, b, out=c)) for _ in range(max(1, repeats)))
    return {"gflops": 2 * n**3 / best / 1e9, "n": n, "best_s": best, "repeats": repeats, "blas": blas_name()}


def int8_gemm_rate(threads: int, n: int = 2048, repeats: int = 5) -> dict:
    """ONNX Runtime ``MatMulInteger`` uint8 [n, n] × int8 [n, n] (constant) -> int32: best GOP/s."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        return {"gops": None, "note": f"not measured ({exc.name} is not installed)"}
    rng = np.random.default_rng(0)
    weights = rng.integers(-127, 128, (n, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "int8_gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
        [numpy_helper.from_array(weights, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        return {"gops": None, "note": f"not measured (ONNX Runtime refused MatMulInteger: {exc})"}
    feed = {"a": rng.integers(0, 256, (n, n), dtype=np.uint8)}
    session.run(None, feed)
    best = min(_timed(lambda: session.run(None, feed)) for _ in range(max(1, repeats)))
    return {"gops": 2 * n**3 / best / 1e9, "n": n, "best_s": best, "repeats": repeats,
            "kernel": f"onnxruntime {ort.__version__} MatMulInteger u8×s8->s32"}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
