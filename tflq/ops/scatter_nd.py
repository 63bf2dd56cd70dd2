"""SCATTER_ND: ONNX ScatterND (reduction none or add) as TFLite's scatter into zeros plus a select."""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq._generated.tflite.ScatterNdOptions import ScatterNdOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ops import register
from tflq.ops.base import Case, FloatOnly, LayoutBreaking, OpSpec, rand
from tflq.ops.cast import add_cast
from tflq.ops.gather_nd import wrap_indices
from tflq.ops.reshape import add_reshape

UPDATE_TYPES = (DType.FLOAT32, DType.INT32, DType.INT64, DType.INT8, DType.UINT8)


@register
class ScatterNd(OpSpec):
    """ONNX ScatterND. TFLite's SCATTER_ND(indices, updates, shape) writes the updates into a
    zero tensor (summing duplicates), so reduction 'none' is SELECT_V2(written, scattered, data)
    where `written` marks the slices an index names (a constant for constant indices, else a
    second SCATTER_ND of ones compared with 0), and 'add' is data + scattered. Indices are int32
    (the shape operand has their type); ONNX's negative indices are wrapped first.
    FloatOnly: the zeros SCATTER_ND starts from are raw integers, not the data's zero point."""

    kind = "SCATTER_ND"
    onnx_types = ("ScatterND",)
    layout = LayoutBreaking()
    quant = FloatOnly()
    cases = [
        Case("rows_runtime_indices", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"])],
             {"x": rand(5, 3), "i": np.array([[4], [-5], [2]], np.int64), "u": rand(3, 3, seed=1)}),
        Case("points_const_indices", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"])],
             {"x": rand(3, 4), "u": rand(2, seed=2)}, {"i": np.array([[0, 1], [2, -1]], np.int64)}),
        Case("kv_cache_slot", [helper.make_node("ScatterND", ["cache", "i", "u"], ["y"])],
             {"cache": rand(1, 2, 6, 4), "u": rand(1, 2, 1, 4, seed=3)},
             {"i": np.array([[[[0, 0, 3], [0, 1, 3]]]], np.int64).reshape(1, 2, 1, 3)}),
        Case("add_duplicates", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="add")],
             {"x": rand(4, 2), "i": np.array([[1], [1], [3]], np.int64), "u": rand(3, 2, seed=4)}, opset=16),
        Case("int64_data", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"])],
             {"x": np.arange(6, dtype=np.int64).reshape(2, 3), "i": np.array([[1, 0]], np.int64),
              "u": np.array([-7], np.int64)}),
    ]

    def from_onnx(self, node, ctx) -> None:
        data, indices, updates = node.input[:3]
        out = node.output[0]
        reduction = ctx.attr(node, "reduction", "none")
        if reduction not in ("none", "add"):
            raise Unsupported(node, "scatter_reduction", f"ScatterND with reduction '{reduction}'")
        shape = ctx.shape(data)
        dtype = ctx.graph.tensors[ctx.tensor(data)].dtype
        if dtype not in UPDATE_TYPES:
            raise Unsupported(node, "scatter_type", f"ScatterND of {dtype.name.lower()}")
        index_shape = ctx.shape(indices)
        depth = index_shape[-1]
        wrapped = wrap_indices(ctx, node, indices, shape[:depth], out)
        if ctx.graph.tensors[wrapped].dtype != DType.INT32:
            narrowed = ctx.new_activation(f"{out}/indices_int32", index_shape, DType.INT32)
            add_cast(ctx, wrapped, narrowed, DType.INT32)
            wrapped = narrowed
        shape_const = ctx.add_constant(f"{out}/shape", np.array(shape, np.int32))
        scattered = ctx.new_activation(f"{out}/scattered", shape, dtype)
        ctx.add_op(self.kind, [wrapped, updates, shape_const], [scattered])
        if reduction == "add":
            ctx.add_op("ADD", [data, scattered], [out])
            return
        slots = index_shape[:-1]
        mask_shape = tuple(shape[:depth]) + (1,) * (len(shape) - depth)
        if ctx.graph.is_constant(wrapped):
            written = np.zeros(shape[:depth], bool)
            written[tuple(np.moveaxis(ctx.graph.tensors[wrapped].data.astype(np.int64), -1, 0))] = True
            mask = ctx.add_constant(f"{out}/written", written.reshape(mask_shape))
        else:
            counts = ctx.new_activation(f"{out}/written_count", shape[:depth], DType.INT32)
            ctx.add_op(self.kind, [wrapped, ctx.add_constant(f"{out}/ones", np.ones(slots, np.int32)),
                                   ctx.add_constant(f"{out}/mask_shape", np.array(shape[:depth], np.int32))],
                       [counts])
            flat_mask = ctx.new_activation(f"{out}/written_flat", shape[:depth], DType.BOOL)
            ctx.add_op("NOT_EQUAL", [counts, ctx.add_constant(f"{out}/zero", np.zeros((), np.int32))],
                       [flat_mask])
            mask = ctx.new_activation(f"{out}/written", mask_shape, DType.BOOL)
            add_reshape(ctx, flat_mask, mask, mask_shape)
        ctx.add_op("SELECT_V2", [mask, scattered, data], [out])

    def reference(self, indices, updates, shape):
        result = np.zeros(tuple(int(d) for d in shape), updates.dtype)
        idx = indices.astype(np.int64)
        np.add.at(result, tuple(np.moveaxis(idx, -1, 0)), updates)
        return (result,)

    def options(self, attrs) -> ScatterNdOptionsT:
        return ScatterNdOptionsT()
