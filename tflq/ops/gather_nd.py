"""GATHER_ND: ONNX GatherND (any batch_dims) and GatherElements (lowered to coordinates + GATHER_ND)."""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq._generated.tflite.GatherNdOptions import GatherNdOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import Case, LayoutBreaking, OpSpec, SameAsInput, rand
from tflq.ops.concat import ConcatenationAttrs
from tflq.ops.reshape import add_reshape


def wrap_indices(ctx, node, indices: str, dims, out: str) -> str:
    """ONNX counts negative indices from the end; LiteRT's gathers refuse them. Constant
    indices are checked and wrapped here; run-time ones go through FLOOR_MOD by `dims`
    (broadcast along the last axis for GatherND's coordinate rows)."""
    value = ctx.constant(indices)
    dims = np.asarray(dims, np.int64)
    if value is not None:
        value = value.astype(np.int64)
        if value.size and (np.any(value < -dims) or np.any(value >= dims)):
            raise Unsupported(node, "gather_index_range", f"indices outside the data's range {dims.tolist()}")
        return ctx.add_constant(f"{out}/indices", np.where(value < 0, value + dims, value).astype(np.int32))
    t = ctx.graph.tensors[ctx.tensor(indices)]
    if t.dtype not in (DType.INT32, DType.INT64):
        raise Unsupported(node, "gather_index_type", f"indices of type {t.dtype.name.lower()}")
    wrapped = ctx.new_activation(f"{out}/indices_wrapped", t.shape, t.dtype)
    ctx.add_op("FLOOR_MOD", [indices, ctx.add_constant(f"{out}/dims", dims.astype(t.dtype.numpy))], [wrapped])
    return wrapped


@register
class GatherNd(OpSpec):
    """ONNX GatherND with run-time indices (TFLite's GATHER_ND is that op; with constant indices
    and batch_dims 0 the frontend already made it RESHAPE + GATHER; batch_dims b puts the b batch
    coordinates, constant grids, in front of each index row), and GatherElements:
    out[i] = data[i with axis coordinate replaced by indices[i]], i.e. GATHER_ND over a
    coordinate tensor whose other columns are constant grids (CONCATENATION along a new last
    axis). Data movement: outputs share the data's grid."""

    kind = "GATHER_ND"
    onnx_types = ("GatherND", "GatherElements")
    layout = LayoutBreaking()
    quant = SameAsInput(moves_values=True)  # copies of the input's integers
    cases = [
        Case("gather_nd_rows", [helper.make_node("GatherND", ["x", "i"], ["y"])],
             {"x": rand(4, 3, 2), "i": np.array([[1], [3], [-4]], np.int64)}),
        Case("gather_nd_points", [helper.make_node("GatherND", ["x", "i"], ["y"])],
             {"x": rand(3, 4), "i": np.array([[0, 1], [2, -1], [1, 3]], np.int64)}),
        Case("gather_nd_batch_dims1", [helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=1)],
             {"x": rand(2, 4, 3), "i": np.array([[[1], [3], [-4]], [[0], [2], [2]]], np.int64)}),
        Case("gather_nd_batch_dims1_points", [helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=1)],
             {"x": rand(3, 4, 5), "i": np.array([[[1, 4]], [[3, -1]], [[0, 0]]], np.int64)}),
        Case("gather_nd_batch_dims2_const", [helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=2)],
             {"x": rand(2, 3, 4, 2)}, {"i": np.array([[[1], [3], [0]], [[2], [2], [-1]]], np.int64)}),
        Case("elements_axis1", [helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1)],
             {"x": rand(3, 4), "i": np.array([[0, 3], [-1, 1], [2, 2]], np.int64)}),
        Case("elements_axis0_int32", [helper.make_node("GatherElements", ["x", "i"], ["y"], axis=0)],
             {"x": rand(3, 4, 2), "i": np.array([[[2, 0], [1, 1], [0, 2], [-3, 1]]], np.int32)}),
        Case("elements_nchw_channels", [helper.make_node("Relu", ["x"], ["r"]),
                                        helper.make_node("GatherElements", ["r", "i"], ["y"], axis=1)],
             {"x": rand(1, 3, 2, 2), "i": np.array([[[[2, 0], [1, 1]], [[0, 0], [2, 1]]]], np.int64)}),
        Case("elements_const_indices", [helper.make_node("GatherElements", ["x", "i"], ["y"], axis=-1)],
             {"x": rand(2, 5)}, {"i": np.array([[4, 0, 0], [1, -1, 3]], np.int64)}),
        Case("int64_data", [helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1)],
             {"x": np.array([[5, 6, 7], [8, 9, 10]], np.int64), "i": np.array([[2, 0], [1, 1]], np.int64)},
             quantize=False),
    ]

    def from_onnx(self, node, ctx) -> None:
        x, out = node.input[0], node.output[0]
        shape = ctx.shape(x)
        if node.op_type == "GatherND":
            batch = int(ctx.attr(node, "batch_dims", 0))
            index_shape = ctx.shape(node.input[1])
            depth = index_shape[-1]
            indices = wrap_indices(ctx, node, node.input[1], shape[batch:batch + depth], out)
            if batch:  # each index row gets its batch coordinates in front: a plain GATHER_ND
                dtype = ctx.graph.tensors[indices].dtype
                grids = np.indices(index_shape[:-1]).astype(dtype.numpy)
                columns = [ctx.add_constant(f"{out}/batch{d}", grids[d][..., None]) for d in range(batch)]
                coordinates = ctx.new_activation(f"{out}/coordinates", index_shape[:-1] + (batch + depth,),
                                                 dtype)
                ctx.add_op("CONCATENATION", columns + [indices], [coordinates],
                           ConcatenationAttrs(axis=len(index_shape) - 1))
                indices = coordinates
            ctx.add_op(self.kind, [x, indices], [out])
            return
        axis = ctx.normalize_axis(int(ctx.attr(node, "axis", 0)), len(shape))
        index_shape = ctx.shape(node.input[1])
        indices = wrap_indices(ctx, node, node.input[1], shape[axis], out)
        dtype = ctx.graph.tensors[indices].dtype
        grids = np.indices(index_shape).astype(dtype.numpy)
        columns = []
        for d in range(len(shape)):
            if d == axis:
                column = ctx.new_activation(f"{out}/axis_column", index_shape + (1,), dtype)
                add_reshape(ctx, indices, column, index_shape + (1,))
            else:
                column = ctx.add_constant(f"{out}/grid{d}", grids[d][..., None])
            columns.append(column)
        coordinates = ctx.new_activation(f"{out}/coordinates", index_shape + (len(shape),), dtype)
        ctx.add_op("CONCATENATION", columns, [coordinates], ConcatenationAttrs(axis=len(index_shape)))
        ctx.add_op(self.kind, [x, coordinates], [out])

    def reference(self, x, indices):
        idx = indices.astype(np.int64)
        return (np.ascontiguousarray(x[tuple(np.moveaxis(idx, -1, 0))]),)

    def options(self, attrs) -> GatherNdOptionsT:
        return GatherNdOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        data, indices = (graph.tensors[n].dtype for n in op.inputs)
        if data == DType.BOOL:
            return 5
        if indices == DType.INT16:
            return 4
        return 3 if data == DType.INT16 else 1
