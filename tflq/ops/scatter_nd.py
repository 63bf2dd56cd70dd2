"""SCATTER_ND: ONNX ScatterND (every reduction) as TFLite's scatter into zeros plus a select."""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq._generated.tflite.ScatterNdOptions import ScatterNdOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ops import register
from tflq.ops.base import Case, FloatOnly, LayoutBreaking, OpSpec, rand
from tflq.ops.cast import add_cast
from tflq.ops.gather import add_gather
from tflq.ops.gather_nd import wrap_indices
from tflq.ops.reshape import add_reshape

UPDATE_TYPES = (DType.FLOAT32, DType.INT32, DType.INT64, DType.INT8, DType.UINT8)


@register
class ScatterNd(OpSpec):
    """ONNX ScatterND. TFLite's SCATTER_ND(indices, updates, shape) writes the updates into a
    zero tensor (summing duplicates), so reduction 'none' is SELECT_V2(written, scattered, data)
    where `written` marks the slices an index names (a constant for constant indices, else a
    second SCATTER_ND of ones compared with 0), 'add' is data + scattered, and mul/max/min
    combine round by round (_scatter_combining). Indices are int32
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
        Case("mul_duplicates_const", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="mul")],
             {"x": rand(4, 3), "u": rand(3, 3, seed=5)}, {"i": np.array([[1], [3], [1]], np.int64)}, opset=16),
        Case("max_runtime_indices", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="max")],
             {"x": rand(5, 2), "i": np.array([[4], [0], [4], [-1]], np.int64), "u": rand(4, 2, seed=6)},
             opset=16),
        Case("min_points", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="min")],
             {"x": rand(3, 4), "u": rand(2, seed=7)}, {"i": np.array([[0, 1], [2, -1]], np.int64)}, opset=18),
        Case("max_int64_data", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="max")],
             {"x": np.arange(6, dtype=np.int64).reshape(2, 3), "i": np.array([[1, 0], [0, 2]], np.int64),
              "u": np.array([7, -7], np.int64)}, opset=16),
        Case("int64_data", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"])],
             {"x": np.arange(6, dtype=np.int64).reshape(2, 3), "i": np.array([[1, 0]], np.int64),
              "u": np.array([-7], np.int64)}),
    ]

    def from_onnx(self, node, ctx) -> None:
        data, indices, updates = node.input[:3]
        out = node.output[0]
        reduction = ctx.attr(node, "reduction", "none")
        if reduction not in ("none", "add") + tuple(COMBINE):
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
        if reduction in COMBINE:
            _scatter_combining(ctx, node, data, wrapped, updates, COMBINE[reduction])
            return
        scattered = _scatter(ctx, wrapped, updates, shape, dtype, f"{out}/scattered")
        if reduction == "add":
            ctx.add_op("ADD", [data, scattered], [out])
            return
        ctx.add_op("SELECT_V2", [_written(ctx, wrapped, shape, out), scattered, data], [out])

    def reference(self, indices, updates, shape):
        result = np.zeros(tuple(int(d) for d in shape), updates.dtype)
        idx = indices.astype(np.int64)
        np.add.at(result, tuple(np.moveaxis(idx, -1, 0)), updates)
        return (result,)

    def options(self, attrs) -> ScatterNdOptionsT:
        return ScatterNdOptionsT()


# ONNX reductions that combine an update with what is already there, and the op that does it.
COMBINE = {"mul": "MUL", "max": "MAXIMUM", "min": "MINIMUM"}
# Run-time indices may repeat, so a combining ScatterND takes one round per index row.
MAX_SCATTER_ROUNDS = 64


def _scatter(ctx, indices: str, updates: str, shape, dtype: DType, base: str) -> str:
    """SCATTER_ND of `updates` into zeros of `shape` (duplicates summed)."""
    scattered = ctx.new_activation(base, tuple(shape), dtype)
    ctx.add_op("SCATTER_ND", [indices, updates, ctx.add_constant(f"{base}/shape", np.array(shape, np.int32))],
               [scattered])
    return scattered


def _written(ctx, indices: str, shape, base: str) -> str:
    """A bool mask, broadcastable to `shape`, of the slices that an index row names: a constant
    for constant indices, else a SCATTER_ND of ones compared with 0."""
    index_shape = ctx.graph.tensors[indices].shape
    depth = index_shape[-1]
    mask_shape = tuple(shape[:depth]) + (1,) * (len(shape) - depth)
    if ctx.graph.is_constant(indices):
        written = np.zeros(shape[:depth], bool)
        written[tuple(np.moveaxis(ctx.graph.tensors[indices].data.astype(np.int64), -1, 0))] = True
        return ctx.add_constant(f"{base}/written", written.reshape(mask_shape))
    counts = _scatter(ctx, indices, ctx.add_constant(f"{base}/ones", np.ones(index_shape[:-1], np.int32)),
                      shape[:depth], DType.INT32, f"{base}/written_count")
    flat_mask = ctx.new_activation(f"{base}/written_flat", tuple(shape[:depth]), DType.BOOL)
    ctx.add_op("NOT_EQUAL", [counts, ctx.add_constant(f"{base}/zero", np.zeros((), np.int32))], [flat_mask])
    mask = ctx.new_activation(f"{base}/written", mask_shape, DType.BOOL)
    add_reshape(ctx, flat_mask, mask, mask_shape)
    return mask


def _rounds(ctx, indices: str) -> list[list[int]]:
    """Index rows grouped so that no round names a slice twice: constant indices by occurrence
    (one round unless they repeat), run-time ones one row per round."""
    index_shape = ctx.graph.tensors[indices].shape
    count = int(np.prod(index_shape[:-1]))
    if not ctx.graph.is_constant(indices):
        return [[row] for row in range(count)]
    rows = ctx.graph.tensors[indices].data.reshape(count, index_shape[-1])
    seen: dict[tuple, int] = {}
    rounds: list[list[int]] = []
    for row, key in enumerate(map(tuple, rows.tolist())):
        occurrence = seen[key] = seen.get(key, -1) + 1
        if occurrence == len(rounds):
            rounds.append([])
        rounds[occurrence].append(row)
    return rounds


def _scatter_combining(ctx, node, data: str, indices: str, updates: str, kind: str) -> None:
    """ScatterND with reduction mul/max/min: per round (see _rounds), the round's updates are
    scattered into zeros, combined with the running result by `kind`, and selected where the
    round writes: out = SELECT_V2(written, kind(out, scattered), out). Duplicates thus combine
    one after another, in index order, as onnxruntime does."""
    out = node.output[0]
    shape = ctx.shape(data)
    dtype = ctx.graph.tensors[ctx.tensor(data)].dtype
    index_shape = ctx.graph.tensors[indices].shape
    depth, count = index_shape[-1], int(np.prod(index_shape[:-1]))
    rounds = _rounds(ctx, indices)
    if len(rounds) > MAX_SCATTER_ROUNDS:
        raise Unsupported(node, "scatter_reduction_rounds",
                          f"ScatterND reduction '{ctx.attr(node, 'reduction')}' with {len(rounds)} run-time "
                          f"index rows (at most {MAX_SCATTER_ROUNDS}: one round of ops per row)")
    update_slice = tuple(shape[depth:])
    flat_indices = flat_updates = None
    if len(rounds) > 1:
        flat_indices = ctx.new_activation(f"{out}/indices_rows", (count, depth), DType.INT32)
        add_reshape(ctx, indices, flat_indices, (count, depth))
        flat_updates = ctx.new_activation(f"{out}/update_rows", (count,) + update_slice, dtype)
        add_reshape(ctx, updates, flat_updates, (count,) + update_slice)
    current = data
    for number, rows in enumerate(rounds):
        base = f"{out}/round{number}"
        if flat_indices is None:
            round_indices, round_updates = indices, updates
        else:
            round_indices = ctx.new_activation(f"{base}/indices", (len(rows), depth), DType.INT32)
            add_gather(ctx, flat_indices, round_indices, np.array(rows), 0)
            round_updates = ctx.new_activation(f"{base}/updates", (len(rows),) + update_slice, dtype)
            add_gather(ctx, flat_updates, round_updates, np.array(rows), 0)
        scattered = _scatter(ctx, round_indices, round_updates, shape, dtype, f"{base}/scattered")
        combined = ctx.new_activation(f"{base}/combined", tuple(shape), dtype)
        ctx.add_op(kind, [current, scattered], [combined])
        result = out if number == len(rounds) - 1 else ctx.new_activation(f"{base}/result", tuple(shape), dtype)
        ctx.add_op("SELECT_V2", [_written(ctx, round_indices, shape, base), combined, current], [result])
        current = result
