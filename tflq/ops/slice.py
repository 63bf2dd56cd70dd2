"""STRIDED_SLICE: ONNX Slice with constant starts/ends/axes/steps, written as explicit clamped bounds.

The begin/end/strides inputs hold one entry per axis, so the layout pass can reorder them for
NHWC. Masks are bitfields over axes that the layout pass would not remap, so none are written:
every bound is resolved against the static shape here. A backward slice that runs past index 0
gets end = -(dim + 1), which TFLite wraps to -1, i.e. "stop before index 0".
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import helper

from tflq._generated.tflite.StridedSliceOptions import StridedSliceOptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import WITH_INT16, AxisSensitive, Case, OpSpec, SameAsInput, rand
from tflq.ops.common import quantized_version

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
MAX_RANK = 5  # TFLite's strided_slice kernel limit


def add_slice(ctx, x: str, out: str, begin: Sequence[int], end: Sequence[int],
              strides: Sequence[int]) -> None:
    """STRIDED_SLICE `x` (ONNX axis order) into `out` with explicit per-axis bounds and no masks.

    `begin`/`end`/`strides` have one entry per axis of `x`, follow TFLite's rules (negative values
    count from the end) and are written as int32 constants.
    """
    inputs = [x] + [ctx.add_constant(f"{out}/{what}", np.array(values, np.int32))
                    for what, values in (("begin", begin), ("end", end), ("strides", strides))]
    ctx.add_op("STRIDED_SLICE", inputs, [out])


def onnx_slice_bounds(start: int, end: int, step: int, dim: int) -> tuple[int, int]:
    """ONNX Slice's clamping of one axis: (start, stop) with stop == -1 meaning 'before index 0'."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return min(max(start, 0), dim), min(max(end, 0), dim)
    return min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)


def _slice_length(start: int, stop: int, step: int) -> int:
    if step > 0:
        return max(0, -(-(stop - start) // step))
    return max(0, -(-(start - stop) // -step))


def _tflite_bounds(begin: int, end: int, stride: int, dim: int) -> tuple[int, int]:
    """TFLite's StartForAxis/StopForAxis without masks: wrap negatives, then clamp by direction."""
    begin = begin + dim if begin < 0 else begin
    end = end + dim if end < 0 else end
    low, high = (0, dim) if stride > 0 else (-1, dim - 1)
    return min(max(begin, low), high), min(max(end, low), high)


def _slice_case(name: str, shape, starts, ends, axes=None, steps=None, seed: int = 0) -> Case:
    consts = {"starts": np.array(starts, np.int64), "ends": np.array(ends, np.int64)}
    inputs = ["x", "starts", "ends"]
    if axes is not None:
        consts["axes"] = np.array(axes, np.int64)
        inputs.append("axes")
    if steps is not None:
        if axes is None:
            inputs.append("")
        consts["steps"] = np.array(steps, np.int64)
        inputs.append("steps")
    return Case(name, [helper.make_node("Slice", inputs, ["y"])], {"x": rand(*shape, seed=seed)},
                consts)


@register
class StridedSlice(OpSpec):
    """ONNX Slice (opset >= 10 inputs; attributes before); other importers use add_slice()."""

    kind = "STRIDED_SLICE"
    onnx_types = ("Slice",)
    layout = AxisSensitive(per_axis_inputs=(1, 2, 3))
    quant = SameAsInput(dtypes=WITH_INT16, moves_values=True)
    cases = [
        _slice_case("channels_nchw", (1, 6, 4, 5), [1], [4], axes=[1]),
        _slice_case("spatial_step2", (1, 3, 8, 9), [1, 0], [8, INT64_MAX], axes=[2, 3], steps=[2, 3]),
        _slice_case("negative_bounds", (2, 7, 5), [-4, 1], [-1, -1], axes=[1, -1]),
        _slice_case("out_of_range", (3, 10), [-100, 2], [100, INT64_MAX]),
        _slice_case("reverse_all", (1, 4, 3, 5), [INT64_MAX], [INT64_MIN], axes=[3], steps=[-1]),
        _slice_case("reverse_step2_partial", (1, 6, 7, 4), [5, -2], [0, -100], axes=[1, 2],
                    steps=[-2, -3]),
        _slice_case("rank2_rows", (6, 4), [1], [5], axes=[0]),
        _slice_case("rank5", (2, 3, 4, 5, 6), [1, -3], [4, INT64_MAX], axes=[2, 4], steps=[2, 1]),
    ]

    def from_onnx(self, node, ctx) -> None:
        x = node.input[0]
        shape = ctx.shape(x)
        rank = len(shape)
        if rank > MAX_RANK:
            raise Unsupported(node, "slice_rank", f"Slice of a rank-{rank} tensor (TFLite allows "
                                                  f"up to {MAX_RANK})")
        starts, ends, axes, steps = self._onnx_arguments(node, ctx, rank)
        begin, end, strides = [0] * rank, list(shape), [1] * rank
        seen: set[int] = set()
        for start, stop, axis, step in zip(starts, ends, axes, steps):
            axis = ctx.normalize_axis(int(axis), rank)
            if axis in seen:
                raise Unsupported(node, "slice_axes", f"axis {axis} is repeated in Slice's axes")
            seen.add(axis)
            if step == 0:
                raise Unsupported(node, "slice_step", "Slice step 0 is invalid")
            dim = shape[axis]
            first, last = onnx_slice_bounds(int(start), int(stop), int(step), dim)
            if _slice_length(first, last, int(step)) == 0:
                raise Unsupported(node, "empty_tensor", f"Slice gives an empty result on axis {axis}",
                                  "remove the empty branch from the model")
            begin[axis], strides[axis] = first, int(step)
            end[axis] = last if last >= 0 else -(dim + 1)
        add_slice(ctx, x, node.output[0], begin, end, strides)

    @staticmethod
    def _onnx_arguments(node, ctx, rank: int) -> tuple[list[int], list[int], list[int], list[int]]:
        if ctx.opset < 10:
            starts, ends = ctx.attr(node, "starts"), ctx.attr(node, "ends")
            axes = ctx.attr(node, "axes", list(range(len(starts))))
            return list(starts), list(ends), list(axes), [1] * len(starts)
        starts = [int(v) for v in ctx.require_constant(node, 1, "starts", sets_shape=True).reshape(-1)]
        ends = [int(v) for v in ctx.require_constant(node, 2, "ends", sets_shape=True).reshape(-1)]
        optional = []
        for index, what, default in ((3, "axes", range(len(starts))), (4, "steps", [1] * len(starts))):
            if len(node.input) > index and node.input[index]:
                optional.append([int(v) for v in ctx.require_constant(node, index, what, sets_shape=True)
                                 .reshape(-1)])
            else:
                optional.append(list(default))
        axes, steps = optional
        if not len(starts) == len(ends) == len(axes) == len(steps):
            raise Unsupported(node, "slice_arguments", "Slice starts/ends/axes/steps differ in length")
        return starts, ends, axes, steps

    def reference(self, x, begin, end, strides):
        index = []
        for dim, b, e, s in zip(x.shape, begin, end, strides):
            b, e = _tflite_bounds(int(b), int(e), int(s), dim)
            if b < 0:  # backward slice starting before index 0: empty
                index.append(slice(0, 0))
            else:
                index.append(slice(b, e if e >= 0 else None, int(s)))
        return (np.ascontiguousarray(x[tuple(index)]),)

    def options(self, attrs) -> StridedSliceOptionsT:
        return StridedSliceOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        if graph.tensors[op.inputs[0]].rank > 4:
            return 4
        return quantized_version(graph, op, int16=1)  # op_version.cc names no int16 case
