"""Mark phase of full-integer quantization: decide, from each op's declared rule, which ops run in
8 bits and the QuantParams of every tensor they touch. Touches no graph; rewrite.py applies it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tflq import ops as registry
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ir.quant import (QuantParams, activation_params, asymmetric_weight_params, bias_params,
                           symmetric_weight_params)
from tflq.ops.base import Calibrated, FixedOutput, FloatOnly, SameAsInput, SameAsOutput

RangeOf = Callable[[str], tuple[float, float]]


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

    def is_quantized(self, op: Op) -> bool:
        return id(op) not in self.float_ops


def _float_reason(op: Op, dtype: DType, float_ops: set[str]) -> str | None:
    spec = registry.spec(op.kind)
    if op.origin in float_ops:
        return "kept float by --float-ops"
    if isinstance(spec.quant, FloatOnly):
        return "no quantized TFLite kernel"
    if dtype.name.lower() not in spec.quant.dtypes:
        return f"LiteRT has no {dtype.name.lower()} kernel for it"
    return None


def _constant_params(graph: Graph, op: Op, index: int, dtype: DType, plan: QuantPlan,
                     shared: QuantParams | None) -> QuantParams | None:
    """Params for a float constant input of a quantized op (weights, bias, or an operand)."""
    spec = registry.spec(op.kind)
    data = graph.tensors[op.inputs[index]].data
    for rule in spec.weights:
        if rule.index == index:
            if dtype == DType.UINT8:
                return asymmetric_weight_params(data, DType.UINT8)
            axis = rule.axis if rule.per_channel_full and data.ndim > 1 else None
            return symmetric_weight_params(data, axis, DType.INT8)
    if spec.bias is not None and spec.bias.index == index:
        return None  # filled in once the input and weight params are known
    if shared is not None:
        return shared
    return activation_params(dtype, float(np.min(data)), float(np.max(data)))


def plan_quantization(graph: Graph, dtype: DType, range_of: RangeOf,
                      float_ops: set[str] = frozenset(),
                      given: dict[str, QuantParams] | None = None) -> QuantPlan:
    """Walk the ops in order and apply each spec's QuantRule (see ops/base.py).

    `given` holds parameters fixed in advance (a quantization-aware-trained model's QDQ
    parameters); they win over calibrated ranges wherever the op's rule leaves a choice.
    """
    plan = QuantPlan(dtype)
    params = plan.params
    given = given or {}

    def activation(name: str) -> QuantParams:
        if name not in params:
            params[name] = given[name] if name in given else activation_params(dtype, *range_of(name))
        return params[name]

    for op in graph.ops:
        reason = _float_reason(op, dtype, float_ops)
        if reason is not None:
            plan.float_ops[id(op)] = reason
            continue
        spec = registry.spec(op.kind)
        rule = spec.quant
        data_inputs = [i for i, n in enumerate(op.inputs)
                       if n and graph.tensors[n].dtype.is_float]
        activations = [i for i in data_inputs if not graph.is_constant(op.inputs[i])]
        required: dict[int, QuantParams] = {}
        shared: QuantParams | None = None
        if isinstance(rule, SameAsInput):
            shared = activation(op.inputs[rule.index])
            for i in activations:
                required[i] = shared
            for out in op.outputs:
                params[out] = shared
        elif isinstance(rule, SameAsOutput):
            lo = min(range_of(op.inputs[i])[0] for i in activations)
            hi = max(range_of(op.inputs[i])[1] for i in activations)
            out_lo, out_hi = range_of(op.outputs[0])
            shared = activation_params(dtype, min(lo, out_lo), max(hi, out_hi))
            params[op.outputs[0]] = shared
            for i in activations:
                activation(op.inputs[i])
                if dtype == DType.INT8:
                    required[i] = shared  # the int8 kernel demands identical params
        else:
            for i in activations:
                activation(op.inputs[i])
            for out in op.outputs:
                if isinstance(rule, FixedOutput):
                    zp = rule.zero_point_int8 + (128 if dtype == DType.UINT8 else 0)
                    params[out] = QuantParams.per_tensor(dtype, rule.scale, zp)
                elif isinstance(rule, Calibrated):
                    activation(out)
        for i in data_inputs:
            name = op.inputs[i]
            if graph.is_constant(name) and name not in params:
                p = given.get(name) or _constant_params(graph, op, i, dtype, plan, shared)
                if p is not None:
                    params[name] = p
        if spec.bias is not None and op.inputs[spec.bias.index]:
            b = spec.bias
            params[op.inputs[b.index]] = bias_params(params[op.inputs[b.input]], params[op.inputs[b.weight]])
        plan.required_inputs[id(op)] = required
        plan.quantized_ops.append(op)
    return plan
