"""QUANTIZE and DEQUANTIZE: the boundaries between float and 8-bit tensors (emitted by tflq's quantizer)."""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq._generated.tflite.DequantizeOptions import DequantizeOptionsT
from tflq._generated.tflite.QuantizeOptions import QuantizeOptionsT
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import WITH_INT16, Calibrated, Case, OpSpec, Transparent, rand

# A constant large enough for weights-only quantization to store it in 8 bits behind DEQUANTIZE.
_BIG_CONSTANT = {"c": rand(1, 4, 16, 32, seed=5)}


@register
class Dequantize(OpSpec):
    """8-bit -> float32. The reference kernel works on real values (the interpreter dequantizes
    quantized constants before calling kernels), so it is the identity."""

    kind = "DEQUANTIZE"
    folds_at_import = False
    layout = Transparent()
    cases = [
        Case("weights_only_uint8_constant", [helper.make_node("Add", ["x", "c"], ["y"])],
             {"x": rand(1, 4, 16, 32)}, dict(_BIG_CONSTANT), options={"mode": "weights-only"},
             tolerance=1e-2),
        Case("weights_only_int8_constant", [helper.make_node("Add", ["x", "c"], ["y"])],
             {"x": rand(1, 4, 16, 32)}, dict(_BIG_CONSTANT),
             options={"mode": "weights-only", "dtype": "int8"}, tolerance=1e-2),
    ]

    def reference(self, x):
        return (np.asarray(x, np.float32),)

    def options(self, attrs):
        return DequantizeOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        x = graph.tensors[op.inputs[0]]
        if x.dtype.name in ("INT16", "FLOAT16"):
            return 3
        if x.dtype.name == "INT8":
            return 5 if x.quant is not None and x.quant.is_per_channel else 2
        return 1


@register
class Quantize(OpSpec):
    """float32 -> 8-bit, or 8-bit -> 8-bit requantization. Identity on real values."""

    kind = "QUANTIZE"
    folds_at_import = False
    layout = Transparent()
    # In the graph before quantization only as a requantization point of a QDQ model (the graph's
    # grid differs from the one a kernel gives the tensor): input and output params independent.
    quant = Calibrated(dtypes=WITH_INT16)
    cases = [
        Case("full_int8_float_io", [helper.make_node("Add", ["x", "c"], ["y"])],
             {"x": rand(1, 4, 6, 6)}, {"c": rand(4, 1, 1, seed=3)},
             options={"mode": "full", "dtype": "int8", "calib": [{"x": rand(1, 4, 6, 6, seed=s)}
                                                                 for s in range(8)]},
             tolerance=0.03),
        Case("full_uint8_io_requantized", [helper.make_node("Add", ["x", "c"], ["y"])],
             {"x": rand(1, 4, 6, 6)}, {"c": rand(4, 1, 1, seed=3)},
             options={"mode": "full", "dtype": "int8", "io_type": "uint8",
                      "calib": [{"x": rand(1, 4, 6, 6, seed=s)} for s in range(8)]},
             tolerance=0.03),
    ]

    def reference(self, x):
        return (np.asarray(x, np.float32),)

    def options(self, attrs):
        return QuantizeOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        y = graph.tensors[op.outputs[0]]
        if y.quant is not None and y.quant.is_per_channel:
            return 3
        if y.dtype.name == "INT16":
            return 2
        return 1
