"""ARG_MAX and ARG_MIN: ONNX ArgMax/ArgMin (axis, keepdims, select_last_index).

TFLite's kernels (arg_min_max.cc) take float32, uint8, int8, int32 and bool inputs, write int32
or int64 indices (int64 here, ONNX's type), always drop the axis, and on ties keep the first
index, as ONNX's default does. keepdims=1 adds a RESHAPE; select_last_index=1 reverses the axis
with a STRIDED_SLICE first and maps the index back (size - 1 - index, an int64 SUB).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.ArgMaxOptions import ArgMaxOptionsT
from tflq._generated.tflite.ArgMinOptions import ArgMinOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import AxisSensitive, Case, OpSpec, SameAsInput, rand
from tflq.ops.reshape import add_reshape
from tflq.ops.slice import add_slice


@dataclass(frozen=True)
class ArgMinMaxAttrs:
    output_type: DType = DType.INT64


def _with_ties(x: np.ndarray, axis: int) -> np.ndarray:
    """`x` with its maximum and minimum repeated along `axis`, so first/last index matter."""
    x = np.moveaxis(x.copy(), axis, -1)
    x[..., -1] = x.max(axis=-1)
    x[..., 1] = x.min(axis=-1)
    return np.moveaxis(x, -1, axis)


def _cases(op_type: str) -> list[Case]:
    def case(name, x, **attrs):
        return Case(name, [helper.make_node(op_type, ["x"], ["y"], **attrs)], {"x": x}, opset=13)

    return [
        case("classes_keepdims", rand(3, 10), axis=1),
        case("classes_drop_dims", rand(4, 7, seed=1), axis=-1, keepdims=0),
        case("channels_nchw", rand(1, 5, 4, 3, seed=2), axis=1, keepdims=0),
        case("width_keepdims_nchw", rand(2, 3, 4, 6, seed=3), axis=3),
        case("default_axis_rank3", rand(5, 3, 4, seed=4)),
        case("ties_first_index", _with_ties(rand(3, 6, seed=5), 1), axis=1, keepdims=0),
        case("ties_last_index", _with_ties(rand(3, 6, seed=6), 1), axis=1, keepdims=0, select_last_index=1),
        case("ties_last_index_keepdims", _with_ties(rand(2, 5, 4, seed=7), 1), axis=1, select_last_index=1),
    ]


class _ArgMinMax(OpSpec):
    Attrs = ArgMinMaxAttrs
    layout = AxisSensitive(axis_inputs=(1,))
    # The input's only float tensor; the kernel compares the raw 8-bit values, which a positive
    # scale keeps in order (values that round to one step become ties: first index wins).
    quant = SameAsInput()
    numpy_fn = staticmethod(np.argmax)
    Options = ArgMaxOptionsT

    def from_onnx(self, node, ctx) -> None:
        x, out = node.input[0], node.output[0]
        shape = ctx.shape(x)
        rank = len(shape)
        axis = ctx.normalize_axis(int(ctx.attr(node, "axis", 0)), rank)
        keep_dims = bool(ctx.attr(node, "keepdims", 1))
        last = bool(ctx.attr(node, "select_last_index", 0))
        reduced = shape[:axis] + shape[axis + 1:]
        source = x
        if last:
            source = ctx.new_activation(f"{out}/reversed", shape)
            begin, end, strides = [0] * rank, list(shape), [1] * rank
            begin[axis], end[axis], strides[axis] = shape[axis] - 1, -(shape[axis] + 1), -1
            add_slice(ctx, x, source, begin, end, strides)
        index = out if not (keep_dims or last) else ctx.new_activation(f"{out}/index", reduced, DType.INT64)
        axis_name = ctx.add_constant(f"{out}/axis", np.array([axis], np.int32))
        ctx.add_op(self.kind, [source, axis_name], [index], ArgMinMaxAttrs(DType.INT64))
        if last:
            flipped = out if not keep_dims else ctx.new_activation(f"{out}/last_index", reduced, DType.INT64)
            ctx.add_op("SUB", [ctx.add_constant(f"{out}/axis_end", np.array(shape[axis] - 1, np.int64)), index],
                       [flipped])
            index = flipped
        if keep_dims:
            add_reshape(ctx, index, out, shape[:axis] + (1,) + shape[axis + 1:])

    def reference(self, x, axis, *, output_type: DType):
        return (np.asarray(self.numpy_fn(x, axis=int(np.ravel(axis)[0])), output_type.numpy),)

    def options(self, attrs: ArgMinMaxAttrs):
        return self.Options(outputType=attrs.output_type.tflite)

    def version(self, op: Op, graph: Graph) -> int:
        dtype = graph.tensors[op.inputs[0]].dtype
        return 3 if dtype == DType.BOOL else 2 if dtype == DType.INT8 else 1


@register
class ArgMax(_ArgMinMax):
    """ONNX ArgMax."""

    kind = "ARG_MAX"
    onnx_types = ("ArgMax", "Hardmax")
    # Hardmax's float 0/1 result comes from a CAST of a comparison, no 8-bit op ends it
    cases = _cases("ArgMax") + [
        Case("hardmax_last_axis", [helper.make_node("Hardmax", ["x"], ["y"])], {"x": rand(3, 4, 10)},
             opset=13, quantize=False),
        Case("hardmax_channels_ties", [helper.make_node("Hardmax", ["x"], ["y"], axis=1)],
             {"x": _with_ties(rand(1, 5, 3, 4, seed=8), 1)}, opset=13, quantize=False),
        Case("hardmax_opset11_2d", [helper.make_node("Hardmax", ["x"], ["y"])], {"x": rand(4, 6, seed=9)},
             opset=11, quantize=False),
    ]

    def from_onnx(self, node, ctx) -> None:
        if node.op_type == "ArgMax":
            return super().from_onnx(node, ctx)
        self._hardmax(node, ctx)

    def _hardmax(self, node, ctx) -> None:
        """1 at the first maximum along `axis`, else 0: ARG_MAX, RESHAPE back to rank, EQUAL with
        the constant indices along the axis, CAST to float. Before opset 13 Hardmax flattens the
        input to 2D at `axis` (default 1); that is the same as one axis only when axis is the last."""
        from tflq.ops.cast import CastAttrs

        x, out = node.input[0], node.output[0]
        shape = ctx.shape(x)
        rank = len(shape)
        axis = ctx.normalize_axis(int(ctx.attr(node, "axis", -1 if ctx.opset >= 13 else 1)), rank)
        if ctx.opset < 13 and axis != rank - 1:
            raise Unsupported(node, "hardmax_axis", f"Hardmax (opset {ctx.opset}) over the flattened axes "
                              f"{axis}..{rank - 1} is not supported (the last axis alone is)")
        reduced = shape[:axis] + shape[axis + 1:]
        kept = shape[:axis] + (1,) + shape[axis + 1:]
        index = ctx.new_activation(f"{out}/index", reduced, DType.INT32)
        ctx.add_op(self.kind, [x, ctx.add_constant(f"{out}/axis", np.array([axis], np.int32))], [index],
                   ArgMinMaxAttrs(DType.INT32))
        index_kept = ctx.new_activation(f"{out}/index_kept", kept, DType.INT32)
        add_reshape(ctx, index, index_kept, kept)
        positions = np.arange(shape[axis], dtype=np.int32).reshape(
            tuple(shape[axis] if i == axis else 1 for i in range(rank)))
        hit = ctx.new_activation(f"{out}/hit", shape, DType.BOOL)
        ctx.add_op("EQUAL", [index_kept, ctx.add_constant(f"{out}/positions", positions)], [hit])
        ctx.add_op("CAST", [hit], [out], CastAttrs(to=DType.FLOAT32.name, source=DType.BOOL.name))


@register
class ArgMin(_ArgMinMax):
    """ONNX ArgMin."""

    kind = "ARG_MIN"
    onnx_types = ("ArgMin",)
    numpy_fn = staticmethod(np.argmin)
    Options = ArgMinOptionsT
    cases = _cases("ArgMin")
