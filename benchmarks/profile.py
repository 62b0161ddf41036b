"""Where the time goes inside a model: the engine's own profiler, summed per operator type.

    python -m benchmarks.profile runs/NAME/export/model_fp32.onnx runs/NAME/export/model_int8.onnx --threads 2
    python -m benchmarks.profile runs/NAME/export/model_int8.onnx plain_nncf.xml --engine openvino

Runs each model on the same fixed input (``--runs`` times after warm-up) and prints, per model, the share of
kernel time per operator type and the slowest nodes. ONNX Runtime (default): ``enable_profiling``, ``.onnx``
files. OpenVINO: its per-layer performance counters on the model compiled exactly as the device compiles it
(``edge_runtime.backends.openvino_compile``), any file OpenVINO reads (``.onnx``, ``.xml``); the operator type
is the CPU plugin's layer type with the kernel it chose (e.g. ``Convolution brgconv_avx512_amx_1x1_I8``), and
the convolutions and matrix products that did not run in int8 are listed. Used to explain why int8 is "only"
N× faster than fp32 on a given CPU (the stem convolution, the (de)quantisation steps) and where a quantised
model runs layers in float (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from edge_runtime.cli_support import HelpFormatter, setup_logging
from edge_runtime.system import cpu_description

log = logging.getLogger("edge-bench.profile")


def profile_onnx(path: Path, threads: int, runs: int, warmup: int = 5) -> dict:
    """Per operator type: total kernel microseconds per run and share; plus the slowest nodes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    meta = session.get_inputs()[0]
    shape = [1 if not isinstance(d, int) or d <= 0 else d for d in meta.shape]
    x = _fixed_input(shape, np.uint8 if meta.type == "tensor(uint8)" else np.float32)
    for _ in range(warmup):
        session.run(None, {meta.name: x})
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        profiled = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        for _ in range(warmup):
            profiled.run(None, {meta.name: x})
        for _ in range(runs):
            profiled.run(None, {meta.name: x})
        events = json.loads(Path(profiled.end_profiling()).read_text())
    per_type: dict[str, float] = defaultdict(float)
    per_node: dict[str, float] = defaultdict(float)
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_type[args.get("op_name", "?")] += event["dur"]
            per_node[event["name"][: -len("_kernel_time")]] += event["dur"]
    return _summary(path, threads, runs + warmup, per_type, per_node)


def profile_openvino(path: Path, threads: int, runs: int, warmup: int = 5) -> dict:
    """Per CPU-plugin layer type and kernel: milliseconds per run and share; the slowest nodes; the convolutions
    and matrix products whose kernel is not int8."""
    from edge_runtime.backends import openvino_compile

    _, compiled, _ = openvino_compile(path, threads, performance_counters=True)
    request = compiled.create_infer_request()
    port = compiled.inputs[0]
    x = _fixed_input(list(port.get_shape()), port.get_element_type().to_dtype())
    for _ in range(warmup):
        request.infer({0: x})
    per_type: dict[str, float] = defaultdict(float)
    per_node: dict[str, float] = defaultdict(float)
    not_int8: dict[str, str] = {}
    for _ in range(runs):
        request.infer({0: x})
        for layer in request.profiling_info:
            if layer.status != layer.Status.EXECUTED:
                continue
            micros = layer.real_time.total_seconds() * 1e6
            per_type[f"{layer.node_type} {layer.exec_type}"] += micros
            per_node[layer.node_name] += micros
            if _is_matrix_product(layer.node_type) and "I8" not in layer.exec_type.upper():
                not_int8[layer.node_name] = layer.exec_type
    return _summary(path, threads, runs, per_type, per_node) | {"not_int8": not_int8}


def _is_matrix_product(layer_type: str) -> bool:
    return layer_type.startswith(("Convolution", "FullyConnected", "MatMul"))


def _fixed_input(shape: list[int], dtype) -> np.ndarray:
    x = np.random.default_rng(0).normal(0, 50, shape).astype(np.float32)
    if np.dtype(dtype) == np.uint8:
        return np.clip(x + 128, 0, 255).astype(np.uint8)
    return x.astype(dtype)


def _summary(path: Path, threads: int, calls: int, per_type: dict[str, float], per_node: dict[str, float]) -> dict:
    total = sum(per_type.values())
    return {
        "model": str(path), "threads": threads, "runs": calls,
        "kernel_ms_per_run": total / calls / 1000,
        "by_op_type": {k: {"ms": v / calls / 1000, "share": v / total} for k, v in
                       sorted(per_type.items(), key=lambda kv: -kv[1])},
        "slowest_nodes": [{"node": k, "ms": v / calls / 1000} for k, v in
                          sorted(per_node.items(), key=lambda kv: -kv[1])[:10]],
    }


def format_profile(result: dict) -> str:
    lines = [f"{Path(result['model']).name}, {result['threads']} thread(s): kernels {result['kernel_ms_per_run']:.2f} "
             "ms per run"]
    lines += [f"  {op:24s} {v['ms']:7.3f} ms  {100 * v['share']:5.1f} %" for op, v in result["by_op_type"].items()]
    lines.append("  slowest nodes:")
    lines += [f"    {n['ms']:7.3f} ms  {n['node']}" for n in result["slowest_nodes"][:5]]
    if "not_int8" in result:
        lines.append(f"  convolutions and matrix products not in int8: {len(result['not_int8'])}")
        lines += [f"    {kernel:36s} {node}" for node, kernel in result["not_int8"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("models", nargs="+", help="model files: .onnx (either engine) or OpenVINO .xml")
    p.add_argument("--engine", choices=("onnxruntime", "openvino"), default="onnxruntime",
                   help="whose profiler (the model is compiled as the device compiles it)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--json", help="also write the profiles here")
    args = p.parse_args(argv)
    setup_logging(False)
    print(f"machine: {cpu_description()}")
    profile = profile_openvino if args.engine == "openvino" else profile_onnx
    results = [profile(Path(m), args.threads, args.runs) for m in args.models]
    for result in results:
        print(format_profile(result))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
