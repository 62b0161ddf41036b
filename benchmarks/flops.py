"""A model's floating-point work, counted from its graph (never typed in).

Only the multiply-accumulate layers are counted, 2 FLOPs per multiply-add, for one image (batch 1):

* convolution: ``2 · Cout · Hout · Wout · (Cin / groups) · kh · kw``
  (depthwise: ``2 · C · Hout · Wout · kh · kw``)
* matrix multiply / fully connected / Gemm: ``2 · M · N · K``

Elementwise work (bias, BatchNorm, activations, pooling, softmax) is left out; for a ResNet it is well under
1 % of the total. Quantised graphs count the same way (``ConvInteger``/``QLinearConv``/``MatMulInteger`` in
ONNX; int8 tensors in TFLite), so every format of one model gives the same count.

ONNX graphs are read with the ``onnx`` package (shape inference with the batch fixed to 1), TFLite graphs
straight from the flatbuffer with ``ai_edge_litert``'s generated schema; neither runs the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path


class FlopCountError(ValueError):
    """The graph could not be read or counted."""


@dataclass
class FlopCount:
    flops: int  # per image
    source: str  # file counted
    method: str  # "onnx" or "tflite"
    by_op: dict[str, int] = field(default_factory=dict)  # op type -> FLOPs
    layers: int = 0  # counted layers
    uncounted: list[str] = field(default_factory=list)  # MAC layers whose shapes could not be read

    def to_dict(self) -> dict:
        return {"flops": self.flops, "gflops": self.flops / 1e9, "source": self.source, "method": self.method,
                "by_op": self.by_op, "layers": self.layers, "uncounted": self.uncounted}


def count_flops(path: str | Path) -> FlopCount:
    """FLOPs per image of a ``.onnx`` or ``.tflite`` graph; raises FlopCountError if it cannot be read."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return onnx_flops(path)
    if path.suffix.lower() == ".tflite":
        return tflite_flops(path)
    raise FlopCountError(f"cannot count FLOPs of '{path}': expected a .onnx or .tflite file")


# --- ONNX ----------------------------------------------------------------------------------------------

_ONNX_CONV = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}  # op -> index of the weight input
_ONNX_MATMUL = {"MatMul": 0, "MatMulInteger": 0, "QLinearMatMul": 0}  # op -> index of input A


def onnx_flops(path: Path) -> FlopCount:
    try:
        import onnx
    except ImportError as exc:
        raise FlopCountError("counting FLOPs of an ONNX graph needs the 'onnx' package (pip install onnx)") from exc
    try:
        model = onnx.load(str(path))
        for value in model.graph.input:  # symbolic/unknown dimensions (the batch) -> 1
            for dim in value.type.tensor_type.shape.dim:
                if not dim.HasField("dim_value") or dim.dim_value <= 0:
                    dim.Clear()
                    dim.dim_value = 1
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, InferenceError, ...
        raise FlopCountError(f"cannot read ONNX graph '{path}': {exc}") from exc
    graph = model.graph
    shapes: dict[str, list[int] | None] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        shape = value.type.tensor_type.shape
        dims = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
        shapes[value.name] = None if None in dims else dims
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)

    count = FlopCount(0, str(path), "onnx")
    for node in graph.node:
        op = node.op_type
        flops = None
        if op in _ONNX_CONV:
            weight, out = shapes.get(node.input[_ONNX_CONV[op]]), shapes.get(node.output[0])
            if weight and out:
                flops = 2 * math.prod(out) * math.prod(weight[1:])
        elif op == "ConvTranspose":
            x, weight = shapes.get(node.input[0]), shapes.get(node.input[1])
            if weight and x:
                flops = 2 * math.prod(x) * math.prod(weight[1:])
        elif op in _ONNX_MATMUL:
            a, out = shapes.get(node.input[_ONNX_MATMUL[op]]), shapes.get(node.output[0])
            if a and out:
                flops = 2 * math.prod(out) * a[-1]
        elif op == "Gemm":
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
            if a and out:
                flops = 2 * math.prod(out) * (a[0] if trans_a else a[-1])
        else:
            continue
        _add(count, op, flops, node.name or node.output[0])
    return count


# --- TFLite --------------------------------------------------------------------------------------------


def tflite_flops(path: Path) -> FlopCount:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:
        raise FlopCountError("counting FLOPs of a TFLite graph needs 'ai-edge-litert'") from exc
    data = path.read_bytes()
    if data[4:8] != b"TFL3":
        raise FlopCountError(f"'{path}' is not a TFLite flatbuffer (no 'TFL3' identifier)")
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    try:
        model = schema.Model.GetRootAs(data, 0)
        graph = model.Subgraphs(0)
        operators = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    except Exception as exc:  # a damaged flatbuffer raises IndexError, struct.error, ...
        raise FlopCountError(f"cannot read TFLite graph '{path}': {exc}") from exc

    def shape(index: int) -> list[int] | None:
        if index < 0:
            return None
        tensor = graph.Tensors(index)
        dims = [int(tensor.Shape(j)) for j in range(tensor.ShapeLength())]
        return dims if dims and all(d > 0 for d in dims) else None

    count = FlopCount(0, str(path), "tflite")
    for i, op in enumerate(operators):
        code = model.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        inputs = [int(op.Inputs(j)) for j in range(op.InputsLength())]
        outputs = [int(op.Outputs(j)) for j in range(op.OutputsLength())]
        flops = None
        if name in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"):
            weight, out = shape(inputs[1]), shape(outputs[0])
            if weight and out:
                # CONV_2D filter [Cout, kh, kw, Cin/groups]; FULLY_CONNECTED [N, K]; DEPTHWISE [1, kh, kw, C]
                per_output = math.prod(weight[1:]) if name != "DEPTHWISE_CONV_2D" else weight[1] * weight[2]
                flops = 2 * math.prod(out) * per_output
        elif name == "BATCH_MATMUL":
            a, out = shape(inputs[0]), shape(outputs[0])
            if a and out:
                options = schema.BatchMatMulOptions()
                table = op.BuiltinOptions()
                adj_x = False
                if table is not None:
                    options.Init(table.Bytes, table.Pos)
                    adj_x = bool(options.AdjX())
                flops = 2 * math.prod(out) * (a[-2] if adj_x else a[-1])
        elif name == "TRANSPOSE_CONV":
            weight, x = shape(inputs[1]), shape(inputs[2])
            if weight and x:
                flops = 2 * math.prod(x) * weight[0] * weight[1] * weight[2]
        else:
            continue
        _add(count, name, flops, f"{name}#{i}")
    return count


def _add(count: FlopCount, op: str, flops: int | None, where: str) -> None:
    if flops is None:
        count.uncounted.append(where)
        return
    count.flops += int(flops)
    count.by_op[op] = count.by_op.get(op, 0) + int(flops)
    count.layers += 1
