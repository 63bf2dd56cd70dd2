"""--target-sqnr: promote the fewest layers (ONNX nodes) int8 -> int16 -> float until the output
SQNR on every evaluation sample (--eval-data, else the first calibration samples) reaches the
target.

The target is judged on the worst sample: a sample's SQNR sums signal and noise over the model's
outputs for that sample, and the target is met when the lowest of them reaches it (a pooled
figure hid two samples at 7 dB behind a mean of 97 dB).

Where the noise comes from. A quantized model rounds in two kinds of places: each activation
grid (a tensor, with the tensors that share its grid through value-moving ops: PAD, MAX_POOL,
RESHAPE) and each layer's weights. Each such source's noise is measured on its own: the float
model with only that rounding done. Promoting a layer takes out its weights' noise (int16x8 has
per-channel int8 weights: what is left is their rounding, measured the same way; with bias
correction on, each layer's weights come with its corrected bias, in 8 bits and promoted, as
the conversion writes them), but an activation grid's noise only
when every layer that writes or reads the tensor leaves 8 bits: a layer promoted alone reads an
8-bit input, and its int16 output is requantized to the 8-bit grid its readers use. Ranking
single layers by the noise each adds alone misses that: on the benchmark ResNet-18 in uint8 its
largest source is the model input's grid (17% of the noise), which only the first convolution
reads.

The search. The noises add up (the sum of the sources is within ~1 dB of the quantized model's
noise), so the fraction of the noise a set of promotions takes out is predicted from the
sources it covers. Sources are added greedily, each time the one that takes out the most noise
per TFLite op it adds (the layers it needs that are not in yet: a convolution with its explicit
PAD is two), until the prediction reaches the target on the worst sample; then the set is
checked by a simulated run of the mixed model (the quantized graph run with tflq's reference
kernels, each quantized activation rounded to its grid), sources are added one by one until a
check passes, and last each chosen layer the target does not need once the others are in is
dropped (each a check). A promoted layer runs with int16 activations where LiteRT has a 16x8
kernel for it, else in float. Every mix is measured as the conversion writes it: with bias
correction when that is on (its input means measured once on the float graph: they do not
depend on the grids); learned rounding (--rounding adaround) runs after the search, uncounted.

Cost: every measurement is a run over the samples. A source is measured from the float run's
values up to it (kept for the first SENSITIVITY_SAMPLES samples), so only the rest of the graph
runs; a check stops at its first sample below the target, trying the samples that were worst as
quantized first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from tflq import ops as registry
from tflq.errors import InvalidConfigError
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph
from tflq.progress import progress
from tflq.quantize.dead_channels import plan_without_dead_weights
from tflq.quantize.plan import PlanContext, QuantPlan, plan_quantization
from tflq.quantize.rewrite import apply_plan
from tflq.report import PrecisionResult, Promotion
from tflq.runtime.interpreter import GraphRunner

# Samples each layer's sensitivity is measured on (one run per layer; the search uses them all).
SENSITIVITY_SAMPLES = 2
# Above this a target asks for more than float32 arithmetic itself reaches against the reference
# (reordered float sums differ by ~1e-7 relative: about 140 dB at best).
MAX_TARGET_SQNR = 120.0
LISTED_SOURCES = 3  # noise sources the summary names

Feeds = dict[str, np.ndarray]
MakeContext = Callable[[frozenset[str], frozenset[str]], PlanContext]  # (int16 nodes, float nodes)
# The 8-bit repairs the conversion runs on its plan (bias correction), run on each mix tried:
# (the graph the plan is of, the plan) -> None, changing the graph's constants and the plan.
Repair = Callable[[Graph, QuantPlan], object]


def _db(signal: float, noise: float) -> float:
    """Signal over noise in dB: +inf when exact, -inf when nothing of the signal is left (no signal,
    or a noise power that is infinite or NaN: a simulated output that overflowed)."""
    if noise == 0:
        return math.inf
    if not (signal > 0 and math.isfinite(noise)) or signal / noise == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)


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
                 cached: int = SENSITIVITY_SAMPLES, repair: Repair | None = None) -> None:
        self.graph = graph
        self.make_context = make_context
        self.repair = repair
        self.samples = samples
        runner = self.float_runner = GraphRunner(graph)
        self.reference: list[list[np.ndarray]] = []
        self.float_values: list[dict[str, np.ndarray]] = []
        for index, sample in enumerate(samples):
            values: dict[str, np.ndarray] = {}
            outputs = runner.run(sample, values.__setitem__ if index < cached else None)
            self.reference.append(list(outputs.values()))
            if index < cached:
                self.float_values.append(values)
        self.runs = 0

    def perturbed(self, index: int, start: int, grids: dict, constants: dict[str, np.ndarray],
                  feeds: Feeds | None = None) -> float:
        """Noise over signal power of cached sample `index` when the float graph runs from its
        op `start` on (the float values before it reused) with `grids` rounding those tensors
        and `constants` replacing those (`feeds`: other inputs)."""
        runner = self.float_runner
        steps, base_constants, base_grids = runner.steps, runner.constants, runner.grids
        runner.steps, runner.grids = steps[start:], grids
        runner.constants = {**base_constants, **self.float_values[index], **constants}
        try:
            out = runner.run(feeds or self.samples[index])
        finally:
            runner.steps, runner.constants, runner.grids = steps, base_constants, base_grids
        signal, noise = _powers(self.reference[index], list(out.values()))
        return noise / signal if signal > 0 else math.inf

    def planned(self, int16: frozenset[str], float_: frozenset[str]) -> tuple[Graph, QuantPlan]:
        """A copy of the graph and its plan for this mix, repaired as the conversion would be."""
        g = self.graph.copy()
        plan, _ = plan_without_dead_weights(g, self.make_context(int16, float_))
        if self.repair is not None:
            self.repair(g, plan)
        return g, plan

    def quantized(self, int16: frozenset[str], float_: frozenset[str]) -> Graph:
        g, plan = self.planned(int16, float_)
        apply_plan(g, plan)
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
                     accept_below: bool = False, show_progress: bool = False,
                     repair: Repair | None = None, repair_name: str = "",
                     repair_optional: bool = False) -> PrecisionResult:
    """The fewest promotions that bring every sample's output SQNR to `target_db`.

    When even every candidate promoted falls short: InvalidConfigError saying by how much, or
    (accept_below) that best configuration, with `reached` False. A target beyond float's:
    InvalidConfigError. `source` names the samples in messages; `repair` (named `repair_name`):
    the 8-bit repairs the conversion runs on its plan, counted in every mix measured.

    `repair_optional`: the user left the repair to the search. Where it raises the worst sample
    as quantized, the search runs with it and without it and keeps the one that promotes fewer
    TFLite ops (a tie: without); `counted` says whether it was kept (the file must then have it
    too). The as-quantized gain alone does not decide: a repair worth 0.01 dB there led to two
    promoted layers instead of one (the bad-layer model of the tests)."""
    check_target(target_db)
    if not samples:
        raise InvalidConfigError("--target-sqnr needs samples to measure on (--calib or --eval-data)")
    evaluator = SqnrEvaluator(graph, make_context, samples, repair=repair)
    as_quantized = evaluator.sample_sqnrs(frozenset(), frozenset())
    counted = repair_name if repair is not None else ""
    if repair is None or not repair_optional:
        return _search(evaluator, as_quantized, target_db, source, accept_below, show_progress, counted)[0]
    evaluator.repair = None
    without = evaluator.sample_sqnrs(frozenset(), frozenset())
    try:
        plain = _search(evaluator, without, target_db, source, accept_below, show_progress, "")
    except InvalidConfigError as error:  # out of reach without it: maybe not with it
        if min(without) >= min(as_quantized):
            raise
        plain, unreached = None, error
    if min(without) >= min(as_quantized):
        return plain[0]
    evaluator.repair = repair
    try:
        repaired = _search(evaluator, as_quantized, target_db, source, accept_below, show_progress, counted)
    except InvalidConfigError:
        if plain is None:
            raise unreached from None
        return plain[0]
    if plain is not None and (repaired[0].reached, -repaired[1]) <= (plain[0].reached, -plain[1]):
        return plain[0]
    result = repaired[0]
    result.repair_chosen = (
        f"{repair_name} on (not asked for either way): {repaired[1]} promoted TFLite ops with it, "
        + (f"{plain[1]} without" if plain is not None else "out of reach without it")
        + f" (worst sample as quantized {min(without):.1f} -> {min(as_quantized):.1f} dB)")
    return result


def _search(evaluator: SqnrEvaluator, as_quantized: list[float], target_db: float, source: str,
            accept_below: bool, show_progress: bool, counted: str) -> tuple[PrecisionResult, int]:
    """search_precision with the evaluator's repair as it is (`counted` names it), given each
    sample's SQNR as quantized; and the TFLite ops of the layers it promotes (8-bit plan's)."""
    graph, make_context, samples = evaluator.graph, evaluator.make_context, evaluator.samples
    layers_of = quantized_layers(graph, make_context(frozenset(), frozenset()))
    before = min(as_quantized)
    result = PrecisionResult(target_db, before, before, len(layers_of), len(samples), source=source,
                             counted=counted)
    if before >= target_db:
        return result, 0
    hardest = sorted(range(len(samples)), key=lambda i: as_quantized[i])  # tried first
    names = list(layers_of)
    int16_capable = frozenset(n for n in names if _has_int16(graph, n))

    def promoted(chosen) -> tuple[frozenset[str], frozenset[str]]:
        int16 = frozenset(chosen) & int16_capable
        return int16, frozenset(chosen) - int16

    def meets(chosen) -> float | None:
        """The worst sample's SQNR with `chosen` promoted if it reaches the target, else None."""
        worst = evaluator.worst(*promoted(chosen), hardest, stop_below=target_db)
        return worst if worst >= target_db else None

    plan = plan_quantization(graph, make_context(frozenset(), frozenset()))  # (marks, touches nothing)
    ops_of = {n: sum(1 for op in plan.quantized_ops if op.origin == n) or 1 for n in names}
    every_op = sum(ops_of.values())
    if evaluator.worst(*promoted(names), hardest[:1]) < target_db:  # out of reach: say so at once
        return _unreachable(result, evaluator, promoted(names), names, layers_of, int16_capable,
                            accept_below), every_op
    sources = noise_sources(evaluator, plan, set(names), int16_capable, show_progress)
    total = sum(source.noise for source in sources)
    result.largest_sources = [f"{s.name} {s.kind} {s.noise / total:.0%}" for s in
                              sorted(sources, key=lambda s: -s.noise)[:LISTED_SOURCES]] if total else []
    # the fraction of its noise the worst sample must lose (the others need less)
    need = 1 - 10 ** ((before - target_db) / 10)

    def removed(chosen: set[str]) -> float:
        return sum(s.noise * (1 - s.kept) for s in sources if s.layers <= chosen) / total if total else 0.0

    chosen: set[str] = set()
    order: list[str] = []  # in the order they were chosen
    reached = None
    with progress(None, "--target-sqnr search", show_progress, unit="check") as bar:
        while reached is None:
            if len(chosen) == len(names):
                break
            if removed(chosen) >= need:  # predicted: check it (then add one source at a time)
                reached = meets(sorted(chosen))
                bar.update()
                if reached is not None:
                    break
            layers = _best_next(sources, chosen, removed, ops_of)
            if not layers:  # every source covered: the rest of the layers
                layers = set(names) - chosen
            chosen |= layers
            order.extend(n for n in names if n in layers)
        if reached is None:
            reached = meets(names)
            bar.update()
            if reached is None:
                return _unreachable(result, evaluator, promoted(names), names, layers_of,
                                    int16_capable, accept_below), every_op
            chosen, order = set(names), list(names)
        # drop each layer the others make needless, the ones whose sources weigh least first
        for n in sorted(order, key=lambda n: removed(chosen) - removed(chosen - {n})):
            if len(chosen) == 1:
                break
            without = meets(sorted(chosen - {n}))
            bar.update()
            if without is not None:
                chosen, reached = chosen - {n}, without
    result.promoted = _promotions([n for n in names if n in chosen], layers_of, int16_capable)
    result.after_db = reached
    return result, sum(ops_of[n] for n in chosen)


