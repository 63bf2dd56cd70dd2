"""Materialise phase: apply a QuantPlan to the graph — 8-bit dtypes, quantized constants, and the
QUANTIZE/DEQUANTIZE ops at float islands, requantization points and the model's edges."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op, Tensor
from tflq.ir.quant import QuantParams
from tflq.quantize.plan import QuantPlan


@dataclass(frozen=True)
class Inserted:
    """One boundary op added by the rewrite (for the summary and tests)."""

    kind: str
    tensor: str
    reason: str


class _Rewriter:
    def __init__(self, graph: Graph, plan: QuantPlan) -> None:
        self.graph = graph
        self.plan = plan
        self.quantized_constants: dict[tuple[str, QuantParams], str] = {}
        self.converted: dict[tuple[str, QuantParams | None], str] = {}
        self.inserted: list[Inserted] = []

    # ---- one function per kind of edit --------------------------------------------------
    def quantize_constant(self, name: str, params: QuantParams) -> str:
        """The constant stored on the grid `params` (a new tensor; the float one may still be used)."""
        key = (name, params)
        if key not in self.quantized_constants:
            t = self.graph.tensors[name]
            q_name = self.graph.unique_name(f"{name}/quantized")
            self.graph.add_tensor(Tensor(q_name, params.dtype, t.shape, params.quantize(t.data),
                                         params, t.layout))
            self.quantized_constants[key] = q_name
        return self.quantized_constants[key]

    def boundary(self, name: str, params: QuantParams | None, before: Op, reason: str) -> str:
        """`name` converted to `params` (None: to float) by a QUANTIZE or DEQUANTIZE before `before`."""
        key = (name, params)
        if key in self.converted:
            return self.converted[key]
        t = self.graph.tensors[name]
        if params is not None and t.quant is not None and t.quant.dtype == DType.INT16 and \
                params.dtype == DType.UINT8:
            # LiteRT's QUANTIZE requantizes int16 to int8/int16/int32 only: through int8 on the
            # uint8 grid (same scale, zero point - 128).
            name = self.boundary(name, params.with_dtype_shift(DType.INT8), before, reason)
            t = self.graph.tensors[name]
        if params is None:
            out = self.graph.add_activation(f"{name}/dequantized", DType.FLOAT32, t.shape, t.layout)
            kind = "DEQUANTIZE"
        else:
            out = self.graph.unique_name(f"{name}/{'requantized' if t.quant else 'quantized'}")
            self.graph.add_tensor(Tensor(out, params.dtype, t.shape, quant=params, layout=t.layout))
            kind = "QUANTIZE"
        producer = self.graph.producer(name)
        anchor_index = self.graph.ops.index(producer) + 1 if producer is not None else 0
        self.graph.add_op(Op(kind, [name], [out], origin=before.origin), anchor_index)
        self.converted[key] = out
        self.inserted.append(Inserted(kind, name, reason))
        return out

    def bound_divisor(self, op: Op, index: int, bound: float) -> None:
        """Input `index` of float `op` held at `bound` or beyond it (away from 0) by a MAXIMUM
        (positive bound) or MINIMUM (negative) just before `op`."""
        g = self.graph
        name = op.inputs[index]
        t = g.tensors[name]
        limit = g.add_constant(f"{name}/divisor_bound", np.array(bound, np.float32))
        out = g.add_activation(f"{name}/bounded", t.dtype, t.shape, t.layout)
        kind = "MAXIMUM" if bound > 0 else "MINIMUM"
        g.add_op(Op(kind, [name, limit], [out], origin=op.origin), g.ops.index(op))
        op.inputs[index] = out
        self.inserted.append(Inserted(kind, name, "a divisor kept from the 0 its grid holds"))

    def set_activation(self, name: str, params: QuantParams) -> None:
        t = self.graph.tensors[name]
        t.dtype = params.dtype
        t.quant = params

    # ---- the walk ------------------------------------------------------------------------
    def run(self, io_type: DType | None) -> list[Inserted]:
        g, plan = self.graph, self.plan
        quantized = {id(op) for op in plan.quantized_ops}
        input_float = {name: True for name in g.inputs}
        if io_type is not None:
            for name in g.inputs:
                if name in plan.params:
                    self.set_activation(name, plan.params[name].with_dtype_shift(io_type))
                    input_float[name] = False
        for op in plan.quantized_ops:
            for out in op.outputs:
                if out in plan.params:
                    self.set_activation(out, plan.params[out])
        for op in list(g.ops):
            if id(op) not in quantized:
                for i, name in enumerate(op.inputs):
                    t = g.tensors[name] if name else None
                    if t is not None and t.quant is not None and not t.is_constant:
                        op.inputs[i] = self.boundary(name, None, op, "float-only op")
                if id(op) in plan.divisor_bounds:
                    self.bound_divisor(op, *plan.divisor_bounds[id(op)])
                continue
            required = plan.required_inputs.get(id(op), {})
            for i, name in enumerate(op.inputs):
                t = g.tensors[name] if name else None
                if t is None or not t.dtype.is_float and t.quant is None:
                    continue  # integer operands (shapes, axes) stay as they are
                if t.is_constant:
                    grid = required.get(i) or plan.params.get(name)
                    if grid is not None:
                        op.inputs[i] = self.quantize_constant(name, grid)
                    continue
                want = required.get(i) or plan.params.get(name) or t.quant
                if t.quant is None:
                    op.inputs[i] = self.boundary(name, want, op, "float input of a quantized op")
                elif t.quant != want:
                    op.inputs[i] = self.boundary(name, want, op, "kernel needs these input params")
        self.fix_outputs(io_type)
        g.remove_unused()
        return self.inserted

    def fix_outputs(self, io_type: DType | None) -> None:
        g = self.graph
        for index, name in enumerate(list(g.outputs)):
            t = g.tensors[name]
            if t.is_constant:
                continue
            if t.quant is None:  # made by a float op: quantized only for 8-bit model I/O
                if io_type is None or name not in self.plan.params:
                    continue
                want = self.plan.params[name].with_dtype_shift(io_type)
            else:
                want = None if io_type is None else t.quant.with_dtype_shift(io_type)
                if want is not None and want == t.quant:
                    continue
            inner = g.unique_name(f"{name}/{t.dtype.name.lower()}")
            g.rename(name, inner)
            inner_t = g.tensors[inner]
            if want is None:
                g.add_tensor(Tensor(name, DType.FLOAT32, inner_t.shape, layout=inner_t.layout))
                g.add_op(Op("DEQUANTIZE", [inner], [name], origin=name))
            else:
                g.add_tensor(Tensor(name, want.dtype, inner_t.shape, quant=want, layout=inner_t.layout))
                g.add_op(Op("QUANTIZE", [inner], [name], origin=name))
            g.outputs[index] = name
            self.inserted.append(Inserted("DEQUANTIZE" if want is None else "QUANTIZE", name, "model output"))


def apply_plan(graph: Graph, plan: QuantPlan, io_type: DType | None = None) -> list[Inserted]:
    """Rewrite `graph` in place. io_type None keeps float inputs/outputs; else 8-bit I/O of that type."""
    return _Rewriter(graph, plan).run(io_type)
