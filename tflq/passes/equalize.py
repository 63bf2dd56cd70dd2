"""Cross-layer equalization (Nagel et al., Data-Free Quantization, arXiv 1906.04721, section 4.1):
rescale consecutive weight layers joined by a positively homogeneous activation so that each
channel's weight range is the same in both; the float function does not change."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from tflq import ops as registry
from tflq.ir.graph import Graph, Op
from tflq.ops.base import POSITIVELY_HOMOGENEOUS
from tflq.passes.manager import fixed_point
from tflq.report import EqualizedLayer, Equalization, EqualizedPair, SkippedPair

# The file description of a .tflite whose layers were rescaled (tflq eval then rescales its
# float reference the same way: the pass depends on the weights alone).
EQUALIZED_DESCRIPTION = "tflq (cross-layer equalized)"
# A sweep whose scales all lie within this factor of 1 changes nothing worth another sweep.
CONVERGED = 1e-3
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_SWEEPS = 20  # a chain of n layers settles in about n sweeps
MAX_BETWEEN = 4  # ops followed from one layer to the next (RELU, PAD, MAX_POOL_2D...)


@dataclass(frozen=True)
class _Layer:
    """A weight layer CLE may rescale: its weight input, output/input channel axes, bias input."""

    op: Op
    weight: int
    out_axis: int
    in_axis: int
    bias: int | None

    @property
    def depthwise(self) -> bool:
        return self.out_axis == self.in_axis


@dataclass(frozen=True)
class Pair:
    """Two layers joined by nothing or by positively homogeneous, channel-keeping ops."""

    first: _Layer
    second: _Layer
    between: tuple[Op, ...]

    @property
    def names(self) -> tuple[str, str]:
        return self.first.op.origin, self.second.op.origin


def _layer(graph: Graph, op: Op | None) -> _Layer | None:
    if op is None:
        return None
    spec = registry.spec(op.kind)
    weight = next((w for w in spec.weights if w.input_axis is not None and w.axis is not None), None)
    if weight is None or weight.index >= len(op.inputs) or not graph.is_constant(op.inputs[weight.index]):
        return None
    bias = spec.bias.index if spec.bias is not None and spec.bias.index < len(op.inputs) and \
        op.inputs[spec.bias.index] else None
    if bias is not None and not graph.is_constant(op.inputs[bias]):
        return None
    if not graph.tensors[op.inputs[weight.index]].dtype.is_float:
        return None
    return _Layer(op, weight.index, weight.axis, weight.input_axis, bias)


def _sole_reader(graph: Graph, name: str, consumers: dict[str, list[Op]]) -> Op | None:
    users = consumers.get(name, [])
    return users[0] if len(users) == 1 and name not in graph.outputs else None


def _between_problem(graph: Graph, op: Op) -> str | None:
    """Why an op between two layers stops CLE (None: a per-channel scale s > 0 moves through)."""
    fused = getattr(op.attrs, "fused_activation", "NONE")
    if not registry.spec(op.kind).positively_homogeneous:
        return f"the {op.kind} between them is not positively homogeneous (f(s x) != s f(x))"
    if fused not in POSITIVELY_HOMOGENEOUS:
        return f"the {op.kind} between them has a fused {fused}"
    if graph.tensors[op.outputs[0]].shape[-1:] != graph.tensors[op.inputs[0]].shape[-1:]:
        return f"the {op.kind} between them changes the channels"
    return None


def find_pairs(graph: Graph) -> tuple[list[Pair], list[SkippedPair]]:
    """Every first -> [ops] -> second chain of weight layers where each tensor on the way has one
    reader and the chain ends in the second's data input; the chains CLE cannot rescale (an
    activation that is not positively homogeneous, RELU6 or HARD_SWISH: f(s x) != s f(x)) are
    returned as skipped, with the reason."""
    consumers = graph.consumer_map()
    pairs, skipped = [], []
    for op in graph.ops:
        first = _layer(graph, op)
        if first is None:
            continue
        between: list[Op] = []
        joint = op.outputs[0]
        nxt = _sole_reader(graph, joint, consumers)
        while nxt is not None and _layer(graph, nxt) is None and len(between) < MAX_BETWEEN and \
                nxt.inputs[:1] == [joint] and len(nxt.outputs) == 1:
            between.append(nxt)
            joint = nxt.outputs[0]
            nxt = _sole_reader(graph, joint, consumers)
        second = _layer(graph, nxt)
        if second is None or second.op.inputs[0] != joint:
            continue
        fused = getattr(op.attrs, "fused_activation", "NONE")
        problem = None
        if fused not in POSITIVELY_HOMOGENEOUS:
            problem = f"its fused {fused} is not positively homogeneous (f(s x) != s f(x))"
        for b in between:
            problem = problem or _between_problem(graph, b)
        problem = problem or _shape_problem(graph, first, second)
        if problem is not None:
            skipped.append(SkippedPair(op.origin, second.op.origin, problem))
        else:
            pairs.append(Pair(first, second, tuple(between)))
    return pairs, skipped


def _shape_problem(graph: Graph, first: _Layer, second: _Layer) -> str | None:
    w1 = graph.tensors[first.op.inputs[first.weight]]
    w2 = graph.tensors[second.op.inputs[second.weight]]
    if w1.shape[first.out_axis] != w2.shape[second.in_axis]:
        return "their channel counts differ (a depthwise multiplier or a reshape between them)"
    if second.depthwise and graph.tensors[second.op.inputs[0]].shape[-1] != w2.shape[second.in_axis]:
        return "the depthwise conv has a channel multiplier"
    return None


def channel_ranges(graph: Graph, layer: _Layer, output: bool) -> np.ndarray:
    """max |w| per output (or input) channel of the layer's weights."""
    w = np.abs(graph.tensors[layer.op.inputs[layer.weight]].data.astype(np.float64))
    axis = layer.out_axis if output else layer.in_axis
    return w.max(axis=tuple(i for i in range(w.ndim) if i != axis))