def _unreachable(result: PrecisionResult, evaluator: SqnrEvaluator, every: tuple[frozenset[str], frozenset[str]],
                 names: list[str], layers_of: dict[str, str], int16_capable: frozenset[str],
                 accept_below: bool) -> PrecisionResult:
    """Even with every layer promoted (`every`) a sample misses the target: InvalidConfigError
    saying by how much, or (accept_below) `result` with them all promoted, `reached` False."""
    ceiling = evaluator.worst(*every)
    short = (f"--target-sqnr {result.target_db:g} dB cannot be reached: with every one of the "
             f"{len(names)} quantized layers promoted (int16 where LiteRT has a 16x8 kernel, else "
             f"float) the worst of the {result.samples} {result.source} has an output SQNR of "
             f"{ceiling:.1f} dB, {result.target_db - ceiling:.1f} dB short (as quantized: "
             f"{result.before_db:.1f} dB)")
    if not accept_below:
        raise InvalidConfigError(f"{short}; nothing was written (--accept-below-target writes that "
                                 f"model anyway)", reason_code="target_not_reached")
    result.promoted = _promotions(names, layers_of, int16_capable)
    result.after_db, result.reached, result.shortfall = ceiling, False, short
    return result


def _best_next(sources: list[NoiseSource], chosen: set[str], removed, ops_of: dict[str, int]) -> set[str]:
    """The layers of the source not covered yet that take out the most noise per TFLite op
    they add (`ops_of`: each layer's ops)."""
    best, best_rate = set(), 0.0
    now = removed(chosen)
    for source in sources:
        new = source.layers - chosen
        if not new:
            continue
        rate = (removed(chosen | new) - now) / sum(ops_of[n] for n in new)
        if rate > best_rate:
            best, best_rate = new, rate
    return best


