"""Mark phase of full-integer quantization: decide, from each op's declared rule, which ops run in
8 bits and the QuantParams of every tensor they touch. Touches no graph; rewrite.py applies it."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tflq import ops as registry
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ir.integer_paths import integer_arithmetic_ops
from tflq.ir.quant import (QuantParams, activation_params, asymmetric_weight_params, bias_params,
                           bias_type, symmetric_weight_params)
from tflq.ops.base import Calibrated, Refused, SameAsInput, SameAsOutput, Weight
from tflq.quantize.limits import fit_limits
from tflq.targets.base import Target
from tflq.targets.litert import LITERT
from tflq.targets import island_dtype

Range = tuple[float, float]


# An int16 grid spans this many times its tensor's calibrated range: one of its 8 extra bits buys
# room for values beyond the ones the calibration samples reached. Held-out inputs go there, and
# clipping them costs far more than the coarser step (sample model, worst held-out sample: 31.6 dB
# clipped at the calibrated range, 35.6 dB with this room, the int8 weights' own ceiling).
INT16_HEADROOM = 2.0


def calibrated_params(dtype: DType, found: Range) -> QuantParams:
    """The grid in `dtype` for a tensor whose calibrated range is `found`."""
    if dtype == DType.INT16:
        found = (found[0] * INT16_HEADROOM, found[1] * INT16_HEADROOM)
    return activation_params(dtype, *found)


class PlanContext:
    """What the mark phase asks about the model, in one object: the activation type, the nodes
    kept float, the parameters fixed in advance, each tensor's range and which ops stay float.

    `given` holds parameters fixed in advance (a quantization-aware-trained model's QDQ
    parameters); they win over calibrated ranges wherever the op's rule leaves a choice.
    Subclasses answer `range` (from calibration statistics) and may keep more ops float.
    """

    def __init__(self, dtype: DType, float_ops: set[str] | frozenset[str] = frozenset(),
                 given: dict[str, QuantParams] | None = None,
                 int16_ops: set[str] | frozenset[str] = frozenset(), target: Target = LITERT) -> None:
        self.dtype = dtype
        self.target = target  # the runtime's profile: its kernels and numeric limits
        self.float_ops = frozenset(float_ops)
        self.int16_ops = frozenset(int16_ops)
        self.given = dict(given or {})

    def dtype_of(self, op: Op) -> DType:
        """The activation type `op` runs in: int16 for the nodes asked for; int8 for an op of a
        uint8 model that the target runs in int8 only, where that pays (tflq.targets.island_dtype);
        else the model's."""
        if op.origin in self.int16_ops:
            return DType.INT16
        return island_dtype(self.target, op.kind, self.dtype) or self.dtype

    def range(self, name: str) -> Range | None:
        """The real range of tensor `name`; None where the model leaves it float (a part of a QDQ
        model that calibration did not cover): only ops `float_reason` keeps float touch those."""
        raise NotImplementedError

    def grid_range(self, name: str, dtype: DType) -> Range:
        """The range a calibrated `dtype` grid of tensor `name` spans: its range, unless a
        subclass narrows it for that type (--target-sqnr's 8-bit grid ranges)."""
        return _range(self, name)

    def float_reason(self, op: Op) -> str | None:
        """Why `op` stays float (None: it runs quantized)."""
        if op.origin in self.float_ops:
            return "kept float by --float-ops"
        if op.float_reason:
            return op.float_reason
        rule = registry.spec(op.kind).quant
        reason = rule.float_reason(self.dtype_of(op))
        if reason is not None and rule.island_dtype(self.dtype) is not None and \
                self.target.default_delegate is not None:  # (tflq.targets.island_dtype)
            reason += (f"; kept a float island, not an int8 one: {self.target.default_delegate} runs it "
                       f"in float only, and an integer op would split its graph")
        return reason if reason is not None else self.target.integer_reason(op.kind, self.dtype_of(op))


class RangesContext(PlanContext):
    """A PlanContext over a fixed table of ranges (tests, and models whose ranges are known)."""

    def __init__(self, dtype: DType, ranges: dict[str, Range], **kwargs) -> None:
        super().__init__(dtype, **kwargs)
        self.ranges = ranges

    def range(self, name: str) -> Range | None:
        return self.ranges.get(name)


@dataclass
class QuantPlan:
    """The mark phase's result: params per tensor, the ops that stay float and why."""

    dtype: DType
    params: dict[str, QuantParams] = field(default_factory=dict)
    quantized_ops: list[Op] = field(default_factory=list)
    float_ops: dict[int, str] = field(default_factory=dict)  # id(op) -> reason
    # For each quantized op, the params each activation input must have (requantize if not).
    required_inputs: dict[int, dict[int, QuantParams]] = field(default_factory=dict)
    adjustments: list[str] = field(default_factory=list)
    # For a float op's divisor (OpSpec.divisor) whose calibrated range excludes 0: (input index,
    # bound). The rewrite makes the input MAXIMUM(x, bound) for a positive bound, MINIMUM for a
    # negative one, so a value the quantized graph rounds to 0 gives no 0/0 or x/0.
    divisor_bounds: dict[int, tuple[int, float]] = field(default_factory=dict)

    def is_quantized(self, op: Op) -> bool:
        return id(op) not in self.float_ops


def _integer_only(graph: Graph, op: Op) -> bool:
    """No float tensor in or out: neither quantized nor a float island (token ids, masks)."""
    return not any(n and graph.tensors[n].dtype.is_float for n in op.inputs + op.outputs)


def weight_params(rule: Weight, data: np.ndarray, dtype: DType) -> QuantParams:
    """The grid of a weight next to `dtype` activations: uint8 asymmetric per tensor; else int8
    symmetric, per channel where the kernel takes it (before _fit_bias may widen it)."""
    if dtype == DType.UINT8:
        return asymmetric_weight_params(data, DType.UINT8)
    # 16x8 FULLY_CONNECTED takes per-channel weights too (fully_connected.cc: int8 or int16
    # input, quantized_dimension 0)
    per_channel = rule.per_channel_full or dtype == DType.INT16
    axis = rule.axis if per_channel and data.ndim > 1 else None
    return symmetric_weight_params(data, axis, DType.INT8)


