"""GATHER: ONNX Gather with constant indices (a scalar index removes the axis)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.GatherOptions import GatherOptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import AxisSensitive, Case, OpSpec, SameAsInput, rand
from tflq.ops.common import quantized_version
from tflq.ops.reshape import add_reshape


@dataclass(frozen=True)
class GatherAttrs:
    axis: int = 0  # the ONNX axis before the layout pass
    batch_dims: int = 0


def add_gather(ctx, x: str, out: str, indices: np.ndarray, axis: int) -> None:
    """GATHER `x` along ONNX `axis` with in-range, non-negative constant indices of rank <= 1."""
    assert indices.ndim <= 1 and indices.size and indices.min() >= 0, "caller normalises indices"
    name = ctx.add_constant(f"{out}/indices", indices.astype(np.int32))
    ctx.add_op("GATHER", [x, name], [out], GatherAttrs(axis=axis))


def _gather_case(name: str, shape, indices, axis: int) -> Case:
    return Case(name, [helper.make_node("Gather", ["x", "i"], ["y"], axis=axis)], {"x": rand(*shape)},
                {"i": np.array(indices, np.int64)})


@register
class Gather(OpSpec):
    """ONNX Gather. Indices of rank >= 2 are gathered flat, then RESHAPEd, so the GATHER itself
    never changes the rank beyond dropping the axis (what the layout pass can follow in NHWC)."""

    kind = "GATHER"
    onnx_types = ("Gather",)
    Attrs = GatherAttrs
    layout = AxisSensitive(attrs=("axis",))
    quant = SameAsInput()
    cases = [
        _gather_case("channels_nchw", (1, 5, 3, 4), [4, 0, 2], axis=1),
        _gather_case("scalar_channel", (1, 5, 3, 4), 3, axis=1),
        _gather_case("scalar_rank2_negative", (4, 6), -2, axis=0),
        _gather_case("rows_negative_indices", (2, 6, 3), [-1, 0, 2, -1], axis=1),
        _gather_case("indices_2d", (5, 4), [[0, 1], [4, 3], [2, 2]], axis=0),
        _gather_case("scalar_height", (1, 3, 5, 4), 2, axis=2),
    ]

    def from_onnx(self, node, ctx) -> None:
        x, out = node.input[0], node.output[0]
        shape = ctx.shape(x)
        axis = ctx.normalize_axis(int(ctx.attr(node, "axis", 0)), len(shape))
        indices = ctx.require_constant(node, 1, "indices").astype(np.int64)
        dim = shape[axis]
        if indices.size == 0:
            raise Unsupported(node, "empty_tensor", "Gather with no indices gives an empty tensor")
        if indices.min() < -dim or indices.max() >= dim:
            raise Unsupported(node, "gather_index_range",
                              f"Gather indices outside [-{dim}, {dim - 1}] on axis {axis}")
        indices = np.where(indices < 0, indices + dim, indices)
        if indices.ndim <= 1:
            add_gather(ctx, x, out, indices, axis)
            return
        flat = indices.reshape(-1)
        flat_shape = shape[:axis] + (flat.size,) + shape[axis + 1:]
        gathered = ctx.new_activation(f"{out}/gathered", flat_shape, ctx.graph.tensors[ctx.tensor(x)].dtype)
        add_gather(ctx, x, gathered, flat, axis)
        add_reshape(ctx, gathered, out, ctx.shape(out))

    def reference(self, x, indices, *, axis: int, batch_dims: int):
        assert batch_dims == 0, "tflq emits batch_dims 0 only"
        return (np.ascontiguousarray(np.take(x, indices.astype(np.int64), axis=axis)),)

    def options(self, attrs: GatherAttrs) -> GatherOptionsT:
        return GatherOptionsT(axis=attrs.axis, batchDims=attrs.batch_dims)

    def version(self, op: Op, graph: Graph) -> int:
        if op.attrs.batch_dims != 0:
            return 5
        if graph.tensors[op.inputs[0]].dtype.name == "INT16":
            return 4
        return quantized_version(graph, op)