@dataclass(frozen=True)
class NoiseSource:
    """One place the quantized model rounds (see the module docstring): an activation grid or a
    layer's weights. `layers`: the nodes that must all be promoted to take it out; `noise`: its
    noise over signal power, alone, mean over the samples measured; `kept`: the fraction of it
    left once they are (a layer's weights, per-channel int8 in int16x8)."""

    name: str
    kind: str  # "activation" or "weights"
    layers: frozenset[str]
    noise: float
    kept: float = 0.0


def noise_sources(evaluator: SqnrEvaluator, plan: QuantPlan, candidates: set[str],
                  int16_capable: frozenset[str], show_progress: bool = False,
                  samples: int = SENSITIVITY_SAMPLES) -> list[NoiseSource]:
    """Every rounding of the 8-bit `plan` (marked on `evaluator.graph` itself: it names that
    graph's ops) that promoting `candidates` can take out, each measured alone on the float
    graph (its first `samples` samples)."""
    graph = evaluator.graph
    position = {out: i for i, op in enumerate(graph.ops) for out in op.outputs}
    readers: dict[str, list] = {}
    for op in graph.ops:
        for name in op.inputs:
            readers.setdefault(name, []).append(op)
    quantized = {id(op) for op in plan.quantized_ops}
    # activation grids: a tensor a value-moving op writes on its input's grid joins that input's
    groups: dict[str, list[str]] = {}
    root: dict[str, str] = {}
    for name in graph.inputs:
        if name in plan.params and not graph.is_constant(name):
            groups[name], root[name] = [name], name
    for op in graph.ops:
        if id(op) not in quantized:
            continue
        rule = registry.spec(op.kind).quant
        for out in op.outputs:
            if out not in plan.params or not graph.tensors[out].dtype.is_float:
                continue
            source = op.inputs[rule.index] if getattr(rule, "moves_values", False) else None
            if source in root and plan.params.get(source) is plan.params[out]:
                root[out] = root[source]
                groups[root[out]].append(out)
            else:
                groups[out], root[out] = [out], out
    jobs = []
    for name, members in groups.items():
        producer = graph.ops[position[name]] if name in position else None
        layers = {producer.origin} if producer is not None else set()
        layers |= {op.origin for m in members for op in readers.get(m, []) if id(op) in quantized}
        layers &= candidates
        if layers:
            jobs.append(("activation", name, frozenset(layers), 0.0, position.get(name, 0),
                         {name: plan.params[name]}, {}))
    as_8bit = _layer_constants(evaluator, frozenset(), frozenset())
    promoted = _layer_constants(evaluator, frozenset(candidates) & int16_capable,
                                frozenset(candidates) - int16_capable)
    for index, constants in as_8bit.items():
        origin = graph.ops[index].origin
        if origin in candidates:
            jobs.append(("weights", origin, frozenset({origin}), promoted.get(index, {}), index, {},
                         constants))
    count = min(samples, len(evaluator.float_values))

    def measure(start: int, grids: dict, constants: dict, name: str) -> float:
        noise = []
        for i in range(count):
            feeds = None
            if start == 0 and name in graph.inputs:  # the model's input, on its grid
                feeds = dict(evaluator.samples[i])
                feeds[name] = grids[name].dequantize(grids[name].quantize(feeds[name]))
            noise.append(evaluator.perturbed(i, start, grids, constants, feeds))
        return float(np.mean(noise))

    sources = []
    with progress(len(jobs), "--target-sqnr noise sources", show_progress, unit="source") as bar:
        for kind, name, layers, left, start, grids, constants in jobs:
            noise = measure(start, grids, constants, name)
            kept = 0.0  # an activation grid, or weights that stay float once promoted
            if left and noise > 0:  # the weights on their int16x8 grid (and repair): measured too
                kept = min(1.0, measure(start, {}, left, name) / noise)
            sources.append(NoiseSource(name, kind, layers, noise, kept))
            bar.update()
    return sources


