"""Full-integer quantization, top to bottom: statistics (calibrate or load), ranges, mark, rewrite."""
from __future__ import annotations

import time

from tflq.config import ConvertConfig, IOType, QuantDType
from tflq.errors import CalibrationError, InvalidConfigError
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph
from tflq.quantize.rewrite import apply_plan
from tflq.quantize.rules import plan_quantization
from tflq.quantize.weights import check_finite_constants
from tflq.report import ConversionReport, FloatOp

def collect_statistics(graph: Graph, config: ConvertConfig, report: ConversionReport):
    from tflq.quantize.calibrate import calibrate, graph_fingerprint, merge_files
    from tflq.quantize.data import graph_input_specs, load_samples

    fingerprint = graph_fingerprint(graph)
    stats = None
    if config.stats:
        stats = merge_files(list(config.stats), fingerprint)
    if config.calib is not None:
        start = time.perf_counter()
        samples = load_samples(config.calib, graph_input_specs(graph), config.calib_samples,
                               mean=config.mean, std=config.std, scale=config.scale)
        fresh = calibrate(graph, samples, show_progress=config.show_progress)
        report.calibration = {"samples": fresh.samples, "method": config.calib_method.value,
                              "seconds": time.perf_counter() - start}
        if stats is None:
            stats = fresh
        else:
            stats.merge(fresh)
    if stats is None:
        raise InvalidConfigError("--mode full needs calibration data (--calib DIR) or saved "
                                 "statistics (--stats FILE)")
    if not report.calibration:
        report.calibration = {"samples": 0, "method": config.calib_method.value, "seconds": 0.0,
                              "from": list(config.stats)}
    if config.save_stats:
        stats.save(config.save_stats, fingerprint)
    return stats


def quantize_full(graph: Graph, config: ConvertConfig, report: ConversionReport) -> None:
    """Calibrate (or load statistics), then quantize every op that has a kernel for the dtype."""
    check_finite_constants(graph)
    known = {op.origin for op in graph.ops}
    unknown = [name for name in config.float_ops if name not in known]
    if unknown:
        raise InvalidConfigError(f"--float-ops names no node of the model: {', '.join(unknown)}")
    stats = collect_statistics(graph, config, report)
    dtype = DType.INT8 if config.dtype == QuantDType.INT8 else DType.UINT8
    method, percentile = config.calib_method.value, config.percentile

    def range_of(name: str) -> tuple[float, float]:
        try:
            return stats.range(name, method, percentile)
        except KeyError:
            raise CalibrationError(f"no calibration statistics for tensor '{name}' (were the "
                                   f"statistics made for this model?)") from None

    plan = plan_quantization(graph, dtype, range_of, set(config.float_ops))
    io_type = None if config.io_type == IOType.FLOAT else DType.parse(config.io_type.value)
    apply_plan(graph, plan, io_type)
    report.quantized_ops = len(plan.quantized_ops)
    report.float_ops = [FloatOp(op.kind, op.origin, plan.float_ops[id(op)]) for op in graph.ops
                        if id(op) in plan.float_ops]
    if io_type is not None:
        for label, names in (("input", graph.inputs), ("output", graph.outputs)):
            for name in names:
                t = graph.tensors[name]
                q = f"scale={float(t.quant.scale):.6g} zero_point={int(t.quant.zero_point)}" \
                    if t.quant is not None else "float"
                report.io.append(f"{label} '{name}': {t.dtype.name.lower()} {q}")
