"""Calibration statistics: run the float graph over samples, keep per-tensor running min/max and an
exactly-mergeable histogram, and turn them into ranges (minmax, percentile, mse, entropy).

The histogram of a tensor has NUM_BINS bins over [-R, R], where R = 2**exponent is the smallest
power of two above every |x| seen (but at least 2**MIN_EXPONENT). A value x lands in bin
floor(x * 2**(HALF - exponent)) + HALF with HALF = NUM_BINS / 2; the product is exact in binary
floating point, so the bin does not depend on rounding. When a larger value arrives, R doubles
and adjacent bin pairs are summed; bin j at exponent k goes to bin ((j - HALF) >> d) + HALF at
exponent k + d, which is exactly where its values would have landed. Hence statistics over A
and B merged equal the statistics over A and B together, bit for bit, in any order — so
calibration can be sharded across machines and merged (`stats_file.merge_files`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from tflq.config import CalibMethod
from tflq.errors import CalibrationError, InvalidConfigError

NUM_BINS = 2048
HALF = NUM_BINS // 2
HALF_BITS = HALF.bit_length() - 1          # 2**HALF_BITS == HALF
MIN_EXPONENT = -100                        # |x| < 2**-100 all land in the two centre bins
LEVELS = 256                               # 8-bit grids, for the mse method
ENTROPY_LEVELS = 128                       # TensorRT: 128 quantized bins of |x|


class NonFiniteError(ValueError):
    """A tensor handed to TensorStats.update holds NaN or Inf."""


def non_finite_message(index: int, name: str, where: str, what: str) -> str:
    """The one line for a tensor that became NaN or Inf (`what`) on calibration sample `index`,
    with what to do where it is computed in a branch of an If on the data (tensors named
    '<If>/then_branch/...' by tflq.frontend.control_flow, which runs both branches)."""
    message = f"calibration sample {index}: tensor '{name}'{where} holds {what} values"
    branch = re.match(r"(.+?)/(then|else)_branch/", name)
    if branch:
        message += (f"; it is in the {branch.group(2)} branch of If '{branch.group(1)}', which tflq "
                    f"computes whether taken or not (its condition depends on the data): "
                    f"--float-ops {branch.group(1)} keeps that If float")
    return message


@dataclass(eq=False)
class TensorStats:
    """Running minimum, maximum and (unless `counts` is None) histogram of one tensor's values.

    The histogram (about 16 KB) is what the percentile, mse and entropy methods and saved
    statistics need; minmax needs only the two extremes, which cost about a twentieth of it.
    """

    minimum: float = math.inf
    maximum: float = -math.inf
    exponent: int = MIN_EXPONENT
    counts: np.ndarray | None = field(default_factory=lambda: np.zeros(NUM_BINS, np.int64))

    @classmethod
    def extremes_only(cls) -> TensorStats:
        """Statistics that keep the minimum and maximum only (for the minmax method)."""
        return cls(counts=None)

    @property
    def has_histogram(self) -> bool:
        return self.counts is not None

    @property
    def empty(self) -> bool:
        return self.minimum > self.maximum

    # ---- accumulate -----------------------------------------------------------------------
    def update(self, values: np.ndarray) -> None:
        """Add every element of `values` (cast to float32). Raises NonFiniteError on NaN/Inf."""
        values = np.asarray(values)
        if values.dtype != np.float32:
            values = values.astype(np.float32)
        if values.size == 0:
            return
        low, high = float(values.min()), float(values.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            raise NonFiniteError("NaN" if math.isnan(low) or math.isnan(high) else "Inf")
        self.minimum = min(self.minimum, low)
        self.maximum = max(self.maximum, high)
        self._grow(_exponent_above(max(-low, high)))
        if self.counts is None:
            return
        values = values.reshape(-1)
        scaled = np.multiply(values, np.float32(2.0 ** (HALF_BITS - self.exponent)))
        np.floor(scaled, out=scaled)
        if self.exponent > HALF_BITS:
            # Scaling by a power of two is exact unless the product underflows (possible only
            # when scaling down). A positive or a subnormal negative product still floors
            # right; a negative one that rounded to -0.0 belongs to bin -1.
            scaled[(scaled == 0) & (values < 0)] = -1
        # Integers in [-HALF, HALF) stay exact in float32 when shifted by HALF; the bin numbers
        # then fit int16, the cheapest index np.bincount takes.
        scaled += HALF
        self.counts += np.bincount(scaled.astype(np.int16), minlength=NUM_BINS)

    def update_extremes(self, low: float, high: float) -> None:
        """Add values known only by their extremes (an engine that reduced them itself); only for
        statistics without a histogram. Raises NonFiniteError on NaN/Inf."""
        if self.counts is not None:
            raise ValueError("a histogram needs the values, not their extremes")
        if not (math.isfinite(low) and math.isfinite(high)):
            raise NonFiniteError("NaN" if math.isnan(low) or math.isnan(high) else "Inf")
        self.minimum = min(self.minimum, low)
        self.maximum = max(self.maximum, high)
        self._grow(_exponent_above(max(-low, high)))

    def merge(self, other: TensorStats) -> None:
        """Add `other`'s values to these statistics (exact; `other` is not changed). Merged with
        statistics that have no histogram, the result has none either."""
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        if other.counts is None:
            self.counts = None
        self._grow(other.exponent)
        if self.counts is not None:
            self.counts += _rebinned(other.counts, self.exponent - other.exponent)

    def _grow(self, exponent: int) -> None:
        if exponent > self.exponent:
            if self.counts is not None:
                self.counts = _rebinned(self.counts, exponent - self.exponent)
            self.exponent = exponent

    def copy(self) -> TensorStats:
        return TensorStats(self.minimum, self.maximum, self.exponent,
                           None if self.counts is None else self.counts.copy())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorStats):
            return NotImplemented
        same_counts = (self.counts is None and other.counts is None) or (
            self.counts is not None and other.counts is not None
            and np.array_equal(self.counts, other.counts))
        return (self.minimum == other.minimum and self.maximum == other.maximum
                and self.exponent == other.exponent and same_counts)

    # ---- geometry -------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """How many values went in (needs the histogram)."""
        return int(self._histogram().sum())

    def _histogram(self) -> np.ndarray:
        if self.counts is None:
            raise ValueError("these statistics keep no histogram (gathered for minmax only)")
        return self.counts

    @property
    def bin_width(self) -> float:
        """Width of one bin in the tensor's units: R / HALF."""
        return 2.0 ** (self.exponent - HALF_BITS)

    def edges(self) -> np.ndarray:
        """The NUM_BINS + 1 bin edges, from -R to R."""
        return (np.arange(NUM_BINS + 1, dtype=np.float64) - HALF) * self.bin_width

    def abs_counts(self) -> np.ndarray:
        """Histogram of |x|: HALF bins over [0, R), bin j holding |x| in [j, j+1) * bin_width."""
        return self.counts[HALF:] + self.counts[HALF - 1::-1]

    # ---- ranges ---------------------------------------------------------------------------
    def quantile(self, q: float) -> float:
        """Estimate of np.quantile(values, q) (linear interpolation), within one bin width.

        The element of rank r is placed inside its bin, at its position among the bin's
        elements; so each estimate lies in the true element's bin, and so does the mix."""
        n = self.count
        if n == 0:
            raise ValueError("no values")
        target = q * (n - 1)
        lower = math.floor(target)
        upper = min(lower + 1, n - 1)
        cumulative = np.cumsum(self.counts)
        ranks = np.array([lower, upper])
        bins = np.searchsorted(cumulative, ranks, side="right")
        before = cumulative[bins] - self.counts[bins]
        inside = (ranks - before + 0.5) / self.counts[bins]
        values = (bins - HALF + inside) * self.bin_width
        values = np.clip(values, self.minimum, self.maximum)
        return float(values[0] + (target - lower) * (values[1] - values[0]))

    def percentile_range(self, percentile: float) -> tuple[float, float]:
        """Clip (100 - percentile)% off each tail; never beyond the true min/max."""
        if not 50.0 < percentile <= 100.0:
            raise InvalidConfigError(f"percentile must be in (50, 100], got {percentile}")
        if percentile == 100.0:
            return self.minimum, self.maximum
        q = percentile / 100.0
        low, high = self.quantile(1.0 - q), self.quantile(q)
        return min(low, high), max(low, high)

    def mse_range(self) -> tuple[float, float]:
        """The range [a, b] minimizing the expected squared error of an 8-bit grid over it.

        Candidates: bin edges between the true min and 0 for a, between 0 and the true max for
        b (plus the true min and max themselves). Error model per value: step**2 / 12 inside
        the range (step = (b - a) / 255), squared distance to the bound (plus the bin's own
        spread, width**2 / 12) for values clipped. Searched on a coarse grid, then refined at
        full resolution around the best pair.
        """
        low0, high0 = min(self.minimum, 0.0), max(self.maximum, 0.0)
        if low0 == high0:
            return self.minimum, self.maximum
        width = self.bin_width
        counts = self.counts.astype(np.float64)
        centres = (np.arange(NUM_BINS) - HALF + 0.5) * width
        # prefix sums of n, n*c, n*c**2; index j covers bins [0, j)
        p0 = np.concatenate([[0.0], np.cumsum(counts)])
        p1 = np.concatenate([[0.0], np.cumsum(counts * centres)])
        p2 = np.concatenate([[0.0], np.cumsum(counts * centres ** 2)])
        total = p0[-1]
        edges = self.edges()
        # high candidates: value v, bins clipped = [j, NUM_BINS)
        inner_high = np.flatnonzero((edges > 0) & (edges < high0))
        high_values = np.concatenate([edges[inner_high], [high0]])
        high_first = np.concatenate([inner_high, [NUM_BINS]])
        # low candidates: value v, bins clipped = [0, j)
        inner_low = np.flatnonzero((edges < 0) & (edges > low0))
        low_values = np.concatenate([[low0], edges[inner_low]])
        low_end = np.concatenate([[0], inner_low])
        if high0 == 0.0:
            high_values, high_first = np.array([0.0]), np.array([HALF])
        if low0 == 0.0:
            low_values, low_end = np.array([0.0]), np.array([HALF])

        n_hi = p0[-1] - p0[high_first]
        err_hi = (p2[-1] - p2[high_first]) - 2 * high_values * (p1[-1] - p1[high_first]) \
            + high_values ** 2 * n_hi + n_hi * width ** 2 / 12
        n_lo = p0[low_end]
        err_lo = p2[low_end] - 2 * low_values * p1[low_end] + low_values ** 2 * n_lo + n_lo * width ** 2 / 12

        def error(li: np.ndarray, hi: np.ndarray) -> np.ndarray:
            step = (high_values[hi] - low_values[li]) / (LEVELS - 1)
            inside = total - n_hi[hi] - n_lo[li]
            return inside * step ** 2 / 12 + err_hi[hi] + err_lo[li]

        li_best, hi_best = _grid_search(error, len(low_values), len(high_values))
        low, high = float(low_values[li_best]), float(high_values[hi_best])
        return max(low, self.minimum), min(high, self.maximum)

    def entropy_range(self) -> tuple[float, float]:
        """TensorRT's KL-divergence threshold T on the |x| histogram, as (-T, T) cut to [min, max].

        For each candidate i (bins [0, i) kept, the mass beyond folded into bin i-1), P is the
        kept histogram and Q the same bins merged into 128 groups and spread evenly over each
        group's non-empty bins; the i minimizing KL(P || Q) gives T = (i + 0.5) * bin_width
        (SPEC-NOTES §5.4). The groups split the i bins evenly, as NVIDIA's pytorch-quantization
        does; MXNet's `i // 128` bins per group with the remainder in the last group makes
        the divergence dip just below multiples of 128 bins and clips far too much.
        Evaluated for all i at once with prefix sums.
        """
        hist = self.abs_counts().astype(np.float64)
        # Bin 0 lies inside every threshold; after a ReLU it holds the spike of exact zeros, which
        # merged with its neighbours into one quantized level would swamp the divergence and pick
        # the smallest threshold every time. Leave it out of P and Q alike.
        hist[0] = 0.0
        nonzero = np.flatnonzero(hist)
        if nonzero.size == 0:
            return self.minimum, self.maximum
        extent = int(nonzero[-1]) + 1
        # A tensor that is never negative (after ReLU) spends all 256 levels of the asymmetric
        # 8-bit grid on [0, T]; TensorRT's 128 assumes a symmetric grid and would clip too much.
        levels = 2 * ENTROPY_LEVELS if self.minimum >= 0 else ENTROPY_LEVELS
        if extent <= levels:
            return self.minimum, self.maximum
        candidates = np.arange(levels, extent + 1)
        kl = _entropy_divergences(hist, candidates, levels)
        best = int(candidates[int(np.argmin(kl))])
        threshold = (best + 0.5) * self.bin_width
        return max(-threshold, self.minimum), min(threshold, self.maximum)


