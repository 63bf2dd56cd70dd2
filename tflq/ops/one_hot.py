"""ONE_HOT: ONNX OneHot with a constant depth (one_hot.cc: int32/int64 indices; float32, int8,
uint8, int16, int32, int64 and bool values)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.OneHotOptions import OneHotOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import Case, FloatOnly, LayoutBreaking, OpSpec


@dataclass(frozen=True)
class OneHotAttrs:
    axis: int = -1


# the value types one_hot.cc takes (its output is of the values' type)
VALUE_TYPES = (np.float32, np.int8, np.uint8, np.int16, np.int32, np.int64, np.bool_)


def _case(name: str, indices: np.ndarray, depth: int, values=(0.0, 1.0), values_type=np.float32,
          **attrs) -> Case:
    node = helper.make_node("OneHot", ["i", "depth", "values"], ["y"], **attrs)
    consts = {"depth": np.array([depth], np.int64), "values": np.array(values, values_type)}
    return Case(name, [node], {"i": indices}, consts, opset=11, quantize=False)


@register
class OneHot(OpSpec):
    """indices -> a new axis of length depth holding on_value at the index, else off_value.
    ONNX counts a negative index from the end (index + depth); TFLite's kernel leaves it all off,
    so a SELECT_V2 adds depth to negative indices first. Indices outside [-depth, depth) are all
    off in both."""

    kind = "ONE_HOT"
    onnx_types = ("OneHot",)
    Attrs = OneHotAttrs
    layout = LayoutBreaking()  # a new axis: the ONNX order
    quant = FloatOnly()
    cases = [
        _case("last_axis", np.array([[0, 3, 1], [2, 2, 4]], np.int64), 5),
        _case("negative_and_out_of_range", np.array([-1, -5, 0, 5, 7, -6], np.int64), 5, (-1.0, 3.5)),
        _case("axis_0", np.array([[1, 0], [3, 2]], np.int64), 4, axis=0),
        _case("middle_axis", np.array([[1, 0, 2], [3, 2, -2]], np.int64), 4, (0.5, 2.0), axis=1),
        # LongT5's transient-global attention: int64 values, sliced and summed as integers
        _case("int64_values", np.array([[0, 2, -1], [1, 3, 2]], np.int64), 3, (0, 1), np.int64),
    ]

    def from_onnx(self, node, ctx) -> None:
        indices, out = node.input[0], node.output[0]
        depth = np.asarray(ctx.require_constant(node, 1, "depth", sets_shape=True)).reshape(-1)
        values = np.asarray(ctx.require_constant(node, 2, "values"))
        if depth.size != 1 or values.size != 2:
            raise Unsupported(node, "one_hot_inputs", "OneHot needs a one-value depth and two values")
        if values.dtype.type not in VALUE_TYPES:
            raise Unsupported(node, "one_hot_values", f"OneHot of {values.dtype} values is not supported "
                              f"(TFLite's ONE_HOT takes float32, int8, uint8, int16, int32, int64, bool)")
        depth = int(depth[0])
        dtype = ctx.graph.tensors[ctx.tensor(indices)].dtype
        if dtype not in (DType.INT32, DType.INT64):
            raise Unsupported(node, "one_hot_indices", f"OneHot of {dtype.name.lower()} indices is not "
                              f"supported (int32 and int64 are)")
        rank = ctx.rank(indices) + 1
        axis = ctx.normalize_axis(int(ctx.attr(node, "axis", -1)), rank)
        name = node.name or out
        shape = ctx.shape(indices)
        negative = ctx.new_activation(f"{out}/negative", shape, DType.BOOL)
        ctx.add_op("LESS", [indices, ctx.add_constant(f"{name}/zero", np.zeros((), dtype.numpy))], [negative])
        wrapped = ctx.new_activation(f"{out}/wrapped", shape, dtype)
        ctx.add_op("ADD", [indices, ctx.add_constant(f"{name}/depth_offset", np.array(depth, dtype.numpy))],
                   [wrapped])
        normalized = ctx.new_activation(f"{out}/normalized", shape, dtype)
        ctx.add_op("SELECT_V2", [negative, wrapped, indices], [normalized])
        # the kernel writes the on/off values' type: they keep the ONNX values' type (an int64
        # OneHot made float32 values wrote a float tensor where the file declares int64)
        off, on = (np.array(v, values.dtype) for v in values.reshape(2))
        ctx.add_op(self.kind, [normalized, ctx.add_constant(f"{name}/depth", np.array(depth, np.int32)),
                               ctx.add_constant(f"{name}/on", on), ctx.add_constant(f"{name}/off", off)],
                   [out], OneHotAttrs(axis=axis))

    def reference(self, indices, depth, on, off, *, axis: int):
        indices = np.asarray(indices)
        hot = np.arange(int(np.ravel(depth)[0])) == np.expand_dims(indices, -1)
        hot = np.moveaxis(hot, -1, axis)
        return (np.where(hot, on, off).astype(np.asarray(on).dtype),)

    def options(self, attrs: OneHotAttrs):
        return OneHotOptionsT(axis=attrs.axis)

    def version(self, op: Op, graph: Graph) -> int:
        return 1