def _constant_params(graph: Graph, op: Op, index: int, dtype: DType, plan: QuantPlan,
                     shared: QuantParams | None) -> QuantParams | None:
    """Params for a float constant input of a quantized op (weights, bias, or an operand)."""
    spec = registry.spec(op.kind)
    data = graph.tensors[op.inputs[index]].data
    for rule in spec.weights:
        if rule.index == index:
            return weight_params(rule, data, dtype)
    if spec.bias is not None and spec.bias.index == index:
        return None  # filled in once the input and weight params are known
    if shared is not None:
        return shared
    return activation_params(dtype, float(np.min(data)), float(np.max(data)))


def _constant_fits(graph: Graph, op: Op, index: int, params: QuantParams, dtype: DType) -> bool:
    """Whether a constant already given `params` (by an op before) suits this op in `dtype`:
    weights are int8 next to int8 and int16 activations alike; other operands (and biases, whose
    type follows the activations) must be in the op's own type."""
    spec = registry.spec(op.kind)
    if any(w.index == index for w in spec.weights):
        return params.dtype == (DType.UINT8 if dtype == DType.UINT8 else DType.INT8)
    if spec.bias is not None and spec.bias.index == index:
        return params.dtype == bias_type(dtype)
    return params.dtype == dtype


def _is_operand(spec, index: int) -> bool:
    """Input `index` is a data operand of the op (neither its weights nor its bias)."""
    return not any(w.index == index for w in spec.weights) and \
        (spec.bias is None or spec.bias.index != index)


def _fit_bias(weight: QuantParams, input_params: QuantParams, weight_data: np.ndarray,
              bias_data: np.ndarray) -> QuantParams:
    """Weight params whose scale is large enough that the int32 bias (scale = input scale x
    weight scale) stays within +-2**30: TF's converter raises the weight scale the same way
    (kBiasMax). Matters for a near-zero input range (a constant-zero activation) or an all-zero
    weight channel next to a large bias; otherwise the bias would saturate."""
    limit = 2.0 ** 30
    bias = np.abs(np.asarray(bias_data, np.float64)).reshape(-1)
    if weight.axis is None:
        bias = bias.max(initial=0.0)
    needed = bias / (float(input_params.scale) * limit)
    if np.all(weight.scale >= needed):
        return weight
    scale = np.maximum(weight.scale.astype(np.float64), needed * (1 + 1e-6))
    if weight.axis is not None or weight.dtype == DType.INT8:  # symmetric: zero point 0
        return QuantParams(weight.dtype, scale.astype(np.float32), weight.zero_point, weight.axis)
    low = min(float(np.min(weight_data)), 0.0)
    zero_point = int(np.clip(np.round(weight.dtype.qmin - low / float(scale)), weight.dtype.qmin,
                             weight.dtype.qmax))
    return QuantParams.per_tensor(weight.dtype, float(scale), zero_point)


def _holds(params: QuantParams, ranges: list[tuple[float, float]]) -> bool:
    """True when every range lies on `params`' grid (to within half a step)."""
    step = float(params.scale)
    low = (params.dtype.qmin - int(params.zero_point)) * step
    high = (params.dtype.qmax - int(params.zero_point)) * step
    return min(r[0] for r in ranges) >= low - step / 2 and max(r[1] for r in ranges) <= high + step / 2


def _grid_holds_tensor(params: QuantParams, name: str, ctx: PlanContext) -> bool:
    """_holds for a tensor's calibrated range (a QDQ model's tensor without one: its own given
    grid decides)."""
    found = ctx.range(name)
    return found is None or _holds(params, [found])


def _range(ctx: PlanContext, name: str) -> Range:
    """The range of a tensor that a quantized op touches (its absence is a bug of float_reason)."""
    found = ctx.range(name)
    if found is None:
        raise AssertionError(f"no range for '{name}', which a quantized op touches")
    return found


# XNNPACK refuses an output multiplier (input scale x weight scale / output scale) of 256 or more,
# and LiteRT then refuses the whole file; a calibrated range that is tiny but not zero gets there.
MAX_OUTPUT_MULTIPLIER = 255.0


def _bounded_multiplier(output: QuantParams, input_params: QuantParams,
                        weight: QuantParams) -> QuantParams:
    """`output`, with its scale raised (same zero point) so the multiplier stays below 256."""
    needed = float(input_params.scale) * float(np.max(weight.scale)) / MAX_OUTPUT_MULTIPLIER
    if float(output.scale) >= needed:
        return output
    return QuantParams.per_tensor(output.dtype, needed, int(output.zero_point))


def _scale_at_least(params: QuantParams, floor: float) -> QuantParams:
    """`params`, with its scale raised above `floor` (same zero point) where it is not already."""
    if float(params.scale) > floor:
        return params
    return QuantParams.per_tensor(params.dtype, floor * (1 + 1e-5), int(params.zero_point))


def _requantizable(source: QuantParams, grid: QuantParams) -> QuantParams:
    """`grid` for a tensor on `source` (another type), with its scale raised where the
    requantizing QUANTIZE would overflow. LiteRT's (quantize.cc Requantize, through
    MultiplyByQuantizedMultiplier) shifts q - zero point left by the ratio's exponent in int32
    before its fixed-point multiply: a source step 2^31 / (source span in steps) times the
    destination's or more wraps around. An int8 QDQ sum of a -1e9 mask (step 3.9e6) onto the
    int16 grid an --int16-ops softmax chose for its scores (step 0.057) was a ratio of 6.8e7,
    and the masked positions came out near the top of the grid: -12.3 dB against onnxruntime.
    Raised, the source's zero point still lands on 0 and its other values saturate, as they
    did on the finer grid."""
    limit = 2.0 ** 30 / (source.dtype.qmax - source.dtype.qmin)
    return _scale_at_least(grid, float(np.max(source.scale)) / limit)


def _covering(params: QuantParams, ranges: list[tuple[float, float]]) -> QuantParams:
    """`params`, or a wider grid when the output of a same-scale op with several data inputs
    reaches half a step beyond it: MAXIMUM/MINIMUM with another input or a constant above the
    first input's range, PADV2 with a pad value outside it."""
    if _holds(params, ranges):
        return params
    step = float(params.scale)
    low = (params.dtype.qmin - int(params.zero_point)) * step
    high = (params.dtype.qmax - int(params.zero_point)) * step
    out_low, out_high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    return activation_params(params.dtype, min(low, out_low), max(high, out_high))