def _exponent_above(magnitude: float) -> int:
    """The smallest k >= MIN_EXPONENT with 2**k > magnitude."""
    if magnitude <= 0.0:
        return MIN_EXPONENT
    return max(MIN_EXPONENT, math.frexp(magnitude)[1])


def _rebinned(counts: np.ndarray, doublings: int) -> np.ndarray:
    """`counts` re-binned after R doubles `doublings` times (exact)."""
    if doublings == 0:
        return counts.copy()
    shift = min(doublings, HALF_BITS + 1)  # beyond that every bin is already in the centre pair
    target = ((np.arange(NUM_BINS) - HALF) >> shift) + HALF
    result = np.zeros(NUM_BINS, np.int64)
    np.add.at(result, target, counts)
    return result


def _grid_search(error, n_low: int, n_high: int, coarse: int = 128) -> tuple[int, int]:
    """argmin of error(low_index, high_index) over a strided grid, refined around the best."""
    def best_of(lows: np.ndarray, highs: np.ndarray) -> tuple[int, int]:
        grid_low, grid_high = np.meshgrid(lows, highs, indexing="ij")
        values = error(grid_low.ravel(), grid_high.ravel())
        k = int(np.argmin(values))
        return int(grid_low.ravel()[k]), int(grid_high.ravel()[k])

    step_low, step_high = max(1, -(-n_low // coarse)), max(1, -(-n_high // coarse))
    lows = np.unique(np.concatenate([np.arange(0, n_low, step_low), [n_low - 1]]))
    highs = np.unique(np.concatenate([np.arange(0, n_high, step_high), [n_high - 1]]))
    low, high = best_of(lows, highs)
    lows = np.arange(max(0, low - step_low), min(n_low, low + step_low + 1))
    highs = np.arange(max(0, high - step_high), min(n_high, high + step_high + 1))
    return best_of(lows, highs)


def _xlogx(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, values * np.log(np.where(values > 0, values, 1.0)), 0.0)


def _entropy_divergences(hist: np.ndarray, candidates: np.ndarray, levels: int) -> np.ndarray:
    """KL(P_i || Q_i) for each candidate bin count i (see TensorStats.entropy_range)."""
    c = np.concatenate([[0.0], np.cumsum(hist)])
    z = np.concatenate([[0], np.cumsum(hist > 0)])
    plogp = np.concatenate([[0.0], np.cumsum(_xlogx(hist))])
    total = c[-1]
    i = candidates
    # group g holds bins k with floor(k * levels / i) == g (np.linspace(0, i, levels + 1) edges)
    bounds = (np.arange(levels + 1)[None, :] * i[:, None] + levels - 1) // levels
    starts, ends = bounds[:, :-1], bounds[:, 1:]
    outliers = total - c[i]
    last = hist[i - 1] + outliers                      # P's last bin
    group_sum = c[ends] - c[starts]                    # Q's mass per group (no outliers)
    group_nonzero = (z[ends] - z[starts]).astype(np.float64)
    group_nonzero[:, -1] += (hist[i - 1] == 0) & (outliers > 0)
    p_mass = group_sum.copy()
    p_mass[:, -1] += outliers
    sum_plogp = plogp[i - 1] + _xlogx(last)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q = np.log(group_sum / np.maximum(group_nonzero, 1.0))
        cross = np.where(p_mass > 0, p_mass * log_q, 0.0).sum(axis=1)
        kl = (sum_plogp - cross) / total - np.log(total) + np.log(c[i])
    impossible = ((p_mass > 0) & (group_sum == 0)).any(axis=1)
    return np.where(impossible | ~np.isfinite(kl), np.inf, kl)


# ---- per-graph statistics ---------------------------------------------------------------------


class CalibrationStats:
    """TensorStats by tensor name, plus how many samples went in; mergeable (stats_file.py saves it)."""

    def __init__(self, tensors: Mapping[str, TensorStats] | None = None, samples: int = 0,
                 histogram: bool = True) -> None:
        self.tensors: dict[str, TensorStats] = dict(tensors or {})
        self.samples = samples
        self.histogram = histogram  # whether new tensors get a histogram (else extremes only)

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CalibrationStats):
            return NotImplemented
        return self.samples == other.samples and self.tensors == other.tensors

    def update(self, name: str, values: np.ndarray) -> None:
        """Add `values` to tensor `name`'s statistics. Raises NonFiniteError on NaN/Inf."""
        stats = self.tensors.get(name)
        if stats is None:
            stats = self.tensors[name] = TensorStats() if self.histogram else TensorStats.extremes_only()
        stats.update(values)

    def update_extremes(self, name: str, low: float, high: float) -> None:
        """Add tensor `name`'s extremes (statistics without histograms only)."""
        stats = self.tensors.get(name)
        if stats is None:
            stats = self.tensors[name] = TensorStats.extremes_only()
        stats.update_extremes(low, high)

    def merge(self, other: CalibrationStats) -> None:
        """Add `other`'s statistics to these (exact). Tensors only one side knows are kept."""
        for name, stats in other.tensors.items():
            if name in self.tensors:
                self.tensors[name].merge(stats)
            else:
                self.tensors[name] = stats.copy()
        self.samples += other.samples
        self.histogram = self.histogram and other.histogram

    def range(self, name: str, method: CalibMethod | str = CalibMethod.MINMAX,
              percentile: float = 99.99) -> tuple[float, float]:
        """(rmin, rmax) of tensor `name` by `method`; always inside the observed [min, max]."""
        stats = self.tensors.get(name)
        if stats is None or stats.empty:
            raise CalibrationError(f"no calibration statistics for tensor '{name}'")
        method = CalibMethod(method)
        if method == CalibMethod.MINMAX:
            return stats.minimum, stats.maximum
        if not stats.has_histogram:
            raise CalibrationError(f"the {method.value} method needs histograms; the statistics of "
                                   f"tensor '{name}' were gathered for minmax only")
        if method == CalibMethod.PERCENTILE:
            return stats.percentile_range(percentile)
        if method == CalibMethod.MSE:
            return stats.mse_range()
        return stats.entropy_range()
