"""--mode float16: float constants stored as float16 behind DEQUANTIZE; arithmetic stays float32.

This is the TF converter's float16 scheme: a constant float16 tensor, a DEQUANTIZE op, and the
float32 tensor the op reads. LiteRT's builtin kernels run the DEQUANTIZE once per invoke;
XNNPACK unpacks such DEQUANTIZEs at load time (xnnpack_delegate.cc: a DEQUANTIZE of a static
float16 tensor is "quasi-static" and its consumers read the float32 result as a weight), and GPU
delegates read float16 natively.

Biases stay float32: XNNPACK accepts a float16 filter with a float32 bias but refuses a float32
filter with a float16 bias (xnnpack_delegate.cc CheckFilterAndBiasTypes), and biases are a
negligible part of a model's size. Constants of fewer than FLOAT16_MIN_ELEMENTS elements (scalars,
tiny vectors) stay float32 too: their DEQUANTIZE op would cost more bytes than it saves.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tflq.errors import InvalidConfigError
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Tensor
from tflq.ir.quant import sqnr_db
from tflq.report import mb
from tflq.targets.base import Target
from tflq.targets.litert import LITERT
from tflq.quantize.weights import check_finite_constants, constant_uses, dequantize_for, is_bias

FLOAT16_MIN_ELEMENTS = 16
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class Float16Result:
    """What --mode float16 stored: tensor count, float32 bytes before and float16 bytes after,
    and the lowest SQNR of a stored tensor against its float32 values."""

    tensors: int
    float32_bytes: int
    float16_bytes: int
    worst_sqnr_db: float
    worst_tensor: str | None
    kept_float32: tuple[str, ...] = ()  # constants with values beyond float16's range

    def notes(self) -> list[str]:
        notes = [self.note()]
        if self.kept_float32:
            names = ", ".join(f"'{n}'" for n in self.kept_float32[:5])
            notes.append(f"float16: {len(self.kept_float32)} constant(s) kept float32, with values "
                         f"beyond float16's range (+-{FLOAT16_MAX:g}): {names}")
        return notes

    def note(self) -> str:
        if not self.tensors:
            return "float16: no constant of at least 16 elements to store (the file is float32)"
        return (f"float16: {self.tensors} constant(s) stored as float16 behind DEQUANTIZE "
                f"({mb(self.float32_bytes)} -> {mb(self.float16_bytes)}, "
                f"{self.float16_bytes / self.float32_bytes:.0%}); lowest "
                f"SQNR {self.worst_sqnr_db:.1f} dB ('{self.worst_tensor}'); biases stay float32")


def store_float16(graph: Graph, target: Target = LITERT) -> Float16Result:
    """Rewrite the graph in place: every float32 constant of at least FLOAT16_MIN_ELEMENTS
    elements read by an op (biases excepted) becomes a float16 constant behind a DEQUANTIZE."""
    if not target.float16_constants:
        raise InvalidConfigError(f"--target {target.name}: {target.title} has no float16 tensors (its "
                                 f"DEQUANTIZE takes 8/16-bit integers); use --mode float, or --mode "
                                 f"full --dtype int8")
    check_finite_constants(graph)
    consumers = graph.consumer_map()
    insert_at = 0
    count, before, after, worst, worst_name = 0, 0, 0, float("inf"), None
    kept: list[str] = []
    for name in list(graph.tensors):
        t = graph.tensors[name]
        uses = constant_uses(graph, name, consumers)
        if not t.is_constant or t.dtype != DType.FLOAT32 or t.size < FLOAT16_MIN_ELEMENTS or not uses \
                or any(is_bias(op, i) for op, i in uses):
            continue
        if np.any(np.abs(t.data) > FLOAT16_MAX):
            kept.append(name)  # (attention masks of -1e9): float16 would make them infinite
            continue
        half = t.data.astype(np.float16)
        stored = graph.unique_name(f"{name}/float16")
        graph.add_tensor(Tensor(stored, DType.FLOAT16, t.shape, half, layout=t.layout))
        dequantize_for(graph, name, stored, uses, insert_at)
        insert_at += 1
        count += 1
        before += t.data.nbytes
        after += half.nbytes
        quality = sqnr_db(t.data, half.astype(np.float32))
        if quality < worst:
            worst, worst_name = quality, name
    graph.remove_unused()
    return Float16Result(count, before, after, worst, worst_name, tuple(kept))


def unused_calibration_note(config) -> list[str]:
    """float16 calibrates nothing: say so when calibration data or statistics were given."""
    given = [flag for flag, value in (("--calib", config.calib is not None), ("--stats", bool(config.stats)),
                                      ("--save-stats", bool(config.save_stats))) if value]
    if not given:
        return []
    return [f"float16: {', '.join(given)} unused (--mode float16 stores weights only; nothing is "
            f"calibrated{', and no statistics file is written' if config.save_stats else ''})"]