def _shared_output_params(graph: Graph, op: Op, ctx: PlanContext, dtype: DType) -> QuantParams:
    """A SameAsOutput op's grid: the output's given params, else one covering every activation
    input's range and the output's."""
    if op.outputs[0] in ctx.given:
        return ctx.given[op.outputs[0]]
    ranges = [_range(ctx, n) for n in op.inputs if n and graph.tensors[n].dtype.is_float
              and not graph.is_constant(n)] + [_range(ctx, op.outputs[0])]
    return calibrated_params(dtype, (min(r[0] for r in ranges), max(r[1] for r in ranges)))


def _delegate_shares_grid(ctx: PlanContext, dtype: DType) -> bool:
    """XNNPACK, LiteRT's default delegate, takes a quantized CONCATENATION only with every input
    on the output's grid (xnnpack_delegate.cc VisitConcatenationNode: "Mismatching quantization"),
    though the uint8 kernel rescales: choosing the shared grid up front is exact and costs no op,
    where a uint8 one left to LiteRT split the delegated graph."""
    return ctx.target.default_delegate == "xnnpack" and dtype in (DType.INT8, DType.UINT8)


def _concatenation_grids(graph: Graph, ctx: PlanContext) -> dict[str, QuantParams]:
    """Grids chosen up front for the inputs of int8 SameAsOutput ops (CONCATENATION): each input,
    and through single-input same-scale ops (RESIZE, MAX_POOL_2D...) its source, gets the
    concatenation's own grid, so no input needs a requantizing QUANTIZE (TF's converter
    propagates same-scale parameters to operands likewise). The first concatenation wins. The
    walk stops at a source whose range the grid does not hold: it would clip the source for its
    other consumers (and for a fused activation's input: AVERAGE_POOL+RELU of a negative value)."""
    preferred: dict[str, QuantParams] = {}
    producers = graph.producers()
    for op in graph.ops:
        rule = registry.spec(op.kind).quant
        dtype = ctx.dtype_of(op)
        if not isinstance(rule, SameAsOutput) or \
                not (rule.inputs_on_output_grid(dtype) or _delegate_shares_grid(ctx, dtype)) or \
                _integer_only(graph, op) or _kept_float(graph, op, ctx) is not None:
            continue  # (uint8 CONCATENATION rescales its inputs itself)
        shared = _shared_output_params(graph, op, ctx, dtype)
        for name in op.inputs:
            while name and graph.tensors[name].dtype.is_float and not graph.is_constant(name) \
                    and name not in preferred:
                preferred[name] = shared
                producer = producers.get(name)
                if producer is None or _kept_float(graph, producer, ctx) is not None or \
                        ctx.dtype_of(producer) != dtype:
                    break
                rule = registry.spec(producer.kind).quant
                sources = [n for n in producer.inputs if n and graph.tensors[n].dtype.is_float]
                if not isinstance(rule, SameAsInput) or len(sources) != 1 or \
                        graph.is_constant(producer.inputs[rule.index]) or \
                        not _grid_holds_tensor(shared, producer.inputs[rule.index], ctx):
                    break
                name = producer.inputs[rule.index]
    return preferred


# LiteRT's integer kernels multiply scales in float32 at prepare time: ADD and SUB take
# (1 << 20) x the output scale, MUL and the convolutions input scale x weight scale. A grid for
# values of 1e18 or more (an attention mask filled with finfo(float32).min, -3.4e38, has an int8
# scale of 1.3e36) overflows those products to inf, the multiplier becomes 0 and LiteRT aborts at
# allocate_tensors. Below the limit every such product stays under 1e32. Keeping the tensor float
# costs nothing in accuracy: an int8 grid that holds -3.4e38 holds nothing else (the scores it is
# added to would all round to 0).
MAX_INTEGER_MAGNITUDE = 1e18


def _beyond_integer(low: float, high: float) -> bool:
    """True for a range no integer grid can hold (see MAX_INTEGER_MAGNITUDE)."""
    return not (np.isfinite(low) and np.isfinite(high)) or \
        max(abs(low), abs(high)) >= MAX_INTEGER_MAGNITUDE


def _magnitude_refusal(graph: Graph, op: Op, ctx: PlanContext) -> str | None:
    """Why `op` must stay float: a float tensor it reads or writes spans values no integer
    kernel's scale arithmetic can hold (|value| >= MAX_INTEGER_MAGNITUDE, inf or NaN)."""
    for name in op.inputs + op.outputs:
        t = graph.tensors[name] if name else None
        if t is None or not t.dtype.is_float:
            continue
        if t.is_constant and isinstance(ctx, _WithRanges) and name in ctx.ranges:
            low, high = ctx.ranges[name]  # a mask's fill, quantized onto a narrowed range
        elif t.is_constant:
            if not t.data.size:
                continue
            low, high = float(np.min(t.data)), float(np.max(t.data))
        else:
            seen = ctx.range(name)
            if seen is None:
                continue
            low, high = float(seen[0]), float(seen[1])
        if _beyond_integer(low, high):
            return (f"tensor '{name}' spans [{low:.3g}, {high:.3g}], beyond what integer kernels "
                    f"represent (|value| < {MAX_INTEGER_MAGNITUDE:.0e}: LiteRT computes scale "
                    f"products in float32)")
    return None


# A scale factor (OpSpec.scale_factor_output) whose calibrated range spans more than this ratio
# stays float: its lowest values would get less than 1/64 of the resolution its grid gives its
# top (an 8-bit grid: fewer than 4 steps, relative error above ~1/8). LayerNorm's 1/std,
# calibrated on a zero-padded row, spans 1/sqrt(eps) = 316 against ~0.5 for ordinary rows,
# which an 8-bit grid left at one step (0.3 dB). An int16 grid held them with ~50 steps until
# RMSNorm's 1/rms with eps 1e-6 (1000 / 0.3) left ~10: int16x8 33.2 dB against 41.1 for the
# division in float, so int16 keeps the same ratio (its scale factors float then, 41.4).
MAX_SCALE_FACTOR_SPAN = 64.0


