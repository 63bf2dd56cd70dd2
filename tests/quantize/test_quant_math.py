"""Scale/zero-point arithmetic (tflq.ir.quant), checked by hand and with hypothesis properties."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tflq.ir.dtypes import DType
from tflq.ir.quant import (MIN_RANGE, QuantParams, activation_params, bias_params,
                           compute_scale_zero_point, sqnr_db, symmetric_weight_params)

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)


def test_hand_computed_uint8():
    scale, zp = compute_scale_zero_point(-1.0, 3.0, 0, 255)
    assert scale == pytest.approx(4 / 255) and zp == 64  # 1 / (4/255) = 63.75 -> 64


def test_hand_computed_int8():
    scale, zp = compute_scale_zero_point(0.0, 6.0, -128, 127)
    assert scale == pytest.approx(6 / 255) and zp == -128


@pytest.mark.parametrize("lo,hi", [(0.0, 0.0), (2.5, 2.5), (-3.0, -3.0), (1e-12, 2e-12)])
def test_degenerate_ranges_give_a_valid_scale(lo, hi):
    for dtype in (DType.INT8, DType.UINT8):
        p = activation_params(dtype, lo, hi)
        assert np.isfinite(p.scale) and p.scale > 0
        assert p.dequantize(p.quantize(np.array([0.0])))[0] == 0.0


def test_invalid_params_are_rejected():
    with pytest.raises(ValueError):
        QuantParams.per_tensor(DType.INT8, 0.0, 0)
    with pytest.raises(ValueError):
        QuantParams.per_tensor(DType.INT8, 0.1, 200)
    with pytest.raises(ValueError):
        QuantParams(DType.INT8, np.array([0.1, 0.2], np.float32), np.array([0], np.int64), 0)


@settings(max_examples=200, deadline=None)
@given(finite, finite, st.sampled_from([DType.INT8, DType.UINT8]))
def test_zero_is_exact_and_round_trip_within_half_step(a, b, dtype):
    lo, hi = min(a, b), max(a, b)
    p = activation_params(dtype, lo, hi)
    assert p.dequantize(p.quantize(np.array([0.0], np.float32)))[0] == 0.0
    xs = np.linspace(min(lo, 0.0), max(hi, 0.0), 101).astype(np.float32)
    err = np.abs(p.dequantize(p.quantize(xs)) - xs)
    assert np.all(err <= float(p.scale) / 2 * (1 + 1e-4) + 1e-6 * max(abs(lo), abs(hi), MIN_RANGE))


@settings(max_examples=100, deadline=None)
@given(st.lists(finite, min_size=2, max_size=40), st.integers(0, 1))
def test_symmetric_weights_have_zero_point_zero(values, axis_flag):
    w = np.array(values, np.float32)
    w = w[: len(w) // 2 * 2].reshape(2, -1) if axis_flag else w
    p = symmetric_weight_params(w, 0 if axis_flag else None)
    assert np.all(p.zero_point == 0)
    q = p.quantize(w)
    assert q.min() >= -127 and q.max() <= 127
    scale = p.scale.reshape(-1, 1) if axis_flag else p.scale
    assert np.all(np.abs(p.dequantize(q) - w) <= scale / 2 * (1 + 1e-4) + 1e-7)


def test_bias_scale_is_the_product():
    inp = QuantParams.per_tensor(DType.INT8, 0.02, 3)
    w = QuantParams.per_channel(DType.INT8, [0.1, 0.5], [0, 0], axis=0)
    b = bias_params(inp, w)
    np.testing.assert_allclose(b.scale, [0.002, 0.01], rtol=1e-6)
    assert b.dtype == DType.INT32 and np.all(b.zero_point == 0) and b.axis == 0


@pytest.mark.parametrize("axis", [None, 0, 1, 2])
def test_large_constants_quantize_in_chunks_to_the_same_integers(monkeypatch, axis):
    """A constant larger than QUANTIZE_CHUNK is quantized a few rows at a time (bounded memory);
    each integer is still round-half-away(x / scale) + zero point, saturated, with the scale and
    zero point of its own channel, whether the channels run along the chunked axis or not."""
    import tflq.ir.quant as quant

    rng = np.random.default_rng(3)
    shape = (7, 5, 3)
    x = rng.normal(scale=2.0, size=shape).astype(np.float32)
    x[0, 0, 0], x[6, 4, 2] = 1e6, -1e6  # saturate
    if axis is None:
        params = QuantParams.per_tensor(DType.UINT8, 0.01, 100)
        scale, zero_point = np.float64(np.float32(0.01)), 100
    else:
        n = shape[axis]
        params = QuantParams.per_channel(DType.INT8, np.linspace(0.01, 0.05, n), np.arange(n) - 2, axis)
        view = [1, 1, 1]
        view[axis] = n
        scale = params.scale.astype(np.float64).reshape(view)
        zero_point = params.zero_point.reshape(view)
    ratio = x.astype(np.float64) / scale
    expected = np.clip(np.sign(ratio) * np.floor(np.abs(ratio) + 0.5) + zero_point,
                       params.dtype.qmin, params.dtype.qmax).astype(params.dtype.numpy)
    whole = params.quantize(x)
    monkeypatch.setattr(quant, "QUANTIZE_CHUNK", 16)  # 105 elements: rows of one, seven chunks
    chunked = params.quantize(x)
    assert chunked.dtype == params.dtype.numpy and chunked.shape == shape
    np.testing.assert_array_equal(whole, expected)
    np.testing.assert_array_equal(chunked, expected)
    # dequantized and measured the same way, a few rows at a time: (q - zero point) x scale in
    # float64, and the SQNR of float64 sums
    real = ((expected.astype(np.int64) - zero_point) * scale).astype(np.float32)
    np.testing.assert_array_equal(params.dequantize(expected), real)
    ref = x.astype(np.float64)
    noise = np.sum((ref - real.astype(np.float64)) ** 2)
    assert sqnr_db(x, real) == pytest.approx(10 * np.log10(np.sum(ref ** 2) / noise), rel=1e-12)
    seen = []
    monkeypatch.setattr(quant, "row_blocks", lambda shape: seen.append(shape) or
                        [slice(i, i + 1) for i in range(shape[0])])
    np.testing.assert_array_equal(params.dequantize(expected), real)
    assert sqnr_db(x, real) == pytest.approx(10 * np.log10(np.sum(ref ** 2) / noise), rel=1e-12)
    assert seen == [shape, shape]  # (both went by rows)


def test_symmetric_weight_scales_are_those_of_float64_arithmetic():
    """The weights' bound is taken in their own float type (exact), the scale in float64."""
    rng = np.random.default_rng(4)
    w = rng.normal(size=(6, 4)).astype(np.float32)
    per_channel = symmetric_weight_params(w, 0)
    bound = np.abs(w.astype(np.float64)).max(axis=1)
    np.testing.assert_array_equal(per_channel.scale, (np.maximum(bound, MIN_RANGE / 2) / 127).astype(np.float32))
    per_tensor = symmetric_weight_params(w, None)
    assert float(per_tensor.scale) == np.float32(max(float(np.abs(w.astype(np.float64)).max()), MIN_RANGE / 2) / 127)
