"""Full-integer conversion of QDQ models: read what the ONNX graph's QuantizeLinear/DequantizeLinear
say, choose the 8-bit type, and fold the FAKE_QUANT ops into the parameters the mark phase uses.

The graph's own scales and zero points are used wherever TFLite's kernels allow; where a kernel
fixes the output grid (SOFTMAX, LOGISTIC...) or needs the input's grid (pooling, RESHAPE...) and
the graph says otherwise, the op keeps the grid the kernel needs and a QUANTIZE moves its output to
the graph's grid. Every such place is listed in the summary. Tensors the graph leaves float keep
their ops float, unless calibration statistics cover them.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Container

import numpy as np

from tflq import ops as registry
from tflq.errors import UnsupportedModelError
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op, Tensor
from tflq.ir.qdq import QdqModel, QuantizedConstant
from tflq.ir.quant import QuantParams
from tflq.ops.base import ZERO_CLAMPED, FixedOutput, SameAsInput
from tflq.ops.qdq import FakeQuant
from tflq.ops.quantize_ops import Dequantize, Quantize

log = logging.getLogger(__name__)
FAKE_QUANT = FakeQuant.kind
# Integers farther than this (in steps) from the grid mean a constant is not on that grid.
GRID_TOLERANCE = 0.01
# int32 biases must stay clear of saturation (the mark phase's own limit for calibrated weights).
BIAS_LIMIT = 2.0 ** 30
# The graph's bias scale may differ from input scale x weight scale by this (relative) unnoticed.
BIAS_SCALE_TOLERANCE = 1e-3
# Kernels whose output is never negative (a clamp at 0 after them changes nothing).
NON_NEGATIVE_KINDS = frozenset({"RELU", "RELU6", "RELU_0_TO_1", "LOGISTIC", "SOFTMAX"})


def choose_dtype(qdq: QdqModel, requested: DType) -> DType:
    """The model's activation type: int16 (16x8) for int16 activations; else uint8 only when every
    activation and weight of the graph is uint8 per tensor (the classic scheme, which has no
    per-channel kernels); int8 otherwise (uint8 activations move to int8 exactly, zero point
    - 128). `requested` int8 always wins for an 8-bit model, and a weights-only model with blocked
    weights is int8: they get a per-channel grid of tflq's, which the hybrid kernels read as int8.

    uint8 is also chosen for uint8 activations with per-tensor weights of which some are int8 with
    a non-zero zero point that symmetric int8 cannot hold (PyTorch's per_tensor_affine QAT weights):
    the int8 kernels need zero point 0, so int8 would requantize those weights (MobileNetV2 block: 5 output steps from the
    QDQ model), while uint8 kernels take any weight zero point and int8 moves to uint8 exactly."""
    if DType.INT16 in qdq.activation_types:
        if qdq.activation_types != {DType.INT16}:
            kinds = "/".join(sorted(t.name.lower() for t in qdq.activation_types))
            raise UnsupportedModelError(
                f"the QDQ model mixes {kinds} activations; tflq converts QDQ models with one "
                f"activation type (use --int16-ops on the float model for mixed precision)")
        return DType.INT16
    if requested == DType.INT8 or (qdq.blocked and not qdq.activation_types):
        return DType.INT8
    stored = [c.params for c in qdq.constants.values() if c.params.dtype != DType.INT32]
    if not qdq.activation_types and not stored:
        return requested
    if qdq.activation_types <= {DType.UINT8} and all(p.dtype == DType.UINT8 and not p.is_per_channel
                                                     for p in stored):
        return DType.UINT8
    if qdq.activation_types == {DType.UINT8} and all(not p.is_per_channel for p in stored) and \
            any(_off_symmetric_int8(c) for c in qdq.constants.values()):
        return DType.UINT8
    return DType.INT8


def _off_symmetric_int8(constant: QuantizedConstant) -> bool:
    """True for per-tensor int8 integers with a non-zero zero point that symmetric int8 cannot hold
    on their scale ((q - zero point) outside [-127, 127]): an int8 file requantizes them."""
    p = constant.params
    if p.dtype != DType.INT8 or p.is_per_channel or int(p.zero_point) == 0:
        return False
    shifted = constant.values.astype(np.int64) - int(p.zero_point)
    return bool(shifted.size) and (int(shifted.min()) < -127 or int(shifted.max()) > 127)


def drop_redundant_fake_quant(graph: Graph) -> int:
    """Remove each FAKE_QUANT whose input already lies on its grid: the input comes, through ops
    that only move values, from a FAKE_QUANT with the same parameters (QDQ exporters wrap a
    Flatten or a MaxPool in a pair of its own). Exact in every mode; run before the layout pass so
    that it sees Flatten -> Gemm and folds the flattening into the weights."""
    count = 0
    producers = graph.producers()
    for op in list(graph.ops):
        if op.kind != FAKE_QUANT or op.outputs[0] in graph.outputs:
            continue
        source = producers.get(op.inputs[0])
        while source is not None and registry.spec(source.kind).quant.value_preserving:
            source = producers.get(source.inputs[0])
        if source is None or source.kind != FAKE_QUANT or source.attrs.params != op.attrs.params:
            continue
        graph.bypass(op)
        count += 1
    if count:
        graph.remove_unused()
    return count


def simplify_qdq_graph(graph: Graph) -> int:
    """The QDQ-specific rewrite that must precede the layout and fusion passes (exact)."""
    return drop_redundant_fake_quant(graph)


@dataclass
class FoldedQdq:
    """The QDQ graph's parameters for the mark phase, and what had to change to fit TFLite."""

    dtype: DType
    given: dict[str, QuantParams] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Activations the graph leaves float and calibration does not cover: ops touching them stay float.
    uncovered: set[str] = field(default_factory=set)
    # The graph's own (asymmetric int16) grid of each tensor whose grid moved to symmetric int16.
    graph_grids: dict[str, QuantParams] = field(default_factory=dict)

    def float_reason(self, op: Op) -> str | None:
        """Why `op` stays float in the QDQ model: a tensor it reads or writes is float in the graph."""
        for name in op.inputs + op.outputs:
            if name in self.uncovered:
                return (f"the QDQ graph leaves '{name}' float (no QuantizeLinear/DequantizeLinear; "
                        f"--calib would quantize it)")
        return None


class _Folder:
    def __init__(self, graph: Graph, qdq: QdqModel, dtype: DType, float_ops: set[str],
                 calibrated: Container[str]) -> None:
        self.graph = graph
        self.qdq = qdq
        self.result = FoldedQdq(dtype)
        self.given = self.result.given
        self.float_ops = float_ops
        self.calibrated = calibrated
        self.moved: list[_MovedGrid] = []

    @property
    def dtype(self) -> DType:
        return self.result.dtype

    def note(self, text: str) -> None:
        self.result.notes.append(text)

    # ---- which ops can run in 8 bits -------------------------------------------------------
    def covered(self, name: str) -> bool:
        return name in self.given or name in self.calibrated

    def float_activations(self, op: Op) -> list[str]:
        g = self.graph
        return [n for n in op.inputs + op.outputs
                if n and g.tensors[n].dtype.is_float and not g.is_constant(n)]

    def runs_quantized(self, op: Op, assume: str = "", inputs_only: bool = False) -> bool:
        """True when the mark phase will quantize `op` (`assume`: a tensor about to be covered;
        `inputs_only`: its outputs' grids are the kernel's, whatever the graph says)."""
        if op.origin in self.float_ops or not registry.spec(op.kind).quant.runs_in(self.dtype):
            return False
        names = [n for n in self.float_activations(op) if not (inputs_only and n in op.outputs)]
        return all(n == assume or self.covered(n) for n in names)

    def fixed_by_rule(self, name: str) -> QuantParams | None:
        """The params TFLite's kernel gives `name` (a FixedOutput or same-scale op's output)."""
        producer = self.graph.producer(name)
        if producer is None or not self.runs_quantized(producer, inputs_only=True):
            return None
        rule = registry.spec(producer.kind).quant
        source = None
        if isinstance(rule, SameAsInput):
            if self.data_inputs(producer) != [producer.inputs[rule.index]]:
                return None  # several operands: the mark phase puts them all on the graph's output grid
            source = self.given.get(producer.inputs[rule.index])
        return rule.output_params(self.dtype, source)

    def data_inputs(self, op: Op) -> list[str]:
        return [n for n in op.inputs if n and self.graph.tensors[n].dtype.is_float]

    # ---- the walk ------------------------------------------------------------------------
    def run(self) -> FoldedQdq:
        for op in list(self.graph.ops):
            if op.kind == FAKE_QUANT:
                self.fold(op)
            else:
                self.share_input_grid(op)
                self.fix_intermediate_output(op)
        for op in reversed(self.graph.ops):
            self.share_output_grid(op)
        for op in self.graph.ops:
            self.constants(op)
        self.note_moved_grids()
        self.graph.remove_unused()
        self.result.uncovered = {n for op in self.graph.ops for n in self.float_activations(op)
                                 if not self.covered(n)}
        return self.result

    def fold(self, op: Op) -> None:
        graph_grid = op.attrs.params.with_dtype_shift(self.dtype)
        wanted = symmetric_int16(graph_grid)
        clamp = self.keep_zero_clamp(op, graph_grid) if wanted is not graph_grid else ""
        x, y = op.inputs[0], op.outputs[0]
        known = self.given.get(x)
        source = "another QuantizeLinear of the same tensor"
        if known is None:
            known = self.fixed_by_rule(x)
            source = "the grid TFLite's kernel gives it"
            if known is not None:
                self.given[x] = known
        if wanted is not graph_grid:
            if known is not None and _serves_for(known, graph_grid, wanted):
                wanted = known  # (a kernel's own grid, e.g. LOGISTIC's 1/32768, is as good a move)
            self.moved.append(_MovedGrid(op.origin, graph_grid, wanted, clamp))
        if known is None or known == wanted:
            self.given.setdefault(x, wanted)
            if wanted is not graph_grid:
                self.result.graph_grids.setdefault(x, graph_grid)
            if self.bypass(op):
                return  # else a model output that also feeds other ops: keep it as a copy
        else:
            producer = self.graph.producer(x)
            what = f"{producer.kind} '{producer.origin}'" if producer is not None else f"'{x}'"
            self.note(f"{what}: output requantized from {known.describe()} ({source}) to the "
                      f"QDQ graph's {wanted.describe()}")
        index = self.graph.ops.index(op)
        self.graph.remove_op(op)
        self.graph.add_op(Op(Quantize.kind, [x], [y], origin=op.origin), index)
        self.given[y] = wanted
        if wanted is not graph_grid:
            self.result.graph_grids[y] = graph_grid

    def keep_zero_clamp(self, op: Op, graph_grid: QuantParams) -> str:
        """An asymmetric int16 grid whose lowest value is 0 clamps what it rounds at 0 (onnxruntime
        drops a Relu into such a zero point); the symmetric grid that replaces it does not. Keep
        the clamp: as the producer's fused RELU where it applies one and nothing else reads its
        output, else as a RELU op in front of `op`. Returns how ("" if the values are never
        negative, or the grid clamps elsewhere: beyond its calibrated range only)."""
        if int(graph_grid.zero_point) != DType.INT16.qmin:
            return ""
        g, x = self.graph, op.inputs[0]
        if self.non_negative(x):
            return ""
        producer = g.producer(x)
        spec = registry.spec(producer.kind) if producer is not None else None
        if spec is not None and spec.fused_activation is not None and x not in self.given and \
                getattr(producer.attrs, "fused_activation", None) == "NONE" and \
                "RELU" in spec.fused_activation.everywhere() and x not in g.outputs and \
                g.consumers(x) == [op]:
            producer.attrs = replace(producer.attrs, fused_activation="RELU")
            return f"fused RELU in {producer.kind} '{producer.origin}'"
        t = g.tensors[x]
        clamped = g.unique_name(f"{x}/relu")
        g.add_tensor(Tensor(clamped, t.dtype, t.shape, layout=t.layout))
        g.add_op(Op("RELU", [x], [clamped], origin=op.origin), g.ops.index(op))
        op.inputs[0] = clamped
        if x not in self.given:
            self.given[x] = self.fixed_by_rule(x) or symmetric_int16(graph_grid)
        self.given[clamped] = self.given[x]  # (RELU keeps its input's grid)
        return "RELU op"

    def non_negative(self, name: str) -> bool:
        """True when `name`'s producer never writes a negative value (a clamping activation, a
        softmax, or a value-moving op of such values)."""
        producer = self.graph.producer(name)
        if producer is None:
            return False
        if producer.kind in NON_NEGATIVE_KINDS or \
                getattr(producer.attrs, "fused_activation", None) in ZERO_CLAMPED:
            return True
        if registry.spec(producer.kind).quant.value_preserving:
            inputs = self.data_inputs(producer)
            return bool(inputs) and all(self.non_negative(n) for n in inputs)
        return False

    def note_moved_grids(self) -> None:
        """One summary line for the asymmetric 16-bit grids moved to symmetric int16 (one per
        tensor when there are few)."""
        if not self.moved:
            return
        why = ("LiteRT's 16x8 kernels take int16 activations with zero point 0 only: each became "
               "the symmetric int16 grid covering the same range, with a step at most 2x "
               "the graph's (1 bit)")
        clamps = [m.clamp for m in self.moved if m.clamp]
        kept = (f"; the clamp at 0 of {len(clamps)} grid(s) whose range starts at 0 (a Relu "
                f"folded into the zero point) is kept ({_counted(clamps)})") if clamps else ""
        if len(self.moved) <= 3:
            for m in self.moved:
                clamp = f"; its clamp at 0 is kept as a {m.clamp}" if m.clamp else ""
                self.note(f"QuantizeLinear '{m.origin}': asymmetric 16-bit grid (on int16: "
                          f"{m.graph.describe()}) moved to "
                          f"{m.new.describe()} (LiteRT's 16x8 kernels take int16 activations with "
                          f"zero point 0 only; the same range, a step "
                          f"{float(m.new.scale) / float(m.graph.scale):.2f}x the graph's){clamp}")
            return
        worst = max(float(m.new.scale) / float(m.graph.scale) for m in self.moved)
        names = ", ".join(f"'{m.origin}'" for m in self.moved[:3])
        self.note(f"{len(self.moved)} asymmetric 16-bit activation grids (QuantizeLinear {names}, "
                  f"...) moved to symmetric int16: {why}, here up to {worst:.2f}x{kept}")

    def bypass(self, op: Op) -> bool:
        """Remove a FAKE_QUANT whose parameters now live on its input; keep output names."""
        x = op.inputs[0]
        name = self.graph.bypass(op)
        if name is not None and name != x:
            self.given[name] = self.given.pop(x)
            if x in self.result.graph_grids:
                self.result.graph_grids[name] = self.result.graph_grids.pop(x)
        return name is not None

    def share_input_grid(self, op: Op) -> None:
        """A same-scale op with one data input: its output is on its input's grid, exactly."""
        rule = registry.spec(op.kind).quant
        if not isinstance(rule, SameAsInput):
            return
        source = op.inputs[rule.index]
        if self.data_inputs(op) != [source] or source not in self.given or len(op.outputs) != 1 or \
                op.outputs[0] in self.given or not self.runs_quantized(op, assume=op.outputs[0]):
            return
        self.given[op.outputs[0]] = self.given[source]
        if source in self.result.graph_grids:
            self.result.graph_grids[op.outputs[0]] = self.result.graph_grids[source]

    def fix_intermediate_output(self, op: Op) -> None:
        """Inside one ONNX node's lowering (a Softmax over a non-last axis is TRANSPOSE, SOFTMAX,
        TRANSPOSE), a kernel's fixed output grid is the tensor's grid: the graph has none for it."""
        rule = registry.spec(op.kind).quant
        out = op.outputs[0]
        if isinstance(rule, FixedOutput) and len(op.outputs) == 1 and out not in self.given and \
                self.qdq.is_intermediate(out) and self.runs_quantized(op, assume=out):
            self.given[out] = rule.output_params(self.dtype)

    def share_output_grid(self, op: Op) -> None:
        """Backwards through an op rounding commutes with (a crop, a transpose): an intermediate
        tensor of a lowering read only by it takes the grid of its output, which the graph gives
        (TRANSPOSE_CONV -> STRIDED_SLICE crop). Exact: the values that reach the output are
        rounded once, to the grid the graph rounds them to."""
        if not registry.spec(op.kind).quant.commutes_with_rounding or len(op.outputs) != 1 or \
                op.outputs[0] not in self.given:
            return
        g = self.graph
        for name in self.data_inputs(op):
            if name not in self.given and self.qdq.is_intermediate(name) and not g.is_constant(name) \
                    and len(g.consumers(name)) == 1 and name not in g.outputs:
                self.given[name] = self.given[op.outputs[0]]

    # ---- weights and other constant operands ---------------------------------------------
    def constants(self, op: Op) -> None:
        """Give each float constant input the graph's own grid when it is provably on it."""
        stored = [self.qdq.constants[n] for n in self.qdq.node_inputs.get(op.origin, ())
                  if n in self.qdq.constants]
        if not self.runs_quantized(op):
            return
        spec = registry.spec(op.kind)
        weight_axes = {w.index: w.axis for w in spec.weights}
        eight_bit = [c for c in stored if c.params.dtype != DType.INT32]
        g = self.graph
        if not eight_bit:
            if any(g.is_constant(op.inputs[i]) and g.tensors[op.inputs[i]].dtype.is_float
                   for i in weight_axes if i < len(op.inputs)):
                blocks = [self.qdq.blocked[n] for n in self.qdq.node_inputs.get(op.origin, ())
                          if n in self.qdq.blocked]
                how = f"in {blocks[0].describe()} in the QDQ graph (TFLite has no block grid)" \
                    if blocks else "float in the QDQ graph"
                self.note(f"{op.kind} '{op.origin}': its weights are {how}; "
                          f"tflq quantized them ({self.dtype.name.lower()} rules)")
            if not stored:
                return
        for i, name in enumerate(op.inputs):
            if not eight_bit or not name or not g.is_constant(name) or \
                    not g.tensors[name].dtype.is_float or name in self.given or \
                    (spec.bias is not None and i == spec.bias.index):
                continue
            data = g.tensors[name].data
            grid = next((p for p in (on_grid(data, c, weight_axes.get(i)) for c in eight_bit)
                         if p is not None), None)
            what = f"{op.kind} '{op.origin}'"
            if grid is None:
                if i in weight_axes:
                    self.note(f"{what}: weights requantized (after the graph's rewrites they are "
                              f"no longer on its grid, e.g. a BatchNormalization folded into them)")
            elif i in weight_axes:
                self.weight(op, i, grid, what)
            elif not grid.is_per_channel and (self.dtype != DType.INT16 or
                                              np.all(grid.zero_point == 0)):  # 16x8: zp 0
                self.given[name] = grid.with_dtype_shift(self.dtype)
        if spec.bias is not None:
            self.check_bias(op, stored)

    def weight(self, op: Op, index: int, grid: QuantParams, what: str) -> None:
        name = op.inputs[index]
        g = self.graph
        if self.dtype == DType.UINT8:
            if grid.is_per_channel:
                self.note(f"{what}: per-channel weights requantized per tensor (uint8 kernels have "
                          f"no per-channel variant)")
                return
            params = grid.with_dtype_shift(DType.UINT8)
        else:
            params = grid
            if grid.dtype != DType.INT8 or np.any(grid.zero_point != 0):
                params = symmetric_int8(g.tensors[name].data, grid)
            axis = next((w.axis for w in registry.spec(op.kind).weights if w.index == index), None)
            if params is None and self.dtype == DType.INT16 and axis is not None:
                params, exact = channel_symmetric_int8(g.tensors[name].data, grid, axis)
                if exact:  # (else the same grid tflq's own 16x8 rule gives)
                    self.note(f"{what}: {grid.dtype.name.lower()} weights with non-zero zero points "
                              f"as symmetric int8 per channel: {exact} of {params.scale.size} "
                              f"channels keep the graph's integers exactly, the others are "
                              f"requantized (their integers exceed [-127, 127] around the zero point)")
                else:
                    params = None
            if params is None:
                self.note(f"{what}: {grid.dtype.name.lower()} weights with non-zero zero points "
                          f"requantized to symmetric int8 (the int8 kernels need zero point 0)")
                return
        rule = registry.spec(op.kind).bias
        bias = self.bias_data(op)
        input_params = self.given.get(op.inputs[rule.input]) if rule is not None else None
        if bias is not None and input_params is not None and \
                _bias_saturates(bias, input_params, params):
            self.note(f"{what}: weights requantized: the bias does not fit int32 at the graph's "
                      f"weight scale")
            return
        q = params.quantize(g.tensors[name].data)
        if params.dtype == DType.INT8 and np.any(q == -128):
            count = int(np.count_nonzero(q == -128))
            narrowed = params.dequantize(np.maximum(q, -127).astype(np.int8))
            op.inputs[index] = name = g.add_constant(f"{name}/narrow_range", narrowed)
            self.note(f"{what}: {count} weight value(s) at -128 moved to -127 (TFLite's int8 "
                      f"weights are symmetric, [-127, 127])")
        self.given[name] = params

    def bias_data(self, op: Op) -> np.ndarray | None:
        bias = registry.spec(op.kind).bias
        name = op.inputs[bias.index] if bias is not None else ""
        if not name or not self.graph.is_constant(name):
            return None
        return self.graph.tensors[op.inputs[bias.index]].data

    def check_bias(self, op: Op, stored: list[QuantizedConstant]) -> None:
        """Note a graph int32 bias whose scale is not input scale x weight scale (it is
        requantized to that scale, which is what TFLite's kernels assume)."""
        rule = registry.spec(op.kind).bias
        input_params = self.given.get(op.inputs[rule.input])
        # (an input grid moved to symmetric int16: the graph's bias is on the graph's grid, and
        # its requantization is part of that move, noted once)
        input_params = self.result.graph_grids.get(op.inputs[rule.input], input_params)
        weight_params = self.given.get(op.inputs[rule.weight])
        bias = self.bias_data(op)
        graph_bias = [c for c in stored if c.params.dtype == DType.INT32]
        if input_params is None or weight_params is None or bias is None or not graph_bias:
            return
        expected = input_params.scale.astype(np.float64) * weight_params.scale.astype(np.float64)
        actual = graph_bias[0].params.scale.astype(np.float64)
        if actual.size not in (1, expected.size):
            return
        worst = float(np.max(np.abs(actual / expected - 1)))
        if worst > BIAS_SCALE_TOLERANCE:
            text = (f"{op.kind} '{op.origin}': the graph's bias scale differs from input scale x "
                    f"weight scale by up to {worst:.2%}; the bias was requantized")
            log.warning(text)
            self.note(text)


@dataclass(frozen=True)
class _MovedGrid:
    origin: str          # the QuantizeLinear
    graph: QuantParams   # its asymmetric int16 grid
    new: QuantParams     # the symmetric one
    clamp: str           # how its clamp at 0 is kept ("" when none is needed)


def _counted(clamps: list[str]) -> str:
    """'fused RELU in CONV_2D x2, RELU op x1' for _MovedGrid.clamp texts."""
    counts = Counter(clamp.split(" '")[0] for clamp in clamps)
    return ", ".join(f"{kind} x{n}" for kind, n in counts.items())


def _serves_for(known: QuantParams, graph_grid: QuantParams, moved: QuantParams) -> bool:
    """True when `known`, a symmetric int16 grid a tensor has already, holds the range of its
    asymmetric `graph_grid` (to within a step of `moved`, the grid it would move to) with a step
    no coarser than `moved`'s: then the move may as well land on it (no QUANTIZE between)."""
    if known.dtype != DType.INT16 or known.is_per_channel or int(known.zero_point) != 0:
        return False
    step, zero_point = float(graph_grid.scale), int(graph_grid.zero_point)
    low, high = step * (DType.INT16.qmin - zero_point), step * (DType.INT16.qmax - zero_point)
    known_step, moved_step = float(known.scale), float(moved.scale)
    return known_step <= moved_step * (1 + 1e-6) and \
        known_step * DType.INT16.qmax >= max(-low, high) - moved_step * (1 + 1e-6)


def symmetric_int16(params: QuantParams) -> QuantParams:
    """The int16 grid with zero point 0 covering the real range of an asymmetric int16 one
    (uint16 arrives as int16, zero point - 32768): range [s (-32768 - z), s (32767 - z)], scale
    max(|low|, |high|) / 32767, which LiteRT's 16x8 kernels take. The step grows by at most 2x
    (one bit, for a one-sided range). A symmetric grid (zero point 0), or one of another type,
    is returned as is."""
    if params.dtype != DType.INT16 or params.is_per_channel or int(params.zero_point) == 0:
        return params
    step, zero_point = float(params.scale), int(params.zero_point)
    low, high = step * (DType.INT16.qmin - zero_point), step * (DType.INT16.qmax - zero_point)
    return QuantParams.per_tensor(DType.INT16, max(-low, high) / DType.INT16.qmax, 0)


def on_grid(data: np.ndarray, stored: QuantizedConstant, axis: int | None) -> QuantParams | None:
    """`stored`'s params in the IR constant's layout if every value of `data` lies on that grid
    (the importer may have transposed the constant; the channel order along `axis` is kept).

    Symmetric per-channel weights that a folded BatchNorm scaled per channel are still on a grid:
    the same integers, each channel's scale times the BatchNorm factor."""
    params = stored.params
    if data.size != stored.values.size:
        return None
    if params.is_per_channel:
        if axis is None or data.ndim <= axis or data.shape[axis] != params.scale.size:
            return None
        params = QuantParams.per_channel(params.dtype, params.scale, params.zero_point, axis)
        found = _within_grid(data, params)
        if found is not None or np.any(params.zero_point != 0):
            return found
        reduce = tuple(i for i in range(stored.values.ndim) if i != stored.params.axis)
        largest = np.abs(stored.values.astype(np.int64)).max(axis=reduce)
        magnitude = np.abs(data.astype(np.float64)).max(axis=tuple(i for i in range(data.ndim)
                                                                   if i != axis))
        scale = np.where(largest > 0, magnitude / np.maximum(largest, 1), params.scale)
        if np.any(scale <= 0):
            return None
        rescaled = QuantParams.per_channel(params.dtype, scale, params.zero_point, axis)
        return _within_grid(data, rescaled)
    return _within_grid(data, params)


def _within_grid(data: np.ndarray, params: QuantParams) -> QuantParams | None:
    """`params` if every value of `data` is (within GRID_TOLERANCE steps) one of its grid points."""
    shape = [1] * data.ndim
    if params.axis is not None:
        shape[params.axis] = -1
    steps = data.astype(np.float64) / params.scale.astype(np.float64).reshape(shape) + \
        params.zero_point.reshape(shape)
    nearest = np.rint(steps)
    if np.max(np.abs(steps - nearest), initial=0.0) > GRID_TOLERANCE or \
            np.min(nearest, initial=0) < params.dtype.qmin or \
            np.max(nearest, initial=0) > params.dtype.qmax:
        return None
    return params


def symmetric_int8(data: np.ndarray, grid: QuantParams) -> QuantParams | None:
    """The symmetric int8 grid of `grid`'s scales when every weight, an integer q - zero point of
    `grid`, lies in [-127, 127] (always for 4-bit weights; uint8 ones around a middle zero
    point): the same values exactly, as TFLite's int8 kernels need them; else None."""
    if grid.is_per_channel:
        symmetric = QuantParams.per_channel(DType.INT8, grid.scale, np.zeros(grid.scale.shape, np.int64),
                                            grid.axis)
    else:
        symmetric = QuantParams.per_tensor(DType.INT8, float(grid.scale), 0)
    found = _within_grid(data, symmetric)
    if found is None or np.any(found.quantize(data) == -128):
        return None
    return found


def channel_symmetric_int8(data: np.ndarray, grid: QuantParams, axis: int) -> tuple[QuantParams, int]:
    """A symmetric int8 grid per channel along `axis` for weights on `grid` (per tensor, or per
    channel along `axis`) whose integers q - zero point do not all fit [-127, 127]: a channel
    whose integers fit keeps the graph's scale, so its values exactly; another gets the scale
    that takes its largest integer to 127, the grid tflq's 16x8 rule gives it (its values are
    rounded again). Returns the grid and the number of channels kept exactly. For LiteRT's 16x8
    kernels, which take per-channel int8 weights wherever a channel axis exists."""
    channels = data.shape[axis]
    shape = [1] * data.ndim
    shape[axis] = -1
    scale = np.broadcast_to(grid.scale.astype(np.float64).reshape(shape if grid.is_per_channel else ()),
                            shape[:axis] + [channels] + shape[axis + 1:]).reshape(-1)
    zero_point = grid.zero_point.reshape(shape if grid.is_per_channel else ())
    steps = np.rint(data.astype(np.float64) / scale.reshape(shape) + zero_point) - zero_point
    reduce = tuple(i for i in range(data.ndim) if i != axis)
    largest = np.abs(steps).max(axis=reduce) if data.size else np.zeros(channels)
    scale = scale * np.maximum(1.0, largest / 127)
    params = QuantParams.per_channel(DType.INT8, scale, np.zeros(channels, np.int64), axis)
    return params, int(np.count_nonzero(largest <= 127))


def _bias_saturates(bias: np.ndarray, input_params: QuantParams, weight: QuantParams) -> bool:
    scale = input_params.scale.astype(np.float64) * weight.scale.astype(np.float64)
    return bool(np.any(np.abs(np.asarray(bias, np.float64)).reshape(-1) / scale > BIAS_LIMIT))


def fold_fake_quant(graph: Graph, qdq: QdqModel, dtype: DType, float_ops: set[str],
                    calibrated: Container[str] = frozenset()) -> FoldedQdq:
    """Remove the FAKE_QUANT ops (QUANTIZE where a kernel's grid differs from the graph's); return
    the parameters the graph fixes and the tensors it leaves float (`calibrated`: the tensors
    calibration statistics cover)."""
    return _Folder(graph, qdq, dtype, float_ops, calibrated).run()


def quantize_on_own_grid_first(graph: Graph, given: dict[str, QuantParams]) -> list[str]:
    """After the rewrite: a float tensor the QDQ graph puts on a grid (a model input, the output of
    an op left float), or an int16 one (an op of --int16-ops), enters the graph's grid first, as
    in the graph; where a kernel needs another grid (int8 CONCATENATION, MAXIMUM's operands), a
    second QUANTIZE moves it there, instead of one QUANTIZE straight to the kernel's grid (which
    skipped the clamp of a Relu that onnxruntime folds into a zero point). Returns one note per
    such place."""
    notes: list[str] = []
    entry: dict[str, str] = {}
    for op in list(graph.ops):
        x = op.inputs[0] if op.kind == Quantize.kind else ""
        if not x or x not in given or not (graph.tensors[x].dtype.is_float or
                                           graph.tensors[x].quant.dtype != given[x].dtype):
            continue  # (an int16 tensor of --int16-ops too: the graph's grid may clamp, e.g. a Relu)
        own, wanted = given[x], graph.tensors[op.outputs[0]].quant
        if not graph.tensors[x].dtype.is_float and own.dtype == DType.UINT8:
            own = own.with_dtype_shift(DType.INT8)  # (LiteRT's QUANTIZE takes int16 to int8, not uint8)
        if wanted == own:
            entry.setdefault(x, op.outputs[0])
            continue
        if x not in entry:
            t = graph.tensors[x]
            entry[x] = graph.unique_name(f"{x}/quantized")
            graph.add_tensor(Tensor(entry[x], own.dtype, t.shape, quant=own, layout=t.layout))
            graph.add_op(Op(Quantize.kind, [x], [entry[x]], origin=op.origin), graph.ops.index(op))
        op.inputs[0] = entry[x]
        notes.append(f"requantized '{x}' from the QDQ graph's {own.describe()} to "
                     f"{wanted.describe()} for a kernel that needs that grid")
    return notes


def round_float_values_on_their_grids(graph: Graph, given: dict[str, QuantParams]) -> list[str]:
    """After the rewrite: a tensor the QDQ graph rounds (QuantizeLinear -> DequantizeLinear) that
    an op left float writes, and that a float op or the model's output reads, goes through
    QUANTIZE -> DEQUANTIZE on that grid, so that the file rounds and clamps it as the graph does:
    onnxruntime folds a Relu into a QuantizeLinear whose zero point is the grid's minimum, and
    dropping the pair let negative values through (a BatchNormalization the graph leaves float
    before its output: 2.4 dB against onnxruntime). Returns one note per such tensor."""
    notes: list[str] = []
    producers = graph.producers()
    for name, params in list(given.items()):
        t = graph.tensors.get(name)
        producer = producers.get(name)
        if t is None or not t.dtype.is_float or t.quant is not None or t.is_constant or \
                producer is None or producer.kind == Dequantize.kind or params.is_per_channel:
            continue
        if name not in graph.outputs and all(op.kind == Quantize.kind for op in graph.consumers(name)):
            continue  # read in 8 bits only: the QUANTIZE rounds it already
        raw = graph.unique_name(f"{name}/unrounded")
        graph.add_tensor(Tensor(raw, t.dtype, t.shape, layout=t.layout))
        producer.outputs[producer.outputs.index(name)] = raw
        q = graph.unique_name(f"{name}/on_grid")
        graph.add_tensor(Tensor(q, params.dtype, t.shape, quant=params, layout=t.layout))
        index = graph.ops.index(producer) + 1
        graph.add_op(Op(Quantize.kind, [raw], [q], origin=producer.origin), index)
        graph.add_op(Op(Dequantize.kind, [q], [name], origin=producer.origin), index + 1)
        notes.append(f"'{name}', written by {producer.kind} '{producer.origin}' in float, is rounded "
                     f"onto the QDQ graph's {params.describe()} (QUANTIZE, DEQUANTIZE) as the graph "
                     f"rounds it")
    for name in graph.outputs:  # a model output an op of --int16-ops writes: the graph's grid too
        producer, params = producers.get(name), given.get(name)
        if producer is None or producer.kind != Dequantize.kind or params is None or params.is_per_channel:
            continue
        q = graph.tensors[producer.inputs[0]]
        if q.quant is None or q.quant.dtype == params.dtype or q.quant.dtype != DType.INT16:
            continue
        if params.dtype == DType.UINT8:
            params = params.with_dtype_shift(DType.INT8)  # (LiteRT's QUANTIZE takes int16 to int8)
        on_grid = graph.unique_name(f"{name}/on_grid")
        graph.add_tensor(Tensor(on_grid, params.dtype, q.shape, quant=params, layout=q.layout))
        graph.add_op(Op(Quantize.kind, [q.name], [on_grid], origin=producer.origin), graph.ops.index(producer))
        producer.inputs[0] = on_grid
        notes.append(f"output '{name}' is rounded onto the QDQ graph's {params.describe()} before it "
                     f"leaves int16, as the graph rounds it")
    return notes
