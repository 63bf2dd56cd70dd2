"""--target-sqnr's first free repair: each 8-bit activation grid's range chosen by the output noise
it causes, measured on calibration samples, before any layer is promoted.

Why. A calibration method picks a tensor's range from that tensor alone: minmax holds every value
seen, mse minimises the tensor's own rounding-plus-clipping error. Neither is what the output
feels: on the benchmark ResNet-18 in uint8, mse narrows the stem's ReLU grid and that grid's
share of the output noise goes up (0.066 -> 0.097 of minmax's total), while most other grids
want a range 0.6-0.9 of minmax's. Measuring the output instead settles it per grid: on that
model 30 of 31 grids narrow, and the worst of 8 held-out samples as quantized goes 28.4 -> 29.8
dB (mse everywhere: 29.3); with bias correction the +5 dB target then needs 8 promoted TFLite
ops instead of 11.

How. The grids are the ones the 8-bit plan gives a calibrated range: the model's inputs and
each Calibrated op's output, with the tensors value-moving and same-scale ops keep on that grid
(PAD, MAX_POOL, RESHAPE). Each candidate range (the range the calibration method gave, and that
range narrowed to CANDIDATE_SCALES of itself, zero kept inside) rounds that grid alone on the
float graph, which runs from the grid's producer on with the float values before it reused;
the noise over signal power at the outputs, summed over the samples, decides. A candidate
replaces the method's range only when it takes out at least MIN_GAIN of that grid's noise, so a
difference within the samples' spread does not move a range, and only when no sample's noise is
higher with it than the worst sample's was without it. int16 grids (a promoted layer's)
keep the method's range: they have steps to spare, and held-out values beyond it would clip.

Cost: grids x candidates suffix runs on SAMPLES calibration samples (ResNet-18: 31 grids, ~40 s
on one core). The samples are calibration samples, never --eval-data: the ranges are fitted to
the data the model is calibrated on and judged, with the promotions, on the evaluation data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tflq import ops as registry
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph
from tflq.ops.base import Calibrated
from tflq.progress import progress
from tflq.quantize.plan import QuantPlan, Range, calibrated_params

CANDIDATE_SCALES = (0.9, 0.8, 0.7, 0.6, 0.5)
MIN_GAIN = 0.05  # of the grid's own noise, before a narrower range replaces the method's
# Calibration samples each candidate is measured on. With 4 the ranges fitted those samples: the
# bench MobileNetV2's uint8 +5 dB file lost 2.8 dB on its worst held-out sample against minmax's
# ranges (15.8 against 18.6 dB); with 8 and the worst-sample guard, 0.7 (17.9).
SAMPLES = 8


@dataclass
class GridRanges:
    """The chosen 8-bit ranges (tensor -> range, for the grid's first tensor) and what they did:
    the summed noise of the grids chosen, alone, before and after (noise over signal power)."""

    ranges: dict[str, Range] = field(default_factory=dict)
    grids: int = 0  # grids measured
    samples: int = 0
    noise_before: float = 0.0
    noise_after: float = 0.0
    scales: list[float] = field(default_factory=list)  # each chosen range over the method's

    def describe(self) -> str:
        if not self.ranges:
            return (f"8-bit grid ranges: the calibration method's kept on all {self.grids} grids "
                    f"(no narrower range lowered the output noise on {self.samples} calibration samples)")
        cut = 1 - self.noise_after / self.noise_before if self.noise_before > 0 else 0.0
        return (f"8-bit grid ranges chosen by the output noise on {self.samples} calibration samples: "
                f"{len(self.ranges)} of {self.grids} grids narrowed to {min(self.scales):.1f}-"
                f"{max(self.scales):.1f} of the calibration method's range, taking out {cut:.0%} of "
                f"those grids' noise")


def calibrated_grids(graph: Graph, plan: QuantPlan, range_of: Callable[[str], Range]) -> dict[str, list[str]]:
    """8-bit grids whose range calibration chose: first tensor (a model input or a Calibrated
    op's output whose plan grid is exactly the grid of its calibrated range) -> every tensor on
    that grid (the same params, kept by same-scale ops)."""
    roots = [n for n in graph.inputs if n in plan.params and not graph.is_constant(n)]
    roots += [out for op in plan.quantized_ops if isinstance(registry.spec(op.kind).quant, Calibrated)
              for out in op.outputs if out in plan.params and graph.tensors[out].dtype.is_float]
    members: dict[int, list[str]] = {}
    for name, params in plan.params.items():
        if name in graph.tensors and not graph.is_constant(name) and graph.tensors[name].dtype.is_float:
            members.setdefault(id(params), []).append(name)
    grids = {}
    for root in roots:
        params = plan.params[root]
        if params.dtype not in (DType.UINT8, DType.INT8) or root in grids:
            continue
        found = range_of(root)
        if found is None or params != calibrated_params(params.dtype, found):
            continue  # fixed by the kernel, a QDQ model, a concatenation or a runtime limit
        grids[root] = members[id(params)]
    return grids


def choose_grid_ranges(evaluator, plan: QuantPlan, range_of: Callable[[str], Range],
                       show_progress: bool = False) -> GridRanges:
    """The ranges (see the module docstring) for the 8-bit `plan` of `evaluator.graph`, measured
    with `evaluator` (a precision.SqnrEvaluator over calibration samples, their float values
    cached); `range_of`: each tensor's range by the calibration method."""
    from tflq.ir.quant import activation_params

    graph = evaluator.graph
    position = {out: i for i, op in enumerate(graph.ops) for out in op.outputs}
    grids = calibrated_grids(graph, plan, range_of)
    count = len(evaluator.float_values)
    result = GridRanges(grids=len(grids), samples=count)

    def noise(root: str, members: list[str], found: Range) -> np.ndarray:
        grid = activation_params(plan.params[root].dtype, *found)
        on = {m: grid for m in members}
        start = position.get(root, 0)
        each = np.zeros(count)
        for i in range(count):
            feeds = None
            if root in graph.inputs:  # the model's input, on its grid
                feeds = dict(evaluator.samples[i])
                feeds[root] = grid.dequantize(grid.quantize(feeds[root]))
            each[i] = evaluator.perturbed(i, start, on, {}, feeds)
        return each

    with progress(len(grids), "--target-sqnr grid ranges", show_progress, unit="grid") as bar:
        for root, members in grids.items():
            low, high = range_of(root)
            base_each = noise(root, members, (low, high))
            base = float(base_each.sum())
            best, best_noise, best_scale = None, base * (1 - MIN_GAIN), 1.0
            for scale in CANDIDATE_SCALES:
                candidate = (min(low, 0.0) * scale, max(high, 0.0) * scale)
                if candidate[0] == candidate[1]:
                    continue
                measured_each = noise(root, members, candidate)
                measured = float(measured_each.sum())
                # (and never a range that makes the worst sample worse: a sum over a few
                # samples can trade one sample's clipping for the others' finer steps)
                if measured < best_noise and measured_each.max() <= base_each.max():
                    best, best_noise, best_scale = candidate, measured, scale
            if best is not None and np.isfinite(best_noise):
                result.ranges[root] = best
                result.noise_before += base
                result.noise_after += best_noise
                result.scales.append(best_scale)
            bar.update()
    return result