def _wide_scale_factors(graph: Graph, ctx: PlanContext) -> dict[str, str]:
    """Scale factors no grid of their op's type resolves (see MAX_SCALE_FACTOR_SPAN): name -> why."""
    wide: dict[str, str] = {}
    for op in graph.ops:
        if not registry.spec(op.kind).scale_factor_output:
            continue  # (also when the op itself has no kernel in the type: its readers have)
        name = op.outputs[0]
        seen = ctx.range(name) if graph.tensors[name].dtype.is_float else None
        if seen is None or not seen[0] > 0 or _beyond_integer(*seen):
            continue
        if seen[1] / seen[0] > MAX_SCALE_FACTOR_SPAN:
            dtype = ctx.dtype_of(op)
            wide[name] = (f"the scale factor '{name}' spans [{seen[0]:.3g}, {seen[1]:.3g}], "
                          f"{seen[1] / seen[0]:.0f}x, which a {dtype.name.lower()} grid leaves its "
                          f"lowest values few steps of (a constant row in calibration?)")
    return wide


INTEGER_ARITHMETIC = ("float arithmetic on integers that become integers again (a CAST to an "
                      "integer type reads the result): a grid's rounding would change them")


def _integer_arithmetic(graph: Graph) -> dict[int, str]:
    """id(op) -> why it stays float, for the ops of integer_arithmetic_ops (tflq.ir.integer_paths)."""
    return {id(op): INTEGER_ARITHMETIC for op in integer_arithmetic_ops(graph)}


def _kept_float(graph: Graph, op: Op, ctx: PlanContext) -> str | None:
    """Why `op` stays float before any parameter is chosen (None: it may run quantized)."""
    return ctx.float_reason(op) or _magnitude_refusal(graph, op, ctx)


def _clamp_grids(graph: Graph, ctx: PlanContext) -> dict[str, QuantParams]:
    """Grids chosen up front for the input of a clamp by constants (MAXIMUM(x, -0.4) after a
    LEAKY_RELU, as tf2onnx exports): the output's range joined with the constants', given to x
    when the clamp is x's only reader and x's producer may choose its output grid (Calibrated),
    both running quantized in one type. x's values beyond the grid are the ones
    the clamp replaces anyway, so no step is spent on them; TF's converter likewise gives the
    operands of a same-scale op the result's parameters."""
    preferred: dict[str, QuantParams] = {}
    outputs = set(graph.outputs)
    for op in graph.ops:
        rule = registry.spec(op.kind).quant
        if not isinstance(rule, SameAsInput) or not rule.clamps or _integer_only(graph, op) or \
                _kept_float(graph, op, ctx) is not None:
            continue
        source = op.inputs[rule.index]
        others = [n for i, n in enumerate(op.inputs) if n and i != rule.index]
        producer = graph.producer(source)
        if not others or not all(graph.is_constant(n) for n in others) or \
                graph.is_constant(source) or source in outputs or source in ctx.given or \
                op.outputs[0] in ctx.given or len(graph.consumers(source)) != 1 or \
                producer is None or _kept_float(graph, producer, ctx) is not None or \
                ctx.dtype_of(producer) != ctx.dtype_of(op) or \
                not isinstance(registry.spec(producer.kind).quant, Calibrated):
            continue
        seen = ctx.range(op.outputs[0])
        if seen is None:
            continue
        values = np.concatenate([np.asarray(graph.tensors[n].data, np.float64).reshape(-1)
                                 for n in others])
        low, high = min(seen[0], float(values.min())), max(seen[1], float(values.max()))
        dtype = ctx.dtype_of(op)
        preferred[source] = activation_params(dtype, low, high)
    return preferred


# An additive attention mask is 0 where a position is kept and a fill (-1e4, -1e9) where it is
# masked: an operand of at least this span next to scores of a smaller one.
MASK_SPAN = 1e3
MAX_MASK_NARROWING = 2.0 ** 12


class _WithRanges(PlanContext):
    """`inner`, with the ranges of some tensors narrowed (see _masked_softmax_ranges)."""

    def __init__(self, inner: PlanContext, ranges: dict[str, Range],
                 kept: dict[int, str] | None = None) -> None:
        super().__init__(inner.dtype, inner.float_ops, inner.given, inner.int16_ops)
        self.inner, self.ranges = inner, ranges
        self.kept = kept or {}  # id(op) -> why it stays float (_masked_fill_ranges)

    def dtype_of(self, op: Op) -> DType:
        return self.inner.dtype_of(op)

    def range(self, name: str) -> Range | None:
        return self.ranges.get(name) or self.inner.range(name)

    def grid_range(self, name: str, dtype: DType) -> Range:
        return self.ranges[name] if name in self.ranges else self.inner.grid_range(name, dtype)

    def float_reason(self, op: Op) -> str | None:
        return self.inner.float_reason(op) or self.kept.get(id(op))


