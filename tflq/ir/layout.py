"""The axis permutations between ONNX's channels-first and TFLite's channels-last layouts."""
from __future__ import annotations

from tflq.ir.graph import Layout, Tensor

TO_NHWC = (0, 2, 3, 1)  # NHWC axis j holds NCHW axis TO_NHWC[j]
TO_NCHW = (0, 3, 1, 2)
CHANNELS_FIRST = {3: Layout.NCW, 4: Layout.NCHW, 5: Layout.NCDHW}
CHANNELS_LAST = {3: Layout.NWC, 4: Layout.NHWC, 5: Layout.NDHWC}


def to_channels_last(rank: int) -> tuple[int, ...]:
    """Channels-last axis j holds channels-first axis to_channels_last(rank)[j] (NHWC, NWC)."""
    return (0,) + tuple(range(2, rank)) + (1,)


def to_channels_first(rank: int) -> tuple[int, ...]:
    return (0, rank - 1) + tuple(range(1, rank - 1))


def channels_last_axis(axis: int, rank: int) -> int:
    """Where ONNX (channels-first) axis `axis` sits in the channels-last order."""
    axis %= rank
    return 0 if axis == 0 else rank - 1 if axis == 1 else axis - 1


def onnx_shape(t: Tensor) -> tuple[int, ...]:
    """A tensor's shape in ONNX axis order (a channels-last activation's permuted back)."""
    if t.layout.channels_last:
        return tuple(t.shape[i] for i in to_channels_first(t.rank))
    return t.shape
