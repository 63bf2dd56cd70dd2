"""TOPK_V2: ONNX TopK (k constant, any axis, largest or smallest).

TFLite's kernel (topk_v2.cc) finds the k largest along the last axis, sorted in decreasing order,
ties to the lower index (ONNX's rule too); its indices are int32 (a CAST gives ONNX's int64).
Another axis is moved last with a TRANSPOSE and back; largest=0 negates the input and the values (MUL by -1).
sorted=0 leaves the order to the implementation, and this one sorts (onnxruntime does not: compare
such outputs as sets). The values share the input's
grid (tfl_ops.td SameOperandsAndResultsScale): the kernel orders raw 8-bit values.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq._generated.tflite.TopKV2Options import TopKV2OptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import Case, LayoutBreaking, OpSpec, SameAsInput, rand
from tflq.ops.cast import add_cast


def _topk_case(name: str, shape, k: int, seed: int = 0, **attrs) -> Case:
    node = helper.make_node("TopK", ["x", "k"], ["values", "indices"], **attrs)
    x = rand(*shape, seed=seed)
    return Case(name, [node], {"x": x}, {"k": np.array([k], np.int64)}, outputs=("values", "indices"))


@register
class TopKV2(OpSpec):
    """ONNX TopK (opset 10+: k is an input, which must be constant since it sets the shape)."""

    kind = "TOPK_V2"
    onnx_types = ("TopK",)
    layout = LayoutBreaking()  # the kernel works on the last axis of the ONNX order
    quant = SameAsInput(moves_values=True)  # the values are input values
    cases = [
        _topk_case("classes", (2, 10), 3),
        _topk_case("smallest", (3, 8), 2, seed=1, largest=0),
        _topk_case("channels_nchw", (1, 6, 3, 4), 2, seed=2, axis=1),
        _topk_case("all_rank3", (2, 3, 5), 5, seed=3),
        _topk_case("smallest_width_nchw", (2, 3, 4, 5), 3, seed=4, axis=-1, largest=0),
    ]

    def from_onnx(self, node, ctx) -> None:
        x = node.input[0]
        shape = ctx.shape(x)
        rank = len(shape)
        axis = ctx.normalize_axis(int(ctx.attr(node, "axis", -1)), rank)
        k = int(np.ravel(ctx.require_constant(node, 1, "K", sets_shape=True))[0])
        if not 1 <= k <= shape[axis]:
            raise Unsupported(node, "topk_k", f"TopK k={k} on an axis of {shape[axis]}")
        values, indices = node.output[0], node.output[1] if len(node.output) > 1 else ""
        perm = list(range(rank))
        perm[axis], perm[-1] = perm[-1], perm[axis]
        moved = tuple(shape[p] for p in perm)
        source = self._transpose(ctx, x, perm, f"{values}/axis_last") if axis != rank - 1 else x
        largest = bool(ctx.attr(node, "largest", 1))
        minus_one = ctx.add_constant(f"{values}/minus_one", np.array(-1.0, np.float32))
        if not largest:
            negated = ctx.new_activation(f"{values}/negated_input", moved)
            ctx.add_op("MUL", [source, minus_one], [negated])  # MUL, not NEG: it has 8-bit kernels
            source = negated
        out_shape = moved[:-1] + (k,)
        direct = axis == rank - 1 and largest
        top_values = values if direct else ctx.new_activation(f"{values}/top", out_shape)
        top_indices = ctx.new_activation(f"{values}/indices_int32", out_shape, DType.INT32)
        ctx.add_op(self.kind, [source, ctx.add_constant(f"{values}/k", np.array(k, np.int32))],
                   [top_values, top_indices])
        if not largest:
            restored = values if axis == rank - 1 else ctx.new_activation(f"{values}/restored", out_shape)
            ctx.add_op("MUL", [top_values, minus_one], [restored])
            top_values = restored
        if axis != rank - 1 and top_values != values:
            self._transpose(ctx, top_values, perm, "", values)
        if indices:
            wide = indices if axis == rank - 1 else ctx.new_activation(f"{indices}/int64", out_shape,
                                                                       DType.INT64)
            add_cast(ctx, top_indices, wide, DType.INT64)
            if axis != rank - 1:
                self._transpose(ctx, wide, perm, "", indices)

    @staticmethod
    def _transpose(ctx, x: str, perm: list[int], base: str, out: str = "") -> str:
        shape = ctx.shape(x)
        dtype = ctx.graph.tensors[ctx.tensor(x)].dtype
        out = out or ctx.new_activation(base, tuple(shape[p] for p in perm), dtype)
        ctx.add_op("TRANSPOSE", [x, ctx.add_constant(f"{out}/perm", np.array(perm, np.int32))], [out])
        return out

    def reference(self, x, k):
        order = np.argsort(-x, axis=-1, kind="stable")[..., :int(np.ravel(k)[0])]
        return (np.take_along_axis(x, order, axis=-1), order.astype(np.int32))

    def options(self, attrs):
        return TopKV2OptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        dtype = graph.tensors[op.inputs[0]].dtype
        return 3 if dtype == DType.INT16 else 2 if dtype == DType.INT8 else 1
