"""Empirical bias correction (Nagel et al., arXiv 1906.04721 section 4.2; AIMET's empirical
form): rounding a layer's weights shifts the mean of its output by E[(Q(W) - W) x]; with the
per-channel means of the layer's input measured on calibration data, that shift is taken out of
the float bias before the bias is quantized."""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from tflq import ops as registry
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ir.quant import QuantParams
from tflq.ops.base import Weight
from tflq.quantize.plan import weight_params
from tflq.report import BiasCorrection, BiasShift
from tflq.runtime.interpreter import GraphRunner


@dataclass(frozen=True)
class _Layer:
    op: Op
    rule: Weight
    weight: int
    bias: int
    out_axis: int
    in_axis: int


def _layers(graph: Graph) -> tuple[list[_Layer], list[str]]:
    """Layers with a constant float weight and bias; and those left out, with the reason."""
    layers, skipped = [], []
    for op in graph.ops:
        spec = registry.spec(op.kind)
        rule = next((w for w in spec.weights if w.axis is not None and w.input_axis is not None), None)
        if rule is None or spec.bias is None:
            continue
        b = spec.bias.index
        if b >= len(op.inputs) or not op.inputs[b] or not graph.is_constant(op.inputs[b]) or \
                not graph.is_constant(op.inputs[rule.index]) or \
                not graph.tensors[op.inputs[rule.index]].dtype.is_float:
            continue
        layers.append(_Layer(op, rule, rule.index, b, rule.axis, rule.input_axis))
    return layers, skipped


def correctable_layers(graph: Graph) -> list[Op]:
    """The ops bias correction would correct (in a graph without QDQ parameters)."""
    return [layer.op for layer in _layers(graph)[0]]


def input_means(graph: Graph, names: set[str],
                samples: Iterable[Mapping[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], int]:
    """Mean over samples and positions of each last-axis channel of the tensors `names` (float
    graph, reference kernels); and the number of samples."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    def hook(name: str, value: np.ndarray) -> None:
        if name in names:
            v = np.asarray(value, np.float64).reshape(-1, value.shape[-1])
            sums[name] = sums.get(name, 0.0) + v.sum(axis=0)
            counts[name] = counts.get(name, 0) + v.shape[0]

    runner = GraphRunner(graph)
    n = 0
    for feeds in samples:
        for name in names & set(feeds):
            hook(name, feeds[name])
        runner.run(feeds, hook)
        n += 1
    return {k: sums[k] / counts[k] for k in sums}, n


def _output_shift(layer: _Layer, delta: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """E[(Q(W) - W) x] per output channel for an input whose channels have means `mean`."""
    if layer.out_axis == layer.in_axis:  # depthwise 1HWO: output o reads input o // multiplier
        per_channel = delta.reshape(-1, delta.shape[layer.out_axis]).sum(axis=0)
        multiplier = per_channel.size // max(mean.size, 1)
        if multiplier * mean.size != per_channel.size:
            return None
        return per_channel * np.repeat(mean, multiplier)
    moved = np.moveaxis(delta, (layer.out_axis, layer.in_axis), (0, -1))
    if moved.shape[-1] != mean.size:
        return None  # a FULLY_CONNECTED that flattens its input: no per-feature mean measured
    return moved.reshape(moved.shape[0], -1, moved.shape[-1]).sum(axis=1) @ mean


def correct_biases(graph: Graph, samples: Iterable[Mapping[str, np.ndarray]], dtype: DType,
                   grids: Mapping[str, QuantParams] | None = None,
                   originals: Mapping[str, np.ndarray] | None = None) -> BiasCorrection:
    """Replace each layer's float bias b by b - E[(Q(W) - W) x], Q the weight's grid in `grids`
    (by weight name; else the one the mark phase chooses for `dtype`), W the float weight (in
    `originals` where learned rounding already put the weight on its grid); returns what moved."""
    start = time.perf_counter()
    grids, originals = dict(grids or {}), dict(originals or {})
    layers, skipped = _layers(graph)
    means, count = input_means(graph, {layer.op.inputs[0] for layer in layers}, samples)
    shifts = []
    for layer in layers:
        op = layer.op
        w = graph.tensors[op.inputs[layer.weight]].data
        mean = means.get(op.inputs[0])
        if mean is None:
            skipped.append(f"{op.origin}: its input was not measured")
            continue
        params = grids.get(op.inputs[layer.weight]) or weight_params(layer.rule, w, dtype)
        exact = originals.get(op.inputs[layer.weight], w)
        delta = params.dequantize(params.quantize(w)).astype(np.float64) - exact.astype(np.float64)
        shift = _output_shift(layer, delta, mean)
        if shift is None:
            skipped.append(f"{op.origin}: its input is flattened into it (no per-feature mean)")
            continue
        bias = graph.tensors[op.inputs[layer.bias]].data.astype(np.float64)
        corrected = (bias - shift).astype(np.float32)
        if not np.all(np.isfinite(corrected)):
            skipped.append(f"{op.origin}: the corrected bias is not finite")
            continue
        op.inputs[layer.bias] = graph.add_constant(f"{op.inputs[layer.bias]}/corrected", corrected)
        scale = float(np.max(np.abs(bias))) or 1.0
        shifts.append(BiasShift(op.origin, float(np.max(np.abs(shift))),
                                float(np.max(np.abs(shift))) / scale))
    graph.remove_unused()
    return BiasCorrection(shifts, skipped, count, time.perf_counter() - start)
