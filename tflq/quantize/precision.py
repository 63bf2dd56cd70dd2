"""--target-sqnr: promote the fewest layers (ONNX nodes) int8 -> int16 -> float until the output
SQNR on every evaluation sample (--eval-data, else the first calibration samples) reaches the
target.

The target is judged on the worst sample: a sample's SQNR sums signal and noise over the model's
outputs for that sample, and the target is met when the lowest of them reaches it (a pooled
figure hid two samples at 7 dB behind a mean of 97 dB).

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
kernels, each quantized activation rounded to its grid (its integer arithmetic, simulated).

Cost: every measurement is a simulated run of the model. A run in which one layer alone is
quantized computes, up to that layer, what the float model computes: those values are kept from
the float run of the first SENSITIVITY_SAMPLES samples and only the rest of the graph runs. A
configuration checked against the target stops at its first sample below it, trying the samples
that were worst as quantized first.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from tflq import ops as registry
from tflq.errors import InvalidConfigError
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph
from tflq.progress import progress
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


def _db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def _powers(reference: Sequence[np.ndarray], approx: Sequence[np.ndarray]) -> tuple[float, float]:
    signal = noise = 0.0
    for r, a in zip(reference, approx):
        r = np.asarray(r, np.float64)
        signal += float(np.sum(r * r))
        noise += float(np.sum((r - np.asarray(a, np.float64)) ** 2))
    return signal, noise


def sample_sqnrs(reference: Sequence[Sequence[np.ndarray]],
                 approx: Sequence[Sequence[np.ndarray]]) -> list[float]:
    """Each sample's SQNR (dB): its signal and noise summed over every output."""
    return [_db(*_powers(r, a)) for r, a in zip(reference, approx)]


def pooled_sqnr(reference: Sequence[Sequence[np.ndarray]], approx: Sequence[Sequence[np.ndarray]]) -> float:
    """SQNR (dB) with signal and noise summed over every output of every sample."""
    signal = noise = 0.0
    for r, a in zip(reference, approx):
        s, n = _powers(r, a)
        signal, noise = signal + s, noise + n
    return _db(signal, noise)


