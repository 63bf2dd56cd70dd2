"""Calibration statistics: exact histograms and merges, save/load, the four range methods, and the
calibration pass over a graph; every check against an independent numpy or hand computation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tflq.errors import CalibrationError, InvalidConfigError
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Layout, Op, Tensor
from tflq.ops.elementwise import ArithmeticAttrs
from tflq.calibration.run import calibrate
from tflq.calibration.statistics import NUM_BINS, CalibrationStats, TensorStats, _entropy_divergences
from tflq.calibration.stats_file import graph_fingerprint, load_stats, merge_files, save_stats

F32 = np.float32


def stats_of(*arrays: np.ndarray) -> TensorStats:
    s = TensorStats()
    for a in arrays:
        s.update(a)
    return s


def gaussian(n: int, seed: int = 0, sigma: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * sigma).astype(F32)


# ---- histogram and min/max ---------------------------------------------------------------------


def test_minmax_equals_numpy():
    parts = [gaussian(1000, seed=k, sigma=k + 1) for k in range(4)]
    s = stats_of(*parts)
    everything = np.concatenate(parts)
    assert s.minimum == float(everything.min()) and s.maximum == float(everything.max())
    stats = CalibrationStats({"t": s})
    assert stats.range("t", "minmax") == (float(everything.min()), float(everything.max()))


def test_histogram_equals_numpy_histogram_on_the_same_edges():
    values = np.concatenate([gaussian(5000, sigma=3), np.array([0.0, -0.0, 2.0, -2.0, 1.5], F32)])
    s = stats_of(values)
    assert 2.0 ** s.exponent > np.abs(values).max() >= 2.0 ** (s.exponent - 1)
    expected, _ = np.histogram(values.astype(np.float64), bins=s.edges())
    np.testing.assert_array_equal(s.counts, expected)
    assert s.counts.dtype == np.int64 and s.count == values.size


def test_range_doubling_rebins_exactly():
    small, large = gaussian(3000, seed=1, sigma=0.01), gaussian(3000, seed=2, sigma=100)
    grown = stats_of(small, large)
    assert grown == stats_of(np.concatenate([small, large]))
    expected, _ = np.histogram(np.concatenate([small, large]).astype(np.float64), bins=grown.edges())
    np.testing.assert_array_equal(grown.counts, expected)


def test_merge_is_exact_including_range_doubling():
    a, b = gaussian(4000, seed=3, sigma=0.5), gaussian(4000, seed=4, sigma=700)
    union = stats_of(np.concatenate([a, b]))
    for first, second in ((a, b), (b, a)):
        merged = stats_of(first)
        merged.merge(stats_of(second))
        assert merged == union
        assert merged.exponent == union.exponent and np.array_equal(merged.counts, union.counts)


def test_extreme_magnitudes_keep_exact_bins():
    # A negative subnormal next to a huge value: its scaled value underflows in float32.
    values = np.array([-1e-44, 1e-44, -0.0, 3e38, -5.0], F32)
    s = stats_of(values)
    expected, _ = np.histogram(values.astype(np.float64), bins=s.edges())
    np.testing.assert_array_equal(s.counts, expected)
    one_by_one = stats_of(*[values[k:k + 1] for k in range(values.size)])
    assert one_by_one == s


def test_all_zero_and_empty_updates():
    s = stats_of(np.zeros(10, F32), np.zeros((0, 3), F32))
    assert s.count == 10 and s.minimum == 0.0 and s.maximum == 0.0
    stats = CalibrationStats({"z": s})
    for method in ("minmax", "percentile", "mse", "entropy"):
        assert stats.range("z", method) == (0.0, 0.0)


def test_memory_per_tensor_is_small():
    assert stats_of(gaussian(100)).counts.nbytes == NUM_BINS * 8 <= 16 * 1024


LARGEST = float(F32(3e38))
finite_float32 = st.floats(min_value=-LARGEST, max_value=LARGEST, allow_nan=False, allow_infinity=False,
                           allow_subnormal=True, width=32)


@settings(max_examples=150, deadline=None)
@given(chunks=st.lists(hnp.arrays(F32, st.integers(0, 40), elements=finite_float32), min_size=1, max_size=5),
       scales=st.lists(st.sampled_from([1e-30, 1e-3, 1.0, 7.0, 1e4, 1e30]), min_size=5, max_size=5))
def test_property_merge_equals_stats_of_the_union(chunks, scales):
    chunks = [np.clip(c.astype(np.float64) * s, -3e38, 3e38).astype(F32)
              for c, s in zip(chunks, scales)]
    everything = np.concatenate(chunks)
    union = stats_of(everything)
    merged = TensorStats()
    for chunk in reversed(chunks):
        merged.merge(stats_of(chunk))
    assert merged == union
    assert stats_of(*chunks) == union
    assert union.count == everything.size
    if everything.size:
        assert union.minimum == float(everything.min()) and union.maximum == float(everything.max())
        expected, _ = np.histogram(everything.astype(np.float64), bins=union.edges())
        np.testing.assert_array_equal(union.counts, expected)


def test_calibration_stats_merge_keeps_tensors_of_both_sides():
    left, right = CalibrationStats(samples=2), CalibrationStats(samples=3)
    left.update("a", gaussian(10, seed=1))
    right.update("a", gaussian(10, seed=2))
    right.update("b", gaussian(10, seed=3))
    left.merge(right)
    assert left.samples == 5 and set(left.tensors) == {"a", "b"}
    assert left.tensors["a"] == stats_of(np.concatenate([gaussian(10, seed=1), gaussian(10, seed=2)]))


# ---- files -------------------------------------------------------------------------------------


def test_save_load_round_trip_and_merge_files(tmp_path):
    shards = []
    for k in range(3):
        stats = CalibrationStats(samples=1)
        stats.update("conv/out", gaussian(500, seed=k, sigma=10 ** k))
        stats.update("relu/out", np.abs(gaussian(500, seed=k + 5)))
        path = tmp_path / f"shard{k}.npz"
        save_stats(stats, str(path), "model-abc")
        assert load_stats(str(path), "model-abc") == stats
        shards.append((path, stats))
    merged = merge_files([str(p) for p, _ in shards], "model-abc")
    expected = CalibrationStats()
    for _, stats in shards:
        expected.merge(stats)
    assert merged == expected and merged.samples == 3
    np.testing.assert_array_equal(
        merged.tensors["conv/out"].counts,
        stats_of(*[gaussian(500, seed=k, sigma=10 ** k) for k in range(3)]).counts)


def test_saved_file_needs_no_pickle(tmp_path):
    stats = CalibrationStats(samples=1)
    stats.update("t", gaussian(10))
    save_stats(stats, str(tmp_path / "s.npz"), "fp")
    with np.load(tmp_path / "s.npz", allow_pickle=False) as npz:
        assert {npz[k].dtype.kind for k in npz.files} <= {"i", "f", "U"}


def test_fingerprint_mismatch_and_bad_files(tmp_path):
    stats = CalibrationStats(samples=1)
    stats.update("t", gaussian(10))
    path = tmp_path / "stats.npz"
    save_stats(stats, str(path), "model-one")
    with pytest.raises(CalibrationError) as excinfo:
        load_stats(str(path), "model-two")
    assert "stats.npz" in str(excinfo.value) and "another model" in str(excinfo.value)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(CalibrationError, match="junk.npz"):
        load_stats(str(tmp_path / "junk.npz"), "model-one")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(CalibrationError, match="not a tflq statistics file"):
        load_stats(str(tmp_path / "other.npz"), "model-one")
    with pytest.raises(CalibrationError):
        merge_files([], "model-one")


def test_a_statistics_file_given_twice_is_refused(tmp_path):
    # merged twice, its samples would count twice (sample count, histograms): refused by name,
    # whether it is the same path, another path to the same file, or a copy
    stats = CalibrationStats(samples=1)
    stats.update("t", gaussian(100))
    path = tmp_path / "a.npz"
    save_stats(stats, str(path), "fp")
    (tmp_path / "link.npz").symlink_to(path)
    (tmp_path / "copy.npz").write_bytes(path.read_bytes())
    for other, why in (("a.npz", "same file"), ("link.npz", "same file"), ("copy.npz", "same statistics")):
        with pytest.raises(CalibrationError) as excinfo:
            merge_files([str(path), str(tmp_path / other)], "fp")
        assert why in str(excinfo.value) and other in str(excinfo.value) and "twice" in str(excinfo.value)
    other = CalibrationStats(samples=1)
    other.update("t", gaussian(100, seed=3))
    save_stats(other, str(tmp_path / "b.npz"), "fp")
    assert merge_files([str(path), str(tmp_path / "b.npz")], "fp").samples == 2


# ---- range methods -----------------------------------------------------------------------------


@pytest.mark.parametrize("percentile", [99.0, 99.9, 99.99])
def test_percentile_within_one_bin_of_numpy(percentile):
    values = np.concatenate([gaussian(200_000, seed=7, sigma=2), gaussian(1000, seed=8, sigma=0.1) + 3])
    s = stats_of(values)
    low, high = CalibrationStats({"t": s}).range("t", "percentile", percentile)
    assert abs(high - np.percentile(values, percentile)) <= s.bin_width
    assert abs(low - np.percentile(values, 100 - percentile)) <= s.bin_width
    assert s.minimum <= low <= high <= s.maximum


def test_percentile_never_beyond_min_max_and_validates_its_argument():
    s = stats_of(np.array([1.0, 1.0, 1.0, 1.0], F32))
    stats = CalibrationStats({"t": s})
    assert stats.range("t", "percentile", 99.99) == (1.0, 1.0)
    assert stats.range("t", "percentile", 100.0) == (1.0, 1.0)
    with pytest.raises(InvalidConfigError):
        stats.range("t", "percentile", 30.0)


def fake_quantization_mse(values: np.ndarray, low: float, high: float) -> float:
    """Mean squared error of 8-bit asymmetric fake quantization over [low, high] (0 widened in)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255
    zero_point = np.clip(np.round(-low / scale), 0, 255)
    q = np.clip(np.round(values / scale) + zero_point, 0, 255)
    return float(np.mean(((q - zero_point) * scale - values.astype(np.float64)) ** 2))


