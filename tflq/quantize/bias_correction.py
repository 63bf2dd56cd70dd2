"""Bias correction (Nagel et al., arXiv 1906.04721 section 4.2): rounding a layer's weights
shifts the mean of its output by E[(Q(W) - W) x], which is taken out of the float bias before
the bias is quantized. E[x] per input channel comes from calibration data (the empirical form,
AIMET's) or, without data, from the statistics of a BatchNorm before the layer (the analytic
form: the normal N(beta, gamma^2) the BatchNorm trained its output toward, through the
activation after it)."""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from tflq import ops as registry
from tflq.ir.dtypes import DType
from tflq.ir.graph import ChannelStats, Graph, Op
from tflq.ops.common import apply_activation
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


EMPIRICAL, ANALYTIC = "empirical", "analytic"  # where E[x] comes from: data, BatchNorm statistics


def _layers(graph: Graph, grids: Mapping[str, QuantParams] | None = None) -> list[_Layer]:
    """Layers with a constant float weight and bias (and, when `grids` is given, a weight
    among its keys: the weights being quantized)."""
    layers = []
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
        if grids is not None and op.inputs[rule.index] not in grids:
            continue
        layers.append(_Layer(op, rule, rule.index, b, rule.axis, rule.input_axis))
    return layers


def correctable_layers(graph: Graph) -> list[Op]:
    """The ops bias correction would correct (in a graph without QDQ parameters)."""
    return [layer.op for layer in _layers(graph)]


