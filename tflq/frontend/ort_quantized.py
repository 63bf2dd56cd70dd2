"""Recognise models that onnxruntime's quantization tools already quantized (operator-oriented
QLinear*/Integer ops, dynamic quantization, com.microsoft contrib ops), which tflq cannot convert
node by node: they carry integer arithmetic, not float semantics. The user needs the float model.

(QuantizeLinear/DequantizeLinear pairs in the default domain, onnxruntime's QDQ format, are not
this: tflq converts them with their own parameters.)
"""
from __future__ import annotations

from collections import Counter
from typing import Iterator

import onnx

from tflq.errors import UnsupportedModelError

# Default-domain ops that only quantized graphs contain.
QUANTIZED_DEFAULT_OPS = frozenset({"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger",
                                   "QLinearConv", "QLinearMatMul"})
# com.microsoft contrib ops of onnxruntime's quantizers that do not follow the Q<Op> naming.
QUANTIZED_CONTRIB_OPS = frozenset({"DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
                                   "MatMulIntegerToFloat", "MulInteger", "MatMulNBits",
                                   "MatMulBnb4", "GatherBlockQuantized", "QuantizeLinear",
                                   "DequantizeLinear", "QuantizeBFP", "DequantizeBFP"})
CONTRIB_DOMAIN = "com.microsoft"


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
    kinds = ", ".join(kind for kind, _ in Counter(n.op_type for n in found).most_common())
    first = f"'{found[0].name}'" if found[0].name else f"a {found[0].op_type} node"
    raise UnsupportedModelError(
        f"{path}: the model was quantized by onnxruntime ({len(found)} node(s): {kinds}; the "
        f"first is {first}); tflq converts and quantizes float models: "
        f"give it the float model (for int8: --mode full --calib DATA, or --mode weights-only)",
        reason_code="onnxruntime_quantized")