def test_mse_beats_minmax_on_gaussian_with_outliers():
    values = np.concatenate([gaussian(1_000_000, seed=11), np.array([15.0, -14.0, 16.0], F32)])
    stats = CalibrationStats({"t": stats_of(values)})
    minmax = stats.range("t", "minmax")
    mse = stats.range("t", "mse")
    assert minmax == (-14.0, 16.0)
    assert fake_quantization_mse(values, *mse) < 0.5 * fake_quantization_mse(values, *minmax)
    assert 2.5 < mse[1] < 8 and -8 < mse[0] < -2.5


def test_mse_keeps_the_full_range_of_uniform_data():
    values = np.random.default_rng(3).uniform(-1, 3, 200_000).astype(F32)
    low, high = CalibrationStats({"t": stats_of(values)}).range("t", "mse")
    assert values.min() <= low < -0.95 and 2.9 < high <= values.max()


def test_mse_on_non_negative_data_starts_at_the_minimum():
    values = np.maximum(gaussian(100_000, seed=5), 0)
    low, high = CalibrationStats({"t": stats_of(values)}).range("t", "mse")
    assert low == 0.0 and 0 < high <= values.max()


def naive_kl(hist: np.ndarray, i: int, levels: int = 128) -> float:
    """KL(P || Q) for keeping i bins, written straight from the TensorRT pseudocode, with
    groups split evenly (np.linspace) as NVIDIA's pytorch-quantization does."""
    p = hist[:i].astype(np.float64).copy()
    p[i - 1] += hist[i:].sum()
    nonzero = p > 0
    group = np.digitize(np.arange(i), np.linspace(0, i, levels + 1)) - 1
    q = np.zeros(i)
    for g in range(levels):
        members = group == g
        count = nonzero[members].sum()
        if count:
            q[members & nonzero] = hist[:i][members].sum() / count
    if np.any(nonzero & (q == 0)):
        return math.inf
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p[nonzero] * np.log(p[nonzero] / q[nonzero])))


