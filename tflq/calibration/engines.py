"""Calibration engines: tflq's numpy reference interpreter, or onnxruntime when it is installed.

The statistics are always of tflq's own tensors (BatchNorm folded, activations fused, NHWC), so
that every recorded tensor is a tensor of the output file. onnxruntime runs the ONNX model, and
each recorded tensor is read from the ONNX tensor of the same name, which holds the same values:
a fused Conv+Relu's output is the Relu's, and a layout change only permutes the values (every
statistic is of the whole tensor, none per axis). Tensors that have no ONNX counterpart (made by
lowering: the explicit PAD before a convolution, the pieces of a decomposed op) are computed with
tflq's reference kernels from the values onnxruntime hands out.

For minmax (no histograms) the extremes are taken inside onnxruntime (a ReduceMin and a ReduceMax
per tensor, so no activation leaves it; concatenated into one output per rank and type, as each
output costs the Python binding ~2 us; the minimum of a large tensor clamped at 0 is taken over a
sample of its values, exactly: see unsettled_minima); for histograms the tensors themselves are
outputs.
Asking for intermediate tensors costs onnxruntime some of its fusions (a convolution's output
that is also recorded cannot take the residual Add in), and by itself onnxruntime copies each
tensor out of its blocked NCHWc layout for the reductions and runs them all after the forward
pass (MobileNetV2: 1.6x the plain forward pass, against 2.5x for the numpy interpreter). So the
session is made in two steps (calibration_session): onnxruntime optimizes the model and hands
its optimized graph out through an anonymous in-memory file (Linux; no file is written), the
reductions there read the blocked tensors directly where those hold exactly the tensor's values
and run right after each tensor is made (onnxruntime_model.reductions_in_place), and a second
session runs that graph as it is, in onnxruntime's default order (MobileNetV2: 1.18x the plain
pass; ExecutionOrder.PRIORITY_BASED made it 1.34x). Elsewhere, or when any of that fails, the
session runs the model as planned. With --jobs, this process's threads run that one session; an
executor's workers, which may run on other machines, optimize the model as planned themselves
(or run it as planned where they do not load onnx).

Which tensors are counterparts is decided from the graphs (names, and the tensors tflq changed:
equalized layers are computed in numpy); the shapes onnxruntime hands out are checked, and with
TFLQ_DEBUG (--debug) the first sample also runs in numpy and every tensor's extremes must agree.
When onnxruntime refuses the model or its first sample, or the graph is not known to hold the
ONNX model's values (quantized tensors, inputs tflq fixed or folded),
numpy calibrates the whole model and the log says why. The graph inputs are recorded in numpy
from the feeds, so NaN or Inf in a sample is named as the numpy engine names it; inside the
network infinities are always seen, NaN where it reaches a minimum or maximum (onnxruntime's
reductions may skip it; it mostly follows an infinity, which is seen first).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from tflq.calibration.statistics import CalibrationStats, NonFiniteError, non_finite_message
from tflq.config import CalibEngine
from tflq.errors import CalibrationError, InvalidConfigError
from tflq.ir.graph import Graph, Tensor
from tflq.ir.layout import onnx_shape, to_channels_last

log = logging.getLogger(__name__)

AGREEMENT = 1e-3            # engines agree when extremes differ by at most this share of the range
MAX_MODEL_BYTES = 1 << 30       # the model and its external data, handed to onnxruntime in memory
MAX_FETCHED_BYTES = 256 << 20  # whole tensors onnxruntime hands out at once, per sample
EQUIVALENTS_OPSET = 11         # ONNX Pad takes its pads as an input from opset 11
SAMPLED_OPSET = 10             # ONNX Slice takes steps from opset 10
SAMPLED_MIN_ELEMENTS = 1 << 14  # a minimum over fewer values is taken whole
SAMPLED_VALUES = 1024          # ... over more, on about this many of them (sampled_minima)
INSTALL_HINT = "pip install onnxruntime (or tflq[onnxruntime])"


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_engine(engine: CalibEngine | str) -> CalibEngine:
    """auto: onnxruntime when it can be imported, else numpy. Asking for onnxruntime without it
    installed is an InvalidConfigError."""
    engine = CalibEngine(engine)
    if engine == CalibEngine.AUTO:
        return CalibEngine.ONNXRUNTIME if onnxruntime_available() else CalibEngine.NUMPY
    if engine == CalibEngine.ONNXRUNTIME and not onnxruntime_available():
        raise InvalidConfigError(f"--calib-engine onnxruntime needs onnxruntime ({INSTALL_HINT})")
    return engine


@dataclass(frozen=True)
class OnnxruntimePlan:
    """What a process needs to calibrate in onnxruntime (picklable, no copy of the IR graph)."""

    model: bytes                                  # the ONNX model with the outputs below
    inputs: tuple[Tensor, ...]                    # the graph inputs (no data), for the checks
    reduced: tuple[str, ...]                      # their extremes come out first, in this order
    runs: tuple[int, ...]                         # ... concatenated in runs of these lengths
    recorded_inputs: tuple[str, ...]              # graph inputs recorded from the feeds
    fetched: tuple[tuple[str, tuple[int, ...] | None], ...]  # whole tensors, permutation to IR
    recorded_whole: frozenset[str]                # fetched tensors whose statistics are recorded
    hybrid: Graph | None                          # ops with no ONNX counterpart (and their constants)
    computed: frozenset[str]                      # the recorded tensors those ops make
    where: Mapping[str, str]                      # tensor -> " (output of OP from node 'x')"
    order: Mapping[str, int]                      # tensor -> position in the graph (messages)
    shapes: Mapping[str, tuple[int, ...]]         # fetched tensor -> its shape in tflq's graph
    equivalents: int = 0                          # lowered ops onnxruntime computes (see OpSpec)
    derived: tuple[tuple[str, str, tuple[float, ...]], ...] = ()  # (tensor, its input, values added)
    optimized: bool = False                       # model: onnxruntime's optimized graph (optimized_plan)
    sampled: frozenset[str] = frozenset()         # reduced tensors whose minimum is sampled (sampled_minima)

    def describe(self) -> str:
        kinds = Counter(op.kind for op in self.hybrid.ops) if self.hybrid is not None else {}
        computed = ", ".join(f"{kind} x{n}" for kind, n in sorted(kinds.items()))
        return (f"{len(self.reduced) + len(self.recorded_whole)} tensors read from onnxruntime"
                + (f" ({self.equivalents} of lowered ops it computes too)" if self.equivalents else "")
                + (f", {len(self.derived)} whose extremes follow from their inputs'" if self.derived else "")
                + (f", {len(self.sampled)} minima sampled" if self.sampled else "")
                + (f", {len(self.computed)} computed by tflq's kernels ({computed})" if kinds else ""))


class OnnxruntimeFailure(CalibrationError):
    """onnxruntime refused the plan's model or failed on a sample (not the sample's fault)."""


def equalized_tensors(graph: Graph, equalization) -> frozenset[str]:
    """The tensors cross-layer equalization rescaled (report.Equalization, or None): between
    each pair's layers, where the values are no longer the ONNX model's."""
    if equalization is None or not equalization.pairs:
        return frozenset()
    from tflq.passes.equalize import find_pairs

    done = {(p.first, p.second) for p in equalization.pairs}
    changed = set()
    for pair in find_pairs(graph)[0]:
        if (pair.first.op.origin, pair.second.op.origin) in done:
            changed.add(pair.first.op.outputs[0])
            changed.update(op.outputs[0] for op in pair.between)
    return frozenset(changed)


def plan_onnxruntime(graph: Graph, tensors: frozenset[str], histogram: bool, model_path: str,
                     input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                     changed: frozenset[str] = frozenset(),
                     whole_minima: frozenset[str] = frozenset()) -> tuple[OnnxruntimePlan | None, str]:
    """The plan to record `tensors` of `graph` in onnxruntime from the ONNX file `model_path`, or
    None and why not. `changed`: tensors whose values tflq changed (see equalized_tensors);
    `whole_minima`: tensors whose minimum is not to be sampled (see sampled_minima)."""
    from tflq.frontend.onnxruntime_model import read_calibration_model

    if any(t.quant is not None for t in graph.tensors.values()):
        return None, "the graph holds quantized tensors"
    onnx_model, reason = read_calibration_model(model_path, input_shapes, MAX_MODEL_BYTES)
    if onnx_model is None:
        return None, reason
    # No shape inference (it costs as much as a few samples): a name is a counterpart candidate,
    # and the shapes onnxruntime hands out check it.
    onnx_inputs, onnx_names = onnx_model.inputs, onnx_model.names

    def counterpart(name: str) -> tuple[bool, tuple[int, ...] | None]:
        """(has an ONNX tensor of the same values, the permutation from its layout to tflq's)."""
        t = graph.tensors[name]
        if name not in onnx_names or name in changed:
            return False, None
        return True, to_channels_last(t.rank) if t.layout.channels_last else None

    graph_inputs = [n for n in graph.inputs if not graph.tensors[n].is_constant]
    if sorted(graph_inputs) != sorted(onnx_inputs):
        return None, "tflq's graph inputs are not the model's (an input was fixed or folded)"
    mapped: dict[str, tuple[int, ...] | None] = {}
    for name, t in graph.tensors.items():
        if not t.is_constant:
            ok, perm = counterpart(name)
            if ok:
                mapped[name] = perm

    # Lowered ops that say how ONNX computes them (an explicit PAD): onnxruntime runs them too.
    from tflq import ops as registry
    from tflq.ops.relu import clamped_at_zero

    equivalents = []
    for op in graph.ops if onnx_model.opset >= EQUIVALENTS_OPSET else ():
        outputs = [n for n in op.outputs if n]
        if not outputs or any(n in mapped for n in outputs):
            continue
        sources = [n for n in op.inputs if n and not graph.tensors[n].is_constant]
        layouts = {graph.tensors[n].layout.channels_last for n in sources + outputs}
        ranks = {graph.tensors[n].rank for n in sources + outputs}
        if not sources or any(n not in mapped for n in sources) or len(layouts) > 1 or len(ranks) > 1:
            continue
        rank = ranks.pop()
        onnx_axes = list(to_channels_last(rank)) if layouts.pop() else list(range(rank))
        equivalent = registry.spec(op.kind).onnx_equivalent(op, graph, onnx_axes)
        if equivalent is None:
            continue
        equivalents.append((op, equivalent))
        for name in outputs:
            mapped[name] = to_channels_last(rank) if graph.tensors[name].layout.channels_last else None

    # Tensors without a counterpart: computed by their producers, from onnxruntime's values.
    producers = graph.producers()
    computed = {n for n in tensors if n not in mapped}
    needed_whole: set[str] = set()
    hybrid_ops: dict[int, object] = {}
    stack = list(computed)
    while stack:
        name = stack.pop()
        op = producers.get(name)
        if op is None:
            return None, f"tensor '{name}' has no onnxruntime counterpart and no producer"
        if id(op) in hybrid_ops:
            continue
        hybrid_ops[id(op)] = op
        for source in op.inputs:
            if not source or graph.tensors[source].is_constant:
                continue
            if source in mapped:
                needed_whole.add(source)
            elif source not in computed:
                computed.add(source)
                stack.append(source)
    if len(hybrid_ops) * 2 > len(graph.ops):
        return None, "most of tflq's graph has no onnxruntime counterpart"
    hybrid = None
    if hybrid_ops:
        hybrid = Graph()
        ops = [op for op in graph.ops if id(op) in hybrid_ops]
        names = dict.fromkeys(n for op in ops for n in op.inputs + op.outputs if n)
        for name in names:
            hybrid.add_tensor(graph.tensors[name])
        for op in ops:
            hybrid.add_op(op)
        hybrid.inputs = sorted(n for n in names if n in needed_whole)

    # graph inputs are recorded from the feeds, in numpy (which sees NaN in them)
    recorded_inputs = tuple(n for n in graph_inputs if n in tensors)
    recorded_whole = {n for n in tensors if n in mapped and n not in recorded_inputs} if histogram else set()
    fetched = sorted((needed_whole - set(graph_inputs)) | recorded_whole)
    held = sum(graph.tensors[n].size * graph.tensors[n].dtype.numpy.itemsize for n in fetched)
    if held > MAX_FETCHED_BYTES:
        return None, (f"onnxruntime would hand out {held / 2 ** 20:.0f} MiB of tensors per sample "
                      f"(numpy holds only the live ones)")
    reduced = sorted(n for n in tensors if n in mapped and n not in recorded_whole and n not in recorded_inputs)
    # A lowered op whose output holds its input's values and known constants besides (an
    # explicit PAD) needs no tensor for minmax: its extremes follow from its input's.
    derived, kept = [], []
    for op, equivalent in equivalents:
        out, source = op.outputs[0], op.inputs[0]
        extra = registry.spec(op.kind).extremes_from_input(op, graph) if not histogram else None
        if extra is not None and out in reduced and out not in fetched and len(op.outputs) == 1 and (
                source in reduced or source in recorded_inputs):
            derived.append((out, source, tuple(float(v) for v in extra)))
        else:
            kept.append(equivalent)
    derived_names = {out for out, _, _ in derived}
    # in runs of one rank and type (onnx_model.finish concatenates each run's extremes)
    reduced = sorted((n for n in reduced if n not in derived_names),
                     key=lambda n: (graph.tensors[n].rank, graph.tensors[n].dtype.numpy.str, n))

    sampled = {} if onnx_model.opset < SAMPLED_OPSET else {
        n: sampling_steps(onnx_shape(graph.tensors[n])) for n in reduced
        if n not in whole_minima and graph.tensors[n].size >= SAMPLED_MIN_ELEMENTS
        and clamped_at_zero(producers.get(n), n)}
    model, runs = onnx_model.finish(kept, reduced, fetched,
                                    {n: graph.tensors[n].dtype.numpy for n in list(reduced) + fetched},
                                    {n: graph.tensors[n].rank for n in reduced}, sampled)
    where = {}
    for name in tensors:
        op = producers.get(name)
        where[name] = f" (output of {op.kind} from node '{op.origin}')" if op is not None else " (graph input)"
    order = {n: i for i, n in enumerate(list(graph.inputs) + [o for op in graph.ops for o in op.outputs])}
    plan = OnnxruntimePlan(
        model=model, inputs=tuple(Tensor(n, graph.tensors[n].dtype, graph.tensors[n].shape,
                                                             layout=graph.tensors[n].layout) for n in graph_inputs),
        reduced=tuple(reduced), runs=runs, recorded_inputs=recorded_inputs, fetched=tuple((n, mapped[n]) for n in fetched),
        recorded_whole=frozenset(recorded_whole), hybrid=hybrid,
        computed=frozenset(computed & set(tensors)), where=where, order=order, equivalents=len(kept), derived=tuple(derived),
        shapes={n: graph.tensors[n].shape for n in fetched}, sampled=frozenset(sampled))
    return plan, ""


def sampling_steps(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Steps along the last two axes of a tensor of `shape` (one for a vector) that pick about
    SAMPLED_VALUES of its values, spread over those axes and taken from every entry of the others
    (for NCHW: every channel, at pixels spread over the image)."""
    if len(shape) < 2:
        return (max(1, int(np.prod(shape, dtype=np.int64)) // SAMPLED_VALUES),)
    inner = max(1, shape[-2] * shape[-1])
    outer = max(1, int(np.prod(shape[:-2], dtype=np.int64)))
    wanted = max(1, SAMPLED_VALUES // outer)  # of the inner entries
    step = max(1, int((inner / wanted) ** 0.5))
    return (step, step)


def unsettled_minima(plan: OnnxruntimePlan, stats: CalibrationStats) -> frozenset[str]:
    """The tensors of `plan` whose minimum was sampled and is not yet known exactly.

    A tensor clamped below at 0 (a RELU's output, a convolution's with a fused RELU6) has 0 as
    its minimum once any of its values is 0, and nothing can lower it: so on large tensors the
    plan takes the minimum of about SAMPLED_VALUES of its values, spread over the tensor, instead
    of a reduction over all of it (half of calibration's reductions on MobileNetV2, 6% of each
    sample's time). Where a sample of the first calibration sample holds no 0, the minimum is
    not known: the caller then plans those tensors' minima whole (whole_minima) and runs that
    sample again, so the statistics are those of whole reductions in every case."""
    return frozenset(n for n in plan.sampled if not stats.tensors[n].minimum <= 0.0)


def session_options():
    """One intra-op thread, sequential execution, nothing on stderr (tflq reports errors)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 4  # its errors too: a failed run raises, and tflq says why
    return options


def optimized_plan(plan: OnnxruntimePlan) -> OnnxruntimePlan:
    """`plan` with onnxruntime's optimized graph with cheaper reductions (optimized_in_memory)
    as its model; `plan` itself when that graph cannot be had. The graph is of this machine (its
    blocked layouts follow the CPU's vector width): it is not for an executor's workers, which
    may run elsewhere."""
    if plan.optimized:
        return plan
    optimized = optimized_in_memory(plan.model)
    return plan if optimized is None else dataclasses.replace(plan, model=optimized[0], optimized=True)


def calibration_session(model: bytes, optimized: bool = False):
    """An onnxruntime session of a plan's model: of onnxruntime's optimized graph with cheaper
    reductions when it can be had in memory (see the module docstring), else of the model;
    `optimized`: the model is that graph already (optimized_plan)."""
    import onnxruntime

    if optimized:
        options = session_options()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    optimized = optimized_in_memory(model)
    if optimized is not None:
        options = session_options()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            return onnxruntime.InferenceSession(optimized[0], options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
            log.debug("onnxruntime refused its optimized graph (%s); the model as planned", _first_line(exc))
    return onnxruntime.InferenceSession(model, session_options(), providers=["CPUExecutionProvider"])


def memory_file(name: str) -> int | None:
    """A new anonymous in-memory file (memfd, closed on exec) that onnxruntime can open as
    /proc/self/fd/N; None where there is none (not Linux, or the kernel refuses)."""
    if not hasattr(os, "memfd_create") or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.memfd_create(name, getattr(os, "MFD_CLOEXEC", 1))
    except OSError:
        return None


def optimized_in_memory(model: bytes) -> tuple[bytes, int] | None:
    """onnxruntime's optimized graph of `model`, saved by a first session into an anonymous
    in-memory file (memfd, Linux) and edited by reductions_in_place, and the number of its
    reductions that read blocked tensors; None where that is not possible or fails (the caller
    then uses the model itself)."""
    if "onnx" not in sys.modules:
        # The edit needs the onnx package; calibration workers leave it out of their preload
        # to start fast (~1 s of imports), and run the model as planned rather than import it.
        return None
    import onnxruntime

    from tflq.frontend.onnxruntime_model import with_cheaper_reductions

    fd = memory_file("tflq-calibration")
    if fd is None:
        return None
    try:
        options = session_options()
        options.optimized_model_filepath = f"/proc/self/fd/{fd}"
        options.add_session_config_entry("session.disable_prepacking", "1")  # this session never runs
        onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        with open(fd, "rb", closefd=False) as saved:
            optimized, moved = with_cheaper_reductions(saved.read())
        log.debug("onnxruntime's optimized graph: %d reductions read blocked tensors", moved)
        return optimized, moved
    except Exception as exc:  # noqa: BLE001 - onnxruntime's, protobuf's: the model as planned then
        log.debug("no optimized graph from onnxruntime (%s)", _first_line(exc))
        return None
    finally:
        os.close(fd)


class OnnxruntimeRunner:
    """An onnxruntime session of the plan's model, run on samples into statistics (the
    interface of run.SampleRunner)."""

    def __init__(self, plan: OnnxruntimePlan, histogram: bool) -> None:
        from tflq.runtime.interpreter import GraphRunner

        self.histogram = histogram
        try:
            self.session = calibration_session(plan.model, plan.optimized)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
            raise OnnxruntimeFailure(f"onnxruntime refused the model: {_first_line(exc)}") from None
        self.plan = dataclasses.replace(plan, model=b"")  # the session holds the model now
        self._written: tuple[CalibrationStats, np.ndarray, np.ndarray] | None = None  # see run()
        self.hybrid = GraphRunner(plan.hybrid) if plan.hybrid is not None else None
        inputs = {t.name for t in plan.inputs}
        self.hybrid_inputs = [n for n in plan.hybrid.inputs if n in inputs] if plan.hybrid is not None else []

    def sibling(self) -> "OnnxruntimeRunner":
        """A runner on this one's session, for another thread: onnxruntime runs a session from
        several threads at once, and the rest of a runner (plan, tflq's kernels) is read only,
        but for the record of what run() wrote into which statistics, its own here."""
        other = copy.copy(self)
        other._written = None
        return other

    def run(self, samples: Iterable[Mapping[str, np.ndarray]], first: int = 0,
            stats: CalibrationStats | None = None) -> CalibrationStats:
        from tflq.calibration.run import sample_feeds

        stats = CalibrationStats(histogram=self.histogram) if stats is None else stats
        plan = self.plan
        lows, highs = np.full(len(plan.reduced), np.inf), np.full(len(plan.reduced), -np.inf)
        done = 0
        for index, sample in enumerate(samples, start=first):
            given = sample_feeds(plan.inputs, sample, index, transpose=False)  # the numpy engine's checks
            feeds = {t.name: np.asarray(given[t.name], dtype=t.dtype.numpy) for t in plan.inputs}
            ir_feeds = sample_feeds(plan.inputs, feeds, index) if self.hybrid_inputs else {}
            try:
                values = self.session.run(None, feeds)  # runs of reduced tensors' extremes, then fetched
            except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
                raise OnnxruntimeFailure(f"calibration sample {index}: onnxruntime failed: "
                                         f"{_first_line(exc)}") from None
            failures: list[tuple[int, str, str]] = []

            def record(name: str, update) -> None:
                try:
                    update()
                except NonFiniteError as exc:
                    failures.append((plan.order.get(name, 0), name, str(exc)))

            for name in plan.recorded_inputs:
                record(name, lambda n=name: stats.update(n, feeds[n]))
            count = len(plan.reduced)
            if count:
                # the extremes of all reduced tensors at once; into `stats` after the samples
                pairs = np.concatenate([np.asarray(v, np.float64).reshape(2, -1).T
                                        for v in values[:len(plan.runs)]])
                if not np.isfinite(pairs).all():
                    for i in np.flatnonzero(~np.isfinite(pairs).all(axis=1)):
                        name = plan.reduced[i]
                        record(name, lambda lo=pairs[i, 0], hi=pairs[i, 1]:
                               CalibrationStats(histogram=False).update_extremes(name, lo, hi))
                np.minimum(lows, pairs[:, 0], out=lows)
                np.maximum(highs, pairs[:, 1], out=highs)
            whole = {}
            for (name, perm), value in zip(plan.fetched, values[len(plan.runs):]):
                shape = value.shape if perm is None or value.ndim != len(perm) else \
                    tuple(value.shape[p] for p in perm)
                if shape != plan.shapes[name]:
                    raise OnnxruntimeFailure(f"calibration sample {index}: onnxruntime's tensor '{name}' "
                                           f"has shape {list(value.shape)}, tflq's {list(plan.shapes[name])}")
                if name in plan.recorded_whole:
                    record(name, lambda n=name, v=value: stats.update(n, v))
                if self.hybrid is not None:
                    whole[name] = value if perm is None else value.transpose(perm)
            if self.hybrid is not None:
                whole.update({n: ir_feeds[n] for n in self.hybrid_inputs})
            if self.hybrid is not None and not failures:
                computed = plan.computed
                self.hybrid.run(whole, on_tensor=lambda n, v: record(n, lambda: stats.update(n, v))
                                if n in computed else None)
            if failures:
                _, name, what = min(failures)
                raise CalibrationError(non_finite_message(index, name, plan.where.get(name, ""), what))
            stats.samples += 1
            done += 1
        if done:
            # Only the extremes beyond what this runner wrote into `stats` before (others, such
            # as merged shards, can only have widened those): after a few samples, few change.
            if self._written is None or self._written[0] is not stats:
                self._written = (stats, np.full(len(plan.reduced), np.inf), np.full(len(plan.reduced), -np.inf))
            _, written_lows, written_highs = self._written
            for i in np.flatnonzero((lows < written_lows) | (highs > written_highs)).tolist():
                stats.update_extremes(plan.reduced[i], float(lows[i]), float(highs[i]))
            np.minimum(written_lows, lows, out=written_lows)
            np.maximum(written_highs, highs, out=written_highs)
            for name, source, values in plan.derived:  # over the same samples as `source`
                known = stats.tensors[source]
                stats.update_extremes(name, min(known.minimum, *values), max(known.maximum, *values))
        return stats


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def engines_agree(reference: CalibrationStats, other: CalibrationStats) -> str:
    """'' when every tensor's extremes agree to AGREEMENT of its range, else the first that differs."""
    for name, ref in reference.tensors.items():
        got = other.tensors.get(name)
        if got is None:
            return f"tensor '{name}' is missing"
        scale = max(abs(ref.minimum), abs(ref.maximum))
        tolerance = AGREEMENT * scale + 1e-6
        if abs(got.minimum - ref.minimum) > tolerance or abs(got.maximum - ref.maximum) > tolerance:
            return (f"tensor '{name}' differs (onnxruntime [{got.minimum:.6g}, {got.maximum:.6g}], "
                    f"numpy [{ref.minimum:.6g}, {ref.maximum:.6g}])")
    return ""
