"""Full-integer quantization, top to bottom: statistics (calibrate or load), ranges, mark, rewrite."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from tflq.calibration.parallel import one_blas_thread
from tflq.calibration.run import calibrated_tensors, collect_statistics, evaluation_samples
from tflq.config import ConvertConfig, dtype_name
from tflq.errors import CalibrationError, Diagnostic, InvalidConfigError, UnsupportedModelError
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ir.qdq import QdqModel
from tflq.ops.pool import edge_pads_on_grid_minimum
from tflq.quantize.grid_ranges import GridRanges
from tflq.quantize.plan import PlanContext, Range, plan_quantization
from tflq.quantize.precision import check_target, search_precision
from tflq.quantize.qdq import (choose_dtype, fold_fake_quant, quantize_on_own_grid_first,
                               round_float_values_on_their_grids)
from tflq.quantize.dead_channels import plan_without_dead_weights
from tflq.quantize.repair import (bias_correction_asked, correct_biases_if_asked, measured_input_means,
                                  round_if_asked)
from tflq.quantize.rewrite import apply_plan
from tflq.quantize.weights import check_finite_constants
from tflq.report import ConversionReport, FloatOp
from tflq.targets import get_target
from tflq.targets.base import Target


def expand_subgraph_nodes(graph: Graph, names: tuple[str, ...]) -> tuple[str, ...]:
    """`names` with each If, Loop or Scan among them (a node that makes no op itself, whose
    expanded branches or iterations make ops named '<node>/...': tflq.frontend.control_flow)
    replaced by those ops' nodes, so --float-ops and --int16-ops can name the node a user sees."""
    origins = {op.origin for op in graph.ops}
    out: list[str] = []
    for name in names:
        inner = sorted(o for o in origins if o.startswith(f"{name}/")) \
            if name not in origins and name in graph.source_nodes else []
        out += [n for n in inner or [name] if n not in out]
    return tuple(out)


