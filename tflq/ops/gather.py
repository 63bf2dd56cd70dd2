"""GATHER: ONNX Gather with constant indices (a scalar index removes the axis) or run-time indices;\nONNX GridSample, lowered to GATHERs of the sampled pixels (grid_sample.py)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.GatherOptions import GatherOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import WITH_INT16, AxisSensitive, Case, OpSpec, SameAsInput, rand
from tflq.ops.checks import Arity, Axis
from tflq.ops.common import quantized_version
from tflq.ops.grid_sample import grid_sample_case, import_grid_sample
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


# ops whose output holds its input's values (so an index is the graph input's value)
SAME_VALUES = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "CAST"})


def bound_input_indices(graph: Graph, indices: str, low: int, high: int, what: str) -> None:
    """Record that the graph input whose values tensor `indices` holds (through reshapes and
    integer casts) may only hold values in [low, high] (Graph.index_bounds), where ONNX defines
    the op that reads them: the tightest bound where several ops read one input."""
    name = indices
    for _ in range(len(graph.ops) + 1):
        if name in graph.inputs:
            break
        producer = graph.producer(name)
        if producer is None or producer.kind not in SAME_VALUES or \
                not all(graph.tensors[n].dtype in (DType.INT32, DType.INT64) for n in (producer.inputs[0], name)):
            return
        name = producer.inputs[0]
    else:
        return
    known = graph.index_bounds.get(name)
    if known is None or high - low < known[1] - known[0]:
        graph.index_bounds[name] = (low, high, what)


def _gather_case(name: str, shape, indices, axis: int) -> Case:
    return Case(name, [helper.make_node("Gather", ["x", "i"], ["y"], axis=axis)], {"x": rand(*shape)},
                {"i": np.array(indices, np.int64)})


@register
class Gather(OpSpec):
    """ONNX Gather. Indices of rank >= 2 are gathered flat, then RESHAPEd, so the GATHER itself
    never changes the rank beyond dropping the axis (what the layout pass can follow in NHWC)."""

    kind = "GATHER"
    onnx_types = ("Gather", "GridSample")
    onnx_checks = (Arity(inputs=(2, 2)), Axis(name="axis"))
    Attrs = GatherAttrs
    layout = AxisSensitive(attrs=("axis",))
    quant = SameAsInput(dtypes=WITH_INT16, moves_values=True)
    cases = [
        _gather_case("channels_nchw", (1, 5, 3, 4), [4, 0, 2], axis=1),
        _gather_case("scalar_channel", (1, 5, 3, 4), 3, axis=1),
        _gather_case("scalar_rank2_negative", (4, 6), -2, axis=0),
        _gather_case("rows_negative_indices", (2, 6, 3), [-1, 0, 2, -1], axis=1),
        _gather_case("indices_2d", (5, 4), [[0, 1], [4, 3], [2, 2]], axis=0),
        _gather_case("scalar_height", (1, 3, 5, 4), 2, axis=2),
        Case("embedding_int64_ids", [helper.make_node("Gather", ["table", "ids"], ["y"])],
             {"ids": np.array([[3, 0, 9, 3, -1, -10]], np.int64)}, {"table": rand(10, 8)}),
        Case("int32_ids_axis1", [helper.make_node("Gather", ["x", "i"], ["y"], axis=1)],
             {"x": rand(2, 5, 3), "i": np.array([4, -5, 0, 2], np.int32)}),
        Case("scalar_runtime_index", [helper.make_node("Gather", ["x", "i"], ["y"])],
             {"x": rand(6, 4), "i": np.array(-2, np.int64)}),
        Case("nchw_channels_runtime_2d", [helper.make_node("Gather", ["x", "i"], ["y"], axis=1)],
             {"x": rand(1, 5, 3, 4), "i": np.array([[4, 0], [-1, 2]], np.int64)}),
        Case("int64_table", [helper.make_node("Gather", ["t", "i"], ["y"])],
             {"i": np.array([[1, 1, 0]], np.int64)}, {"t": np.array([[7, 8], [9, 10]], np.int64)},
             quantize=False),
        grid_sample_case("bilinear_zeros", (1, 3, 5, 6), (1, 4, 7, 2)),
        grid_sample_case("bilinear_zeros_align_batch2", (2, 2, 4, 5), (2, 3, 3, 2), align_corners=1),
        grid_sample_case("bilinear_border", (1, 2, 5, 4), (1, 6, 3, 2), padding_mode="border"),
        grid_sample_case("bilinear_reflection", (1, 2, 5, 6), (1, 4, 4, 2), spread=2.5,
                         padding_mode="reflection"),
        grid_sample_case("bilinear_reflection_align", (1, 2, 4, 5), (1, 4, 4, 2), spread=2.5,
                         padding_mode="reflection", align_corners=1),
        grid_sample_case("nearest_zeros", (1, 3, 5, 6), (1, 4, 5, 2), mode="nearest"),
        grid_sample_case("nearest_border_align", (1, 2, 6, 5), (1, 3, 4, 2), mode="nearest",
                         padding_mode="border", align_corners=1),
        grid_sample_case("linear_opset20", (1, 2, 4, 4), (1, 3, 3, 2), mode="linear", opset=20),
    ]

    def from_onnx(self, node, ctx) -> None:
        if node.op_type == "GridSample":
            return import_grid_sample(node, ctx)
        x, out = node.input[0], node.output[0]
        shape = ctx.shape(x)
        axis = ctx.normalize_axis(int(ctx.attr(node, "axis", 0)), len(shape))
        if ctx.constant(node.input[1]) is None:
            return self._runtime_indices(node, ctx, axis)
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

    @staticmethod
    def _runtime_indices(node, ctx, axis: int) -> None:
        """Indices computed at run time (token ids into an embedding table). ONNX counts negative
        indices from the end; LiteRT's GATHER refuses them, so FLOOR_MOD by the axis length maps
        [-dim, dim) onto [0, dim) first. Indices of rank >= 2 next to a rank-4 tensor are gathered
        flat and RESHAPEd, so the GATHER never holds a tensor the layout pass turns NHWC with a
        different rank; otherwise TFLite's GATHER takes them as they are."""
        x, out = node.input[0], node.output[0]
        indices = ctx.tensor(node.input[1])
        index_t = ctx.graph.tensors[indices]
        if index_t.dtype not in (DType.INT32, DType.INT64):
            raise Unsupported(node, "gather_index_type", f"Gather indices of type {index_t.dtype.name.lower()}")
        dim = ctx.shape(x)[axis]
        bound_input_indices(ctx.graph, indices, -dim, dim - 1, f"node '{node.name}' (Gather) indexes "
                            f"{dim} entries on axis {axis}")
        wrapped = ctx.new_activation(f"{out}/indices_wrapped", index_t.shape, index_t.dtype)
        ctx.add_op("FLOOR_MOD", [indices, ctx.add_constant(f"{out}/axis_length",
                                                           np.array(dim, index_t.dtype.numpy))], [wrapped])
        ranks = (len(ctx.shape(x)), index_t.rank, len(ctx.shape(out)))
        if index_t.rank <= 1 or 4 not in ranks:
            ctx.add_op("GATHER", [x, wrapped], [out], GatherAttrs(axis=axis))
            return
        flat = ctx.new_activation(f"{out}/indices_flat", (index_t.size,), index_t.dtype)
        add_reshape(ctx, wrapped, flat, (index_t.size,))
        shape = ctx.shape(x)
        gathered = ctx.new_activation(f"{out}/gathered", shape[:axis] + (index_t.size,) + shape[axis + 1:],
                                      ctx.graph.tensors[ctx.tensor(x)].dtype)
        ctx.add_op("GATHER", [x, flat], [gathered], GatherAttrs(axis=axis))
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
        if graph.tensors[op.inputs[0]].dtype.name == "BOOL":
            return 3
        return quantized_version(graph, op)
