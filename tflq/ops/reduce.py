"""MEAN, SUM, REDUCE_MAX, REDUCE_MIN and REDUCE_PROD: ONNX ReduceMean/Sum/Max/Min/Prod and
GlobalAveragePool/GlobalMaxPool; ReduceL1, ReduceL2, ReduceSumSquare, ReduceLogSum and
ReduceLogSumExp lowered around SUM.

Quantization follows LiteRT's reduce.cc: MEAN and SUM requantize (int8 and uint8); REDUCE_MAX and
REDUCE_MIN compare raw integers and check that input and output share scale and zero point;
REDUCE_PROD stays float (see its spec).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.ReducerOptions import ReducerOptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import WITH_INT16, AxisSensitive, Calibrated, Case, FloatOnly, OpSpec, SameAsInput, rand
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


def onnx_reduce_axes(node, ctx) -> list[int] | None:
    """The sorted, non-negative axes an ONNX Reduce* node reduces (attribute or input, by opset);
    None when it reduces nothing (empty axes with noop_with_empty_axes)."""
    rank = ctx.rank(node.input[0])
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
            return None
        axes = list(range(rank))
    return sorted({ctx.normalize_axis(a, rank) for a in axes})


def reduced_shape(shape: tuple[int, ...], axes: list[int], keep_dims: bool) -> tuple[int, ...]:
    if keep_dims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


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
        axes = onnx_reduce_axes(node, ctx)
        if axes is None:
            ctx.alias(node.output[0], x)
            return
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
    onnx_types = ("ReduceMean", "GlobalAveragePool", "MeanVarianceNormalization")
    quant = Calibrated(dtypes=WITH_INT16)  # the kernel requantizes, so the output gets its own parameters

    def keeps_channel_means(self, op: Op, graph: Graph) -> bool:
        rank = graph.tensors[op.inputs[0]].rank
        axes = graph.tensors[op.inputs[1]].data if graph.is_constant(op.inputs[1]) else None
        return axes is not None and rank - 1 not in {int(a) % rank for a in np.ravel(axes)}
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

    def from_onnx(self, node, ctx) -> None:
        if node.op_type == "MeanVarianceNormalization":
            return self._mvn(node, ctx)
        super().from_onnx(node, ctx)

    def _mvn(self, node, ctx) -> None:
        """(x - mean) / (sqrt(mean((x - mean)^2)) + 1e-9) over `axes` (default N, H, W), the
        ONNX function's formula with the variance taken around the mean (no cancellation)."""
        x, out = node.input[0], node.output[0]
        shape = ctx.shape(x)
        rank = len(shape)
        axes = sorted({ctx.normalize_axis(int(a), rank) for a in ctx.attr(node, "axes", [0, 2, 3])})
        kept = reduced_shape(shape, axes, True)

        def value(label: str, like: tuple[int, ...] = shape) -> str:
            return ctx.new_activation(f"{out}/{label}", like)

        mean = value("mean", kept)
        add_reduce(ctx, self.kind, x, axes, mean, True)
        centered = value("centered")
        ctx.add_op("SUB", [x, mean], [centered])
        square = value("square")
        ctx.add_op("MUL", [centered, centered], [square])
        variance = value("variance", kept)
        add_reduce(ctx, self.kind, square, axes, variance, True)
        deviation = value("deviation", kept)
        ctx.add_op("SQRT", [variance], [deviation])
        divisor = value("divisor", kept)
        epsilon = ctx.add_constant(f"{node.name or out}/epsilon", np.array(1e-9, np.float32))
        ctx.add_op("ADD", [deviation, epsilon], [divisor])
        ctx.add_op("DIV", [centered, divisor], [out])


def _noop_case(name: str, op_type: str) -> Case:
    """An op_type reducing nothing (empty axes, noop_with_empty_axes), then reducing axis 1."""
    nodes = [helper.make_node(op_type, ["x"], ["t"], noop_with_empty_axes=1),
             helper.make_node(op_type, ["t", "axes"], ["y"], keepdims=0)]
    return Case(name, nodes, {"x": rand(2, 5, 3, low=-3, high=3)}, {"axes": np.array([1], np.int64)},
                opset=18)


def _ranged(case: Case, low: float = 0.2, high: float = 2.0) -> Case:
    """`case` with inputs drawn from [low, high] (positive by default: log domains)."""
    case.inputs = {n: rand(*v.shape, low=low, high=high) for n, v in case.inputs.items()}
    return case