class _SuffixRunner(GraphRunner):
    """Runs a quantized graph without its ops that compute what the float graph computes
    (`reused`: same op on the same float inputs), reading their results from a float run."""

    def __init__(self, graph: Graph, reused: set[int]) -> None:
        super().__init__(graph, round_activations=True)
        self.steps = [step for step in self.steps if id(step[0]) not in reused]
        made = {out for op in graph.ops if id(op) in reused for out in op.outputs}
        read = {n for step in self.steps for n in step[0].inputs} | set(graph.outputs)
        self.seeded = sorted(made & read)

    def run_from(self, feeds: Feeds, float_values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        base = self.constants
        self.constants = {**base, **{n: float_values[n] for n in self.seeded}}
        try:
            return self.run(feeds)
        finally:
            self.constants = base


def _float_prefix(quantized: Graph, float_graph: Graph) -> set[int]:
    """id() of the ops of `quantized` that compute exactly what `float_graph` computes: the
    same op (kind, inputs, outputs) reading float tensors that such ops (or the inputs) made."""
    producers = {out: op for op in float_graph.ops for out in op.outputs}
    clean = {n for n in quantized.inputs if quantized.tensors[n].dtype.is_float}
    reused: set[int] = set()
    for op in quantized.ops:
        original = producers.get(op.outputs[0]) if op.outputs else None
        if original is None or original.kind != op.kind or original.inputs != op.inputs or \
                original.outputs != op.outputs or original.attrs is not op.attrs:
            continue
        if not all(quantized.tensors[n].dtype.is_float for n in op.outputs):
            continue
        if all(not n or n in clean or (quantized.is_constant(n) and
                                        quantized.tensors[n].data is float_graph.tensors[n].data)
               for n in op.inputs):
            reused.add(id(op))
            clean.update(op.outputs)
    return reused


class SqnrEvaluator:
    """The float graph's outputs on `samples`, and the output SQNR of any mix of precisions
    (simulated: the graph quantized by `make_context`'s plan, run with its grids rounded).
    The float values of every tensor of the first `cached` samples are kept (see the module
    docstring)."""

    def __init__(self, graph: Graph, make_context: MakeContext, samples: list[Feeds],
                 cached: int = SENSITIVITY_SAMPLES) -> None:
        self.graph = graph
        self.make_context = make_context
        self.samples = samples
        runner = GraphRunner(graph)
        self.reference: list[list[np.ndarray]] = []
        self.float_values: list[dict[str, np.ndarray]] = []
        for index, sample in enumerate(samples):
            values: dict[str, np.ndarray] = {}
            outputs = runner.run(sample, values.__setitem__ if index < cached else None)
            self.reference.append(list(outputs.values()))
            if index < cached:
                self.float_values.append(values)
        self.runs = 0

    def quantized(self, int16: frozenset[str], float_: frozenset[str]) -> Graph:
        g = self.graph.copy()
        apply_plan(g, plan_quantization(g, self.make_context(int16, float_)))
        return g

    def sample_sqnrs(self, int16: frozenset[str], float_: frozenset[str],
                     indices: Sequence[int] | None = None, stop_below: float | None = None) -> list[float]:
        """Each sample's output SQNR with these promotions, on the samples `indices` (default:
        all) in that order; with `stop_below`, stops after the first sample below it."""
        g = self.quantized(int16, float_)
        self.runs += 1
        runner: GraphRunner | None = None
        suffix: _SuffixRunner | None = None
        result = []
        for i in range(len(self.samples)) if indices is None else indices:
            if i < len(self.float_values):
                if suffix is None:
                    suffix = _SuffixRunner(g, _float_prefix(g, self.graph))
                out = suffix.run_from(self.samples[i], self.float_values[i])
            else:
                runner = runner or GraphRunner(g, round_activations=True)
                out = runner.run(self.samples[i])
            result.append(_db(*_powers(self.reference[i], list(out.values()))))
            if stop_below is not None and result[-1] < stop_below:
                break
        return result

    def worst(self, int16: frozenset[str], float_: frozenset[str],
              indices: Sequence[int] | None = None, stop_below: float | None = None) -> float:
        """The lowest sample SQNR (see sample_sqnrs)."""
        return min(self.sample_sqnrs(int16, float_, indices, stop_below))

    def sqnr(self, int16: frozenset[str], float_: frozenset[str], samples: int | None = None) -> float:
        """Output SQNR pooled over the first `samples` samples (default: all)."""
        count = len(self.samples) if samples is None else samples
        g = self.quantized(int16, float_)
        self.runs += 1
        runner = GraphRunner(g, round_activations=True)
        return pooled_sqnr(self.reference[:count],
                           [list(runner.run(s).values()) for s in self.samples[:count]])


def check_target(target_db: float) -> None:
    """A target float arithmetic itself cannot reach against the float model: InvalidConfigError."""
    if not np.isfinite(target_db) or target_db > MAX_TARGET_SQNR:
        raise InvalidConfigError(f"--target-sqnr {target_db:g} dB is above what float arithmetic "
                                 f"reaches against the float model (at most {MAX_TARGET_SQNR:g} dB)")


def search_precision(graph: Graph, make_context: MakeContext, samples: list[Feeds],
                     target_db: float, source: str = "calibration samples",
                     accept_below: bool = False, show_progress: bool = False) -> PrecisionResult:
    """The fewest promotions that bring every sample's output SQNR to `target_db`.

    When even every candidate promoted falls short: InvalidConfigError saying by how much, or
    (accept_below) that best configuration, with `reached` False. A target beyond float's:
    InvalidConfigError. `source` names the samples in messages."""
    check_target(target_db)
    if not samples:
        raise InvalidConfigError("--target-sqnr needs samples to measure on (--calib or --eval-data)")
    layers = quantized_layers(graph, make_context(frozenset(), frozenset()))
    evaluator = SqnrEvaluator(graph, make_context, samples)
    as_quantized = evaluator.sample_sqnrs(frozenset(), frozenset())
    before = min(as_quantized)
    result = PrecisionResult(target_db, before, before, len(layers), len(samples), source=source)
    if before >= target_db:
        return result
    hardest = sorted(range(len(samples)), key=lambda i: as_quantized[i])  # tried first
    names = list(layers)
    int16_capable = frozenset(n for n in names if _has_int16(graph, n))

    def promoted(chosen) -> tuple[frozenset[str], frozenset[str]]:
        int16 = frozenset(chosen) & int16_capable
        return int16, frozenset(chosen) - int16

    def meets(chosen) -> float | None:
        """The worst sample's SQNR with `chosen` promoted if it reaches the target, else None."""
        worst = evaluator.worst(*promoted(chosen), hardest, stop_below=target_db)
        return worst if worst >= target_db else None

    ceiling = evaluator.worst(*promoted(names), hardest)
    if ceiling < target_db:
        short = (f"--target-sqnr {target_db:g} dB cannot be reached: with every one of the "
                 f"{len(names)} quantized layers promoted (int16 where LiteRT has a 16x8 kernel, "
                 f"else float) the worst of the {len(samples)} {source} has an output SQNR of "
                 f"{ceiling:.1f} dB, {target_db - ceiling:.1f} dB short (as quantized: {before:.1f} dB)")
        if not accept_below:
            raise InvalidConfigError(f"{short}; nothing was written (--accept-below-target writes "
                                     f"that model anyway)", reason_code="target_not_reached")
        result.promoted = _promotions(names, layers, int16_capable)
        result.after_db, result.reached, result.shortfall = ceiling, False, short
        return result
    # n alone quantized: the noise it adds by itself; the noises of the layers add up
    alone = layer_sensitivities(evaluator, names, show_progress=show_progress)
    order = sorted(names, key=lambda n: alone[n])
    low, high, reached = 0, len(order), ceiling  # the first `high` promoted reach the target
    with progress(None, "--target-sqnr search", show_progress, unit="run") as bar:
        while high - low > 1:
            mid = (low + high) // 2
            measured = meets(order[:mid])
            bar.update()
            if measured is not None:
                high, reached = mid, measured
            else:
                low = mid
        chosen = order[:high]
        for n in reversed(chosen[:-1]):  # where the noises do not add up: one the others make needless
            without = meets([c for c in chosen if c != n])
            bar.update()
            if without is not None:
                chosen, reached = [c for c in chosen if c != n], without
    result.promoted = _promotions(chosen, layers, int16_capable)
    result.after_db = reached
    return result


def _promotions(chosen: Sequence[str], layers: dict[str, str], int16_capable: frozenset[str]) -> list[Promotion]:
    return [Promotion(n, layers[n], "int16" if n in int16_capable else "float") for n in chosen]


def quantized_layers(graph: Graph, context: PlanContext) -> dict[str, str]:
    """The layers (ONNX node -> its first TFLite kind) that run quantized under `context`."""
    plan = plan_quantization(graph.copy(), context)
    layers: dict[str, str] = {}
    for op in plan.quantized_ops:
        if registry.spec(op.kind).quant.runs_in(context.dtype) and op.origin:
            layers.setdefault(op.origin, op.kind)
    return layers


def layer_sensitivities(evaluator: SqnrEvaluator, names: Sequence[str],
                        samples: int = SENSITIVITY_SAMPLES, show_progress: bool = False) -> dict[str, float]:
    """Each layer's sensitivity: the worst output SQNR (dB), over the first `samples` samples,
    with it alone quantized, every other one of `names` float (the noise it adds by itself)."""
    every = frozenset(names)
    indices = range(min(samples, len(evaluator.samples)))
    result = {}
    with progress(len(names), "layer sensitivity", show_progress, unit="layer") as bar:
        for n in names:
            result[n] = evaluator.worst(frozenset(), every - {n}, indices)
            bar.update()
    return result


def _has_int16(graph: Graph, node: str) -> bool:
    """Whether every op imported from `node` has a 16x8 kernel."""
    kinds = [op.kind for op in graph.ops if op.origin == node]
    return bool(kinds) and all(registry.spec(k).quant.runs_in(DType.INT16) for k in kinds)