def _masked_softmax_ranges(graph: Graph, ctx: PlanContext) -> dict[str, Range]:
    """Narrower ranges for masked attention, scores + mask -> SOFTMAX. A padding or causal mask
    keeps at least one position of every row (its maximum, 0, is reached in every row), so each
    row's maximum is at least low(scores) + high(mask), and a sum more than SOFTMAX's slack K
    below that weighs less than e^-16: the sum's grid starts there (a masked position saturates
    at its lowest step instead of stretching the grid to -1e4, which left every score on one
    step). A mask read only by such sums needs no value below that floor minus the highest
    score: a constant one is quantized onto that range; a computed one is narrowed by at most
    MAX_MASK_NARROWING (its producer then saturates, and MUL's kernel overflows int32 for a
    multiplier much above 2^12), and the sum's grid stays within 255 steps of the mask's
    (XNNPACK's ADD computed garbage beyond). A mask beyond the integer limit (finfo.min) narrows
    when it is a constant or made of constants (_mask_fill); any other stays float
    (_magnitude_refusal)."""
    consumers = graph.consumer_map()

    def span_of(name: str) -> Range | None:
        t = graph.tensors[name]
        return (float(np.min(t.data)), float(np.max(t.data))) if t.is_constant else ctx.range(name)

    sums: list[tuple[Op, str, Range, float, float]] = []  # ADD, mask, sum's range, floor, top score
    for op in graph.ops:
        if not registry.spec(op.kind).sums_inputs or op.outputs[0] in graph.outputs or \
                not graph.tensors[op.outputs[0]].dtype.is_float:
            continue  # (an integer ADD, RoBERTa's position ids, has no range to ask for)
        readers = consumers.get(op.outputs[0], [])
        slack = [registry.spec(r.kind).negligible_below_row_max(r) for r in readers]
        if not readers or None in slack:
            continue
        ranges = [span_of(n) for n in op.inputs]
        out_range = ctx.range(op.outputs[0])
        if None in ranges or out_range is None:
            continue
        # a constant mask, or one made of constants (gate x fill, a select of 0 and the fill),
        # narrows (and its sum) however far its fill reaches (finfo.min)
        beyond = [i for i, r in enumerate(ranges) if _beyond_integer(*r)]
        if beyond and (len(beyond) > 1 or not (graph.is_constant(op.inputs[beyond[0]]) or
                                               _mask_fill(graph, op.inputs[beyond[0]], ctx, consumers))) \
                or not beyond and _beyond_integer(*out_range):
            continue
        spans = [high - low for low, high in ranges]
        masks = [i for i in (0, 1) if spans[i] >= MASK_SPAN and spans[1 - i] < MASK_SPAN]
        if len(masks) == 1:
            scores = ranges[1 - masks[0]]
            floor = scores[0] + _least_row_maximum(graph, op.inputs[masks[0]], ranges[masks[0]][1], ctx,
                                                   consumers) - min(slack)
            if floor > out_range[0]:
                sums.append((op, op.inputs[masks[0]], out_range, floor, scores[1]))
    narrowed: dict[str, Range] = {}
    for mask in dict.fromkeys(s[1] for s in sums):
        lows = [floor - top for _, m, _, floor, top in sums if m == mask]
        if len(lows) == len(consumers.get(mask, [])) and mask not in graph.outputs:
            low, high = span_of(mask)
            fills = _mask_fill(graph, mask, ctx, consumers)
            if fills:  # made of constants: they saturate on its grid instead
                narrowed[mask] = (max(low, min(lows)), high)
                for name, gate_high in fills.items():  # (a constant several masks share: all)
                    low, high = narrowed[mask][0] / gate_high, narrowed[mask][1] / gate_high
                    before = narrowed.get(name, (low, high))
                    narrowed[name] = (min(low, before[0]), max(high, before[1]))
                continue
            if not graph.is_constant(mask):
                lows.append(high - (high - low) / MAX_MASK_NARROWING)
            narrowed[mask] = (max(low, min(lows)), high)
            for source in _moved_from(graph, mask, ctx, consumers):
                narrowed[source] = narrowed[mask]
    for op, mask, (low, high), floor, top in sums:
        mask_low, mask_high = narrowed.get(mask) or span_of(mask)
        # at the top, every sum the inputs' grids hold: a mask hides scores from calibration (a
        # causal one half of them), and a held-out score its own grid holds was clipped on the
        # sum's (8 calibration samples, causal: 5.3 on a sum grid ending at 4.5, 21.5 dB worst)
        high = max(high, top + mask_high)
        narrowed[op.outputs[0]] = (max(low, min(floor, high - (mask_high - mask_low) / 255.0)), high)
    return narrowed


def _moved_from(graph: Graph, mask: str, ctx: PlanContext, consumers: dict[str, list[Op]]) -> list[str]:
    """The tensors a computed mask's values were moved from (RESHAPE, BROADCAST_TO, PAD...), each
    read only by the next: such an op's output takes its input's grid, so a narrowed range is
    theirs to take too. A float select's mask unsqueezed after it ((1 - mask).masked_fill(...)
    in int16x8) kept its grid of 2e9 over 65,535 steps, and the scores' sum a step of 3.7
    (4.6 dB)."""
    found = []
    producer = graph.producer(mask)
    while producer is not None and len(producer.outputs) == 1 and ctx.float_reason(producer) is None:
        rule = registry.spec(producer.kind).quant
        source = producer.inputs[rule.index] if rule.value_preserving else None
        if source is None or graph.is_constant(source) or source in ctx.given or source in graph.outputs or \
                len(consumers.get(source, [])) != 1:
            break
        found.append(source)
        producer = graph.producer(source)
    return found


def _masked_fill_ranges(graph: Graph, ctx: PlanContext, consumers: dict[str, list[Op]],
                        narrowed: dict[str, Range], kept: dict[int, str]) -> dict[str, Range]:
    """Narrower ranges for scores.masked_fill(mask, fill) -> SOFTMAX (DeBERTa's XSoftmax, with
    finfo.min): a select by a boolean between the scores and a constant fill, on one grid (it
    copies integers). As for a sum, every row keeps a score, so its maximum is at least
    low(scores) and the select's grid starts SOFTMAX's slack below that: the fill saturates
    there instead of reaching -3.4e38, which kept the select and the softmax float. The fill
    (for each such select; several may share it) takes the grids of the selects it is on.
    A select without an integer kernel (int16) would hand the softmax a float fill, which a
    QUANTIZE onto the narrowed grid converts to int32 out of range (LiteRT leaves that to the
    platform), and a grid that holds it holds no score (-1e9: -0.5 dB in int16x8): the softmax
    reading it stays float too (into `kept`)."""
    found: dict[str, Range] = {}
    for op in graph.ops:
        rule = registry.spec(op.kind).quant
        out = op.outputs[0]
        if not isinstance(rule, SameAsOutput) or len(op.outputs) != 1 or out in graph.outputs or \
                not graph.tensors[out].dtype.is_float or out in ctx.given:
            continue
        values = [n for n in op.inputs if n and graph.tensors[n].dtype.is_float]
        chooser = [n for n in op.inputs if n and not graph.tensors[n].dtype.is_float]
        fills = [n for n in values if graph.is_constant(n)]
        scores = [n for n in values if not graph.is_constant(n)]
        readers = consumers.get(out, [])
        slack = [registry.spec(r.kind).negligible_below_row_max(r) for r in readers]
        if len(chooser) != 1 or len(fills) != 1 or len(scores) != 1 or fills[0] in ctx.given or \
                not readers or None in slack:
            continue
        seen, out_range = narrowed.get(scores[0]) or ctx.range(scores[0]), ctx.range(out)
        if seen is None or out_range is None or _beyond_integer(*seen):
            continue
        floor = seen[0] - min(slack)
        if float(np.max(graph.tensors[fills[0]].data)) > floor:
            continue  # a fill the softmax does not ignore: a value like any other
        why = ctx.float_reason(op) if rule.inputs_on_output_grid(ctx.dtype_of(op)) else "rescales"
        if why is not None:
            for reader in readers:
                kept[id(reader)] = (f"its input '{out}' is a masked fill of the scores that a float "
                                    f"{op.kind} makes: a grid for it would hold the fill, not the scores")
            continue
        found[out] = (max(out_range[0], floor), max(out_range[1], seen[1]))
        low, high = found.get(fills[0], found[out])
        found[fills[0]] = (min(low, found[out][0]), max(high, found[out][1]))
    return found


