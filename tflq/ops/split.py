"""SPLIT (equal parts) and SPLIT_V (given sizes): ONNX Split along one axis."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.SplitOptions import SplitOptionsT
from tflq._generated.tflite.SplitVOptions import SplitVOptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import WITH_INT16, AxisSensitive, Case, OpSpec, SameAsInput, rand
from tflq.ops.checks import Axis
from tflq.ops.common import quantized_version


@dataclass(frozen=True)
class SplitAttrs:
    num_splits: int = 1


def _split_sizes(node, ctx, dim: int) -> list[int]:
    """The ONNX part sizes: from `split` (attribute before opset 13, input after) or equal parts."""
    if ctx.opset < 13:
        split = ctx.attr(node, "split")
    elif len(node.input) > 1 and node.input[1]:
        split = ctx.require_constant(node, 1, "split").reshape(-1).tolist()
    else:
        split = None
    if split is not None:
        sizes = [int(s) for s in split]
        if sum(sizes) != dim or len(sizes) != len(node.output):
            raise Unsupported(node, "split_sizes", f"Split sizes {sizes} do not fit dimension {dim} "
                                                   f"and {len(node.output)} outputs")
        return sizes
    parts = int(ctx.attr(node, "num_outputs", len(node.output)))
    if parts != len(node.output):
        raise Unsupported(node, "split_sizes", f"num_outputs={parts} but {len(node.output)} outputs")
    chunk = -(-dim // parts)  # opset 18: the last part may be smaller
    return [chunk] * (parts - 1) + [dim - chunk * (parts - 1)]


def _split_case(name: str, shape, outputs: int, axis: int, split=None, opset: int = 17,
                **attrs) -> Case:
    names = tuple(f"y{k}" for k in range(outputs))
    inputs, consts = ["x"], {}
    if split is not None and opset >= 13:
        inputs.append("split")
        consts["split"] = np.array(split, np.int64)
    elif split is not None:
        attrs["split"] = list(split)
    node = helper.make_node("Split", inputs, list(names), axis=axis, **attrs)
    return Case(name, [node], {"x": rand(*shape)}, consts, outputs=names, opset=opset)


@register
class Split(OpSpec):
    """ONNX Split; unequal parts go to SPLIT_V. TFLite's inputs are (axis, data): axis first."""

    kind = "SPLIT"
    onnx_types = ("Split",)
    onnx_checks = (Axis(name="axis"),)
    Attrs = SplitAttrs
    layout = AxisSensitive(axis_inputs=(0,))
    quant = SameAsInput(dtypes=WITH_INT16, index=1)
    cases = [
        _split_case("channels_equal", (1, 6, 4, 4), 3, axis=1),
        _split_case("rank2_last_axis", (4, 6), 2, axis=-1),
        _split_case("width_equal_sizes_input", (1, 2, 3, 8), 2, axis=3, split=[4, 4]),
    ]

    def from_onnx(self, node, ctx) -> None:
        x = node.input[0]
        shape = ctx.shape(x)
        axis = ctx.normalize_axis(int(ctx.attr(node, "axis", 0)), len(shape))
        sizes = _split_sizes(node, ctx, shape[axis])
        if min(sizes) <= 0:
            raise Unsupported(node, "empty_tensor", f"Split sizes {sizes} give an empty output")
        axis_name = ctx.add_constant(f"{node.name}/axis", np.array(axis, np.int32))
        outputs = list(node.output)
        if len(set(sizes)) == 1:
            ctx.add_op("SPLIT", [axis_name, x], outputs, SplitAttrs(num_splits=len(sizes)))
        else:
            sizes_name = ctx.add_constant(f"{node.name}/size_splits", np.array(sizes, np.int32))
            ctx.add_op("SPLIT_V", [x, sizes_name, axis_name], outputs,
                       SplitAttrs(num_splits=len(sizes)))

    def reference(self, axis, x, *, num_splits: int):
        return tuple(np.split(x, num_splits, axis=int(axis)))

    def options(self, attrs: SplitAttrs) -> SplitOptionsT:
        return SplitOptionsT(numSplits=attrs.num_splits)

    def version(self, op: Op, graph: Graph) -> int:
        data = graph.tensors[op.inputs[1]].dtype.name
        if data == "INT16":
            return 4
        if data == "INT32":
            return 3
        return quantized_version(graph, op, index=1)


@register
class SplitV(OpSpec):
    """Emitted by Split's importer for unequal parts; inputs (data, size_splits, axis)."""

    kind = "SPLIT_V"
    Attrs = SplitAttrs
    layout = AxisSensitive(axis_inputs=(2,))
    quant = SameAsInput(dtypes=WITH_INT16, index=0)
    cases = [
        _split_case("channels_sizes_input", (1, 7, 3, 3), 3, axis=1, split=[2, 4, 1]),
        _split_case("height_sizes_attr_opset11", (1, 2, 5, 3), 2, axis=2, split=[3, 2], opset=11),
        _split_case("num_outputs_uneven_opset18", (2, 7), 3, axis=1, opset=18, num_outputs=3),
    ]

    def reference(self, x, size_splits, axis, *, num_splits: int):
        return tuple(np.split(x, np.cumsum(size_splits.astype(np.int64))[:-1], axis=int(axis)))

    def options(self, attrs: SplitAttrs) -> SplitVOptionsT:
        return SplitVOptionsT(numSplits=attrs.num_splits)

    def version(self, op: Op, graph: Graph) -> int:
        return quantized_version(graph, op)
