"""BATCH_MATMUL: ONNX MatMul whose right-hand side is not a constant (attention-style products)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.BatchMatMulOptions import BatchMatMulOptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import INT8_AND_INT16, Calibrated, Case, LayoutBreaking, OpSpec, rand
from tflq.ops.einsum import BATCH_MATMUL_CASES, import_einsum
from tflq.ops.reshape import add_reshape

MAX_RANK = 5  # TFLite's batch_matmul kernel limit


@dataclass(frozen=True)
class BatchMatMulAttrs:
    adj_x: bool = False
    adj_y: bool = False
    asymmetric_quantize_inputs: bool = False


def _matmul_case(name: str, a_shape, b_shape) -> Case:
    return Case(name, [helper.make_node("MatMul", ["a", "b"], ["y"])],
                {"a": rand(*a_shape), "b": rand(*b_shape, seed=1)})


@register
class BatchMatMul(OpSpec):
    """Reached through FULLY_CONNECTED's importer, which owns ONNX MatMul and delegates here when
    the right-hand side is an activation. Batch dimensions broadcast as in numpy; 1-D operands are
    lifted to matrices with RESHAPE and the result is reshaped back. Also imports ONNX Einsum
    (einsum.py), which lowers to BATCH_MATMUL or, with a constant operand, FULLY_CONNECTED."""

    kind = "BATCH_MATMUL"
    onnx_types = ("Einsum",)
    Attrs = BatchMatMulAttrs
    layout = LayoutBreaking()
    quant = Calibrated(dtypes=INT8_AND_INT16)  # LiteRT has no uint8 BATCH_MATMUL kernel
    cases = [
        _matmul_case("batched_3d", (2, 3, 4), (2, 4, 5)),
        _matmul_case("attention_4d", (1, 2, 3, 4), (1, 2, 4, 3)),
        _matmul_case("broadcast_batch", (2, 1, 3, 4), (3, 4, 2)),
        _matmul_case("rank2", (3, 4), (4, 5)),
        _matmul_case("vector_rhs", (2, 3, 4), (4,)),
        _matmul_case("vector_lhs", (4,), (2, 4, 3)),
    ] + BATCH_MATMUL_CASES

    def from_onnx(self, node, ctx) -> None:
        if node.op_type == "Einsum":
            return import_einsum(node, ctx)
        a, b, out = node.input[0], node.input[1], node.output[0]
        a_rank, b_rank = ctx.rank(a), ctx.rank(b)
        if max(a_rank, b_rank) > MAX_RANK:
            raise Unsupported(node, "matmul_rank", f"MatMul of rank {max(a_rank, b_rank)} "
                                                   f"(TFLite allows up to {MAX_RANK})")
        if a_rank == 0 or b_rank == 0:
            raise Unsupported(node, "matmul_rank", "MatMul of a scalar")
        if a_rank == 1:
            a = self._lift(ctx, a, (1,) + ctx.shape(a), "row")
        if b_rank == 1:
            b = self._lift(ctx, b, ctx.shape(b) + (1,), "column")
        if a_rank > 1 and b_rank > 1:
            ctx.add_op(self.kind, [a, b], [out], BatchMatMulAttrs())
            return
        a_shape, b_shape = ctx.shape(a), ctx.shape(b)
        batch = np.broadcast_shapes(a_shape[:-2], b_shape[:-2])
        product = ctx.new_activation(f"{out}/matrix", batch + (a_shape[-2], b_shape[-1]))
        ctx.add_op(self.kind, [a, b], [product], BatchMatMulAttrs())
        add_reshape(ctx, product, out, ctx.shape(out))

    @staticmethod
    def _lift(ctx, x: str, shape: tuple[int, ...], what: str) -> str:
        lifted = ctx.new_activation(f"{x}/{what}", shape)
        add_reshape(ctx, x, lifted, shape)
        return lifted

    def reference(self, x, y, *, adj_x: bool, adj_y: bool, asymmetric_quantize_inputs: bool):
        if adj_x:
            x = np.swapaxes(x, -1, -2)
        if adj_y:
            y = np.swapaxes(y, -1, -2)
        return (np.matmul(x, y).astype(np.float32),)

    def options(self, attrs: BatchMatMulAttrs) -> BatchMatMulOptionsT:
        return BatchMatMulOptionsT(adjX=attrs.adj_x, adjY=attrs.adj_y,
                                   asymmetricQuantizeInputs=attrs.asymmetric_quantize_inputs)

    def version(self, op: Op, graph: Graph) -> int:
        x, y = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
        if x.dtype.name == "INT16":
            return 3
        if x.dtype.name == "INT8":
            return 2
        if x.dtype.is_float and y.dtype.name == "INT8" and op.attrs.asymmetric_quantize_inputs:
            return 4
        return 1
