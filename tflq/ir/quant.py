"""Affine quantization parameters and the scale/zero-point arithmetic, kept in one module.

The convention everywhere is TFLite's: real = scale * (q - zero_point), where scale is the real
value of one integer step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from tflq.ir.dtypes import DType

# A range narrower than this is widened, so the scale never becomes zero or denormal.
MIN_RANGE = 1e-6
# Large constants are quantized this many elements at a time along their first axis: the float64
# arithmetic makes several temporaries of its input's size (an embedding table of 94 MB of
# float32 took 0.9 GB at once). Each element's arithmetic is the same, so are the integers.
QUANTIZE_CHUNK = 1 << 20


@dataclass(frozen=True, eq=False)
class QuantParams:
    """Quantization of one tensor: per-tensor (scale shape ()) or per-channel along `axis`."""

    dtype: DType
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    def __post_init__(self) -> None:
        scale = np.asarray(self.scale, dtype=np.float32)
        zero_point = np.asarray(self.zero_point, dtype=np.int64)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zero_point)
        if scale.shape != zero_point.shape:
            raise ValueError(f"scale shape {scale.shape} != zero point shape {zero_point.shape}")
        if scale.ndim > 1:
            raise ValueError("scale must be a scalar or a vector")
        if (scale.ndim == 1) != (self.axis is not None):
            raise ValueError("a per-channel scale needs an axis, a per-tensor scale must have none")
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ValueError(f"every scale must be finite and > 0, got {scale}")
        if np.any(zero_point < self.dtype.qmin) or np.any(zero_point > self.dtype.qmax):
            raise ValueError(f"zero point {zero_point} out of range for {self.dtype.name}")

    @classmethod
    def per_tensor(cls, dtype: DType, scale: float, zero_point: int) -> QuantParams:
        return cls(dtype, np.float32(scale), np.int64(zero_point))

    @classmethod
    def per_channel(cls, dtype: DType, scale, zero_point, axis: int) -> QuantParams:
        return cls(dtype, np.asarray(scale, np.float32).reshape(-1),
                   np.asarray(zero_point, np.int64).reshape(-1), axis)

    @property
    def is_per_channel(self) -> bool:
        return self.axis is not None

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, QuantParams) and self.dtype == other.dtype
                and self.axis == other.axis and self.scale.shape == other.scale.shape
                and bool(np.all(self.scale == other.scale))
                and bool(np.all(self.zero_point == other.zero_point)))

    def __hash__(self) -> int:
        return hash((self.dtype, self.axis, self.scale.tobytes(), self.zero_point.tobytes()))

    def broadcast(self, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """Scale and zero point shaped to broadcast against a tensor of this rank."""
        if self.axis is None:
            return self.scale, self.zero_point
        shape = [1] * rank
        shape[self.axis] = -1
        return self.scale.reshape(shape), self.zero_point.reshape(shape)

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """Round-to-nearest (half away from zero, as TFLite does) and saturate."""
        return self._by_rows(np.asarray(values), self.dtype.numpy, self._quantize)

    def _quantize(self, values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        q = round_half_away(values / scale.astype(np.float64)) + zero_point
        return np.clip(q, self.dtype.qmin, self.dtype.qmax).astype(self.dtype.numpy)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return self._by_rows(np.asarray(q), np.float32, _dequantize)

    def _by_rows(self, values: np.ndarray, dtype, fn) -> np.ndarray:
        """fn(values, scale, zero point) over blocks of rows of a large tensor (QUANTIZE_CHUNK)."""
        scale, zero_point = self.broadcast(values.ndim)
        if values.ndim == 0 or values.size <= QUANTIZE_CHUNK:
            return fn(values, scale, zero_point)
        out = np.empty(values.shape, dtype)
        along_rows = self.axis is not None and self.axis % values.ndim == 0  # (scale per row)
        for part in row_blocks(values.shape):
            out[part] = fn(values[part], scale[part] if along_rows else scale,
                           zero_point[part] if along_rows else zero_point)
        return out

    def with_dtype_shift(self, dtype: DType) -> QuantParams:
        """The same grid in the other 8-bit type: int8 zero point + 128 = uint8 zero point."""
        shift = 128 if (self.dtype, dtype) == (DType.INT8, DType.UINT8) else \
            -128 if (self.dtype, dtype) == (DType.UINT8, DType.INT8) else 0
        return QuantParams(dtype, self.scale, self.zero_point + shift, self.axis)

    def describe(self) -> str:
        if self.axis is None:
            return f"{self.dtype.name.lower()} scale={float(self.scale):.6g} zp={int(self.zero_point)}"
        return (f"{self.dtype.name.lower()} per-channel(axis={self.axis}, n={self.scale.size}) "
                f"scale=[{float(self.scale.min()):.3g}..{float(self.scale.max()):.3g}]")


def _dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    return ((q.astype(np.int64) - zero_point) * scale.astype(np.float64)).astype(np.float32)


def row_blocks(shape: tuple[int, ...]) -> Iterator[slice]:
    """Slices of the first axis, each of about QUANTIZE_CHUNK elements (at least one row)."""
    rows = shape[0] if shape else 1
    size = int(np.prod(shape))
    step = max(1, QUANTIZE_CHUNK // max(1, size // max(1, rows)))
    for start in range(0, max(rows, 1), step):
        yield slice(start, start + step)


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round half away from zero, TFLite's rounding for quantizing constants."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def compute_scale_zero_point(rmin: float, rmax: float, qmin: int, qmax: int,
                             symmetric: bool = False) -> tuple[float, int]:
    """Scale and zero point for real range [rmin, rmax] on the integer grid [qmin, qmax].

    The range is first widened to contain 0 so that real zero is exactly representable (padding
    and ReLU depend on it). A degenerate range (rmin == rmax == 0, or narrower than MIN_RANGE) is
    widened to MIN_RANGE so the scale is always a positive finite number. Symmetric ranges use
    max(|rmin|, |rmax|) on both sides and put the zero point in the middle of the grid.
    """
    rmin = min(float(rmin), 0.0)
    rmax = max(float(rmax), 0.0)
    if not (np.isfinite(rmin) and np.isfinite(rmax)):
        raise ValueError(f"range [{rmin}, {rmax}] is not finite")
    if symmetric:
        bound = max(abs(rmin), abs(rmax), MIN_RANGE / 2)
        scale = 2 * bound / (qmax - qmin)
        zero_point = (qmin + qmax + 1) // 2 if (qmax - qmin) % 2 else (qmin + qmax) // 2
        return float(np.float32(scale)), int(zero_point)
    if rmax - rmin < MIN_RANGE:
        rmax = rmin + MIN_RANGE
    scale = float(np.float32((rmax - rmin) / (qmax - qmin)))
    zero_point_real = qmin - rmin / scale
    zero_point = int(np.clip(round_half_away(np.float64(zero_point_real)), qmin, qmax))
    return scale, zero_point


def activation_params(dtype: DType, rmin: float, rmax: float) -> QuantParams:
    """Per-tensor parameters for an activation: asymmetric for the 8-bit types; symmetric with
    zero point 0 for int16 (LiteRT's 16x8 kernels require it), scale = max(|rmin|, |rmax|) / 32767.

    A range that is exactly zero (a ReLU dead on every calibration sample) gets scale 1.0 (any
    scale holds the zeros exactly): a MIN_RANGE scale would make the producer's requantization multiplier
    (input scale x weight scale / output scale) exceed what XNNPACK accepts (< 256), and LiteRT
    would then refuse the whole file at load time. On int16 (which XNNPACK does not run) it gets the
    grid [-1, 1] instead: LiteRT's int16 lookup-table kernels (EXP, LOG...) tabulate their function
    over the input's whole grid, and exp over [-32768, 32767] overflows the table to garbage (a
    LogSumExp over axes of size 1 subtracts its maximum to exactly 0: 0 dB)."""
    if dtype == DType.INT16:
        bound = max(abs(float(rmin)), abs(float(rmax)))
        if not np.isfinite(bound):
            raise ValueError(f"range [{rmin}, {rmax}] is not finite")
        scale = bound / dtype.qmax if bound > 0 else 1.0 / dtype.qmax
        return QuantParams.per_tensor(dtype, max(scale, MIN_RANGE / (2 * dtype.qmax)), 0)
    if float(rmin) == 0.0 and float(rmax) == 0.0:
        return QuantParams.per_tensor(dtype, 1.0, dtype.qmin)
    scale, zero_point = compute_scale_zero_point(rmin, rmax, dtype.qmin, dtype.qmax)
    return QuantParams.per_tensor(dtype, scale, zero_point)


def symmetric_weight_params(weights: np.ndarray, axis: int | None,
                            dtype: DType = DType.INT8) -> QuantParams:
    """Symmetric narrow-range weights ([-127, 127], zero point 0), per-tensor or per-channel."""
    qmax = dtype.qmax
    w = np.asarray(weights)
    if w.dtype.kind != "f":  # (a float's magnitude and maximum are exact in its own type: no
        w = w.astype(np.float64)  # float64 copy of a large weight)
    if axis is None:
        bound = float(np.max(np.abs(w))) if w.size else 0.0
        scale = max(bound, MIN_RANGE / 2) / qmax
        return QuantParams.per_tensor(dtype, scale, 0)
    reduce_axes = tuple(i for i in range(w.ndim) if i != axis)
    bound = np.max(np.abs(w), axis=reduce_axes).astype(np.float64) if w.size else np.zeros(w.shape[axis])
    scale = np.maximum(bound, MIN_RANGE / 2) / qmax
    return QuantParams.per_channel(dtype, scale, np.zeros_like(scale, dtype=np.int64), axis)


def asymmetric_weight_params(weights: np.ndarray, dtype: DType = DType.UINT8) -> QuantParams:
    """Classic per-tensor asymmetric weights (the uint8 scheme), zero exactly representable."""
    w = np.asarray(weights)
    return activation_params(dtype, float(w.min()) if w.size else 0.0,
                             float(w.max()) if w.size else 0.0)


def bias_type(input_dtype: DType) -> DType:
    """The bias type LiteRT's kernels take: int32 next to 8-bit activations, int64 next to int16."""
    return DType.INT64 if input_dtype == DType.INT16 else DType.INT32


def bias_params(input_params: QuantParams, weight_params: QuantParams) -> QuantParams:
    """Bias (int32, int64 for int16 inputs): scale = input scale x weight scale (per channel
    when the weights are), zp 0."""
    dtype = bias_type(input_params.dtype)
    scale = input_params.scale.astype(np.float64) * weight_params.scale.astype(np.float64)
    if weight_params.axis is None:
        return QuantParams(dtype, np.float32(scale), np.int64(0))
    return QuantParams.per_channel(dtype, scale, np.zeros(scale.shape, np.int64), 0)


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical). Summed in float64 over
    blocks of rows, so a large weight costs no float64 copies of its size."""
    reference, approx = np.asarray(reference), np.asarray(approx)
    same = reference.shape == approx.shape and reference.ndim > 0
    noise = signal = 0.0
    for part in row_blocks(reference.shape) if same else [...]:
        ref = reference[part].astype(np.float64)
        noise += float(np.sum((ref - approx[part].astype(np.float64)) ** 2))
        signal += float(np.sum(ref ** 2))
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return float(10 * np.log10(signal / noise))