def _mask_fill(graph: Graph, mask: str, ctx: PlanContext,
               consumers: dict[str, list[Op]]) -> dict[str, float]:
    """The constants a computed mask is made of, each with the highest gate it is multiplied by
    (empty: another mask). Quantized onto the narrowed mask range (divided by that gate), each
    saturates to the bound past which the softmax ignores a position, so a masked position
    still weighs less than e^-16 of its row's maximum, where a grid stretched to the fill would
    leave the scores a step or two. Three forms (each constant of the first two read only by it):
    - gate x fill: a MUL of a gate in [0, g] (a 0/1 padding mask, 1 - attention_mask) by a
      negative scalar constant (HuggingFace's -1e9 or finfo.min fill, or -1e4). MUL's multiplier
      stays ordinary (narrowing the mask alone overflowed the kernel past MAX_MASK_NARROWING; a
      -1e9 fill left the sum's int8 grid ~4 per step: 6.4 dB) and a step of error in the gate
      (LiteRT's int16 SUB gives 1 - 1 = -1 step) costs a step times the bound, not times 1e9
      (0.4 dB in int16x8). A gate between 0 and 1 then masks in proportion to the bound, not to
      the fill: attention gates are 0/1.
    - a same-scale op of constants only, Where(keep, 0, finfo.min) (transformers' eager masks,
      causal or padding): SELECT_V2 copies the integers of its inputs from the output's grid, so
      its output holds only their values on that grid (gate 1). Where it has no integer kernel
      (int16), the float fill would reach a QUANTIZE, whose float-to-int conversion of -3.4e38
      LiteRT leaves to the platform: the mask stays float.
    - such masks moved (RESHAPE, BROADCAST_TO, TRANSPOSE) or summed, with each other, with a
      constant of no positive value or with a constant bias (a span under MASK_SPAN: LongT5's
      relative position bias added to its Where(mask > 0, 0, -1e10)), each read only by the next
      (torch's merge_masks: the causal constant plus Where(padding, fill, 0) reshaped): every
      one of them on the mask's grid (gate 1), the sum of two fills saturating there too, a
      bias held on it (see _least_row_maximum for the floor it moves)."""
    producer = graph.producer(mask)
    if producer is None:
        return {}
    rule = registry.spec(producer.kind).quant
    if isinstance(rule, SameAsOutput):
        values = [n for n in producer.inputs if n and graph.tensors[n].dtype.is_float]
        if rule.inputs_on_output_grid(ctx.dtype_of(producer)) and ctx.float_reason(producer) is None and \
                len(set(values)) == len(values) and \
                all(graph.is_constant(n) and n not in ctx.given and len(consumers.get(n, [])) == 1
                    for n in values):
            return {n: 1.0 for n in values}
        return {}
    if ctx.float_reason(producer) is None and len(producer.outputs) == 1 and \
            getattr(producer.attrs, "fused_activation", "NONE") == "NONE" and \
            (rule.value_preserving or registry.spec(producer.kind).sums_inputs):
        # moved (RESHAPE, BROADCAST_TO) or summed masks made of constants: torch's merge_masks,
        # causal + Where(padding, fill, 0) reshaped; each on the mask's grid, a sum saturating
        sources = [producer.inputs[rule.index]] if rule.value_preserving else \
            [n for n in producer.inputs if n and graph.tensors[n].dtype.is_float]
        found: dict[str, float] = {}
        for name in sources:
            if name in ctx.given:
                return {}
            if graph.is_constant(name):
                data = graph.tensors[name].data
                if rule.value_preserving or float(np.max(data)) > 0 and not _bias(data):
                    return {}
                found[name] = 1.0
                continue
            inner = _mask_fill(graph, name, ctx, consumers) if len(consumers.get(name, [])) == 1 else {}
            if not inner or any(gate != 1.0 for gate in inner.values()):
                return {}
            found.update({name: 1.0, **inner})
        return found if any(not graph.is_constant(n) for n in found) else {}
    if producer.kind != "MUL" or producer.attrs.fused_activation != "NONE":
        return {}
    fills = [n for n in producer.inputs if graph.is_constant(n)]
    gates = [n for n in producer.inputs if not graph.is_constant(n)]
    if len(fills) != 1 or len(gates) != 1 or graph.tensors[fills[0]].data.size != 1 or \
            len(consumers.get(fills[0], [])) != 1 or fills[0] in ctx.given:
        return {}
    fill = float(graph.tensors[fills[0]].data.reshape(-1)[0])
    gate = ctx.range(gates[0])
    if gate is None or not fill < 0 or gate[0] < 0 or gate[1] <= 0:
        return {}
    return {fills[0]: gate[1]}


def _bias(data: np.ndarray) -> bool:
    """A constant added to a mask that is no fill: finite, of a span under MASK_SPAN (a relative
    position bias)."""
    return bool(np.isfinite(data).all()) and float(np.max(data) - np.min(data)) < MASK_SPAN


def _least_row_maximum(graph: Graph, mask: str, high: float, ctx: PlanContext,
                       consumers: dict[str, list[Op]]) -> float:
    """The least value a row's maximum of `mask` (highest value `high`) can take. A padding or
    causal mask keeps a position of every row at its top, 0; a constant bias summed in
    (_mask_fill) moves each row's top by between its lowest and its highest value, so the rows'
    maxima are at least `high` less the biases' spans. Taking `high` for it (as before biases)
    put LongT5's sum floor up to the bias's span above scores a row keeps: they saturated."""
    spans = [float(np.max(d) - np.min(d)) for name in _mask_fill(graph, mask, ctx, consumers)
             for d in [graph.tensors[name].data] if graph.is_constant(name) and _bias(d)]
    return high - sum(spans)