def test_entropy_divergences_match_a_naive_loop():
    rng = np.random.default_rng(1)
    for _ in range(10):
        hist = rng.integers(0, 50, 600) * (rng.random(600) < rng.uniform(0.2, 1.0))
        hist[-1] += 1
        candidates = np.arange(128, 601)
        fast = _entropy_divergences(hist.astype(np.float64), candidates, 128)
        slow = np.array([naive_kl(hist, i) for i in candidates])
        np.testing.assert_array_equal(np.isfinite(fast), np.isfinite(slow))
        np.testing.assert_allclose(fast[np.isfinite(fast)], slow[np.isfinite(slow)], rtol=1e-9, atol=1e-12)


def test_entropy_threshold_is_inside_the_data_range():
    values = np.concatenate([gaussian(300_000, seed=2, sigma=3), np.array([60.0], F32)])
    s = stats_of(values)
    low, high = CalibrationStats({"t": s}).range("t", "entropy")
    assert s.minimum <= low < 0 < high <= s.maximum
    assert -low == pytest.approx(high)          # symmetric threshold
    assert 9 < high < 30                         # clips the outlier, keeps >= 3 sigma
    hist = s.abs_counts()
    extent = np.flatnonzero(hist)[-1] + 1
    kl = _entropy_divergences(hist.astype(np.float64), np.arange(128, extent + 1), 128)
    best = 128 + int(np.argmin(kl))
    assert high == pytest.approx((best + 0.5) * s.bin_width)


