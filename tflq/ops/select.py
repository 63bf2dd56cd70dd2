"""SELECT_V2: ONNX Where (broadcasting select; masks of attention scores, nan_to_num)."""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq._generated.tflite.SelectV2Options import SelectV2OptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import Case, OpSpec, SameAsOutput, Transparent, rand


@register
class SelectV2(OpSpec):
    """ONNX Where(condition, x, y). LiteRT's int8 and uint8 SELECT_V2 copy the integers of x and
    y, so both must be on the output's grid (TF's converter treats it as same-scale)."""

    kind = "SELECT_V2"
    onnx_types = ("Where", "ThresholdedRelu", "Shrink", "Trilu")
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
        Case("thresholded_relu", [helper.make_node("ThresholdedRelu", ["x"], ["y"])],
             {"x": rand(1, 3, 4, 4, low=-3, high=3)}, opset=10, float_parts=True),
        Case("thresholded_relu_alpha", [helper.make_node("ThresholdedRelu", ["x"], ["y"], alpha=-0.5)],
             {"x": rand(3, 8, low=-3, high=3)}, opset=10, float_parts=True),
        Case("shrink_hard", [helper.make_node("Shrink", ["x"], ["y"])], {"x": rand(1, 3, 4, 4, low=-2, high=2)},
             opset=9, float_parts=True),
        Case("shrink_soft", [helper.make_node("Shrink", ["x"], ["y"], bias=0.5, lambd=0.5)],
             {"x": rand(3, 8, low=-3, high=3)}, opset=9, float_parts=True),
        Case("trilu_upper", [helper.make_node("Trilu", ["x"], ["y"])], {"x": rand(1, 3, 4, 5)}, opset=14),
        Case("trilu_lower_k", [helper.make_node("Trilu", ["x", "k"], ["y"], upper=0)], {"x": rand(2, 6, 4)},
             {"k": np.array(1, np.int64)}, opset=14),
        Case("trilu_upper_negative_k", [helper.make_node("Trilu", ["x", "k"], ["y"])], {"x": rand(5, 5)},
             {"k": np.array(-2, np.int64)}, opset=14),
        Case("trilu_int64", [helper.make_node("Trilu", ["x"], ["y"], upper=0)],
             {"x": np.arange(12, dtype=np.int64).reshape(3, 4)}, opset=14, quantize=False),
        Case("int64_values", [helper.make_node("Where", ["c", "a", "b"], ["y"])],
             {"c": np.array([[True, False, True]]), "a": np.array([[1, 2, 3]], np.int64)},
             {"b": np.array([-1], np.int64)}, quantize=False),
    ]

    def inputs_read_as_zero(self, op: Op, graph: Graph) -> tuple[int, ...]:
        """y of Where(x != 0, fill, x), its x: chosen only where it is 0 (HuggingFace's inverted
        mask, (1 - mask).masked_fill((1 - mask).bool(), finfo.min), Pegasus-X, LED). A -0.0
        becomes +0.0 there, which no sum with a score tells apart but a score of -0.0."""
        from tflq import ops as registry

        chooser = graph.producer(op.inputs[0])
        if chooser is None or op.inputs[1] == op.inputs[2]:
            return ()
        tested = registry.spec(chooser.kind).nonzero_test_of(chooser, graph)
        return (2,) if tested is not None and tested == op.inputs[2] else ()

    def from_onnx(self, node, ctx) -> None:
        if node.op_type == "ThresholdedRelu":
            return self._thresholded_relu(node, ctx)
        if node.op_type == "Shrink":
            return self._shrink(node, ctx)
        if node.op_type == "Trilu":
            return self._trilu(node, ctx)
        cond, x, y = (ctx.graph.tensors[ctx.tensor(n)] for n in node.input)
        if x.dtype != y.dtype:
            raise Unsupported(node, "mixed_types", "Where of two different types")
        ctx.add_op(self.kind, list(node.input), [node.output[0]])

    @staticmethod
    def _compare(ctx, node, kind: str, x: str, bound: float, label: str) -> str:
        """A bool mask x `kind` bound (GREATER / LESS with a scalar constant)."""
        mask = ctx.new_activation(f"{node.output[0]}/{label}", ctx.shape(x), DType.BOOL)
        ctx.add_op(kind, [x, ctx.add_constant(f"{node.name or node.output[0]}/{label}_bound",
                                              np.array(bound, np.float32))], [mask])
        return mask

    def _thresholded_relu(self, node, ctx) -> None:
        """x where x > alpha, else 0."""
        x, out = node.input[0], node.output[0]
        alpha = float(ctx.attr(node, "alpha", 1.0))
        above = self._compare(ctx, node, "GREATER", x, alpha, "above")
        zero = ctx.add_constant(f"{node.name or out}/zero", np.array(0.0, np.float32))
        ctx.add_op(self.kind, [above, x, zero], [out])

    def _trilu(self, node, ctx) -> None:
        """Trilu (opset 14): the upper (j - i >= k) or lower (j - i <= k) triangle of the last two
        axes, the rest 0, as a SELECT_V2 on a constant mask (exact for inf and NaN, unlike a MUL)."""
        x, out = node.input[0], node.output[0]
        shape = ctx.shape(x)
        if len(shape) < 2:
            raise Unsupported(node, "trilu_rank", f"Trilu of a rank-{len(shape)} tensor (needs rank >= 2)")
        k = 0
        if len(node.input) > 1 and node.input[1]:
            k = int(np.asarray(ctx.require_constant(node, 1, "k")).reshape(()))
        rows, cols = shape[-2:]
        offset = np.arange(cols)[None, :] - np.arange(rows)[:, None]
        mask = offset >= k if int(ctx.attr(node, "upper", 1)) else offset <= k
        mask = mask.reshape((1,) * (len(shape) - 2) + (rows, cols))
        dtype = ctx.graph.tensors[ctx.tensor(x)].dtype
        name = node.name or out
        ctx.add_op(self.kind, [ctx.add_constant(f"{name}/mask", mask),
                               x, ctx.add_constant(f"{name}/zero", np.zeros((), dtype.numpy))], [out])

    def _shrink(self, node, ctx) -> None:
        """x + bias where x < -lambd, x - bias where x > lambd, else 0 (float data only)."""
        x, out = node.input[0], node.output[0]
        if not ctx.graph.tensors[ctx.tensor(x)].dtype.is_float:
            raise Unsupported(node, "shrink_type", "Shrink of integer data is not supported")
        bias = float(ctx.attr(node, "bias", 0.0))
        lambd = float(ctx.attr(node, "lambd", 0.5))
        shape = ctx.shape(x)
        name = node.name or out
        low = ctx.new_activation(f"{out}/low", shape)
        ctx.add_op("ADD", [x, ctx.add_constant(f"{name}/bias", np.array(bias, np.float32))], [low])
        high = ctx.new_activation(f"{out}/high", shape)
        ctx.add_op("SUB", [x, ctx.add_constant(f"{name}/bias_sub", np.array(bias, np.float32))], [high])
        upper = ctx.new_activation(f"{out}/upper", shape)
        zero = ctx.add_constant(f"{name}/zero", np.array(0.0, np.float32))
        ctx.add_op(self.kind, [self._compare(ctx, node, "GREATER", x, lambd, "above"), high, zero], [upper])
        ctx.add_op(self.kind, [self._compare(ctx, node, "LESS", x, -lambd, "below"), low, upper], [out])

    def reference(self, cond, x, y):
        return (np.where(cond, x, y).astype(np.result_type(x, y)),)

    def options(self, attrs) -> SelectV2OptionsT:
        return SelectV2OptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        return 1  # op_version.cc: 2 only for uint32 condition