def _invoke_refusal(graph: Graph, op: Op, ctx: PlanContext,
                    chosen: dict[str, QuantParams]) -> str | None:
    """Why `op` must stay float although it has a kernel: the integer kernel fails the whole
    invoke on some input values (the spec's IntegerRefusal), and the input's grid can hold one.
    A constant is checked value by value; a computed input may take any value of its grid.
    `chosen`: params fixed before calibration (QDQ, concatenation grids)."""
    dtype = ctx.dtype_of(op)
    refusal = registry.spec(op.kind).integer_refusal
    if refusal is None or refusal.index >= len(op.inputs) or not op.inputs[refusal.index]:
        return None
    name = op.inputs[refusal.index]
    t = graph.tensors[name]
    if not t.dtype.is_float:
        return None
    if name in chosen:
        params = chosen[name]
    elif t.is_constant:
        params = activation_params(dtype, float(np.min(t.data)), float(np.max(t.data)))
    else:
        seen = ctx.range(name)
        if seen is None:
            return None  # a part a QDQ model leaves float: float_reason decides
        params = activation_params(dtype, *seen)
    zero_point = int(np.max(params.zero_point))
    held = np.unique(params.quantize(t.data)) if t.is_constant else \
        np.arange(dtype.qmin, dtype.qmax + 1)
    bad = held == zero_point if refusal.values == Refused.ZERO_POINT else held < zero_point
    if not np.any(bad):
        return None
    what = "its zero point (real 0)" if refusal.values == Refused.ZERO_POINT else "negative values"
    return (f"the {dtype.name.lower()} kernel fails at invoke when input {refusal.index} holds "
            f"{what} ({refusal.source}), which its grid can hold")


def _one_step_through(graph: Graph, producer: Op | None, params: dict[str, QuantParams]) -> float | None:
    """|f(step)| for a float op f of one quantized input of the output's shape (SQRT, EXP, ...),
    `step` that input's grid step; None for any other producer."""
    if producer is None or len(producer.outputs) != 1:
        return None
    inputs = [n for n in producer.inputs if n and not graph.is_constant(n)]
    if len(inputs) != 1 or len(producer.inputs) != 1 or inputs[0] not in params or \
            params[inputs[0]].axis is not None or \
            graph.tensors[inputs[0]].shape != graph.tensors[producer.outputs[0]].shape:
        return None
    spec = registry.spec(producer.kind)
    step = np.full((1,) * len(graph.tensors[inputs[0]].shape), float(params[inputs[0]].scale), np.float32)
    with np.errstate(all="ignore"):
        value = np.abs(np.asarray(spec.reference(step, **spec.attr_kwargs(producer.attrs))[0], np.float64))
    return float(value.reshape(-1)[0]) if value.size == 1 and np.isfinite(value).all() else None


def _divisor_bound(graph: Graph, op: Op, ctx: PlanContext,
                   params: dict[str, QuantParams]) -> tuple[int, float] | None:
    """(index, bound) for a float op's computed divisor that calibration saw only on one side of
    0. A quantized divisor is held one step of its grid from 0 (or at the calibrated extreme, if
    that is nearer 0): only a value its grid rounds to 0 changes. A divisor a float op makes
    element by element from one quantized input (uint8 SQRT) is held at what the op makes of one
    step of that input's grid; any other at the calibrated extreme (int16: half of it, as its
    grids span twice the range). An RMSNorm
    x / sqrt(mean(x^2) + eps) divides 0 by 0 on a zero row without it, var + 1e-5 rounding to 0
    on the Add's grid."""
    index = registry.spec(op.kind).divisor
    if index is None or index >= len(op.inputs) or not op.inputs[index]:
        return None
    name = op.inputs[index]
    t = graph.tensors[name]
    seen = ctx.range(name) if t.dtype.is_float and not t.is_constant else None
    if seen is None or not (seen[0] > 0 or seen[1] < 0):
        return None
    extreme = seen[0] if seen[0] > 0 else -seen[1]
    grid = params.get(name)
    step = _one_step_through(graph, graph.producer(name), params) if grid is None else \
        float(grid.scale) if grid.axis is None else None
    if step is not None and 0 < step:
        bound = min(extreme, step)
    else:
        bound = extreme / INT16_HEADROOM if ctx.dtype_of(op) == DType.INT16 else extreme
    return index, bound if seen[0] > 0 else -bound


