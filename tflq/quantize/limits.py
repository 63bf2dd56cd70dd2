"""Quantization parameters chosen inside a target's scale limits (XNNPACK's ADD/SUB/MUL/LEAKY_RELU
ratios): an output scale raised, or an input requantized to a coarser grid, each a summary note.

Called by the mark phase (plan.py) once an op's parameters are known and before any later op
reads its output, so a raised output scale reaches every consumer (and the biases they derive)."""
from __future__ import annotations

import numpy as np

from tflq.ir.graph import Graph, Op
from tflq.ir.quant import QuantParams
from tflq.targets.base import OpView, Ratio, ScaleLimit, Target, TensorView

# Scales are float32 in the file: aim this far inside a bound so that rounding stays inside.
MARGIN = 1 + 2.0 ** -10


def op_view(graph: Graph, op: Op, params: dict[str, QuantParams],
            required: dict[int, QuantParams]) -> OpView:
    """`op` as a target sees it once quantized: each tensor on the grid the plan gives it."""
    def view(index: int | None, name: str) -> TensorView | None:
        if not name:
            return None
        t = graph.tensors[name]
        p = required.get(index) if index is not None else None
        p = p or params.get(name)
        if p is None:
            return TensorView(t.dtype, t.shape, t.data)
        return TensorView(p.dtype, t.shape, t.data, np.asarray(p.scale), np.asarray(p.zero_point))

    return OpView(op.kind, tuple(view(i, n) for i, n in enumerate(op.inputs)),
                  tuple(view(None, n) for n in op.outputs))


def _rescaled(p: QuantParams, scale: float) -> QuantParams:
    """`p`'s range on a grid of step `scale` (coarser), zero still exact."""
    low = (p.dtype.qmin - int(p.zero_point)) * float(p.scale)
    zero_point = int(np.clip(np.round(p.dtype.qmin - low / scale), p.dtype.qmin, p.dtype.qmax))
    return QuantParams.per_tensor(p.dtype, scale, zero_point)


def fit_limits(target: Target, graph: Graph, op: Op, params: dict[str, QuantParams],
               required: dict[int, QuantParams]) -> list[str]:
    """Adjust `op`'s planned output (params) and inputs (required) into `target`'s limits.
    Returns one note per adjustment, and per limit that no adjustment can meet."""
    notes: list[str] = []
    out = op.outputs[0]
    for limit in target.limits:
        if limit.ratio == Ratio.FILTER_OUTPUT:
            continue  # every target: plan.py bounds the multiplier of convolutions already
        values = limit.values(op_view(graph, op, params, required))
        if not values or all(limit.holds(v) for _, v in values):
            continue
        worst = max(v for _, v in values)
        if not limit.holds(worst) and worst >= limit.high:  # output grid too fine: coarsen it
            old = params[out]
            new = QuantParams.per_tensor(old.dtype, float(old.scale) * worst / limit.high * MARGIN,
                                         int(old.zero_point))
            params[out] = new
            notes.append(_note(target, limit, op, f"output '{out}' scale raised "
                                                  f"{float(old.scale):.4g} -> {float(new.scale):.4g}"))
        for index, value in limit.values(op_view(graph, op, params, required)):
            if limit.holds(value):
                continue
            if limit.ratio == Ratio.INPUT_OUTPUT and value < limit.low:
                name = op.inputs[index]
                old = required.get(index) or params[name]
                scale = float(params[out].scale) * limit.low * MARGIN
                required[index] = _rescaled(old, scale)
                what = "constant" if graph.is_constant(name) else "input"
                notes.append(_note(target, limit, op, f"{what} '{name}' requantized to scale "
                                                      f"{scale:.4g} (from {float(old.scale):.4g})"))
            else:
                notes.append(_note(target, limit, op, f"ratio {value:.4g} cannot be fitted; "
                                                      f"{target.title} leaves the op to LiteRT"))
    return notes


def _note(target: Target, limit: ScaleLimit, op: Op, text: str) -> str:
    return f"{target.title}: {op.kind} of node '{op.origin}': {text} ({limit.describe()}, {limit.source})"
