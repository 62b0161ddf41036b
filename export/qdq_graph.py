"""Exact rewrites of a quantised (QDQ) ONNX graph: the same numbers, a form the engines run faster.

* :func:`activations_to_uint8`: signed activation quantisers stored as uint8 (ONNX Runtime's fast kernels are
  u8×s8).
* :func:`subsample_strided_pointwise_inputs`: a 1×1 convolution of stride 2 reads every second row and column
  of its input, so the quantised input can be subsampled first and the convolution run with stride 1.
  OpenVINO otherwise inserts the subsampling itself, after the dequantisation, and runs those convolutions in
  bf16/float instead of int8 (docs/benchmarks.md, "Where the OpenVINO time goes").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def activations_to_uint8(model):
    """Store every int8 activation quantiser of a QDQ model as uint8 (zero point + 128, same scale).

    Exact: int8 ``q = clamp(round(x / s) + z, -128, 127)`` equals the uint8 ``clamp(round(x / s) + z + 128,
    0, 255)`` minus 128, and the DequantizeLinear that follows undoes either. Weights stay int8.
    """
    from onnx import TensorProto, numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    qdq = _quantisers_with_zero_points(model, initializers)
    retyped = _signed_activation_zero_points(qdq, initializers)
    for name in retyped:
        tensor = initializers[name]
        shifted = numpy_helper.to_array(tensor).astype(np.int16) + 128
        tensor.CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), name))
    outputs = {n.output[0] for n in qdq if n.op_type == "QuantizeLinear" and n.input[2] in retyped}
    for info in [*model.graph.value_info, *model.graph.output]:
        if info.name in outputs and info.type.tensor_type.elem_type == TensorProto.INT8:
            info.type.tensor_type.elem_type = TensorProto.UINT8
    return model


def _quantisers_with_zero_points(model, initializers: dict) -> list:
    return [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
            and len(n.input) > 2 and n.input[2] in initializers]


def _signed_activation_zero_points(qdq: list, initializers: dict) -> set[str]:
    """Names of the int8 zero points of activation (not weight) quantisers: what :func:`activations_to_uint8`
    retypes. A zero point shared by weights and activations cannot be retyped."""
    from onnx import TensorProto

    weight_zero_points = {n.input[2] for n in qdq if n.input[0] in initializers}
    activation_zero_points = {n.input[2] for n in qdq if n.input[0] not in initializers}
    if weight_zero_points & activation_zero_points:
        raise ValueError("a zero point is shared by weights and activations; cannot retype it")
    return {name for name in activation_zero_points if initializers[name].data_type == TensorProto.INT8}


def subsample_strided_pointwise_inputs(model) -> int:
    """Give every quantised 1×1 stride-2 convolution a subsampled input and stride 1; returns how many.

    Rewrites ``QuantizeLinear → DequantizeLinear → Conv(1×1, stride 2, no padding)`` (one or more such
    convolutions sharing the dequantised tensor, as the two branches of a ResNet down-sampling block do) into
    ``QuantizeLinear → Slice(every 2nd row and column) → DequantizeLinear → Conv(1×1, stride 1)``: the slice
    runs on the 8-bit integers. Exact: a 1×1 kernel of stride 2 reads only the kept pixels. A dequantised
    tensor that also feeds anything else is left alone. ``model`` (an ``onnx.ModelProto``) is changed in place;
    shapes of the rewritten tensors are dropped from ``value_info`` (the engines infer them).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {t.name for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    rewritten, changed = 0, set()
    for dequantize in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] not in constants]:
        convolutions = consumers.get(dequantize.output[0], [])
        quantize = producer.get(dequantize.input[0])
        if (not convolutions or quantize is None or quantize.op_type != "QuantizeLinear"
                or not all(_is_strided_pointwise(c, dequantize.output[0]) for c in convolutions)):
            continue
        kept = f"{dequantize.output[0]}/subsampled_input"  # one per dequantiser: two may read one quantiser
        steps = [f"{kept}/{part}" for part in ("starts", "ends", "axes", "steps")]
        for name, values in zip(steps, ([0, 0], [np.iinfo(np.int64).max] * 2, [2, 3], [2, 2])):
            graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
        graph.node.insert(list(graph.node).index(dequantize),
                          helper.make_node("Slice", [dequantize.input[0], *steps], [kept], name=kept))
        dequantize.input[0] = kept
        for convolution in convolutions:
            next(a for a in convolution.attribute if a.name == "strides").ints[:] = [1, 1]
            changed.update(convolution.output)
        changed.add(dequantize.output[0])
        rewritten += len(convolutions)
    if changed:
        kept_info = [v for v in graph.value_info if v.name not in changed]
        del graph.value_info[:]
        graph.value_info.extend(kept_info)
    return rewritten


def _is_strided_pointwise(node, input_name: str) -> bool:
    """A 2-D Conv reading ``input_name`` as its data with a 1×1 kernel, stride 2, no padding, no dilation."""
    from onnx import helper

    if node.op_type != "Conv" or node.input[0] != input_name:
        return False
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return (attributes.get("kernel_shape") == [1, 1] and attributes.get("strides") == [2, 2]
            and not any(attributes.get("pads", [0]))
            and attributes.get("auto_pad", b"NOTSET") in (b"NOTSET", b"VALID", "NOTSET", "VALID")
            and all(d == 1 for d in attributes.get("dilations", [1, 1]))
            and attributes.get("group", 1) == 1)


def rewrite_file(source: str | Path, output: str | Path) -> dict[str, int]:
    """Apply both exact rewrites to an ONNX int8 file exported before them; its metadata is kept, with the
    graph digest renewed (edge_runtime refuses a file whose graph no longer matches its digest).

    Returns how many activation zero points were retyped and how many convolutions now read a subsampled
    input (both 0 for a file that already has them: the rewrites are idempotent)."""
    import onnx

    from edge_runtime.errors import MetadataError
    from edge_runtime.metadata import read_metadata
    from edge_runtime.model_file import write_model

    try:
        metadata = read_metadata(source)
    except MetadataError:
        metadata = None  # a plain QDQ file: rewritten as it is
    model = onnx.load(str(source))
    initializers = {i.name: i for i in model.graph.initializer}
    signed = len(_signed_activation_zero_points(_quantisers_with_zero_points(model, initializers), initializers))
    activations_to_uint8(model)
    subsampled = subsample_strided_pointwise_inputs(model)
    onnx.checker.check_model(model)
    if metadata is None:
        onnx.save(model, str(output))
    else:
        write_model(output, model.SerializeToString(), metadata)
    return {"activation_zero_points_retyped": signed, "convolutions_subsampled": subsampled}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import logging

    parser = argparse.ArgumentParser(
        prog="python -m export.qdq_graph",
        description="Bring an ONNX int8 file exported before the current recipe up to it without re-exporting: "
        "uint8 activations and subsampled inputs for 1x1 stride-2 convolutions. Both rewrites are exact (the "
        "same outputs on ONNX Runtime); the model's metadata is kept. Re-check the result with edge-export check.")
    parser.add_argument("model", type=Path, help="ONNX int8 (QDQ) file")
    parser.add_argument("--out", type=Path, required=True, help="where to write the rewritten file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("export.qdq_graph")
    if not args.model.is_file():
        parser.error(f"{args.model}: no such file")
    try:
        counts = rewrite_file(args.model, args.out)
    except Exception as error:  # noqa: BLE001 - a clear message for any unreadable or invalid file
        log.error("%s: cannot rewrite (%s); pass an ONNX int8 file from edge-export", args.model, error)
        return 1
    log.info("%s -> %s: %s", args.model, args.out, ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