def add_sum_of(node, ctx) -> None:
    """The ONNX reductions TFLite has no reducer for, each one SUM plus elementwise ops:
    ReduceL1 = SUM(ABS), ReduceSumSquare = SUM(MUL(x, x)), ReduceL2 = SQRT(SUM(MUL(x, x))),
    ReduceLogSum = LOG(SUM), and ReduceLogSumExp = LOG(SUM(EXP(x - max))) + max, the max taken
    first as onnxruntime does so EXP cannot overflow. With empty axes and noop_with_empty_axes
    the reductions vanish and the elementwise ops remain (onnxruntime's result: |x|, x^2, log x...).
    SUM imports ReduceSumSquare; ABS, SQRT and LOG import the others (the spec of the op that
    limits the 8-bit types)."""
    x, out = node.input[0], node.output[0]
    shape, axes = ctx.shape(x), onnx_reduce_axes(node, ctx)
    keep_dims = bool(ctx.attr(node, "keepdims", 1))

    def step(kind: str, inputs: list[str], what: str, target_shape=shape, target: str = "") -> str:
        target = target or ctx.new_activation(f"{out}/{what}", target_shape)
        ctx.add_op(kind, inputs, [target])
        return target

    def reduce(kind: str, value: str, what: str, keep: bool, target: str = "") -> str:
        if axes is None:
            return value
        target = target or ctx.new_activation(f"{out}/{what}", reduced_shape(shape, axes, keep))
        add_reduce(ctx, kind, value, axes, target, keep)
        return target

    last = out if axes is None else ""  # nothing reduced: the elementwise op writes `out`
    if node.op_type == "ReduceL1":
        reduce("SUM", step("ABS", [x], "abs", target=last), "sum", keep_dims, out)
    elif node.op_type == "ReduceSumSquare":
        reduce("SUM", step("MUL", [x, x], "square", target=last), "sum", keep_dims, out)
    elif node.op_type == "ReduceL2":
        step("SQRT", [reduce("SUM", step("MUL", [x, x], "square"), "sum", keep_dims)], "sqrt", target=out)
    elif node.op_type == "ReduceLogSum":
        step("LOG", [reduce("SUM", x, "sum", keep_dims)], "log", target=out)
    elif axes is None:  # ReduceLogSumExp over nothing: log(exp(x)) = x
        ctx.alias(out, x)
    else:  # ReduceLogSumExp
        peak = reduce("REDUCE_MAX", x, "max_keep", True)
        exp = step("EXP", [step("SUB", [x, peak], "shifted")], "exp")
        log = step("LOG", [reduce("SUM", exp, "sum", keep_dims)], "log", reduced_shape(shape, axes, keep_dims))
        ctx.add_op("ADD", [log, peak if keep_dims else reduce("REDUCE_MAX", x, "max", False)], [out])


# Cases of the normalizations imported by MEAN and SUM here; DIV (kept float on a computed
# divisor) is the op that limits their 8-bit types, so DIV lists them.
NORMALIZATION_CASES = [
    Case("mvn_default_axes", [helper.make_node("MeanVarianceNormalization", ["x"], ["y"])],
         {"x": rand(2, 3, 4, 5, low=-2, high=3)}, opset=18, float_parts=True),
    Case("mvn_last_axis", [helper.make_node("MeanVarianceNormalization", ["x"], ["y"], axes=[-1])],
         {"x": rand(3, 4, 8, low=-1, high=4)}, opset=18, float_parts=True),
    Case("lp_normalization_l2_last", [helper.make_node("LpNormalization", ["x"], ["y"])],
         {"x": rand(3, 4, 8, low=-2, high=2)}, float_parts=True),
    Case("lp_normalization_l1_channels", [helper.make_node("LpNormalization", ["x"], ["y"], axis=1, p=1)],
         {"x": rand(1, 3, 4, 4, low=-2, high=2)}, float_parts=True),
    Case("lp_normalization_zero_row", [helper.make_node("LpNormalization", ["x"], ["y"], axis=1)],
         {"x": rand(4, 6, low=-2, high=2) * np.array([[1], [0], [1], [1]], np.float32)}, quantize=False),
]

# The cases of add_sum_of's reductions, listed on the spec that imports each.
L1_CASES = [
    _reduce_case("l1_channels", "ReduceL1", axes=[1], keepdims=0),
    _reduce_case("l1_axes_input_opset18", "ReduceL1", (2, 3, 8), axes=[0, 2], opset=18),
]
L2_CASES = [
    Case("global_lp_pool_l2", [helper.make_node("GlobalLpPool", ["x"], ["y"])], {"x": rand(1, 3, 5, 6, low=-2, high=2)}),
    _reduce_case("l2_hw_keepdims", "ReduceL2", axes=[2, 3]),
    _reduce_case("l2_axes_input_opset18", "ReduceL2", (2, 6, 5), axes=[-1], opset=18, keepdims=0),
    _reduce_case("l2_all_axes", "ReduceL2", (3, 4)),
    _noop_case("l2_noop_opset18", "ReduceL2"),
]
LOG_SUM_CASES = [
    _ranged(_reduce_case("log_sum_channels", "ReduceLogSum", axes=[1])),
    _ranged(_reduce_case("log_sum_exp_channels", "ReduceLogSumExp", axes=[1], keepdims=0), -3, 3),
    _ranged(_reduce_case("log_sum_exp_hw_opset18", "ReduceLogSumExp", axes=[2, 3], opset=18), -3, 3),
    _noop_case("log_sum_exp_noop_opset18", "ReduceLogSumExp"),
]


