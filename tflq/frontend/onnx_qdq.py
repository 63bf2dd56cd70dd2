"""Read a loaded ONNX model's QuantizeLinear/DequantizeLinear nodes once, into the IR's QdqModel."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from tflq.errors import Diagnostic, UnsupportedModelError
from tflq.frontend.ort_nbits import blocked_constant
from tflq.ir.dtypes import DType
from tflq.ir.qdq import BlockedConstant, QdqModel, QuantizedConstant
from tflq.ir.quant import QuantParams
from tflq.ops.qdq import (FOUR_BIT, block_size, default_zero_point, qdq_params, quantize_like_onnx,
                          quantized_type, stored_integers)

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def find_qdq(model: onnx.ModelProto) -> QdqModel | None:
    """The model's QDQ facts, or None for a float model. Run on the loaded (folded) model, whose
    nodes the importer has named and validated. (A MatMulNBits model, read as MatMul by
    initializers tflq.frontend.ort_nbits marked, is one whose only facts are blocked weights.)"""
    nodes = [n for n in model.graph.node if n.op_type in QDQ_OPS and n.domain in ("", "ai.onnx")]
    nbits = {init.name: blocked_constant(init) for init in model.graph.initializer}
    nbits = {name: blocked for name, blocked in nbits.items() if blocked is not None}
    if not nodes and not nbits:
        return None
    wanted = {name for n in nodes for name in n.input}
    inits = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer
             if init.name in wanted}
    qdq = QdqModel(len(nodes), blocked=nbits)
    quantized: dict[str, tuple[np.ndarray, QuantParams]] = {}  # QuantizeLinear of a constant
    activation_outputs: dict[str, onnx.NodeProto] = {}
    qdq.values.update(v.name for v in list(model.graph.input) + list(model.graph.output))
    for node in model.graph.node:
        qdq.node_inputs[node.name] = tuple(node.input)
        qdq.values.update(node.input)
        qdq.values.update(node.output)
        if node.op_type not in QDQ_OPS or node.domain not in ("", "ai.onnx"):
            continue
        zero_point = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        scale = inits[node.input[1]]
        source = node.input[0]
        if node.op_type == "QuantizeLinear":
            dtype = quantized_type(node, zero_point)
            if source in inits:
                params = qdq_params(node, scale, zero_point, dtype, inits[source].shape)
                quantized[node.output[0]] = (quantize_like_onnx(inits[source], params), params)
            else:
                qdq.activation_types.add(dtype)
                activation_outputs[node.output[0]] = node
            continue
        values = inits[source] if source in inits else quantized.get(source, (None, None))[0]
        if values is not None and block_size(node):
            bits = 4 if values.dtype in FOUR_BIT else 8 * values.dtype.itemsize
            qdq.blocked[node.output[0]] = BlockedConstant(node.op_type, node.name, bits,
                                                          block_size(node), values.size)
        stored = stored_integers(values) if values is not None and not block_size(node) else None
        if stored is not None:  # (blocked weights are float constants: no grid TFLite can keep)
            zero_point = default_zero_point(values, scale, zero_point)
            values, dtype = stored
            if dtype not in (DType.INT8, DType.UINT8):
                dtype = DType.INT32  # biases; int16 (and uint16) operands of 16x8 models
            params = qdq_params(node, scale, zero_point, dtype, values.shape)
            qdq.constants[node.output[0]] = QuantizedConstant(values, params)
    _check_quantize_consumers(model, activation_outputs)
    return qdq


def _check_quantize_consumers(model: onnx.ModelProto, outputs: dict[str, onnx.NodeProto]) -> None:
    """An activation QuantizeLinear must feed DequantizeLinear nodes only: an integer tensor read by
    anything else (a model output, a QLinear op) has no float meaning tflq could keep."""
    problems: dict[str, Diagnostic] = {}
    for node in model.graph.node:
        for name in node.input:
            if name in outputs and node.op_type != "DequantizeLinear" and name not in problems:
                q = outputs[name]
                problems[name] = Diagnostic(q.name, q.op_type, "quantize_without_dequantize",
                                            f"its output is read by '{node.name}' ({node.op_type}), "
                                            f"not by a DequantizeLinear")
    for name in (o.name for o in model.graph.output if o.name in outputs):
        q = outputs[name]
        problems.setdefault(name, Diagnostic(q.name, q.op_type, "quantize_without_dequantize",
                                             "its integer output is a model output"))
    if problems:
        raise UnsupportedModelError(
            f"{len(problems)} QuantizeLinear node(s) cannot be converted: tflq converts QDQ graphs, "
            f"where each activation QuantizeLinear is read by DequantizeLinear nodes only",
            list(problems.values()))


def float_where_the_grid_is_infinite(model: onnx.ModelProto) -> list[str]:
    """Drop each activation QuantizeLinear whose scale is +inf, and the DequantizeLinear nodes that
    read it, in place: the tensor stays float (they become Identity nodes of its float value).
    onnxruntime's calibration writes such a scale for a tensor holding -inf or inf (the additive
    attention mask of transformers' exports, Where(mask, 0, -inf)), and it is no grid at all; the ops around it stay float or keep their own grids. Returns the tensors
    kept float."""
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def infinite(name: str) -> bool:
        return name in inits and bool(np.any(np.isposinf(numpy_helper.to_array(inits[name]))))

    dropped: dict[int, onnx.NodeProto | None] = {}
    kept_float: list[str] = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.domain not in ("", "ai.onnx") or len(node.input) < 2 \
                or node.input[0] in inits or not infinite(node.input[1]) or node.output[0] in outputs:
            continue
        readers = consumers.get(node.output[0], [])
        if not readers or any(r.op_type != "DequantizeLinear" or r.input[0] != node.output[0]
                              or not infinite(r.input[1]) for r in readers):
            continue
        dropped[id(node)] = None
        for reader in readers:
            dropped[id(reader)] = onnx.helper.make_node("Identity", [node.input[0]], list(reader.output),
                                                        name=reader.name)
        kept_float.append(node.input[0])
    if dropped:
        kept = [dropped.get(id(n), n) for n in graph.node]
        del graph.node[:]
        graph.node.extend(n for n in kept if n is not None)
    return kept_float
