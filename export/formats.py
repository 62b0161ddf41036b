"""The one table of export formats, used by export, the runtime's engine choice and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportFormat:
    name: str
    filename: str  # inside the export folder
    engine: str  # edge_runtime engine that runs it
    quantized: bool
    description: str


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("tflite_fp32", "model_fp32.tflite", "litert", False, "TFLite float32"),
        ExportFormat("tflite_fp16", "model_fp16.tflite", "litert", False, "TFLite float16 weights"),
        ExportFormat("tflite_dynamic", "model_dynamic_int8.tflite", "litert", True,
                     "TFLite dynamic-range: int8 weights, float activations"),
        ExportFormat("tflite_int8", "model_int8.tflite", "litert", True,
                     "TFLite full-int8: int8 weights and activations"),
        ExportFormat("onnx_fp32", "model_fp32.onnx", "onnxruntime", False, "ONNX float32 (tf2onnx)"),
        ExportFormat("onnx_int8", "model_int8.onnx", "onnxruntime", True,
                     "ONNX static QDQ: uint8 activations, int8 per-channel weights (NNCF, bias-corrected)"),
    )
}


def parse_formats(names: list[str] | None) -> list[ExportFormat]:
    if not names or names == ["all"]:
        return list(FORMATS.values())
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; choose from {sorted(FORMATS)} or 'all'")
    return [FORMATS[n] for n in names]