def input_means(graph: Graph, names: set[str], samples: Iterable[Mapping[str, np.ndarray]],
                zero_rows: set[str] | None = None) -> tuple[dict[str, np.ndarray], int]:
    """Mean over samples and positions of each last-axis channel of the tensors `names` (float
    graph, reference kernels); and the number of samples. `zero_rows` receives the names of
    those that held a position whose every channel is 0 (a zero-padded frame)."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    def hook(name: str, value: np.ndarray) -> None:
        if name in names:
            v = np.asarray(value, np.float64).reshape(-1, value.shape[-1])
            sums[name] = sums.get(name, 0.0) + v.sum(axis=0)
            counts[name] = counts.get(name, 0) + v.shape[0]
            if zero_rows is not None and v.size and bool(np.any(np.all(v == 0.0, axis=1))):
                zero_rows.add(name)

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


@dataclass(frozen=True)
class InputMeans:
    """E[x] per channel of every correctable layer's input (by tensor name), measured on the
    float graph: all the empirical form takes from the data. It does not depend on the weights'
    grids, so one measurement serves every mix of precisions --target-sqnr tries."""

    means: dict[str, np.ndarray]
    samples: int
    seconds: float
    zero_rows: frozenset[str] = frozenset()  # inputs that held an all-zero position


def _keeps_zero_rows_constant(graph: Graph, layer: _Layer, zero_rows: frozenset[str]) -> bool:
    """Whether the layer's input held an all-zero position in calibration and its bias is the
    same in every output channel (0: a bias-less Linear or Conv). The layer then maps such a
    position to a constant row, exactly in float and quantized alike (a zero input is exactly
    its zero point); a correction that differs by channel would not, and a normalization over
    the channels after it (LayerNorm, RMSNorm: the row divided by sqrt(var + eps)) multiplies
    that difference by up to 1/sqrt(eps). A zero-padded frame through a bias-less MatMul and a
    LayerNorm gave 9.1 dB in int16x8 with the correction, 44.7 without
    (tests/test_fuzz_norms.py)."""
    if layer.op.inputs[0] not in zero_rows:
        return False
    bias = graph.tensors[layer.op.inputs[layer.bias]].data
    return bias.size == 0 or bool(np.all(bias == bias.reshape(-1)[0]))


def measure_input_means(graph: Graph, samples: Iterable[Mapping[str, np.ndarray]]) -> InputMeans:
    """InputMeans of every layer bias correction can correct, on `samples`."""
    start = time.perf_counter()
    zero_rows: set[str] = set()
    means, count = input_means(graph, {layer.op.inputs[0] for layer in _layers(graph)}, samples, zero_rows)
    return InputMeans(means, count, time.perf_counter() - start, frozenset(zero_rows))


def correct_biases(graph: Graph, samples: Iterable[Mapping[str, np.ndarray]] | InputMeans, dtype: DType,
                   grids: Mapping[str, QuantParams] | None = None,
                   originals: Mapping[str, np.ndarray] | None = None) -> BiasCorrection:
    """The empirical form: replace each layer's float bias b by b - E[(Q(W) - W) x], with E[x]
    measured on `samples` (or measured already: InputMeans of this graph); Q the weight's grid
    in `grids` (by weight name: the layers whose weights are quantized; None: every layer, on
    the grid the mark phase chooses for `dtype`), W the float weight (in `originals` where
    learned rounding already put the weight on its grid); returns what moved."""
    start = time.perf_counter()
    layers = _layers(graph, grids)
    measured = samples if isinstance(samples, InputMeans) else measure_input_means(graph, samples)
    found = {layer.op.inputs[0]: measured.means.get(layer.op.inputs[0], "its input was not measured")
             for layer in layers}
    kept = [layer for layer in layers if _keeps_zero_rows_constant(graph, layer, measured.zero_rows)]
    layers = [layer for layer in layers if all(layer.op is not k.op for k in kept)]
    shifts, skipped = _correct(graph, layers, found, dtype, grids, originals)
    skipped += [f"{layer.op.origin}: its input held all-zero positions, which its bias (the same in "
                f"every channel) maps to a constant row; a correction would not" for layer in kept]
    seconds = time.perf_counter() - start + (measured.seconds if measured is samples else 0.0)
    return BiasCorrection(shifts, skipped, measured.samples, seconds, EMPIRICAL)


def correct_biases_analytic(graph: Graph, dtype: DType,
                            grids: Mapping[str, QuantParams] | None = None,
                            originals: Mapping[str, np.ndarray] | None = None) -> BiasCorrection:
    """The analytic form (no data): as correct_biases, with E[x] from BatchNorm statistics
    (expected_input); the layers whose input has none are left as they are, each with why."""
    start = time.perf_counter()
    layers = _layers(graph, grids)
    producers = graph.producers()
    found = {layer.op.inputs[0]: expected_input(graph, layer.op.inputs[0], producers)
             for layer in layers}
    shifts, skipped = _correct(graph, layers, found, dtype, grids, originals)
    return BiasCorrection(shifts, skipped, 0, time.perf_counter() - start, ANALYTIC)


def _correct(graph: Graph, layers: list[_Layer], means: Mapping[str, np.ndarray | str], dtype: DType,
             grids: Mapping[str, QuantParams] | None,
             originals: Mapping[str, np.ndarray] | None) -> tuple[list[BiasShift], list[str]]:
    """Correct each layer's bias for its input's channel means (`means` by input name; a
    string there says why the input has none); the shifts, and the layers left with why."""
    grids, originals = dict(grids or {}), dict(originals or {})
    shifts, skipped = [], []
    for layer in layers:
        op = layer.op
        w = graph.tensors[op.inputs[layer.weight]].data
        mean = means[op.inputs[0]]
        if isinstance(mean, str):
            skipped.append(f"{op.origin}: {mean}")
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
    return shifts, skipped


# ---- the analytic form: input means from BatchNorm statistics ----------------------------

# Standard normal points and weights for E[f(X)] of an activation without a closed form: a
# uniform grid over +-10 sigma sums a piecewise-smooth f (HARD_SWISH's kinks) to ~1e-5 sigma;
# the tails beyond hold less than 1e-22 of the mass.
_NORMAL_POINTS = np.linspace(-10.0, 10.0, 2001)
_NORMAL_WEIGHTS = np.exp(-0.5 * _NORMAL_POINTS ** 2) / np.exp(-0.5 * _NORMAL_POINTS ** 2).sum()
# What each fused activation clamps to (kernel_util.h CalculateActivationRange).
_CLAMPS = {"NONE": (-np.inf, np.inf), "RELU": (0.0, np.inf), "RELU6": (0.0, 6.0),
           "RELU_N1_TO_1": (-1.0, 1.0)}
MAX_FOLLOWED = 8  # ops followed back from a layer's input to the BatchNorm'd layer
_erf = np.vectorize(math.erf, otypes=[np.float64])


def clipped_normal_mean(stats: ChannelStats, low: float, high: float) -> np.ndarray:
    """E[clip(X, low, high)] per channel for X ~ N(mean, std^2), in closed form: low P(X < low)
    + high P(X > high) + the normal's partial first moment in between (std 0: clip(mean))."""
    mu, sigma = stats.mean, stats.std
    safe = np.where(sigma > 0, sigma, 1.0)
    result = np.zeros_like(mu)
    inside_low, inside_high = np.zeros_like(mu), np.ones_like(mu)  # Phi at the bounds
    for bound, sign in ((low, -1.0), (high, 1.0)):
        if not np.isfinite(bound):
            continue
        z = (bound - mu) / safe
        cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * z ** 2) / math.sqrt(2.0 * math.pi)
        if sign < 0:
            inside_low = cdf
            result += bound * cdf + safe * pdf  # + sigma phi(alpha)
        else:
            inside_high = cdf
            result += bound * (1.0 - cdf) - safe * pdf  # - sigma phi(beta)
    result += mu * (inside_high - inside_low)
    return np.where(sigma > 0, result, np.clip(mu, low, high))


