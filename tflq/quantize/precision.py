"""--target-sqnr: promote the fewest layers (ONNX nodes) int8 -> int16 -> float until the output
SQNR on the evaluation samples (--eval-data, else the first calibration samples) reaches the target.

Each candidate layer's sensitivity is the output SQNR of the model in which it alone is quantized
(everything else float): the noise it adds on its own. Quantization noises of the layers nearly
add up, so promoting the layers that add the most noise first is the shortest way to the
target; the shortest prefix of that order that reaches it is found by bisection (each step one
simulated run over the samples), then each layer of it that the target does not need once the
others are in is dropped (where the noises do not add up). Ranking by the SQNR gained by
promoting a layer alone, from the quantized model, does worse: with the noise spread over many
layers each gain is a few hundredths of a dB, below what the interactions move it by (on the
benchmark ResNet-18 in uint8, +5 dB took 24 of 32 layers that way, 13 this way).
A promoted layer runs with int16 activations where LiteRT has a 16x8 kernel for it, else in
float. The model's SQNR is measured by running the quantized graph with tflq's reference
kernels, each quantized activation rounded to its grid (its integer arithmetic, simulated):
signal and noise summed over every output and sample.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from tflq import ops as registry
from tflq.errors import InvalidConfigError
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph
from tflq.quantize.plan import PlanContext, plan_quantization
from tflq.quantize.rewrite import apply_plan
from tflq.report import PrecisionResult, Promotion
from tflq.runtime.interpreter import GraphRunner

# Samples each layer's sensitivity is measured on (one run per layer; the search uses them all).
SENSITIVITY_SAMPLES = 2
# Above this a target asks for more than float32 arithmetic itself reaches against the reference
# (reordered float sums differ by ~1e-7 relative: about 140 dB at best).
MAX_TARGET_SQNR = 120.0

Feeds = dict[str, np.ndarray]
MakeContext = Callable[[frozenset[str], frozenset[str]], PlanContext]  # (int16 nodes, float nodes)


def pooled_sqnr(reference: Sequence[Sequence[np.ndarray]], approx: Sequence[Sequence[np.ndarray]]) -> float:
    """SQNR (dB) with signal and noise summed over every output of every sample."""
    signal = noise = 0.0
    for ref_outputs, out in zip(reference, approx):
        for r, a in zip(ref_outputs, out):
            r = np.asarray(r, np.float64)
            signal += float(np.sum(r * r))
            noise += float(np.sum((r - np.asarray(a, np.float64)) ** 2))
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(signal / noise)) if signal > 0 else float("-inf")


class SqnrEvaluator:
    """The float graph's outputs on `samples`, and the output SQNR of any mix of precisions
    (simulated: the graph quantized by `make_context`'s plan, run with its grids rounded)."""

    def __init__(self, graph: Graph, make_context: MakeContext, samples: list[Feeds]) -> None:
        self.graph = graph
        self.make_context = make_context
        self.samples = samples
        runner = GraphRunner(graph)
        self.reference = [list(runner.run(s).values()) for s in samples]
        self.runs = 0

    def sqnr(self, int16: frozenset[str], float_: frozenset[str], samples: int | None = None) -> float:
        """Output SQNR of the model with these promotions, on the first `samples` samples."""
        g = self.graph.copy()
        apply_plan(g, plan_quantization(g, self.make_context(int16, float_)))
        runner = GraphRunner(g, round_activations=True)
        self.runs += 1
        count = len(self.samples) if samples is None else samples
        return pooled_sqnr(self.reference[:count],
                           [list(runner.run(s).values()) for s in self.samples[:count]])


def search_precision(graph: Graph, make_context: MakeContext, samples: list[Feeds],
                     target_db: float, source: str = "calibration samples") -> PrecisionResult:
    """The fewest promotions that bring the output SQNR on `samples` to `target_db`;
    InvalidConfigError when even every candidate promoted falls short (by how much), or the
    target is beyond float's. `source` names the samples in messages."""
    if not np.isfinite(target_db) or target_db > MAX_TARGET_SQNR:
        raise InvalidConfigError(f"--target-sqnr {target_db:g} dB is above what float arithmetic "
                                 f"reaches against the float model (at most {MAX_TARGET_SQNR:g} dB)")
    if not samples:
        raise InvalidConfigError("--target-sqnr needs samples to measure on (--calib or --eval-data)")
    layers = quantized_layers(graph, make_context(frozenset(), frozenset()))
    evaluator = SqnrEvaluator(graph, make_context, samples)
    before = evaluator.sqnr(frozenset(), frozenset())
    result = PrecisionResult(target_db, before, before, len(layers), len(samples), source=source)
    if before >= target_db:
        return result
    names = list(layers)
    int16_capable = frozenset(n for n in names if _has_int16(graph, n))

    def sqnr(chosen, count: int | None = None) -> float:
        int16 = frozenset(chosen) & int16_capable
        return evaluator.sqnr(int16, frozenset(chosen) - int16, count)

    ceiling = sqnr(names)
    if ceiling < target_db:
        raise InvalidConfigError(
            f"--target-sqnr {target_db:g} dB cannot be reached: with every one of the {len(names)} "
            f"quantized layers promoted (int16 where LiteRT has a 16x8 kernel, else float) the "
            f"output SQNR on the {len(samples)} {source} is {ceiling:.1f} dB, "
            f"{target_db - ceiling:.1f} dB short (as quantized: {before:.1f} dB); nothing was written")
    # n alone quantized: the noise it adds by itself; the noises of the layers add up
    alone = layer_sensitivities(evaluator, names)
    order = sorted(names, key=lambda n: alone[n])
    low, high, reached = 0, len(order), ceiling  # the first `high` promoted reach the target
    while high - low > 1:
        mid = (low + high) // 2
        measured = sqnr(order[:mid])
        if measured >= target_db:
            high, reached = mid, measured
        else:
            low = mid
    chosen = order[:high]
    for n in reversed(chosen[:-1]):  # where the noises do not add up: one the others make needless
        without = sqnr([c for c in chosen if c != n])
        if without >= target_db:
            chosen, reached = [c for c in chosen if c != n], without
    result.promoted = [Promotion(n, layers[n], "int16" if n in int16_capable else "float")
                       for n in chosen]
    result.after_db = reached
    return result


def quantized_layers(graph: Graph, context: PlanContext) -> dict[str, str]:
    """The layers (ONNX node -> its first TFLite kind) that run quantized under `context`."""
    plan = plan_quantization(graph.copy(), context)
    layers: dict[str, str] = {}
    for op in plan.quantized_ops:
        if registry.spec(op.kind).quant.runs_in(context.dtype) and op.origin:
            layers.setdefault(op.origin, op.kind)
    return layers


def layer_sensitivities(evaluator: SqnrEvaluator, names: Sequence[str],
                        samples: int = SENSITIVITY_SAMPLES) -> dict[str, float]:
    """Each layer's sensitivity: the output SQNR (dB) with it alone quantized, every other one
    of `names` float (the noise it adds by itself), on the first `samples` samples."""
    every = frozenset(names)
    return {n: evaluator.sqnr(frozenset(), every - {n}, samples) for n in names}


def _has_int16(graph: Graph, node: str) -> bool:
    """Whether every op imported from `node` has a 16x8 kernel."""
    kinds = [op.kind for op in graph.ops if op.origin == node]
    return bool(kinds) and all(registry.spec(k).quant.runs_in(DType.INT16) for k in kinds)