def spread(ranges: np.ndarray) -> float:
    """Largest over smallest non-zero channel range (inf when every channel is zero)."""
    live = ranges[ranges > 0]
    return float(live.max() / live.min()) if live.size else float("inf")


def pair_scales(graph: Graph, pair: Pair) -> np.ndarray | None:
    """s_i = sqrt(r1_i / r2_i): dividing the first layer's channel i by it and multiplying the
    second's by it gives both the range sqrt(r1_i r2_i). A channel either layer leaves at zero
    keeps s = 1. None when a result would not be a finite, non-zero float32."""
    r1 = channel_ranges(graph, pair.first, output=True)
    r2 = channel_ranges(graph, pair.second, output=False)
    live = (r1 > 0) & (r2 > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = np.where(live, np.sqrt(r1 / np.where(live, r2, 1.0)), 1.0)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        return None
    checks = [r1 / s, r2 * s]
    if pair.first.bias is not None:
        checks.append(np.abs(graph.tensors[pair.first.op.inputs[pair.first.bias]].data) / s)
    for values in checks:
        if np.any(values > FLOAT32_MAX) or np.any((values == 0) & live):
            return None
    small = np.float64(np.finfo(np.float32).tiny)
    if np.any(live & ((r1 / s < small) | (r2 * s < small))):
        return None
    return s


def _scaled(values: np.ndarray, factor: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * values.ndim
    shape[axis] = factor.size
    return (values.astype(np.float64) * factor.reshape(shape)).astype(np.float32)


def apply_scales(graph: Graph, pair: Pair, s: np.ndarray) -> None:
    """W1[i] /= s_i, b1[i] /= s_i, W2[:, i] *= s_i (new constants: a shared weight stays); the
    first layer's output statistics (a folded BatchNorm's) follow its channels."""
    first, second = pair.first, pair.second
    w1 = graph.tensors[first.op.inputs[first.weight]].data
    _set_constant(graph, first.op, first.weight, _scaled(w1, 1.0 / s, first.out_axis))
    if first.bias is not None:
        b1 = graph.tensors[first.op.inputs[first.bias]].data
        _set_constant(graph, first.op, first.bias, _scaled(b1, 1.0 / s, 0))
    if first.op.statistics is not None:  # its output channel i is divided by s_i too
        first.op.statistics = first.op.statistics.affine(scale=1.0 / s)
    w2 = graph.tensors[second.op.inputs[second.weight]].data
    _set_constant(graph, second.op, second.weight, _scaled(w2, s, second.in_axis))


def _set_constant(graph: Graph, op: Op, index: int, value: np.ndarray) -> None:
    """op's input `index` becomes `value`: a new constant NAME/equalized, or, from the second
    sweep on, that constant updated in place when op alone reads it (a name per sweep made file
    tensors named w/equalized/equalized/... twenty times over)."""
    name = op.inputs[index]
    if name.endswith("/equalized") and len(graph.consumers(name)) == 1 and \
            name not in graph.outputs:
        graph.tensors[name].data = value
    else:
        op.inputs[index] = graph.add_constant(f"{name}/equalized", value)


def equalize_cross_layer(graph: Graph) -> int:
    """One sweep over the pairs in graph order; returns how many moved by more than CONVERGED
    (run it through fixed_point: a layer in two pairs settles over a few sweeps)."""
    pairs, _ = find_pairs(graph)
    moved = 0
    for pair in pairs:
        s = pair_scales(graph, pair)
        if s is None or np.all(np.abs(np.log(s)) < CONVERGED):
            continue
        apply_scales(graph, pair, s)
        moved += 1
    if moved:
        graph.remove_unused()
    return moved


def equalize(graph: Graph, max_sweeps: int = MAX_SWEEPS) -> Equalization:
    """Cross-layer equalization of every pair, swept to convergence (at most `max_sweeps`
    rounds), with each pair's channel-range spread before and after and the pairs left alone."""
    start = time.perf_counter()
    found, skipped = find_pairs(graph)
    refused = [p for p in found if pair_scales(graph, p) is None]
    skipped += [SkippedPair(*p.names, "equalizing would overflow float32 or give a zero scale")
                for p in refused]
    left = {p.names for p in refused}
    spreads = {p.names: _spreads(graph, p) for p in found if p.names not in left}
    layers = {id(layer.op): layer for p in found if p.names not in left
              for layer in (p.first, p.second)}  # (op.inputs change in place: these stay valid)
    ratios = {key: _range_ratio(graph, layer) for key, layer in layers.items()}
    sweeps = sum(fixed_point(graph, [equalize_cross_layer], max_iter=max_sweeps).values())
    pairs = [EqualizedPair(*p.names, *spreads[p.names], *_spreads(graph, p))
             for p in find_pairs(graph)[0] if p.names in spreads]
    rescaled = [EqualizedLayer(op.origin, ratios[id(op)], _range_ratio(graph, layers[id(op)]))
                for op in graph.ops if id(op) in layers]
    return Equalization(pairs, skipped, sweeps, time.perf_counter() - start, rescaled)


def _range_ratio(graph: Graph, layer: _Layer) -> float:
    """What per-tensor weight quantization pays: the spread of the per-output-channel ranges."""
    return spread(channel_ranges(graph, layer, output=True))


def _spreads(graph: Graph, pair: Pair) -> tuple[float, float]:
    return (spread(channel_ranges(graph, pair.first, output=True)),
            spread(channel_ranges(graph, pair.second, output=False)))


def is_equalized(tflite: bytes) -> bool:
    """Whether tflq wrote this file from a cross-layer equalized graph (its description)."""
    from tflq._generated.tflite.Model import Model

    try:
        description = Model.GetRootAs(tflite, 0).Description()
    except Exception:  # noqa: BLE001 - not a flatbuffer: the caller's reader reports it
        return False
    return description == EQUALIZED_DESCRIPTION.encode()