def normal_mean(stats: ChannelStats, *functions) -> np.ndarray:
    """E[f_n(...f_1(X))] per channel for X ~ N(stats.mean, stats.std^2), each f elementwise
    (float32 in and out, as the kernels compute), by quadrature."""
    x = (stats.mean[None, :] + stats.std[None, :] * _NORMAL_POINTS[:, None]).astype(np.float32)
    for f in functions:
        x = np.asarray(f(x), np.float32)
    return _NORMAL_WEIGHTS @ x.astype(np.float64)


def expected_input(graph: Graph, name: str, producers: Mapping[str, Op]) -> np.ndarray | str:
    """E[x] per channel (last axis) of tensor `name` from the statistics of the BatchNorm'd
    layer that computes it: through that layer's fused activation or one elementwise op after
    it, then ops that keep the channel means (padding, average pools, spatial means); else a
    sentence saying why there is none."""
    channels = graph.tensors[name].shape[-1:]
    after: Op | None = None  # the elementwise op between the layer and the input, if any
    for _ in range(MAX_FOLLOWED):
        op = producers.get(name)
        if op is None:
            what = "a model input" if name in graph.inputs else "a constant"
            return f"its input is {what}: no BatchNorm statistics to take its mean from"
        spec = registry.spec(op.kind)
        if op.statistics is not None:
            return _through(graph, op, after, channels)
        if after is None and spec.keeps_channel_means(op, graph) and \
                graph.tensors[op.inputs[0]].shape[-1:] == graph.tensors[op.outputs[0]].shape[-1:]:
            name = op.inputs[0]
            continue
        if after is None and spec.elementwise:
            after, name = op, op.inputs[0]
            continue
        if spec.sums_inputs:
            return _sum_mean(graph, op, after, producers, channels)
        if spec.weights and spec.bias is not None:
            return f"its input comes from {op.kind} '{op.origin}', which no BatchNorm follows"
        return f"its input comes from {op.kind} '{op.origin}': no BatchNorm statistics through it"
    return f"its input is more than {MAX_FOLLOWED} ops after any BatchNorm statistics"


def _sum_mean(graph: Graph, op: Op, after: Op | None, producers: Mapping[str, Op],
              channels: tuple[int, ...]) -> np.ndarray | str:
    """E[a + b] = E[a] + E[b] for a residual sum without an activation after it (through one,
    the sum's distribution would be needed: left)."""
    fused = getattr(op.attrs, "fused_activation", "NONE")
    if fused != "NONE" or after is not None:
        through = f"a fused {fused}" if after is None else f"the {after.kind} '{after.origin}'"
        return f"its input is the sum {op.kind} '{op.origin}' through {through}: the " \
               f"distribution of the sum is not known"
    means = []
    for name in op.inputs[:2]:
        if graph.is_constant(name) or graph.tensors[name].shape[-1:] != channels:
            return f"its input is the {op.kind} '{op.origin}' of a constant or a broadcast"
        mean = expected_input(graph, name, producers)
        if isinstance(mean, str):
            return f"its input is the sum {op.kind} '{op.origin}', and a summand has none: {mean}"
        means.append(mean)
    return means[0] + means[1]


def _through(graph: Graph, op: Op, after: Op | None, channels: tuple[int, ...]) -> np.ndarray | str:
    """The mean of op's output distribution through its fused activation and `after`."""
    stats = op.statistics
    if (stats.mean.size,) != channels or not (graph.tensors[op.outputs[0]].layout.channels_last
                                              or graph.tensors[op.outputs[0]].rank == 2):
        return f"the statistics of '{op.origin}' do not lie along its input's channels"
    fused = getattr(op.attrs, "fused_activation", "NONE")
    if after is None:
        mean = clipped_normal_mean(stats, *_CLAMPS[fused]) if fused in _CLAMPS else \
            normal_mean(stats, lambda x: apply_activation(x, fused))
    elif fused != "NONE":
        return f"its input is the {after.kind} '{after.origin}' of a {fused}: the mean of " \
               f"the two after a normal is not computed"
    else:
        spec = registry.spec(after.kind)
        kwargs = spec.attr_kwargs(after.attrs)
        mean = normal_mean(stats, lambda x: spec.reference(x, **kwargs)[0])
    if not np.all(np.isfinite(mean)):
        return f"the statistics of '{op.origin}' give no finite mean"
    return mean