@register
class Sum(_Reduce):
    """ONNX ReduceSum and ReduceSumSquare (add_sum_of)."""

    kind = "SUM"
    onnx_types = ("ReduceSum", "ReduceSumSquare", "LpNormalization", "GlobalLpPool")
    quant = Calibrated(dtypes=WITH_INT16)
    numpy_fn = staticmethod(np.sum)
    cases = [
        _reduce_case("channels_opset13", "ReduceSum", axes=[1], opset=13, keepdims=0),
        _reduce_case("hw_keepdims_opset11", "ReduceSum", axes=[2, 3], opset=11),
        _reduce_case("last_axis_rank2", "ReduceSum", (3, 7), axes=[-1]),
        _reduce_case("sum_square_last", "ReduceSumSquare", (2, 3, 8), axes=[2]),
        Case("global_lp_pool_l1_1d", [helper.make_node("GlobalLpPool", ["x"], ["y"], p=1)],
             {"x": rand(2, 4, 7, low=-2, high=2)}, float_parts=True),
    ]

    def from_onnx(self, node, ctx) -> None:
        if node.op_type == "ReduceSum":
            return super().from_onnx(node, ctx)
        if node.op_type in ("LpNormalization", "GlobalLpPool"):
            return self._lp(node, ctx)
        add_sum_of(node, ctx)

    def _lp(self, node, ctx) -> None:
        """The L1 (SUM(ABS)) or L2 (SQRT(SUM(x * x))) norm over one axis (LpNormalization, x
        divided by it; a zero row stays 0 as in onnxruntime, the divisor raised to the smallest
        normal float) or over the spatial axes (GlobalLpPool, the norm itself). Other p have no
        exact TFLite form here."""
        x, out = node.input[0], node.output[0]
        shape = ctx.shape(x)
        normalize = node.op_type == "LpNormalization"
        p = int(ctx.attr(node, "p", 2))
        if p not in (1, 2):
            raise Unsupported(node, "lp_order", f"{node.op_type} with p={p} is not supported (p=1 and p=2 are)")
        axes = [ctx.normalize_axis(int(ctx.attr(node, "axis", -1)), len(shape))] if normalize \
            else list(range(2, len(shape)))
        kept = reduced_shape(shape, axes, True)

        def value(label: str, like: tuple[int, ...] = shape) -> str:
            return ctx.new_activation(f"{out}/{label}", like)

        terms = value("abs" if p == 1 else "square")
        ctx.add_op("ABS" if p == 1 else "MUL", [x] if p == 1 else [x, x], [terms])
        total = out if p == 1 and not normalize else value("sum", kept)
        add_reduce(ctx, self.kind, terms, axes, total, True)
        norm = total
        if p == 2:
            norm = value("norm", kept) if normalize else out
            ctx.add_op("SQRT", [total], [norm])
        if normalize:
            floor = ctx.add_constant(f"{node.name or out}/smallest_normal",
                                     np.array(np.finfo(np.float32).tiny, np.float32))
            divisor = value("divisor", kept)
            ctx.add_op("MAXIMUM", [norm, floor], [divisor])
            ctx.add_op("DIV", [x, divisor], [out])

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


@register
class ReduceMin(_Reduce):
    """ONNX ReduceMin (same grid in and out, like REDUCE_MAX)."""

    kind = "REDUCE_MIN"
    onnx_types = ("ReduceMin",)
    quant = SameAsInput(dtypes=WITH_INT16, moves_values=True)
    numpy_fn = staticmethod(np.min)
    cases = [
        _reduce_case("hw_keepdims", "ReduceMin", axes=[2, 3]),
        _reduce_case("channels_drop_dims", "ReduceMin", axes=[1], keepdims=0),
        _reduce_case("axes_input_opset18", "ReduceMin", (3, 4, 5), axes=[0, 2], opset=18, keepdims=0),
        _noop_case("noop_opset18", "ReduceMin"),
    ]


@register
class ReduceProd(_Reduce):
    """ONNX ReduceProd.

    FloatOnly although LiteRT has an int8 kernel (EvalQuantizedProd): it rescales the running
    product to an integer after every factor (by input_scale / output_scale^(1/n)), so a product
    of factors below 1 rounds away to 0 a few factors in; the product of 10 sigmoid outputs came
    out as 0 (0 dB) in the family suite. A float island is exact."""

    kind = "REDUCE_PROD"
    onnx_types = ("ReduceProd",)
    quant = FloatOnly(reason="LiteRT's 8-bit REDUCE_PROD rounds a product of factors below 1 to 0")
    numpy_fn = staticmethod(np.prod)
    cases = [
        _ranged(_reduce_case("channels_keepdims", "ReduceProd", axes=[1]), 0.5, 1.5),
        _reduce_case("last_axis_rank2", "ReduceProd", (3, 4), axes=[-1], keepdims=0),
        _ranged(_reduce_case("axes_input_opset18", "ReduceProd", (2, 3, 4), axes=[1], opset=18),
                       0.5, 1.5),
    ]

    def version(self, op: Op, graph: Graph) -> int:
        return 2 if graph.tensors[op.inputs[0]].dtype.name in ("INT8", "INT16") else 1
