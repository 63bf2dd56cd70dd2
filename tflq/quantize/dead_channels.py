"""Zero the weights that read a channel the quantized graph provably holds at exactly 0.

A weight layer with a fused RELU or RELU6 whose channel's pre-activation cannot be positive for
any input on its input grid writes that channel as its output zero point, i.e. exactly 0, on
every input the quantized model can represent. The next layer's weights for that input channel
then multiply (q_x - z_x) = 0: they change nothing, yet with per-tensor weights they set the
grid of every other channel. A BatchNormalization folded over a dead channel (running variance
0) gives such a weight gamma / sqrt(eps) times the trained one: bench MobileNetV2's first
depthwise conv had one channel at 1055 next to 31 below 2.6, so its uint8 grid (step 7.2)
rounded them all to 0 or one step (8.5 -> 23 dB pooled SQNR against onnxruntime).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tflq import ops as registry
from tflq.ir.graph import Graph, Op
from tflq.ir.quant import QuantParams
from tflq.ops.base import ZERO_CLAMPED

if TYPE_CHECKING:
    from tflq.quantize.plan import PlanContext, QuantPlan


@dataclass(frozen=True)
class ZeroedChannels:
    """The input channels of `layer` (an ONNX node) whose weights were zeroed, and why."""

    layer: str
    producer: str
    channels: tuple[int, ...]

    def describe(self) -> str:
        return (f"node '{self.layer}': the weights of input channel(s) {list(self.channels)} set to 0: "
                f"'{self.producer}' writes them as exactly 0 for every input on its grid "
                f"(they multiplied 0 and widened the weight grid)")


def _weight_rule(op: Op):
    spec = registry.spec(op.kind)
    return next((w for w in spec.weights if w.axis is not None and w.input_axis is not None
                 and w.index < len(op.inputs)), None), spec


def _grid_range(q: QuantParams) -> tuple[float, float]:
    scale, zero = float(np.max(q.scale)), int(np.min(q.zero_point))
    return scale * (q.dtype.qmin - zero), scale * (q.dtype.qmax - int(np.max(q.zero_point)))


def dead_output_channels(graph: Graph, op: Op, input_grid: QuantParams,
                         weight_grid: QuantParams) -> np.ndarray:
    """Output channels of `op` that are exactly 0 after its fused RELU/RELU6 for every input
    x on `input_grid`: b + sum_k max(w_k lo, w_k hi) plus the worst error of rounding weights
    (one weight step per term, times max |x|) and bias (one product step) stays below 0, so the
    integer accumulator is negative and the kernel clamps it to the output zero point."""
    rule, spec = _weight_rule(op)
    w = graph.tensors[op.inputs[rule.index]].data.astype(np.float64)
    axes = tuple(i for i in range(w.ndim) if i != rule.axis)
    lo, hi = _grid_range(input_grid)
    bound = np.maximum(w * lo, w * hi).sum(axis=axes)
    if spec.bias is not None and spec.bias.index < len(op.inputs) and op.inputs[spec.bias.index]:
        bias = graph.tensors[op.inputs[spec.bias.index]]
        if bias.data is None:
            return np.zeros(0, dtype=np.int64)
        bound = bound + bias.data.astype(np.float64)
    count = w.size // w.shape[rule.axis]
    step = np.broadcast_to(weight_grid.scale.astype(np.float64), bound.shape)
    x_max = max(abs(lo), abs(hi))
    bound = bound + count * step * x_max + step * float(np.max(input_grid.scale))
    return np.flatnonzero(bound < 0)


def zero_dead_channel_weights(graph: Graph, params: dict[str, QuantParams],
                              required_inputs: dict[int, dict[int, QuantParams]],
                              quantized: set[int]) -> list[ZeroedChannels]:
    """For each quantized weight layer with a fused RELU/RELU6 (`params`: a mark phase's grids),
    zero the weights that read its provably-zero channels in every weight layer reading its
    output directly as data input. Returns what changed (re-plan afterwards: weight grids move)."""
    consumers = graph.consumer_map()
    changed = []
    for op in list(graph.ops):
        rule, _ = _weight_rule(op)
        if rule is None or id(op) not in quantized or \
                getattr(op.attrs, "fused_activation", "NONE") not in ZERO_CLAMPED:
            continue
        weight_name = op.inputs[rule.index]
        if not graph.is_constant(weight_name) or weight_name not in params:
            continue
        input_grid = required_inputs.get(id(op), {}).get(0) or params.get(op.inputs[0])
        if input_grid is None or input_grid.axis is not None:
            continue
        dead = dead_output_channels(graph, op, input_grid, params[weight_name])
        output = op.outputs[0]
        if dead.size == 0 or graph.tensors[output].shape[-1:] != (graph.tensors[weight_name].shape[rule.axis],):
            continue
        for reader in consumers.get(output, []):
            reader_rule, _ = _weight_rule(reader)
            if reader_rule is None or id(reader) not in quantized or reader.inputs[0] != output or \
                    not graph.is_constant(reader.inputs[reader_rule.index]):
                continue
            name = reader.inputs[reader_rule.index]
            w2 = graph.tensors[name].data
            if w2.shape[reader_rule.input_axis] != graph.tensors[output].shape[-1]:
                continue  # a depthwise channel multiplier: output channels != input channels
            index = [slice(None)] * w2.ndim
            index[reader_rule.input_axis] = dead
            if not np.any(w2[tuple(index)]):
                continue
            zeroed = w2.copy()
            zeroed[tuple(index)] = 0
            reader.inputs[reader_rule.index] = graph.add_constant(f"{name}/dead_channels_zeroed", zeroed)
            changed.append(ZeroedChannels(reader.origin, op.origin, tuple(int(c) for c in dead)))
    if changed:
        graph.remove_unused()
    return changed


def plan_without_dead_weights(graph: Graph, context: PlanContext) -> tuple[QuantPlan, list[ZeroedChannels]]:
    """The mark phase with the dead channels' weights zeroed first: plan, zero, and plan again
    where anything changed (the readers' weight and bias grids move; activation grids do not).
    One function so the conversion, --target-sqnr's search and tflq eval's simulation agree."""
    from tflq.quantize.plan import plan_quantization

    plan = plan_quantization(graph, context)
    zeroed = zero_dead_channel_weights(graph, plan.params, plan.required_inputs,
                                       {id(op) for op in plan.quantized_ops})
    return (plan_quantization(graph, context) if zeroed else plan), zeroed
