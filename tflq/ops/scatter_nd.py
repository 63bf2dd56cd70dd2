"""SCATTER_ND: ONNX ScatterND and ScatterElements (every reduction) as TFLite's scatter into zeros plus a select."""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq._generated.tflite.ScatterNdOptions import ScatterNdOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ops import register
from tflq.ops.base import Case, LayoutBreaking, OpSpec, SameAsInput, rand
from tflq.ops.cast import add_cast
from tflq.ops.concat import ConcatenationAttrs
from tflq.ops.gather import add_gather
from tflq.ops.gather_nd import wrap_indices
from tflq.ops.reshape import add_reshape

UPDATE_TYPES = (DType.FLOAT32, DType.INT32, DType.INT64, DType.INT8, DType.UINT8)


def _elements_case(name: str, inputs: dict, consts: dict | None = None, axis: int = 0,
                   reduction: str = "none") -> Case:
    attrs = {"axis": axis} if reduction == "none" else {"axis": axis, "reduction": reduction}
    return Case(name, [helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], **attrs)], inputs,
                consts or {}, opset=18 if reduction in ("max", "min") else 16,
                quantize=inputs["x"].dtype == np.float32 and reduction != "add")


@register
class ScatterNd(OpSpec):
    """ONNX ScatterND. TFLite's SCATTER_ND(indices, updates, shape) writes the updates into a
    zero tensor (summing duplicates), so reduction 'none' is SELECT_V2(written, scattered, data)
    where `written` marks the slices an index names (a constant for constant indices, else a
    second SCATTER_ND of ones compared with 0), 'add' is data + scattered, and mul/max/min
    combine round by round (_scatter_rounds). Indices are int32
    (the shape operand has their type); ONNX's negative indices are wrapped first. Constant
    indices that repeat with reduction 'none' (which ONNX leaves undefined) keep the last
    update, as onnxruntime does.
    ScatterElements is a ScatterND whose index rows are each update element's coordinate with the
    axis one replaced by its index (see _scatter_elements).
    Quantized, the scattered updates keep their grid (SameAsInput of the updates) and SCATTER_ND
    runs on their integers where the select reads only the written positions: the zeros it starts
    from are raw integers, not the grid's zero point, so a SCATTER_ND whose zeros are read (the
    ADD of reduction 'add') stays float (Op.float_reason, ZEROS_READ). LiteRT's scatter_nd.cc
    takes int8 and uint8 updates."""

    kind = "SCATTER_ND"
    onnx_types = ("ScatterND", "ScatterElements")
    layout = LayoutBreaking()
    quant = SameAsInput(index=1)
    cases = [
        Case("rows_runtime_indices", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"])],
             {"x": rand(5, 3), "i": np.array([[4], [-5], [2]], np.int64), "u": rand(3, 3, seed=1)}),
        Case("points_const_indices", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"])],
             {"x": rand(3, 4), "u": rand(2, seed=2)}, {"i": np.array([[0, 1], [2, -1]], np.int64)}),
        Case("kv_cache_slot", [helper.make_node("ScatterND", ["cache", "i", "u"], ["y"])],
             {"cache": rand(1, 2, 6, 4), "u": rand(1, 2, 1, 4, seed=3)},
             {"i": np.array([[[[0, 0, 3], [0, 1, 3]]]], np.int64).reshape(1, 2, 1, 3)}),
        Case("add_duplicates", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="add")],
             {"x": rand(4, 2), "i": np.array([[1], [1], [3]], np.int64), "u": rand(3, 2, seed=4)}, opset=16,
             quantize=False),  # (ZEROS_READ: float in every mode)
        Case("mul_duplicates_const", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="mul")],
             {"x": rand(4, 3), "u": rand(3, 3, seed=5)}, {"i": np.array([[1], [3], [1]], np.int64)}, opset=16),
        Case("max_runtime_indices", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="max")],
             {"x": rand(5, 2), "i": np.array([[4], [0], [4], [-1]], np.int64), "u": rand(4, 2, seed=6)},
             opset=16),
        Case("min_points", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="min")],
             {"x": rand(3, 4), "u": rand(2, seed=7)}, {"i": np.array([[0, 1], [2, -1]], np.int64)}, opset=18),
        Case("max_int64_data", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="max")],
             {"x": np.arange(6, dtype=np.int64).reshape(2, 3), "i": np.array([[1, 0], [0, 2]], np.int64),
              "u": np.array([7, -7], np.int64)}, opset=16, quantize=False),
        Case("int64_data", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"])],
             {"x": np.arange(6, dtype=np.int64).reshape(2, 3), "i": np.array([[1, 0]], np.int64),
              "u": np.array([-7], np.int64)}, quantize=False),
        Case("none_duplicates_const_last_wins", [helper.make_node("ScatterND", ["x", "i", "u"], ["y"])],
             {"x": rand(4, 2), "u": rand(3, 2, seed=8)}, {"i": np.array([[1], [3], [1]], np.int64)}),
        _elements_case("elements_one_hot_runtime", {"x": rand(3, 5, seed=16),
                                                    "i": np.array([[4], [0], [-2]], np.int64),
                                                    "u": np.ones((3, 1), np.float32)}, axis=1),
        _elements_case("elements_runtime_repeats_last_wins",
                       {"x": rand(2, 4), "i": np.array([[1, 1, 3], [0, 2, 0]], np.int64),
                        "u": rand(2, 3, seed=9)}, axis=1),
        _elements_case("elements_const_repeats_last_wins", {"x": rand(3, 2), "u": rand(2, 2, seed=10)},
                       {"i": np.array([[2, 0], [2, -3]], np.int64)}, axis=0),
        _elements_case("elements_add_runtime", {"x": rand(2, 4), "i": np.array([[1, 1, 3], [0, 2, 0]], np.int32),
                                                "u": rand(2, 3, seed=11)}, axis=-1, reduction="add"),  # (float)
        _elements_case("elements_mul_const", {"x": rand(2, 4), "u": rand(2, 3, seed=12)},
                       {"i": np.array([[1, 1, 3], [0, 2, 0]], np.int64)}, axis=1, reduction="mul"),
        _elements_case("elements_max_runtime", {"x": rand(4, 3), "i": np.array([[3, 0, 0], [3, 1, 0]], np.int64),
                                                "u": rand(2, 3, seed=13)}, axis=0, reduction="max"),
        _elements_case("elements_min_const", {"x": rand(4, 3), "u": rand(2, 3, seed=14)},
                       {"i": np.array([[3, 0, 0], [-1, 1, 0]], np.int64)}, axis=0, reduction="min"),
        Case("elements_nchw_channels", [helper.make_node("Relu", ["x"], ["r"]),
                                        helper.make_node("ScatterElements", ["r", "i", "u"], ["y"], axis=1)],
             {"x": rand(1, 3, 2, 2), "i": np.array([[[[2, 0], [1, 1]]]], np.int64),
              "u": rand(1, 1, 2, 2, seed=15)}),
        _elements_case("elements_int64_data", {"x": np.arange(6, dtype=np.int64).reshape(2, 3),
                                               "i": np.array([[2], [0]], np.int64),
                                               "u": np.array([[-7], [9]], np.int64)}, axis=1),
    ]

    def from_onnx(self, node, ctx) -> None:
        data, indices, updates = node.input[:3]
        out = node.output[0]
        reduction = ctx.attr(node, "reduction", "none")
        if reduction not in ("none", "add") + tuple(COMBINE):
            raise Unsupported(node, "scatter_reduction", f"{node.op_type} with reduction '{reduction}'")
        shape = ctx.shape(data)
        dtype = ctx.graph.tensors[ctx.tensor(data)].dtype
        if dtype not in UPDATE_TYPES:
            raise Unsupported(node, "scatter_type", f"{node.op_type} of {dtype.name.lower()}")
        if node.op_type == "ScatterElements":
            wrapped, axis_rounds = _scatter_elements(ctx, node, shape)
        else:
            index_shape = ctx.shape(indices)
            wrapped = _int32(ctx, wrap_indices(ctx, node, indices, shape[:index_shape[-1]], out), out)
            axis_rounds = None
        if reduction == "add":  # SCATTER_ND sums repeated indices: one scatter
            scattered = _scatter(ctx, wrapped, updates, shape, dtype, f"{out}/scattered", ZEROS_READ)
            ctx.add_op("ADD", [data, scattered], [out])
            return
        _scatter_rounds(ctx, node, data, wrapped, updates, COMBINE.get(reduction), axis_rounds)

    def written_once(self, op, graph) -> int | None:
        index = graph.tensors[op.inputs[0]]
        if not index.is_constant:
            return None
        rows = index.data.reshape(-1, index.data.shape[-1])
        return 1 if len(np.unique(rows, axis=0)) == len(rows) else None

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