def plan_quantization(graph: Graph, ctx: PlanContext) -> QuantPlan:
    """Walk the ops in order and apply each spec's QuantRule (see ops/base.py), asking `ctx`
    for ranges, fixed parameters, each op's activation type and the ops that stay float.

    A tensor's own params are in the type of the first quantized op that writes or reads it;
    an op of another type (mixed precision: int16 next to int8) requires its own grid for it,
    which the rewrite reaches with a requantizing QUANTIZE."""
    narrowed, kept = _masked_softmax_ranges(graph, ctx), _integer_arithmetic(graph)
    narrowed.update(_masked_fill_ranges(graph, ctx, graph.consumer_map(), narrowed, kept))
    if narrowed or kept:
        ctx = _WithRanges(ctx, narrowed, kept)
    given = ctx.given
    plan = QuantPlan(ctx.dtype)
    params = plan.params
    preferred = {**_clamp_grids(graph, ctx), **_concatenation_grids(graph, ctx)}
    wide = _wide_scale_factors(graph, ctx)

    def activation(name: str, dtype: DType) -> QuantParams:
        """`name`'s grid in `dtype`: its own params, or (another type) a grid for its range."""
        if name not in params and graph.is_constant(name):  # an embedding table GATHER reads
            data = graph.tensors[name].data
            params[name] = activation_params(dtype, float(np.min(data)), float(np.max(data)))
        if name not in params:
            params[name] = given[name] if name in given and given[name].dtype == dtype else \
                preferred[name] if name in preferred and preferred[name].dtype == dtype \
                else calibrated_params(dtype, ctx.grid_range(name, dtype))
        if params[name].dtype == dtype:
            return params[name]
        if name in given and given[name].dtype == dtype:
            return given[name]  # (a QDQ grid, e.g. a Clip folded into its zero point, next to --int16-ops)
        if {params[name].dtype, dtype} == {DType.UINT8, DType.INT8} and params[name].axis is None:
            return params[name].with_dtype_shift(dtype)  # an int8 island's: the same grid, exactly
        return _requantizable(params[name], calibrated_params(dtype, ctx.grid_range(name, dtype)))

    for op in graph.ops:
        if _integer_only(graph, op):
            continue  # integer/boolean arithmetic (ids, masks, shapes) runs as it is
        reason = _kept_float(graph, op, ctx) or \
            next((wide[n] for n in op.inputs + op.outputs if n in wide), None) or \
            _invoke_refusal(graph, op, ctx, {**preferred, **given})
        if reason is not None:
            plan.float_ops[id(op)] = reason
            bound = _divisor_bound(graph, op, ctx, params)
            if bound is not None:
                plan.divisor_bounds[id(op)] = bound
            continue
        dtype = ctx.dtype_of(op)
        # the output's grid is the graph's (QDQ) own only in its type: an op of --int16-ops in an
        # 8-bit QDQ model chooses its int16 grid, within the kernel's limits
        out_given = op.outputs[0] in given and given[op.outputs[0]].dtype == dtype
        spec = registry.spec(op.kind)
        rule = spec.quant
        data_inputs = [i for i, n in enumerate(op.inputs)
                       if n and graph.tensors[n].dtype.is_float]
        activations = [i for i in data_inputs if not graph.is_constant(op.inputs[i])]
        required: dict[int, QuantParams] = {}

        def read(i: int) -> None:
            """Input i on its own grid, or (another type) on one in `dtype`, requantized."""
            seen = activation(op.inputs[i], dtype)
            if seen is not params[op.inputs[i]]:
                required[i] = seen

        shared: QuantParams | None = None
        if isinstance(rule, SameAsInput):
            source = op.inputs[rule.index]
            if graph.is_constant(source) and source not in params and op.outputs[0] in given:
                params[source] = given[op.outputs[0]]  # a QDQ graph's grid on a gathered table
            shared = activation(source, dtype)
            if len(data_inputs) > 1 and not out_given:
                shared = _covering(shared, [_range(ctx, out) for out in op.outputs])
            elif len(data_inputs) > 1:
                shared = given[op.outputs[0]]  # the graph's output grid holds every operand's values
            for i in activations:
                required[i] = shared
            for out in op.outputs:
                if graph.tensors[out].dtype.is_float:  # integer/boolean results are never quantized
                    params[out] = shared
        elif isinstance(rule, SameAsOutput):
            shared = _shared_output_params(graph, op, ctx, dtype)
            params[op.outputs[0]] = shared
            for i in activations:
                read(i)
                if rule.inputs_on_output_grid(dtype):
                    required[i] = shared  # the kernel demands identical params
        else:
            for i in activations:
                read(i)
            fixed = rule.output_params(dtype)
            for out in op.outputs:
                if not graph.tensors[out].dtype.is_float:
                    continue  # integer/boolean results (comparisons, indices) are never quantized
                if fixed is not None:
                    params[out] = fixed
                elif isinstance(rule, Calibrated):
                    activation(out, dtype)
        for i in data_inputs:
            name = op.inputs[i]
            if not graph.is_constant(name):
                continue
            p = params.get(name)
            if p is None and name in narrowed and (name not in given or given[name].dtype != dtype):
                p = activation_params(dtype, *narrowed[name])  # a constant attention mask (an 8-bit
                # QDQ one read by an op of --int16-ops too: on its 8-bit grid, the ADD's int16
                # kernel scaled the scores by ~1e-8 next to it)
            if p is None:
                p = given.get(name)  # (a QDQ grid of another type: an op of --int16-ops)
                if p is None or not _constant_fits(graph, op, i, p, dtype):
                    p = _constant_params(graph, op, i, dtype, plan, shared)
            elif not _constant_fits(graph, op, i, p, dtype):
                p = _constant_params(graph, op, i, dtype, plan, shared)  # another op's grid
            if p is not None and shared is not None and _is_operand(spec, i):
                p = shared  # the kernel compares raw integers: a constant shared by several
                # MAXIMUMs (tf2onnx folds one -0.4 for all) goes on each op's own grid
            if p is None:
                continue
            if name not in params:
                params[name] = p
            elif p != params[name]:
                required[i] = p
        if spec.bias is not None and op.inputs[spec.bias.index]:
            b = spec.bias
            weight, bias = op.inputs[b.weight], op.inputs[b.index]

            def seen(i: int) -> QuantParams:
                return required.get(i) or params[op.inputs[i]]

            if graph.is_constant(weight) and graph.is_constant(bias) and weight not in given and \
                    bias_type(seen(b.input).dtype) == DType.INT32:  # int64: room enough
                fitted = _fit_bias(seen(b.weight), seen(b.input), graph.tensors[weight].data,
                                   graph.tensors[bias].data)
                if b.weight in required:
                    required[b.weight] = fitted
                else:
                    params[weight] = fitted
            bias_grid = bias_params(seen(b.input), seen(b.weight))
            if bias not in params:
                params[bias] = bias_grid
            elif params[bias] != bias_grid:
                required[b.index] = bias_grid
            out = op.outputs[0]
            if isinstance(rule, Calibrated) and not out_given:
                params[out] = _bounded_multiplier(params[out], seen(b.input), seen(b.weight))
        if isinstance(rule, Calibrated) and op.outputs[0] in params and not out_given:
            floor = rule.min_output_scale(dtype, [float(np.max((required.get(i) or params[op.inputs[i]]).scale))
                                                  for i in data_inputs])
            params[op.outputs[0]] = _scale_at_least(params[op.outputs[0]], floor)
        if ctx.target.limits and not out_given:
            plan.adjustments.extend(fit_limits(ctx.target, graph, op, params, required))
        plan.required_inputs[id(op)] = required
        plan.quantized_ops.append(op)
    for name in graph.inputs + graph.outputs:  # for 8-bit model I/O, even next to float ops
        t = graph.tensors[name]
        seen = ctx.range(name) if t.dtype.is_float and not t.is_constant else None
        if seen is not None and _beyond_integer(*seen):
            continue  # a range no grid holds: the edge stays float
        if t.dtype.is_float and not t.is_constant and \
                (name in params or name in given or seen is not None):
            activation(name, ctx.dtype)  # (none: a float edge of a partly quantized QDQ model)
    return plan
