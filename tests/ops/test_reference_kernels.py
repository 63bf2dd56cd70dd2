"""The numpy reference kernels' fast paths (calibration's forward pass) against direct loops.

Each op's cases are also checked against onnxruntime (test_registry); these sweep the geometry
that picks a kernel's path: channels on both sides of DEPTHWISE_EINSUM_CHANNELS, row and column
strides, dilation, SAME padding handled without a copy, kernels with even sizes.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from tflq import ops as registry
from tflq.ops.common import constant_pad, same_padding
from tflq.ops.conv import DEPTHWISE_EINSUM_CHANNELS


def _direct_depthwise(x, w, b, padding, strides, dilations, multiplier):
    """Output cell by output cell, in float64."""
    x = np.repeat(x.astype(np.float64), multiplier, axis=3)
    kh, kw = w.shape[1:3]
    if padding == "SAME":
        (t, bottom), (l, r) = (same_padding(x.shape[1], kh, strides[0], dilations[0]),
                               same_padding(x.shape[2], kw, strides[1], dilations[1]))
        x = np.pad(x, ((0, 0), (t, bottom), (l, r), (0, 0)))
    n, h, width, c = x.shape
    oh = (h - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (width - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    y = np.zeros((n, oh, ow, c))
    for r, q, i, j in itertools.product(range(oh), range(ow), range(kh), range(kw)):
        y[:, r, q] += x[:, r * strides[0] + i * dilations[0], q * strides[1] + j * dilations[1]] * w[0, i, j]
    return y + b


GEOMETRIES = [  # (kernel, strides, dilations, padding)
    ((3, 3), (1, 1), (1, 1), "SAME"), ((3, 3), (1, 1), (1, 1), "VALID"), ((3, 3), (2, 1), (1, 1), "SAME"),
    ((3, 3), (1, 2), (1, 1), "SAME"), ((3, 3), (2, 2), (1, 1), "VALID"), ((3, 3), (1, 1), (2, 2), "SAME"),
    ((2, 2), (1, 1), (1, 1), "SAME"), ((1, 5), (1, 1), (1, 1), "SAME"), ((4, 3), (3, 1), (1, 2), "SAME"),
]


@pytest.mark.parametrize("channels", [5, DEPTHWISE_EINSUM_CHANNELS])
@pytest.mark.parametrize("kernel,strides,dilations,padding", GEOMETRIES)
def test_depthwise_paths_match_direct_loops(channels, kernel, strides, dilations, padding):
    rng = np.random.default_rng(channels + 7 * strides[0] + 3 * kernel[0])
    for multiplier in (1, 2):
        cin = channels // multiplier if channels % multiplier == 0 else channels
        x = rng.standard_normal((2, 7, 8, cin)).astype(np.float32)
        w = rng.standard_normal((1, *kernel, cin * multiplier)).astype(np.float32)
        b = rng.standard_normal(cin * multiplier).astype(np.float32)
        (y,) = registry.spec("DEPTHWISE_CONV_2D").reference(
            x, w, b, padding=padding, stride_h=strides[0], stride_w=strides[1], dilation_h=dilations[0],
            dilation_w=dilations[1], depth_multiplier=multiplier)
        expected = _direct_depthwise(x, w, b, padding, strides, dilations, multiplier)
        assert y.dtype == np.float32 and y.shape == expected.shape
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_constant_pad_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    for pads in ([[0, 0], [1, 2], [0, 3], [0, 0]], [[1, 0], [0, 0], [2, 2], [1, 1]]):
        for value in (0.0, -np.inf, 1.5):
            np.testing.assert_array_equal(constant_pad(x, pads, value),
                                          np.pad(x, pads, constant_values=value))
    with pytest.raises(ValueError):
        constant_pad(x, [[0, 0], [-1, 0], [0, 0], [0, 0]])


def _direct_conv(x, w, b, strides, dilations):
    """VALID convolution of NHWC `x` by OHWI `w`, tap by tap in float64."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    _, kh, kw, _ = w.shape
    oh = (x.shape[1] - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (x.shape[2] - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    y = np.zeros((x.shape[0], oh, ow, w.shape[0]))
    for i, j in itertools.product(range(kh), range(kw)):
        rows = x[:, i * dilations[0]::strides[0], j * dilations[1]::strides[1]][:, :oh, :ow]
        y += rows @ w[:, i, j].T
    return y + b


@pytest.mark.parametrize("block_bytes", [1, 3000, 1 << 20])
@pytest.mark.parametrize("batch", [1, 2])
def test_blocked_im2col_conv_matches_direct_loops(monkeypatch, block_bytes, batch):
    """Blocks of one output row, of a few, and of the whole image; strided and dilated."""
    from tflq.ops import conv

    monkeypatch.setattr(conv, "IM2COL_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 9, 10, 6)).astype(np.float32)
    w = rng.standard_normal((7, 3, 2, 6)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    for strides, dilations in (((1, 1), (1, 1)), ((2, 1), (1, 2))):
        (y,) = registry.spec("CONV_2D").reference(x, w, b, padding="VALID", stride_h=strides[0],
                                                  stride_w=strides[1], dilation_h=dilations[0],
                                                  dilation_w=dilations[1])
        np.testing.assert_allclose(y, _direct_conv(x, w, b, strides, dilations), rtol=1e-5, atol=1e-5)