# Why a SCATTER_ND whose zeros are read stays float in every mode.
ZEROS_READ = "the zeros SCATTER_ND starts from are raw integers, not the data's zero point"


def _scatter(ctx, indices: str, updates: str, shape, dtype: DType, base: str, float_reason: str = "") -> str:
    """SCATTER_ND of `updates` into zeros of `shape` (duplicates summed); `float_reason`: why it
    stays float (ZEROS_READ when the positions no index names are read)."""
    scattered = ctx.new_activation(base, tuple(shape), dtype)
    op = ctx.add_op("SCATTER_ND", [indices, updates, ctx.add_constant(f"{base}/shape", np.array(shape, np.int32))],
                    [scattered])
    if op is not None:
        op.float_reason = float_reason
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


def _int32(ctx, indices: str, out: str) -> str:
    """`indices` as int32 (SCATTER_ND's shape operand has the indices' type; ours is int32)."""
    t = ctx.graph.tensors[indices]
    if t.dtype == DType.INT32:
        return indices
    narrowed = ctx.new_activation(f"{out}/indices_int32", t.shape, DType.INT32)
    add_cast(ctx, indices, narrowed, DType.INT32)
    return narrowed


def _scatter_elements(ctx, node, shape) -> tuple[str, list[list[int]] | None]:
    """ONNX ScatterElements: out[j] = updates[i] where j is i with its axis coordinate replaced by
    indices[i]. Its ScatterND index rows are those coordinates: constant grids for the other axes,
    the (wrapped) indices for the axis, concatenated along a new last axis (as GatherElements'
    GATHER_ND). Two elements can only name the same position if they differ along the axis alone,
    so with run-time indices the elements of one axis coordinate form a round that repeats none
    (the rounds, in axis order, are also onnxruntime's order); constant indices need no rounds."""
    data, indices, updates = node.input[:3]
    out = node.output[0]
    axis = ctx.normalize_axis(int(ctx.attr(node, "axis", 0)), len(shape))
    index_shape = tuple(ctx.shape(indices))
    if index_shape != tuple(ctx.shape(updates)) or len(index_shape) != len(shape):
        raise Unsupported(node, "scatter_shape", f"indices {list(index_shape)} and updates "
                          f"{list(ctx.shape(updates))} must have one shape, of the data's rank {len(shape)}")
    wrapped = _int32(ctx, wrap_indices(ctx, node, indices, shape[axis], out), out)
    grids = np.indices(index_shape).astype(np.int32)
    columns = []
    for d in range(len(shape)):
        if d == axis:
            column = ctx.new_activation(f"{out}/axis_column", index_shape + (1,), DType.INT32)
            add_reshape(ctx, wrapped, column, index_shape + (1,))
        else:
            column = ctx.add_constant(f"{out}/grid{d}", grids[d][..., None])
        columns.append(column)
    coordinates = ctx.new_activation(f"{out}/coordinates", index_shape + (len(shape),), DType.INT32)
    ctx.add_op("CONCATENATION", columns, [coordinates], ConcatenationAttrs(axis=len(index_shape)))
    if ctx.graph.is_constant(coordinates) or index_shape[axis] == 1:
        return coordinates, None
    positions = grids[axis].reshape(-1)
    return coordinates, [np.flatnonzero(positions == k).tolist() for k in range(index_shape[axis])]


