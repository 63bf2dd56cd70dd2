"""Per-layer error of a .tflite: every quantized tensor against its float counterpart, keyed to
the ONNX node that produced it, and the layers ranked by the output error each adds on its own.

Float values come from tflq's reference kernels on the fused channels-last float graph (the
graph the file was written from, so every file tensor has its counterpart by name); quantized
values from LiteRT with every intermediate tensor preserved. The sensitivity of a layer is the
output SQNR with that layer alone quantized on the file's grids and the rest float (simulated,
quantize/precision.py's measurement); the fallback check keeps each of the top-ranked layers
float alone, the rest quantized, and names the one that raises the output SQNR the most.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tflq.analysis.file_plan import (FileContext, FileParams, file_int16_nodes, file_params,
                                     grid_range)
from tflq.analysis.result import (FallbackCheck, Histogram, LayerAnalysis, LayerReport,
                                  TensorError)
from tflq.analysis.runtimes import Sample, TfliteModel, graph_feeds
from tflq.backend.tflite_reader import read_tflite
from tflq.ir.graph import Graph
from tflq.quantize.precision import SqnrEvaluator, layer_sensitivities, quantized_layers
from tflq.runtime.interpreter import GraphRunner

FALLBACK_LAYERS = 5      # the top-ranked layers the float fallback check tries
HISTOGRAM_LAYERS = 6     # the worst layers whose histograms are kept (for the report's plots)
HISTOGRAM_BINS = 80
_KEEP_VALUES = 65536     # float values kept per tensor for its histogram (a strided sample)


class _TensorStats:
    """Error power and the float values' range, clipping and a value sample, over samples."""

    def __init__(self, grid: tuple[float, float], step: float) -> None:
        self.signal = self.noise = 0.0
        self.low, self.high = math.inf, -math.inf
        self.grid, self.step = grid, step
        self.outside = self.count = 0
        self.values: list[np.ndarray] = []
        self.kept = 0

    def add(self, reference: np.ndarray, approx: np.ndarray) -> None:
        r = np.asarray(reference, np.float64)
        self.signal += float(np.sum(r * r))
        self.noise += float(np.sum((r - np.asarray(approx, np.float64)) ** 2))
        if r.size:
            self.low, self.high = min(self.low, float(r.min())), max(self.high, float(r.max()))
        half = self.step / 2
        self.outside += int(np.sum((r < self.grid[0] - half) | (r > self.grid[1] + half)))
        self.count += r.size
        if self.kept < _KEEP_VALUES and r.size:
            flat = np.asarray(reference, np.float32).ravel()
            taken = flat[::max(1, flat.size // 8192)][: _KEEP_VALUES - self.kept]
            self.values.append(taken)
            self.kept += taken.size

    def sqnr(self) -> float:
        if self.noise == 0:
            return math.inf
        return 10 * math.log10(self.signal / self.noise) if self.signal > 0 else -math.inf

    def histogram(self) -> Histogram:
        values = np.concatenate(self.values) if self.values else np.zeros(0, np.float32)
        low = min(self.grid[0], self.low if values.size else self.grid[0])
        high = max(self.grid[1], self.high if values.size else self.grid[1])
        counts, edges = np.histogram(values, bins=HISTOGRAM_BINS,
                                     range=(low, high if high > low else low + 1))
        return Histogram([int(c) for c in counts], [float(e) for e in edges])


def analyze_layers(graph: Graph, data: bytes, tflite_path: str, samples: Sequence[Sample],
                   sensitivity_samples: int) -> LayerAnalysis:
    """The per-layer analysis on `samples` (ONNX layout); sensitivity on the first
    `sensitivity_samples`, the simulated SQNR and the fallback check on all of them."""
    info = read_tflite(data)
    params = file_params(info, graph)
    analysis = LayerAnalysis(len(samples), min(sensitivity_samples, len(samples)), None)
    if not params.activations:
        analysis.notes.append("no quantized tensor of the .tflite matches tflq's import of the ONNX "
                              "model by name and shape (a float file, or a file made by another "
                              "converter or with other --input-shape/--keep-io-layout options)")
        return analysis
    producers = graph.producers()
    depth = {name: i + 1 for i, op in enumerate(graph.ops) for name in op.outputs}
    stats: dict[str, _TensorStats] = {}
    for name, (t, p) in params.activations.items():
        stats[name] = _TensorStats(grid_range(p), float(p.scale))
    model = TfliteModel(data, graph, tflite_path, preserve_all_tensors=True)
    runner = GraphRunner(graph)
    for sample in samples:
        values: dict[str, np.ndarray] = {}

        def keep(name: str, value: np.ndarray) -> None:
            if name in stats:
                values[name] = value

        runner.run(graph_feeds(graph, sample), on_tensor=keep)
        model.invoke(sample)
        for name, value in values.items():
            t, p = params.activations[name]
            quantized = p.dequantize(model.interpreter.get_tensor(t.index))
            stats[name].add(value, quantized)
    layers: dict[str, LayerReport] = {}
    for name in sorted(stats, key=lambda n: depth.get(n, 0)):
        op = producers.get(name)
        node = op.origin if op is not None else f"input {name}"
        kind = op.kind if op is not None else "input"
        t, p = params.activations[name]
        s = stats[name]
        layer = layers.setdefault(node, LayerReport(node, [], depth.get(name, 0)))
        if kind not in layer.kinds:
            layer.kinds.append(kind)
        layer.tensors.append(TensorError(
            name, kind, depth.get(name, 0), p.dtype.name.lower(), float(p.scale), int(p.zero_point),
            s.sqnr(), s.outside / s.count if s.count else 0.0, s.low, s.high, s.grid[0], s.grid[1]))
    _weight_errors(graph, params, layers)
    _repaired_constants(graph, params, layers)
    analysis.layers = list(layers.values())
    _rank(graph, params, samples, analysis)
    worst = analysis.ranking[:HISTOGRAM_LAYERS] or \
        [layer.node for layer in sorted(analysis.layers, key=_worst_tensor_sqnr)[:HISTOGRAM_LAYERS]]
    for node in worst:
        for tensor in analysis.layer(node).tensors:
            tensor.histogram = stats[tensor.tensor].histogram()
    return analysis


def _worst_tensor_sqnr(layer: LayerReport) -> float:
    return min((t.sqnr_db for t in layer.tensors), default=math.inf)


def _weight_errors(graph: Graph, params: FileParams, layers: dict[str, LayerReport]) -> None:
    """Each layer's 8-bit constants (weights, operands) against their float values, pooled. The
    weights of input channels the conversion zeroed (they multiply an exact 0) count as 0: their
    float values change no output, and counting them put depthwise layers at 2 dB."""
    from tflq import ops as registry

    power: dict[str, list[float]] = {}
    seen = set()
    for op in graph.ops:
        for index, name in enumerate(op.inputs):
            if not name or name in seen or name not in params.constants or op.origin not in layers:
                continue
            seen.add(name)
            t, p = params.constants[name]
            if p.dtype.name.lower() not in ("int8", "uint8"):
                continue  # int32/int64 biases: exact to far below the weights' error
            rule = next((w for w in registry.spec(op.kind).weights if w.index == index), None)
            ref = np.asarray(_zeroed_like_file(graph.tensors[name].data, t, p,
                                               rule.input_axis if rule is not None else None),
                             np.float64)
            err = ref - p.dequantize(t.data).astype(np.float64)
            total = power.setdefault(op.origin, [0.0, 0.0])
            total[0] += float(np.sum(ref * ref))
            total[1] += float(np.sum(err * err))
    for node, (signal, noise) in power.items():
        layers[node].weight_sqnr_db = math.inf if noise == 0 else \
            10 * math.log10(signal / noise) if signal > 0 else -math.inf


def _repaired_constants(graph: Graph, params: FileParams, layers: dict[str, LayerReport]) -> None:
    """Each layer's bias shift and weights off nearest rounding, from the file's integers
    against the float graph's values on the file's own grids (LayerReport.bias_shift...)."""
    from tflq import ops as registry

    for op in graph.ops:
        layer = layers.get(op.origin)
        spec = registry.spec(op.kind)
        if layer is None:
            continue
        rule = next((w for w in spec.weights if w.input_axis is not None), None)
        name = op.inputs[rule.index] if rule is not None and rule.index < len(op.inputs) else None
        if name in params.constants and graph.tensors[name].data is not None:
            t, p = params.constants[name]
            if p.dtype.name.lower() in ("int8", "uint8"):
                expected = _zeroed_like_file(graph.tensors[name].data, t, p, rule.input_axis)
                layer.off_nearest = float(np.mean(p.quantize(expected) != t.data))
        name = op.inputs[spec.bias.index] if spec.bias is not None and \
            spec.bias.index < len(op.inputs) else None
        if name in params.constants and graph.tensors[name].data is not None:
            t, p = params.constants[name]
            exact = np.asarray(graph.tensors[name].data, np.float64)
            moved = np.abs(p.dequantize(t.data).astype(np.float64) - exact)
            step = p.broadcast(exact.ndim)[0].astype(np.float64)
            moved[moved <= 0.5 * step * (1 + 1e-3) + 1e-6 * np.abs(exact)] = 0.0  # its rounding
            layer.bias_shift = float(moved.max(initial=0.0))
            layer.bias_shift_relative = layer.bias_shift / (float(np.abs(exact).max(initial=0.0)) or 1.0)


def _zeroed_like_file(data: np.ndarray, t, p, input_axis: int | None) -> np.ndarray:
    """The float weights with the input channels the conversion zeroed (quantize/dead_channels.py:
    the file tensor's name says so, and those channels are all exactly 0 in the file) set to 0."""
    if input_axis is None or "/dead_channels_zeroed" not in t.name:
        return data
    stored = np.asarray(p.dequantize(t.data))
    other = tuple(i for i in range(stored.ndim) if i != input_axis)
    dead = np.flatnonzero(np.all(stored == 0, axis=other))
    index = [slice(None)] * data.ndim
    index[input_axis] = dead
    zeroed = np.array(data, copy=True)
    zeroed[tuple(index)] = 0
    return zeroed


def _rank(graph: Graph, params: FileParams, samples: Sequence[Sample], analysis: LayerAnalysis) -> None:
    """Sensitivity of each quantized layer, the ranking, and the float fallback check."""
    dtype = params.activation_dtype()
    int16 = file_int16_nodes(params, graph, dtype)

    def make_context(int16_nodes: frozenset[str], float_nodes: frozenset[str]) -> FileContext:
        return FileContext(graph, params, dtype, float_nodes, int16 | int16_nodes)

    names = [n for n in quantized_layers(graph, make_context(frozenset(), frozenset()))
             if n in {layer.node for layer in analysis.layers}]
    if not names:
        analysis.notes.append("no layer of the file runs quantized: nothing to rank")
        return
    evaluator = SqnrEvaluator(graph, make_context, [graph_feeds(graph, s) for s in samples])
    analysis.simulated_sqnr_db = evaluator.sqnr(frozenset(), frozenset())
    alone = layer_sensitivities(evaluator, names, analysis.sensitivity_samples)
    analysis.ranking = sorted(names, key=lambda n: (alone[n], names.index(n)))
    for rank, node in enumerate(analysis.ranking, start=1):
        layer = analysis.layer(node)
        layer.sensitivity_db, layer.rank = alone[node], rank
    top = analysis.ranking[:FALLBACK_LAYERS]
    fallback = [evaluator.sqnr(frozenset(), frozenset({n})) for n in top]
    best = top[int(np.argmax(fallback))]
    analysis.fallback_check = FallbackCheck(top, fallback, best, best == top[0])