def test_entropy_on_non_negative_data_keeps_the_minimum():
    values = np.maximum(gaussian(100_000, seed=4, sigma=2), 0)
    low, high = CalibrationStats({"t": stats_of(values)}).range("t", "entropy")
    assert low == 0.0 and 0 < high <= values.max()


def test_range_of_unknown_tensor():
    with pytest.raises(CalibrationError, match="'missing'"):
        CalibrationStats().range("missing", "minmax")


# ---- the calibration pass ----------------------------------------------------------------------


def tiny_graph(constant: float = 1.0) -> Graph:
    """x (NHWC [1, 4, 4, 2]) -> RELU -> r -> ADD(c) -> y."""
    graph = Graph()
    graph.add_tensor(Tensor("x", DType.FLOAT32, (1, 4, 4, 2), layout=Layout.NHWC))
    graph.add_tensor(Tensor("r", DType.FLOAT32, (1, 4, 4, 2), layout=Layout.NHWC))
    graph.add_tensor(Tensor("y", DType.FLOAT32, (1, 4, 4, 2), layout=Layout.NHWC))
    c = graph.add_constant("c", np.array(constant, F32))
    graph.add_op(Op("RELU", ["x"], ["r"], origin="relu_node"))
    graph.add_op(Op("ADD", ["r", c], ["y"], ArithmeticAttrs(), origin="add_node"))
    graph.inputs, graph.outputs = ["x"], ["y"]
    return graph


def test_calibrate_tracks_every_float_tensor_with_nchw_samples():
    samples = [{"x": np.random.default_rng(k).standard_normal((1, 2, 4, 4)).astype(F32)} for k in range(5)]
    stats = calibrate(tiny_graph(), samples, show_progress=False)
    assert set(stats.tensors) == {"x", "r", "y"} and stats.samples == 5
    x = np.stack([s["x"] for s in samples])
    assert stats.tensors["x"] == stats_of(*[s["x"] for s in samples])
    assert stats.range("r") == (0.0, float(x.max()))
    assert stats.range("y") == (1.0, float(x.max() + np.float32(1)))


def test_calibrate_only_requested_tensors_and_stats_merge_across_shards():
    samples = [{"x": np.random.default_rng(k).standard_normal((1, 2, 4, 4)).astype(F32)} for k in range(6)]
    graph = tiny_graph()
    whole = calibrate(graph, samples, tensors={"y"}, show_progress=False)
    assert set(whole.tensors) == {"y"}
    shard = calibrate(graph, samples[:2], tensors={"y"}, show_progress=False)
    shard.merge(calibrate(graph, samples[2:], tensors={"y"}, show_progress=False))
    assert shard == whole


def test_calibrate_reports_nan_produced_inside_the_graph():
    samples = [{"x": np.ones((1, 2, 4, 4), F32)}]
    with pytest.raises(CalibrationError) as excinfo:
        calibrate(tiny_graph(constant=np.inf), samples, show_progress=False)
    message = str(excinfo.value)
    assert "'y'" in message and "add_node" in message and "Inf" in message and "\n" not in message


def test_calibrate_reports_nan_input_and_wrong_or_missing_samples():
    bad = np.ones((1, 2, 4, 4), F32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(CalibrationError, match="'x' .graph input. holds NaN"):
        calibrate(tiny_graph(), [{"x": bad}], show_progress=False)
    with pytest.raises(CalibrationError, match="no calibration samples"):
        calibrate(tiny_graph(), [], show_progress=False)
    with pytest.raises(CalibrationError, match="no array for input 'x'"):
        calibrate(tiny_graph(), [{"z": bad}], show_progress=False)
    with pytest.raises(CalibrationError, match="expected"):
        calibrate(tiny_graph(), [{"x": np.ones((1, 4, 4, 3), F32)}], show_progress=False)


def test_graph_fingerprint_is_stable_and_sees_weights():
    assert graph_fingerprint(tiny_graph()) == graph_fingerprint(tiny_graph())
    assert graph_fingerprint(tiny_graph(constant=2.0)) != graph_fingerprint(tiny_graph())