def _layer_constants(evaluator: SqnrEvaluator, int16: frozenset[str],
                     float_: frozenset[str]) -> dict[int, dict[str, np.ndarray]]:
    """Position in the graph's ops -> the constants that quantized op computes with under this
    mix in place of the float graph's (by the float graph's tensor names): its weights rounded
    to their grids, and the biases the repair (bias correction) changed."""
    graph = evaluator.graph
    g, plan = evaluator.planned(int16, float_)
    quantized = {id(op) for op in plan.quantized_ops}
    result: dict[int, dict[str, np.ndarray]] = {}
    for index, (original, op) in enumerate(zip(graph.ops, g.ops)):
        if id(op) not in quantized:
            continue
        constants = {}
        for rule in registry.spec(op.kind).weights:
            if rule.index >= len(op.inputs) or not g.is_constant(op.inputs[rule.index]):
                continue
            weight = op.inputs[rule.index]
            params = plan.required_inputs.get(id(op), {}).get(rule.index) or plan.params.get(weight)
            if params is not None and g.tensors[weight].dtype.is_float:
                data = g.tensors[weight].data
                constants[original.inputs[rule.index]] = \
                    params.dequantize(params.quantize(data)).astype(data.dtype)
        if not constants:
            continue
        for name, new in zip(original.inputs, op.inputs):
            if name != new and g.is_constant(new):  # a repaired constant (a corrected bias)
                constants[name] = g.tensors[new].data
        result[index] = constants
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