def quantize_full(graph: Graph, config: ConvertConfig, report: ConversionReport,
                  qdq: QdqModel | None = None,
                  write: Callable[[str, bytes], None] | None = None) -> None:
    """Calibrate (or load statistics), then quantize every op that has a kernel for the dtype.

    A QDQ model (`qdq`) brings its own parameters: calibration then only fills in the tensors
    the graph leaves float, and without it the ops touching those stay float.
    """
    check_finite_constants(graph)
    config = replace(config, float_ops=expand_subgraph_nodes(graph, config.float_ops),
                     int16_ops=expand_subgraph_nodes(graph, config.int16_ops))
    known = {op.origin for op in graph.ops}
    asked = [(flag, name) for flag, names in (("--float-ops", config.float_ops),
                                              ("--int16-ops", config.int16_ops)) for name in names]
    unknown = [f"{flag} {name}" for flag, name in asked if name not in known | graph.source_nodes]
    if unknown:
        raise InvalidConfigError(f"{len(unknown)} node name(s) name no node of the model: "
                                 f"{', '.join(unknown)}")
    gone = [f"{flag} {name}" for flag, name in asked if name not in known]
    if gone:  # a BatchNormalization or activation fused into its producer, a folded Reshape...
        report.notes.append(f"{', '.join(gone)}: no op of the file comes from that node (folded into a "
                            f"constant, fused into its producer or removed as a no-op), so it changes "
                            f"nothing; name the producer it was fused into")
    if config.target_sqnr is not None:
        if qdq is not None:
            raise InvalidConfigError("--target-sqnr chooses precisions by calibration; this model "
                                     "is quantized (QDQ) already")
        check_target(config.target_sqnr)
        if config.calib is None and config.eval_data is None:
            raise InvalidConfigError("--target-sqnr measures on samples: give --eval-data or --calib")
    else:
        if config.eval_data is not None:
            report.notes.append("--eval-data is unused: it is what --target-sqnr measures on")
        if config.accept_below_target:
            report.notes.append("--accept-below-target is unused: it goes with --target-sqnr")
    requested = config.dtype
    target = get_target(config.target)
    wanted = {requested} | ({DType.INT16} if config.int16_ops or config.target_sqnr is not None else set())
    if not wanted <= target.integer_dtypes:
        names = ", ".join(dtype_name(d) for d in sorted(target.integer_dtypes, key=lambda d: d.name))
        raise InvalidConfigError(f"--target {target.name}: {target.title} runs integer kernels in "
                                 f"{names} only (asked: "
                                 f"{', '.join(sorted(dtype_name(d) for d in wanted))})")
    if config.io_type is not None and (config.io_type == DType.INT16) != (requested == DType.INT16):
        raise InvalidConfigError(
            f"--io-type {config.io_type.name.lower()} does not fit --dtype {dtype_name(requested)}: "
            f"int16 model I/O goes with int16x8, 8-bit I/O with the 8-bit types")
    folded = None
    if qdq is None:
        stats = collect_statistics(graph, config, report, write)
        dtype = requested
    else:
        calibrated = config.calib is not None or bool(config.stats)
        stats = collect_statistics(graph, config, report, write) if calibrated else None
        dtype = choose_dtype(qdq, requested)
        folded = fold_fake_quant(graph, qdq, dtype, set(config.float_ops),
                                 stats if stats is not None else frozenset())
    int16_ops, float_ops = frozenset(config.int16_ops), frozenset(config.float_ops)
    # what only --float-ops nodes make and read, and integer arithmetic's float values:
    # calibration left them out, their range is unknown
    unrecorded = frozenset(n for n, t in graph.tensors.items() if not t.is_constant and t.dtype.is_float) \
        - calibrated_tensors(graph, config.float_ops)
    grid_ranges: dict[str, Range] = {}  # --target-sqnr's 8-bit grid ranges (grid_ranges.py)
    means = None  # bias correction's input means, measured once (the search corrects each mix)
    if config.target_sqnr is not None:
        # bias correction left unsaid in an 8-bit type: the search tries it, and keeps it where
        # it needs fewer promoted ops (ResNet-18 uint8 +5 dB: 11 TFLite ops with it, 18 without)
        optional = config.bias_correction is None and not bias_correction_asked(config) and \
            config.calib is not None
        searched = replace(config, bias_correction=True) if optional else config
        means = measured_input_means(graph, searched)
        chosen = _choose_grid_ranges(graph, config, dtype, stats, folded, int16_ops, float_ops, unrecorded)
        grid_ranges = chosen.ranges if chosen is not None else {}
        result = search_precision(
            graph, lambda i16, f: _Context(dtype, config, stats, folded, int16_ops | i16, float_ops | f, unrecorded,
                                           grid_ranges),
            evaluation_samples(graph, config), config.target_sqnr,
            "calibration samples" if config.eval_data is None else "samples of --eval-data",
            accept_below=config.accept_below_target, show_progress=config.show_progress,
            repair=(lambda g, plan: correct_biases_if_asked(g, searched, None, plan, {}, None, means))
            if bias_correction_asked(searched) else None, repair_name="bias correction",
            repair_optional=optional)
        report.precision = result
        result.grid_ranges = chosen.describe() if chosen is not None else ""
        int16_ops, float_ops = int16_ops | result.int16_nodes, float_ops | result.float_nodes
        if optional:  # the file is corrected as the search measured it, or not at all
            config = replace(config, bias_correction=bool(result.counted))
    context = _Context(dtype, config, stats, folded, int16_ops, float_ops, unrecorded, grid_ranges)
    if folded is None:  # a QDQ model's weights keep the grids they came with
        plan, zeroed = plan_without_dead_weights(graph, context)
        report.notes.extend(z.describe() for z in zeroed)
    else:
        plan = plan_quantization(graph, context)
    require_integer_target(graph, plan, get_target(config.target))
    report.notes.extend(plan.adjustments)
    # REPAIR: learned rounding, then bias correction, on the plan's weight grids
    originals: dict = {}
    report.rounding = round_if_asked(graph, plan, config, originals, qdq)
    report.bias_correction = correct_biases_if_asked(graph, config, qdq, plan, originals,
                                                     folded.given if folded is not None else None,
                                                     means if report.rounding is None else None)
    io_type = config.io_type
    before_rewrite = {id(op) for op in graph.ops}
    inserted = apply_plan(graph, plan, io_type)
    if report.precision is not None:
        report.precision.count_ops(graph, plan, before_rewrite)
    edge_pads_on_grid_minimum(graph)  # a max pool's MIRROR_PAD -> PAD where that is exact
    if folded is not None:
        folded.notes.extend(quantize_on_own_grid_first(graph, folded.given))
        folded.notes.extend(round_float_values_on_their_grids(graph, folded.given))
        _report_qdq(report, qdq, folded, inserted)
    report.quantized_ops = len(plan.quantized_ops)
    report.float_ops = [FloatOp(op.kind, op.origin, plan.float_ops[id(op)]) for op in graph.ops
                        if id(op) in plan.float_ops]
    if io_type is not None:
        for label, names in (("input", graph.inputs), ("output", graph.outputs)):
            for name in names:
                t = graph.tensors[name]
                q = f"scale={float(t.quant.scale):.6g} zero_point={int(t.quant.zero_point)}" \
                    if t.quant is not None else "float" if t.dtype.is_float else "(never quantized)"
                report.io.append(f"{label} '{name}': {t.dtype.name.lower()} {q}")


