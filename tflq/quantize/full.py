"""Full-integer quantization, top to bottom: statistics (calibrate or load), ranges, mark, rewrite."""
from __future__ import annotations

from typing import Callable

from tflq.calibration.run import collect_statistics
from tflq.config import ConvertConfig
from tflq.errors import CalibrationError, InvalidConfigError
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ir.qdq import QdqModel
from tflq.quantize.plan import PlanContext, Range, plan_quantization
from tflq.quantize.qdq import choose_dtype, fold_fake_quant, quantize_on_own_grid_first
from tflq.quantize.rewrite import apply_plan
from tflq.quantize.weights import check_finite_constants
from tflq.report import ConversionReport, FloatOp


def quantize_full(graph: Graph, config: ConvertConfig, report: ConversionReport,
                  qdq: QdqModel | None = None,
                  write: Callable[[str, bytes], None] | None = None) -> None:
    """Calibrate (or load statistics), then quantize every op that has a kernel for the dtype.

    A QDQ model (`qdq`) brings its own parameters: calibration then only fills in the tensors
    the graph leaves float, and without it the ops touching those stay float.
    """
    check_finite_constants(graph)
    known = {op.origin for op in graph.ops}
    unknown = [name for name in config.float_ops if name not in known]
    if unknown:
        raise InvalidConfigError(f"--float-ops names no node of the model: {', '.join(unknown)}")
    requested = config.dtype
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
    plan = plan_quantization(graph, _Context(dtype, config, stats, folded))
    io_type = config.io_type
    inserted = apply_plan(graph, plan, io_type)
    if folded is not None:
        folded.notes.extend(quantize_on_own_grid_first(graph, folded.given))
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


class _Context(PlanContext):
    """Ranges from calibration statistics; for a QDQ model, the graph's parameters first, and
    the ops touching what it leaves float (and calibration does not cover) kept float."""

    def __init__(self, dtype: DType, config: ConvertConfig, stats, folded) -> None:
        super().__init__(dtype, set(config.float_ops), folded.given if folded is not None else None)
        self.stats = stats
        self.folded = folded
        self.method, self.percentile = config.calib_method.value, config.percentile

    def range(self, name: str) -> Range | None:
        if self.folded is not None and (self.stats is None or name not in self.stats):
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
    report.dtype = folded.dtype.name.lower()
    line = f"QDQ model: {qdq.describe()} -> {report.dtype}"
    if DType.UINT8 in qdq.activation_types and folded.dtype == DType.INT8:
        line += " (uint8 activations moved to int8: same scale, zero point - 128)"
    report.notes.append(line)
    report.notes.extend(f"QDQ: {text}" for text in folded.notes)
    for record in inserted:
        if record.reason == "kernel needs these input params":
            report.notes.append(f"QDQ: requantized '{record.tensor}' for a kernel that needs "
                                f"its inputs on one grid")