def _rounds(ctx, indices: str, overwrite: bool) -> list[list[int]]:
    """Index rows grouped so that no round names a slice twice: constant indices by occurrence
    (one round unless they repeat; to overwrite, only each slice's last row, as onnxruntime's
    last update wins), run-time ones one row per round, or all in one to overwrite (ONNX
    leaves repeated indices undefined there)."""
    index_shape = ctx.graph.tensors[indices].shape
    count = int(np.prod(index_shape[:-1]))
    if not ctx.graph.is_constant(indices):
        return [list(range(count))] if overwrite else [[row] for row in range(count)]
    rows = ctx.graph.tensors[indices].data.reshape(count, index_shape[-1])
    keys = list(map(tuple, rows.tolist()))
    if overwrite:
        last = {key: row for row, key in enumerate(keys)}
        return [sorted(last.values())]
    seen: dict[tuple, int] = {}
    rounds: list[list[int]] = []
    for row, key in enumerate(keys):
        occurrence = seen[key] = seen.get(key, -1) + 1
        if occurrence == len(rounds):
            rounds.append([])
        rounds[occurrence].append(row)
    return rounds


def _scatter_rounds(ctx, node, data: str, indices: str, updates: str, kind: str | None,
                    rounds: list[list[int]] | None = None) -> None:
    """Per round (of `rounds`, else see _rounds), the round's updates are scattered into zeros,
    combined with the running result by `kind` (MUL, MAXIMUM, MINIMUM; None: replaced), and
    selected where the round writes: out = SELECT_V2(written, kind(out, scattered), out).
    Repeated indices thus combine (or overwrite) one after another, in index order, as
    onnxruntime does."""
    out = node.output[0]
    shape = ctx.shape(data)
    dtype = ctx.graph.tensors[ctx.tensor(data)].dtype
    index_shape = ctx.graph.tensors[indices].shape
    depth, count = index_shape[-1], int(np.prod(index_shape[:-1]))
    rounds = rounds if rounds is not None else _rounds(ctx, indices, overwrite=kind is None)
    if len(rounds) > MAX_SCATTER_ROUNDS:
        reduction = ctx.attr(node, "reduction", "none")
        raise Unsupported(node, "scatter_reduction_rounds",
                          f"{node.op_type} reduction '{reduction}' with run-time indices that may repeat "
                          f"needs {len(rounds)} rounds of ops (at most {MAX_SCATTER_ROUNDS})",
                          "make the indices constant, or use reduction 'add'")
    update_slice = tuple(shape[depth:])
    flat_indices = flat_updates = None
    if rounds != [list(range(count))]:
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
        combined = scattered
        if kind is not None:
            combined = ctx.new_activation(f"{base}/combined", tuple(shape), dtype)
            ctx.add_op(kind, [current, scattered], [combined])
        result = out if number == len(rounds) - 1 else ctx.new_activation(f"{base}/result", tuple(shape), dtype)
        ctx.add_op("SELECT_V2", [_written(ctx, round_indices, shape, base), combined, current], [result])
        current = result
