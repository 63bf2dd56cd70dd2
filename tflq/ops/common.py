"""Shared pieces of op specs: fused activations, TFLite padding arithmetic, broadcasting checks."""
from __future__ import annotations

import math

import numpy as np

from tflq.ir.graph import Graph, Op
from tflq._generated.tflite.ActivationFunctionType import ActivationFunctionType
from tflq._generated.tflite.Padding import Padding


def activation_code(name: str) -> int:
    """'RELU6' -> ActivationFunctionType.RELU6."""
    return getattr(ActivationFunctionType, name)


def padding_code(name: str) -> int:
    return getattr(Padding, name)


def apply_activation(x: np.ndarray, name: str, out: np.ndarray | None = None) -> np.ndarray:
    """Float semantics of a TFLite fused activation (into `out` when given, e.g. `x` itself)."""
    if name == "NONE":
        return x
    if name == "RELU":
        return np.maximum(x, np.float32(0), out=out)
    if name == "RELU6":
        return np.clip(x, np.float32(0), np.float32(6), out=out)
    if name == "RELU_N1_TO_1":
        return np.clip(x, np.float32(-1), np.float32(1), out=out)
    if name == "TANH":
        return np.tanh(x, out=out)
    if name == "SIGN_BIT":  # tensor_utils ApplySignbitToVector: 1 where the sign bit is set
        return np.signbit(x).astype(x.dtype)
    raise ValueError(f"unknown fused activation {name}")


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite SAME padding (before, after) along one spatial axis."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def output_size(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    effective = (kernel - 1) * dilation + 1
    if padding == "SAME":
        return math.ceil(size / stride)
    return (size - effective) // stride + 1


def read_pads(sizes: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int],
              dilations: tuple[int, int], pads: tuple[int, int, int, int],
              outs: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """The part of ONNX pads (top, left, bottom, right) that some window reads: the top and left
    as given, the bottom and right cut to where the last window ends (a stride can leave the end
    padding unread, as in ResNet's 3x3/2 max pool with pads 1 on 112: its last window ends on
    row 111). `outs`: the output size per axis when it is not the floor formula's (ceil_mode),
    which can reach past the given padding."""
    ends = []
    for a in (0, 1):
        effective = (kernel[a] - 1) * dilations[a] + 1
        out = outs[a] if outs is not None else \
            (sizes[a] + pads[a] + pads[a + 2] - effective) // strides[a] + 1
        ends.append(max(0, (out - 1) * strides[a] + effective - sizes[a] - pads[a]))
    return pads[0], pads[1], ends[0], ends[1]


def choose_padding(sizes: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int],
                   dilations: tuple[int, int], pads: tuple[int, int, int, int]) -> str | None:
    """'VALID' or 'SAME' if ONNX pads (top, left, bottom, right) equal one of them, else None."""
    if not any(pads):
        return "VALID"
    same = [same_padding(s, k, st, d) for s, k, st, d in zip(sizes, kernel, strides, dilations)]
    if (pads[0], pads[2]) == same[0] and (pads[1], pads[3]) == same[1]:
        return "SAME"
    return None


def onnx_pads(ctx, node, spatial: tuple[int, int], kernel: tuple[int, int],
              strides: tuple[int, int], dilations: tuple[int, int]) -> tuple[int, int, int, int]:
    """The explicit (top, left, bottom, right) padding an ONNX Conv/Pool node asks for."""
    auto_pad = ctx.attr(node, "auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        result = []
        for s, k, st, d in zip(spatial, kernel, strides, dilations):
            before, after = same_padding(s, k, st, d)
            result.append((after, before) if auto_pad == "SAME_LOWER" else (before, after))
        return result[0][0], result[1][0], result[0][1], result[1][1]
    if auto_pad == "VALID":
        return 0, 0, 0, 0
    pads = ctx.attr(node, "pads", [0, 0, 0, 0])
    return tuple(int(p) for p in pads)  # type: ignore[return-value]


def pad_nhwc(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
             dilations: tuple[int, int], padding: str, value: float = 0.0) -> np.ndarray:
    """Apply TFLite SAME padding to an NHWC array (VALID returns it unchanged)."""
    if padding != "SAME":
        return x
    (t, b), (l, r) = (same_padding(x.shape[1], kernel[0], strides[0], dilations[0]),
                      same_padding(x.shape[2], kernel[1], strides[1], dilations[1]))
    if not (t or b or l or r):
        return x
    return constant_pad(x, ((0, 0), (t, b), (l, r), (0, 0)), value)


def constant_pad(x: np.ndarray, pads, value=0) -> np.ndarray:
    """np.pad(x, pads, constant_values=value) for [before, after] pairs per axis: one copy of
    `x` and a fill of the borders only (np.pad costs about 1.5x this on calibration's tensors)."""
    pads = [(int(before), int(after)) for before, after in pads]
    if min(min(pair) for pair in pads) < 0:
        return np.pad(x, pads, constant_values=value)  # (raises: no negative padding)
    shape = tuple(d + before + after for d, (before, after) in zip(x.shape, pads))
    out = np.empty(shape, x.dtype)
    out[tuple(slice(before, before + d) for d, (before, _) in zip(x.shape, pads))] = x
    for axis, (before, after) in enumerate(pads):
        lead = (slice(None),) * axis
        if before:
            out[lead + (slice(0, before),)] = value
        if after:
            out[lead + (slice(shape[axis] - after, None),)] = value
    return out


def windows(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
            dilations: tuple[int, int]) -> np.ndarray:
    """Sliding windows of a padded NHWC array: shape [N, OH, OW, KH, KW, C] (a view)."""
    n, h, w, c = x.shape
    kh, kw = kernel
    oh = (h - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (w - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    sn, sh, sw, sc = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (n, oh, ow, kh, kw, c),
        (sn, sh * strides[0], sw * strides[1], sh * dilations[0], sw * dilations[1], sc),
        writeable=False)


def tensor_types(graph: Graph, op: Op) -> list[str]:
    """Lower-case dtype names of the op's inputs ('' for an omitted one), for version rules."""
    return [graph.tensors[n].dtype.name.lower() if n else "" for n in op.inputs]


def quantized_version(graph: Graph, op: Op, int8: int = 2, uint8: int = 1, float_: int = 1,
                      index: int = 0, int16: int | None = None) -> int:
    """The usual TFLite versioning: a new version for int8, the original one for uint8 and float;
    int16 activations (16x8) get `int16` (op_version.cc), or int8's when the op names none."""
    dtype = graph.tensors[op.inputs[index]].dtype.name
    if dtype == "INT16":
        return int8 if int16 is None else int16
    return int8 if dtype == "INT8" else uint8 if dtype == "UINT8" else float_
