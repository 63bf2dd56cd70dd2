"""Learned weight rounding (AdaRound, Nagel et al. 2020, arXiv 2004.10568) for the layers whose
nearest rounding hurts their output most: each weight rounds up or down as a soft choice h(V)
fitted with Adam so that the layer's output on calibration inputs stays the float one, pushed
to a hard 0/1 by an annealed regulariser. numpy only; a time budget and a fixed seed bound it."""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from tflq import ops as registry
from tflq.ir.graph import Graph, Op
from tflq.ir.quant import QuantParams
from tflq.report import RoundedLayer, Rounding
from tflq.runtime.interpreter import GraphRunner

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (the paper's values)
MAX_ROWS = 2048          # output positions per layer the loss is taken over
MAX_INPUT_ELEMENTS = 2 ** 20  # a layer's input kept from the samples: the first ones this holds
ITERATIONS = 600
LEARNING_RATE = 1e-2
REGULARISATION = 100.0    # against the output error of nearest rounding taken as 1
WARMUP = 0.2             # share of the iterations before the regulariser starts
BETA = (20.0, 2.0)       # its annealed exponent, start and end
ELEMENTWISE_OPS = 32     # per weight and iteration, besides the Gram product (fitting_work)


def _collect_inputs(graph: Graph, ops: list[Op], samples: Sequence[Mapping[str, np.ndarray]]):
    names = {op.inputs[0] for op in ops}
    seen: dict[str, list[np.ndarray]] = {n: [] for n in names}

    def keep(name: str, value: np.ndarray) -> None:
        if name in seen and (not seen[name] or sum(v.size for v in seen[name]) < MAX_INPUT_ELEMENTS):
            seen[name].append(np.asarray(value))

    runner = GraphRunner(graph)
    for feeds in samples:
        for name in names & set(feeds):
            keep(name, feeds[name])
        runner.run(feeds, keep)
    return {n: np.concatenate(v) for n, v in seen.items() if v}


def _nearest(filters: np.ndarray, scale: np.ndarray, zero: np.ndarray, qmin: int, qmax: int):
    return (np.clip(np.round(filters / scale) + zero, qmin, qmax) - zero) * scale


def _relative_error(rows: np.ndarray, filters: np.ndarray, rounded: np.ndarray) -> float:
    exact = rows @ np.swapaxes(filters, 1, 2)
    error = rows @ np.swapaxes(filters - rounded, 1, 2)
    return float(np.sum(error ** 2) / max(np.sum(exact ** 2), 1e-30))


def _h(v: np.ndarray) -> np.ndarray:
    return np.clip(1 / (1 + np.exp(-v)) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def adaround(rows: np.ndarray, filters: np.ndarray, scale: np.ndarray, zero: np.ndarray, qmin: int,
             qmax: int, deadline: float) -> tuple[np.ndarray, int]:
    """The rounded filters (on the grid) minimising ||rows (filters - rounded)^T||^2 with
    learned up/down choices; and the iterations run before `deadline` (perf_counter). No
    randomness: the same inputs give the same rounding unless the deadline cuts it short."""
    gram = np.swapaxes(rows, 1, 2) @ rows / rows.shape[1]  # [G, K, K]: the loss is quadratic
    base = np.floor(filters / scale)
    rest = np.clip(filters / scale - base, 1e-4, 1 - 1e-4)
    v = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1)  # h(v) = rest: the float weight
    m, s = np.zeros_like(v), np.zeros_like(v)
    nearest = np.clip(np.round(filters / scale), base, base + 1)
    e0 = filters - scale * nearest
    unit = max(float(np.sum((e0 @ gram) * e0)), 1e-30)  # the loss of nearest rounding: 1
    done = 0
    for it in range(ITERATIONS):
        if time.perf_counter() > deadline:
            break
        sig = 1 / (1 + np.exp(-v))
        stretched = sig * (ZETA - GAMMA) + GAMMA
        h = np.clip(stretched, 0.0, 1.0)
        error = filters - scale * (base + h)                  # [G, O, K]
        grad_h = -2 * scale * (error @ gram) / unit           # d/dh of the output error
        if it >= WARMUP * ITERATIONS:
            progress = (it - WARMUP * ITERATIONS) / ((1 - WARMUP) * ITERATIONS)
            beta = BETA[0] + (BETA[1] - BETA[0]) * progress
            centred = 2 * h - 1
            grad_h += REGULARISATION / h.size * -beta * np.abs(centred) ** (beta - 1) * \
                np.sign(centred) * 2
        grad = grad_h * ((stretched > 0) & (stretched < 1)) * sig * (1 - sig) * (ZETA - GAMMA)
        m = 0.9 * m + 0.1 * grad
        s = 0.999 * s + 0.001 * grad ** 2
        v -= LEARNING_RATE * (m / (1 - 0.9 ** (it + 1))) / (np.sqrt(s / (1 - 0.999 ** (it + 1))) + 1e-8)
        done = it + 1
    q = np.clip(base + (_h(v) >= 0.5) + zero, qmin, qmax)
    return (q - zero) * scale, done


def fitting_work(filters_shape: tuple[int, int, int]) -> float:
    """Operations that fitting one layer of [G, O, K] filters costs: each iteration multiplies
    the [G, O, K] error by the [G, K, K] Gram matrix, and takes some ELEMENTWISE_OPS per weight
    (the sigmoid, the regulariser's gradient, Adam)."""
    groups, outputs, inputs = filters_shape
    return float(ITERATIONS) * groups * outputs * inputs * (inputs + ELEMENTWISE_OPS)


def round_worst_layers(graph: Graph, weight_grids: Mapping[int, tuple[int, QuantParams]],
                       samples: Sequence[Mapping[str, np.ndarray]], layers: int,
                       seconds: float, seed: int = 0, max_work: float | None = None) -> Rounding:
    """AdaRound for the `layers` layers whose nearest rounding costs them the most output SQNR
    on `samples`, fitted within `seconds` in all (`seed` picks the output positions the loss is
    taken over). Measuring the layers' inputs and ranking them comes first, bounded by the
    samples, outside the budget: counted in, it took MobileNetV2's whole 30 s on a busy machine
    and no layer was fitted. weight_grids: id(op) -> (weight input, its grid). max_work:
    operations the fitting may cost in all (fitting_work, known before it starts): worse layers
    that would take more than is left are passed over, so that the choice, unlike a deadline,
    does not depend on the machine's speed (and a layer beyond it is not even measured).
    Each chosen layer's weight becomes a new constant already on its grid, so quantizing it
    gives the learned integers."""
    start = time.perf_counter()
    ops = [op for op in graph.ops if id(op) in weight_grids and
           (max_work is None or _work(graph, op, weight_grids[id(op)][0]) <= max_work)]
    inputs = _collect_inputs(graph, ops, samples)
    candidates = []
    for op in ops:
        x = inputs.get(op.inputs[0])
        index, params = weight_grids[id(op)]
        spec = registry.spec(op.kind)
        w = graph.tensors[op.inputs[index]].data.astype(np.float64)
        rows = None if x is None else _layer_rows(spec, x, w.shape, op.attrs, seed)
        if rows is None:
            continue
        filters = spec.weight_to_filters(w)
        scale, zero = (spec.weight_to_filters(np.broadcast_to(a, w.shape).astype(np.float64))
                       for a in params.broadcast(w.ndim))
        nearest = _nearest(filters, scale, zero, params.dtype.qmin, params.dtype.qmax)
        error = _relative_error(rows, filters, nearest)
        if max_work is not None:
            rows = None  # made again for the chosen few: kept for all, a MobileNetV2's took 0.9 GB
        candidates.append((error, op, index, params, rows, filters, scale, zero))
    candidates.sort(key=lambda c: -c[0])
    chosen = candidates[:layers] if max_work is None else []
    for candidate in candidates if max_work is not None else []:
        work = fitting_work(candidate[5].shape)
        if len(chosen) < layers and work <= max_work:
            op = candidate[1]
            rows = _layer_rows(registry.spec(op.kind), inputs[op.inputs[0]],
                               graph.tensors[op.inputs[candidate[2]]].shape, op.attrs, seed)
            chosen.append(candidate[:4] + (rows,) + candidate[5:])
            max_work -= work
    rounded, fitted, measured = [], 0, time.perf_counter() - start
    fitting = time.perf_counter()
    for k, (before, op, index, params, rows, filters, scale, zero) in enumerate(chosen):
        remaining = seconds - (time.perf_counter() - fitting)
        if remaining <= 0:
            break
        deadline = time.perf_counter() + remaining / (len(chosen) - k)
        learned, iterations = adaround(rows, filters, scale, zero, params.dtype.qmin,
                                       params.dtype.qmax, deadline)
        fitted += 1
        after = _relative_error(rows, filters, learned)
        if after >= before:
            continue  # nearest was as good: keep it
        spec = registry.spec(op.kind)
        shape = graph.tensors[op.inputs[index]].shape
        weight = spec.filters_to_weight(learned, shape).astype(np.float32)
        op.inputs[index] = graph.add_constant(f"{op.inputs[index]}/adarounded", weight)
        rounded.append(RoundedLayer(op.origin, _db(before), _db(after), iterations))
    graph.remove_unused()
    return Rounding(rounded, len(candidates), time.perf_counter() - start, fitted, measured)


def _layer_rows(spec, x: np.ndarray, shape, attrs, seed: int) -> np.ndarray | None:
    """The [G, N, K] rows a layer multiplies its filters with: at most MAX_ROWS positions of
    its input `x`, picked with `seed`; None for a layer that has no such form."""
    rows = spec.matmul_rows(x, tuple(shape), attrs)
    if rows is None:
        return None
    if rows.shape[1] > MAX_ROWS:
        pick = np.random.default_rng(seed).choice(rows.shape[1], MAX_ROWS, replace=False)
        rows = rows[:, np.sort(pick)]
    return rows.astype(np.float64)


def _work(graph: Graph, op: Op, index: int) -> float:
    w = graph.tensors[op.inputs[index]].data
    return fitting_work(registry.spec(op.kind).weight_to_filters(np.zeros(w.shape, np.float32)).shape)


def _db(relative_error: float) -> float:
    return float(-10 * np.log10(max(relative_error, 1e-30)))
