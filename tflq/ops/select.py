"""SELECT_V2: ONNX Where (broadcasting select; masks of attention scores, nan_to_num)."""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq._generated.tflite.SelectV2Options import SelectV2OptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import Case, OpSpec, SameAsOutput, Transparent, rand


@register
class SelectV2(OpSpec):
    """ONNX Where(condition, x, y). LiteRT's int8 and uint8 SELECT_V2 copy the integers of x and
    y, so both must be on the output's grid (TF's converter treats it as same-scale)."""

    kind = "SELECT_V2"
    onnx_types = ("Where",)
    layout = Transparent()
    quant = SameAsOutput(rescales_inputs_in=frozenset(), rounding_commutes=True)
    cases = [
        Case("mask_scores", [helper.make_node("Where", ["c", "x", "fill"], ["y"])],
             {"c": rand(1, 1, 4, 6, seed=3) > 0, "x": rand(1, 2, 4, 6)},
             {"fill": np.array(-4.0, np.float32)}),
        Case("bool_input_broadcast", [helper.make_node("Where", ["c", "a", "b"], ["y"])],
             {"c": np.array([[True, False, False, True, True]]), "a": rand(3, 5), "b": rand(3, 1, seed=1)}),
        Case("nchw_channel_const", [helper.make_node("Where", ["c", "x", "k"], ["y"])],
             {"c": rand(1, 3, 4, 4, seed=5) > 0, "x": rand(1, 3, 4, 4)},
             {"k": np.array([0.5, -0.5, 0.25], np.float32).reshape(3, 1, 1)}),
        Case("comparison_mask", [helper.make_node("Greater", ["m", "half"], ["c"]),
                                 helper.make_node("Where", ["c", "x", "fill"], ["y"])],
             {"m": rand(1, 1, 4, 6, seed=3), "x": rand(1, 2, 4, 6)},
             {"half": np.array(0.0, np.float32), "fill": np.array(-4.0, np.float32)}, quantize=False),
        Case("int64_values", [helper.make_node("Where", ["c", "a", "b"], ["y"])],
             {"c": np.array([[True, False, True]]), "a": np.array([[1, 2, 3]], np.int64)},
             {"b": np.array([-1], np.int64)}, quantize=False),
    ]

    def from_onnx(self, node, ctx) -> None:
        cond, x, y = (ctx.graph.tensors[ctx.tensor(n)] for n in node.input)
        if x.dtype != y.dtype:
            raise Unsupported(node, "mixed_types", "Where of two different types")
        ctx.add_op(self.kind, list(node.input), [node.output[0]])

    def reference(self, cond, x, y):
        return (np.where(cond, x, y).astype(np.result_type(x, y)),)

    def options(self, attrs) -> SelectV2OptionsT:
        return SelectV2OptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        return 1  # op_version.cc: 2 only for uint32 condition
