"""Recognise models that onnxruntime's quantization tools already quantized (operator-oriented
QLinear*/Integer ops, dynamic quantization, com.microsoft contrib ops) in forms tflq cannot read
back: they carry integer arithmetic, not float semantics. The user needs the float model. (The
forms onnxruntime's quantizers write are read back first: tflq.frontend.ort_qoperator,
tflq.frontend.ort_dynamic; what those leave is refused here.)

(QuantizeLinear/DequantizeLinear pairs, onnxruntime's QDQ format, are not this: tflq converts them
with their own parameters. onnxruntime writes them in the com.microsoft domain with
extra_options={"UseQDQContribOps": True}, and for 16- and 4-bit types below opset 21; those that
the model's default opset could express are read as the standard ops.)
"""
from __future__ import annotations

from collections import Counter
from typing import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from tflq.errors import UnsupportedModelError

# Default-domain ops that only quantized graphs contain.
QUANTIZED_DEFAULT_OPS = frozenset({"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger",
                                   "QLinearConv", "QLinearMatMul"})
# com.microsoft contrib ops of onnxruntime's quantizers that do not follow the Q<Op> naming.
QUANTIZED_CONTRIB_OPS = frozenset({"DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
                                   "MatMulIntegerToFloat", "MulInteger",
                                   "MatMulBnb4", "GatherBlockQuantized", "QuantizeLinear",
                                   "DequantizeLinear", "QuantizeBFP", "DequantizeBFP"})
CONTRIB_DOMAIN = "com.microsoft"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_FOUR_BIT = {onnx.helper.tensor_dtype_to_np_dtype(onnx.TensorProto.INT4): np.int8,
             onnx.helper.tensor_dtype_to_np_dtype(onnx.TensorProto.UINT4): np.uint8}
# The integer types of the standard QuantizeLinear/DequantizeLinear (int32: DequantizeLinear only,
# the biases), by the opset that introduced them. float8 is left out: tflq refuses it either way.
_STANDARD_QDQ_TYPES = ((21, {onnx.helper.tensor_dtype_to_np_dtype(t) for t in (
                            onnx.TensorProto.INT16, onnx.TensorProto.UINT16, onnx.TensorProto.INT4,
                            onnx.TensorProto.UINT4)}),
                       (10, {np.dtype(np.int8), np.dtype(np.uint8)}))


def _qdq_type(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.dtype | None:
    """The integer type a QuantizeLinear/DequantizeLinear works in, from its zero point or (a
    DequantizeLinear of a constant) its input; uint8, ONNX's default, without either; None when
    they are not initializers."""
    zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else ""
    source = zero_point or (node.input[0] if node.op_type == "DequantizeLinear" else "")
    if not source:
        return np.dtype(np.uint8)
    init = inits.get(source)
    if init is None:
        return None
    return onnx.helper.tensor_dtype_to_np_dtype(init.data_type)


def standard_qdq_from_contrib(model: onnx.ModelProto, opset: int) -> int:
    """Move com.microsoft QuantizeLinear/DequantizeLinear nodes of main-graph initializer
    parameters to the default domain when `opset`'s standard ops take their type (the same
    semantics: x / scale + zero point, axis); others stay, for refuse_onnxruntime_quantized to
    name. Returns how many moved."""
    inits = {init.name: init for init in model.graph.initializer}
    allowed: set[np.dtype] = set()
    for since, types in _STANDARD_QDQ_TYPES:
        if opset >= since:
            allowed |= types
    moved = 0
    for node in model.graph.node:
        if node.domain != CONTRIB_DOMAIN or node.op_type not in QDQ_OPS:
            continue
        dtype = _qdq_type(node, inits)
        bias = node.op_type == "DequantizeLinear" and dtype == np.dtype(np.int32)
        if dtype in _FOUR_BIT and dtype not in allowed and node.op_type == "DequantizeLinear" and \
                node.input[0] in inits:
            _widen_four_bit(model, node, inits)
            dtype = _qdq_type(node, inits)
        if dtype is not None and (dtype in allowed or bias):
            node.domain = ""
            moved += 1
    return moved


def _widen_four_bit(model: onnx.ModelProto, node: onnx.NodeProto,
                    inits: dict[str, onnx.TensorProto]) -> None:
    """A DequantizeLinear of 4-bit initializers reads 8-bit copies of them instead: the same
    integers, scale and zero point, in a type every opset's DequantizeLinear takes."""
    for index in (0, 2):
        if index >= len(node.input) or not node.input[index]:
            continue
        values = numpy_helper.to_array(inits[node.input[index]])
        name = f"{node.input[index]}/as_8_bit"
        if name not in inits:
            wide = values.astype(_FOUR_BIT[values.dtype])
            inits[name] = numpy_helper.from_array(wide, name)
            model.graph.initializer.append(inits[name])
        node.input[index] = name


def is_onnxruntime_quantized_op(node: onnx.NodeProto) -> bool:
    """QLinearConv, ConvInteger, DynamicQuantizeLinear...; com.microsoft QLinearAdd, QGemm,
    QAttention, DynamicQuantizeMatMul..."""
    if node.domain in ("", "ai.onnx"):
        return node.op_type in QUANTIZED_DEFAULT_OPS
    if node.domain != CONTRIB_DOMAIN:
        return False
    name = node.op_type
    q_op = len(name) > 1 and name[0] == "Q" and name[1].isupper()  # QLinearAdd, QGemm, not QuickGelu
    return q_op or name in QUANTIZED_CONTRIB_OPS


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, including those of If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _nodes(sub)


def refuse_onnxruntime_quantized(model: onnx.ModelProto, path: str) -> None:
    """Raise one UnsupportedModelError (reason onnxruntime_quantized) if onnxruntime quantized
    the model, naming the first such node and the op types found."""
    found = [node for node in _nodes(model.graph) if is_onnxruntime_quantized_op(node)]
    if not found:
        return
    if all(node.op_type in QDQ_OPS for node in found):
        raise UnsupportedModelError(_contrib_qdq_message(found[0], model, path),
                                    reason_code="qdq_type")
    kinds = ", ".join(kind for kind, _ in Counter(n.op_type for n in found).most_common())
    first = f"'{found[0].name}'" if found[0].name else f"a {found[0].op_type} node"
    raise UnsupportedModelError(
        f"{path}: the model was quantized by onnxruntime ({len(found)} node(s): {kinds}; the "
        f"first is {first}); tflq converts and quantizes float models: "
        f"give it the float model (for int8: --mode full --calib DATA, or --mode weights-only)",
        reason_code="onnxruntime_quantized")


def _contrib_qdq_message(node: onnx.NodeProto, model: onnx.ModelProto, path: str) -> str:
    """A QDQ model whose com.microsoft QuantizeLinear/DequantizeLinear the default opset cannot
    express: name the first node and its type."""
    dtype = _qdq_type(node, {init.name: init for init in model.graph.initializer})
    what = f"{dtype} quantization" if dtype is not None else "quantization parameters that are not initializers"
    name = f"'{node.name}'" if node.name else f"a {node.op_type} node"
    return (f"{path}: node {name} ({CONTRIB_DOMAIN} {node.op_type}): {what} is not supported; tflq "
            f"converts QDQ models with 8-bit activations and weights (int32 biases) and 16x8 ones "
            f"(int16 activations of zero point 0, int8 weights), in com.microsoft or standard "
            f"QuantizeLinear/DequantizeLinear (16-bit ones at opset 21)")
