"""MEAN, SUM and REDUCE_MAX: ONNX ReduceMean/ReduceSum/ReduceMax and GlobalAveragePool/GlobalMaxPool."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.ReducerOptions import ReducerOptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import WITH_INT16, AxisSensitive, Calibrated, Case, OpSpec, SameAsInput, rand
from tflq.ops.one_d import import_as_2d, one_d_case


def _axes_in_input(op_type: str, opset: int) -> bool:
    """ReduceSum takes axes as an input from opset 13; ReduceMean/ReduceMax from opset 18."""
    return opset >= (13 if op_type == "ReduceSum" else 18)


@dataclass(frozen=True)
class ReducerAttrs:
    keep_dims: bool = False


def add_reduce(ctx, kind: str, x: str, axes: list[int], out: str, keep_dims: bool) -> None:
    """Reduce `x` over `axes` (ONNX axis numbers, non-negative) into `out`."""
    axes_name = ctx.add_constant(f"{out}/axes", np.array(sorted(axes), np.int32))
    ctx.add_op(kind, [x, axes_name], [out], ReducerAttrs(keep_dims=keep_dims))


def _reduce_case(name: str, op_type: str, shape=(1, 3, 5, 6), axes=None, opset: int = 17,
                 **attrs) -> Case:
    inputs, consts = ["x"], {}
    if axes is not None and _axes_in_input(op_type, opset):
        consts["axes"] = np.array(axes, np.int64)
        inputs.append("axes")
    elif axes is not None:
        attrs["axes"] = axes
    return Case(name, [helper.make_node(op_type, inputs, ["y"], **attrs)], {"x": rand(*shape)}, consts,
                opset=opset)


class _Reduce(OpSpec):
    Attrs = ReducerAttrs
    layout = AxisSensitive(axis_inputs=(1,))
    numpy_fn = staticmethod(np.mean)

    def from_onnx(self, node, ctx) -> None:
        x = node.input[0]
        rank = ctx.rank(x)
        if node.op_type.startswith("Global"):
            if rank == 3:
                return import_as_2d(self, node, ctx)
            add_reduce(ctx, self.kind, x, list(range(2, rank)), node.output[0], keep_dims=True)
            return
        if _axes_in_input(node.op_type, ctx.opset) and ctx.attr(node, "axes") is not None:
            raise Unsupported(node, "reduce_axes_attribute",
                              f"an 'axes' attribute is not valid for {node.op_type} at opset {ctx.opset}",
                              "axes are an input from this opset on; re-export the model")
        if _axes_in_input(node.op_type, ctx.opset):
            given = len(node.input) > 1 and node.input[1]
            axes = [int(a) for a in ctx.require_constant(node, 1, "axes").ravel()] if given else []
        else:
            axes = [int(a) for a in ctx.attr(node, "axes", None) or []]
        if not axes:
            if ctx.attr(node, "noop_with_empty_axes", 0):
                ctx.alias(node.output[0], x)
                return
            axes = list(range(rank))
        axes = sorted({ctx.normalize_axis(a, rank) for a in axes})
        add_reduce(ctx, self.kind, x, axes, node.output[0], bool(ctx.attr(node, "keepdims", 1)))

    def reference(self, x, axes, *, keep_dims):
        result = self.numpy_fn(x, axis=tuple(int(a) for a in np.ravel(axes)), keepdims=keep_dims)
        return (np.asarray(result, np.float32),)

    def options(self, attrs: ReducerAttrs):
        return ReducerOptionsT(keepDims=attrs.keep_dims)

    def version(self, op: Op, graph: Graph) -> int:
        dtype = graph.tensors[op.inputs[0]].dtype.name
        return 3 if dtype == "INT16" else 2 if dtype == "INT8" else 1


@register
class Mean(_Reduce):
    """ONNX ReduceMean, and GlobalAveragePool as a mean over the spatial axes (keep_dims)."""

    kind = "MEAN"
    onnx_types = ("ReduceMean", "GlobalAveragePool")
    quant = Calibrated(dtypes=WITH_INT16)  # the kernel requantizes, so the output gets its own parameters
    cases = [
        _reduce_case("hw_keepdims", "ReduceMean", axes=[2, 3]),
        _reduce_case("hw_drop_dims", "ReduceMean", axes=[2, 3], keepdims=0),
        _reduce_case("channels_keepdims", "ReduceMean", axes=[1]),
        _reduce_case("height_drop_dims", "ReduceMean", axes=[-2], keepdims=0),
        _reduce_case("last_axis_rank3", "ReduceMean", (2, 4, 6), axes=[-1]),
        _reduce_case("all_axes_default", "ReduceMean", (2, 3, 4), keepdims=0),
        _reduce_case("axes_input_opset18", "ReduceMean", axes=[1, 3], opset=18, keepdims=0),
        _reduce_case("global_average_pool", "GlobalAveragePool"),
        one_d_case(_reduce_case("global_average_pool_1d", "GlobalAveragePool", (1, 5, 9))),
    ]


@register
class Sum(_Reduce):
    """ONNX ReduceSum."""

    kind = "SUM"
    onnx_types = ("ReduceSum",)
    quant = Calibrated(dtypes=WITH_INT16)
    numpy_fn = staticmethod(np.sum)
    cases = [
        _reduce_case("channels_opset13", "ReduceSum", axes=[1], opset=13, keepdims=0),
        _reduce_case("hw_keepdims_opset11", "ReduceSum", axes=[2, 3], opset=11),
        _reduce_case("last_axis_rank2", "ReduceSum", (3, 7), axes=[-1]),
    ]

    def version(self, op: Op, graph: Graph) -> int:
        return 2 if graph.tensors[op.inputs[0]].dtype.name == "INT8" else 1


@register
class ReduceMax(_Reduce):
    """ONNX ReduceMax, and GlobalMaxPool as a max over the spatial axes (keep_dims)."""

    kind = "REDUCE_MAX"
    onnx_types = ("ReduceMax", "GlobalMaxPool")
    quant = SameAsInput(dtypes=WITH_INT16, moves_values=True)
    numpy_fn = staticmethod(np.max)
    cases = [
        _reduce_case("hw_keepdims", "ReduceMax", axes=[2, 3]),
        _reduce_case("channels_axes_input_opset18", "ReduceMax", axes=[1], opset=18, keepdims=0),
        _reduce_case("global_max_pool", "GlobalMaxPool"),
        one_d_case(_reduce_case("global_max_pool_1d", "GlobalMaxPool", (2, 4, 7))),
    ]