def _choose_grid_ranges(graph: Graph, config: ConvertConfig, dtype: DType, stats, folded,
                        int16_ops: frozenset[str], float_ops: frozenset[str],
                        unrecorded: frozenset[str]) -> GridRanges | None:
    """--target-sqnr's 8-bit grid ranges (tflq.quantize.grid_ranges), fitted on calibration
    samples; None where there are none to fit on (--stats alone) or no 8-bit grid to choose."""
    if config.calib is None or dtype not in (DType.UINT8, DType.INT8):
        return None
    from tflq.quantize.grid_ranges import SAMPLES, choose_grid_ranges
    from tflq.quantize.precision import SqnrEvaluator

    def make(i16: frozenset[str], f: frozenset[str]) -> _Context:
        return _Context(dtype, config, stats, folded, int16_ops | i16, float_ops | f, unrecorded)

    context = make(frozenset(), frozenset())
    plan = plan_quantization(graph.copy(), context)
    samples = evaluation_samples(graph, replace(config, eval_data=None), SAMPLES)
    with one_blas_thread():
        evaluator = SqnrEvaluator(graph, make, samples, cached=len(samples))
        return choose_grid_ranges(evaluator, plan, context.range, config.show_progress)


class _Context(PlanContext):
    """Ranges from calibration statistics; for a QDQ model, the graph's parameters first, and
    the ops touching what it leaves float (and calibration does not cover) kept float.
    `grid_ranges`: the 8-bit grids' ranges --target-sqnr chose (int16 grids keep the calibrated)."""

    def __init__(self, dtype: DType, config: ConvertConfig, stats, folded,
                 int16_ops: frozenset[str] = frozenset(), float_ops: frozenset[str] = frozenset(),
                 unrecorded: frozenset[str] = frozenset(),
                 grid_ranges: dict[str, Range] | None = None) -> None:
        super().__init__(dtype, set(config.float_ops) | float_ops,
                         folded.given if folded is not None else None,
                         set(config.int16_ops) | int16_ops, target=get_target(config.target))
        self.stats = stats
        self.unrecorded = unrecorded  # tensors calibration left out (calibrated_tensors): no range
        self.folded = folded
        self.method, self.percentile = config.calib_method.value, config.percentile
        self.grid_ranges = grid_ranges or {}

    def grid_range(self, name: str, dtype: DType) -> Range:
        if dtype != DType.INT16 and name in self.grid_ranges:
            return self.grid_ranges[name]
        return super().grid_range(name, dtype)

    def range(self, name: str) -> Range | None:
        if self.folded is not None and (self.stats is None or name not in self.stats):
            # a QDQ grid's span: what an op asked for in another type (--int16-ops) reads
            grid = self.folded.given.get(name)
            if grid is None or grid.axis is not None:
                return None
            step, zero_point = float(grid.scale), int(grid.zero_point)
            return (grid.dtype.qmin - zero_point) * step, (grid.dtype.qmax - zero_point) * step
        if name in self.unrecorded and (self.stats is None or name not in self.stats.tensors):
            return None
        try:
            return self.stats.range(name, self.method, self.percentile)
        except KeyError:
            raise CalibrationError(f"no calibration statistics for tensor '{name}' (were the "
                                   f"statistics made for this model?)") from None

    def float_reason(self, op: Op) -> str | None:
        reason = super().float_reason(op)
        if reason is None and self.folded is not None:
            reason = self.folded.float_reason(op)
        return reason


def _report_qdq(report: ConversionReport, qdq: QdqModel, folded, inserted) -> None:
    """Summary lines: where the parameters came from, and every place they had to change."""
    report.dtype = dtype_name(folded.dtype)
    line = f"QDQ model: {qdq.describe()} -> {report.dtype}"
    if DType.UINT8 in qdq.activation_types and folded.dtype == DType.INT8:
        line += " (uint8 activations moved to int8: same scale, zero point - 128)"
    report.notes.append(line)
    report.notes.extend(f"QDQ: {text}" for text in folded.notes)
    for record in inserted:
        if record.reason == "kernel needs these input params":
            report.notes.append(f"QDQ: requantized '{record.tensor}' for a kernel that needs "
                                f"its inputs on one grid")


def require_integer_target(graph: Graph, plan, target: Target) -> None:
    """A target that runs full-integer models in integer only (TFLite Micro) cannot take an op
    left float: one error naming every such node and why it stays float."""
    if target.float_in_full_integer or not plan.float_ops:
        return
    diagnostics = [Diagnostic(op.origin, op.kind, "no_integer_kernel", plan.float_ops[id(op)])
                   for op in graph.ops if id(op) in plan.float_ops]
    raise UnsupportedModelError(
        f"--target {target.name}: {len(diagnostics)} op(s) would stay float, and {target.title} "
        f"runs a full-integer model in {', '.join(sorted(d.name.lower() for d in target.integer_dtypes))}"
        f" only", diagnostics, reason_code="no_integer_kernel")
