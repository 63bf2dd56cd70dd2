"""MAX_POOL_2D and AVERAGE_POOL_2D: ONNX MaxPool and AveragePool, including explicit padding and ceil_mode.

TFLite pools know only SAME and VALID padding, and both ignore padded cells (a SAME average divides
by the number of real cells). Only padding some window reads counts (read_pads: a stride can leave
the end padding unread). Other ONNX paddings are made explicit in front of a VALID pool:
- MaxPool of a tensor that is never negative (straight out of ReLU/ReLU6, as in ResNet's stem, or
  of a sigmoid, softmax, exp or abs): PAD with zeros, the least value the tensor holds, so the
  maximum is unchanged; zero is exact on every grid, and XNNPACK runs PAD. XNNPACK takes no other
  padding (not MIRROR_PAD, not PADV2: LiteRT 2.3 then splits the graph around it, and the reference
  MIRROR_PAD kernel alone cost 10.7 ms on ResNet-18 against 0.46 ms for the pool), and it fuses a
  PAD into a following convolution but never into a pool.
- Other MaxPools: the borders are replicated with MIRROR_PAD SYMMETRIC (one op, or one per padded
  cell when a single mirror would copy a cell from outside a window that reads it). Each padded cell
  then repeats a cell of every window that reads it, so the maximum is unchanged; unlike padding
  with -FLT_MAX this keeps the calibrated range of the padded tensor equal to the input's. Once
  quantized, an 8-bit input whose grid starts at real 0 (its zero point is the type's minimum:
  calibration saw no negative value) gets a PAD instead, which fills with that minimum
  (edge_pads_on_grid_minimum).
- AveragePool with count_include_pad=0: SAME where it starts ONNX's windows, on the input made
  longer at the end by a PAD no kept window reads if need be, and a STRIDED_SLICE dropping the
  windows SAME adds (add_same_windows): SAME divides by the real cells (LiteRT's reference and
  optimized kernels and XNNPACK alike), so the mean is rounded once. Otherwise, and with
  count_include_pad=1: zero padding, then a MUL by (window size / ONNX divisor) wherever ONNX
  divides by something other than the full window (a second rounding in 8 bits).
Once the file's graph is final, max_pool_pads_as_same drops a max pool's padding again wherever
SAME reads the same windows, on the pool's input or on a convolution output made one cell longer
(ResNet's stem: XNNPACK's PAD is a copy costing 4x the pool; a convolution's PAD it folds in), or
else, in place of MIRROR_PADs, on the input made longer by a PAD at the end.
For LiteRT (XNNPACK has no 8-bit AVERAGE_POOL_2D), average_pools_as_depthwise writes an 8-bit
average pool that reads no padding as a depthwise convolution of weights 1/(kh*kw).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.Pool2DOptions import Pool2DOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, NoAttrs, Op
from tflq.ir.quant import QuantParams
from tflq.ops import register
from tflq.ops.base import (WITH_INT16, Case, ChannelsLast, FusedActivations, OpSpec, SameAsInput,
                           rand)
from tflq.ops.checks import Arity, IntAttr, window_checks
from tflq.ops.common import (activation_code, choose_padding, onnx_pads, pad_nhwc, padding_code,
                             read_pads, same_padding, windows)
from tflq.ops.conv import DepthwiseConvAttrs, extend_convolution_output
from tflq.ops.conv3d import volume_case
from tflq.ops.one_d import import_as_2d, one_d_case
from tflq.ops.pad import MirrorPadAttrs, add_explicit_pad
from tflq.ops.reduce import ReducerAttrs
from tflq.ops.relu import never_negative
from tflq.ops.slice import add_slice


@dataclass(frozen=True)
class PoolAttrs:
    padding: str = "VALID"
    stride_h: int = 1
    stride_w: int = 1
    filter_h: int = 1
    filter_w: int = 1
    fused_activation: str = "NONE"


@dataclass(frozen=True)
class PoolWindow:
    """The geometry of an ONNX pooling node on its NCHW input; paddings are (top, left, bottom, right)."""

    size: tuple[int, int]
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # what the node asks for (explicit or auto_pad)
    out: tuple[int, int]

    @property
    def read_pads(self) -> tuple[int, int, int, int]:
        """The padding some window reads: the end padding cut to where the last window ends, or
        beyond the node's pads where ceil_mode's last window reaches past them."""
        return read_pads(self.size, self.kernel, self.strides, (1, 1), self.pads, self.out)

    def attrs(self, padding: str) -> PoolAttrs:
        return PoolAttrs(padding, self.strides[0], self.strides[1], self.kernel[0], self.kernel[1])

    def tflite_padding(self) -> str | None:
        """'SAME' or 'VALID' when TFLite's own padding reads exactly the cells ONNX reads."""
        return choose_padding(self.size, self.kernel, self.strides, (1, 1), self.read_pads)


def pool_window(node, ctx) -> PoolWindow:
    """Validate an ONNX MaxPool/AveragePool node and work out its padding and output size."""
    x = node.input[0]
    if ctx.rank(x) != 4:
        raise Unsupported(node, "pool_rank", f"only 1-D, 2-D and 3-D pooling are supported (input rank {ctx.rank(x)})")
    kernel = tuple(int(k) for k in ctx.attr(node, "kernel_shape"))
    strides = tuple(int(s) for s in ctx.attr(node, "strides", None) or (1, 1))
    dilations = tuple(int(d) for d in ctx.attr(node, "dilations", None) or (1, 1))
    if any(d != 1 for d in dilations):
        raise Unsupported(node, "pool_dilation", f"dilated pooling (dilations {list(dilations)}) "
                                                 f"is not supported")
    size = tuple(ctx.shape(x)[2:])
    pads = onnx_pads(ctx, node, size, kernel, strides, (1, 1))
    ceil_mode = bool(ctx.attr(node, "ceil_mode", 0))
    out = []
    for axis in (0, 1):
        head, padded = pads[axis], size[axis] + pads[axis] + pads[axis + 2]
        span = padded - kernel[axis]
        count = (math.ceil(span / strides[axis]) if ceil_mode else span // strides[axis]) + 1
        if ceil_mode and (count - 1) * strides[axis] >= size[axis] + head:
            count -= 1  # onnxruntime (like PyTorch) drops a window that starts in the end padding
        out.append(count)
    inferred = tuple(ctx.shape(node.output[0])[2:])
    if tuple(out) != inferred:
        raise Unsupported(node, "pool_ceil_mode",
                          f"ceil_mode output size is ambiguous: onnxruntime gives {out}, ONNX shape "
                          f"inference {list(inferred)}", "re-export with ceil_mode=0 and explicit pads")
    return PoolWindow(size, kernel, strides, pads, (out[0], out[1]))  # type: ignore[arg-type]


def _single_mirror_exact(size: int, kernel: int, stride: int, head: int, tail: int,
                         count: int) -> bool:
    """Whether mirroring (head, tail) cells at once (SYMMETRIC) copies only cells of the same window."""
    if head > size or tail > size:
        return False
    for i in range(count):
        start = i * stride - head
        cells = range(max(start, 0), min(start + kernel, size))
        for p in range(start, start + kernel):
            mirrored = -p - 1 if p < 0 else 2 * size - p - 1 if p >= size else p
            if mirrored not in cells:
                return False
    return True


def add_edge_pad(ctx, x: str, window: PoolWindow) -> str:
    """Pad NCHW `x` so that every padded cell repeats a cell of each window that reads it (max pooling)."""
    top, left, bottom, right = window.read_pads
    exact = all(_single_mirror_exact(window.size[a], window.kernel[a], window.strides[a], head, tail,
                                     window.out[a])
                for a, (head, tail) in enumerate(((top, bottom), (left, right))))
    remaining = [top, left, bottom, right]
    while any(remaining):
        # One mirror step when it is exact, else repeat the edge one cell at a time.
        step = remaining if exact else [min(p, 1) for p in remaining]
        n, c, h, w = ctx.shape(x)
        t, l, b, r = step
        paddings = np.array([[0, 0], [0, 0], [t, b], [l, r]], np.int32)
        out = ctx.new_activation(f"{x}/edge_padded", (n, c, h + t + b, w + l + r))
        ctx.add_op("MIRROR_PAD", [x, ctx.add_constant(f"{x}/edge_paddings", paddings)], [out],
                   MirrorPadAttrs("SYMMETRIC"))
        remaining = [p - s for p, s in zip(remaining, step)]
        x = out
    return x


# Ops whose every output value is >= 0 (besides the clamps relu.never_negative knows)
NON_NEGATIVE_OUTPUTS = frozenset({"LOGISTIC", "SOFTMAX", "EXP", "ABS"})


def _never_negative(graph: Graph, name: str) -> bool:
    producer = graph.producer(name)
    return never_negative(graph, name) or (producer is not None and producer.kind in NON_NEGATIVE_OUTPUTS)


def edge_pads_on_grid_minimum(graph: Graph) -> int:
    """After quantization: each edge MIRROR_PAD (SYMMETRIC, made by add_edge_pad, only in front of
    max pools) whose 8-bit input grid has the type's minimum as zero point becomes a PAD. PAD fills
    with the zero point, a value no cell of the grid is below, so every pool window's maximum stays
    the same (each window holds a real cell), and XNNPACK runs PAD. Returns how many changed."""
    consumers = graph.consumer_map()

    def feeds_max_pools(op: Op) -> bool:
        return all(c.kind == "MAX_POOL_2D" or (_edge_pad(c) and feeds_max_pools(c))
                   for c in consumers.get(op.outputs[0], [])) and op.outputs[0] not in graph.outputs

    changed = 0
    for op in graph.ops:
        if not _edge_pad(op) or not feeds_max_pools(op):
            continue
        t = graph.tensors[op.inputs[0]]
        quant = t.quant
        if quant is None or quant.is_per_channel or t.dtype.name not in ("INT8", "UINT8") or \
                int(quant.zero_point) != t.dtype.qmin:
            continue
        op.kind, op.attrs = "PAD", NoAttrs()
        changed += 1
    return changed


def max_pool_pads_as_same(graph: Graph, extend_convolutions: bool = True) -> int:
    """Each VALID MAX_POOL_2D behind the padding its importer made (PAD or edge MIRROR_PADs: every
    padded cell is at most the maximum of the real cells of each window that reads it) becomes a
    SAME MAX_POOL_2D without it, where SAME reads the same windows. SAME puts the smaller half of
    its padding first and never pads a window with more than the real cells' maximum (LiteRT
    skips padded cells; XNNPACK clamps them to the edge), so it fits where SAME's top/left padding
    equals ONNX's on a tensor made `extra` cells longer at the end: ResNet's 3x3/2 pool with pads
    1 on 112 rows is SAME on 113. The convolution that writes the pool's input computes the
    extra cells (`extend_convolutions`: its input padded further, which XNNPACK folds into it),
    no window ONNX has reads them, and a STRIDED_SLICE drops the windows SAME adds at the end.
    Without such a convolution, edge MIRROR_PADs become one PAD of those cells at the end.

    Why: XNNPACK fuses a PAD into a following convolution, never into a pool, and its PAD is a
    copy that costs 4x the pool (ResNet-18 int8: 0.14 ms for the 112x112x64 PAD, 0.03 ms for the
    pool; the extra row and column cost the 7x7 convolution 1.8% and the slice 6 us). Runs after
    quantization, so the extra cells never enter the statistics; on the grid they just saturate.
    Returns how many pools changed."""
    producers, consumers = graph.producers(), graph.consumer_map()
    changed = 0
    for pool in [op for op in graph.ops if op.kind == "MAX_POOL_2D" and op.attrs.padding == "VALID"]:
        chain, x = [], pool.inputs[0]
        while True:
            pad = producers.get(x)
            if pad is None or not pool.origin or pad.origin != pool.origin or \
                    not (pad.kind == "PAD" or _edge_pad(pad)) or x in graph.outputs or \
                    len(consumers.get(x, [])) != 1:
                break
            chain.append(pad)
            x = pad.inputs[0]
        if not chain:
            continue
        paddings = sum(graph.tensors[p.inputs[1]].data.astype(np.int64) for p in chain)
        if paddings[0].any() or paddings[3].any():
            continue
        attrs = pool.attrs
        kernel, strides = (attrs.filter_h, attrs.filter_w), (attrs.stride_h, attrs.stride_w)
        n, *size, c = graph.tensors[x].shape
        count = graph.tensors[pool.outputs[0]].shape[1:3]
        extra = [_same_extension(size[a], kernel[a], strides[a], int(paddings[a + 1, 0]), count[a])
                 for a in (0, 1)]
        if None in extra:
            continue
        pad_end = False
        if any(extra):
            conv = producers.get(x)
            if extend_convolutions and conv is not None and \
                    conv.kind in ("CONV_2D", "DEPTHWISE_CONV_2D") and x not in graph.outputs and \
                    len(consumers.get(x, [])) == 1:
                extend_convolution_output(graph, conv, (extra[0], extra[1]))
            elif all(p.kind == "PAD" for p in chain):
                continue  # a PAD at the end would cost what this one does
            else:
                pad_end = True  # a MIRROR_PAD, which XNNPACK does not take: a PAD instead
        for pad in chain:
            graph.remove_op(pad)
        if pad_end:
            # any value does in the added cells (no kept window reads them): PAD's zeros
            source = graph.tensors[x]
            longer = graph.add_activation(f"{x}/same_extension", source.dtype,
                                          (n, size[0] + extra[0], size[1] + extra[1], c), source.layout)
            graph.tensors[longer].quant = source.quant
            paddings = np.array([[0, 0], [0, extra[0]], [0, extra[1]], [0, 0]], np.int32)
            graph.insert_before(pool, Op("PAD", [x, graph.add_constant(f"{x}/paddings", paddings)],
                                         [longer], origin=pool.origin))
            x = longer
        pool.inputs[0] = x
        pool.replace_attrs(padding="SAME")
        same = tuple(-(-(size[a] + extra[a]) // strides[a]) for a in (0, 1))
        if same != tuple(count):
            out = graph.tensors[pool.outputs[0]]
            pooled = graph.add_activation(f"{out.name}/same_windows", out.dtype, (n, *same, c),
                                          out.layout)
            graph.tensors[pooled].quant = out.quant
            pool.outputs[0] = pooled
            bounds = [graph.add_constant(f"{out.name}/{what}", np.array(values, np.int32))
                      for what, values in (("begin", [0, 0, 0, 0]), ("end", list(out.shape)),
                                           ("strides", [1, 1, 1, 1]))]
            graph.insert_after(pool, Op("STRIDED_SLICE", [pooled, *bounds], [out.name],
                                        origin=pool.origin))
        changed += 1
    if changed:
        graph.remove_unused()
    return changed


EIGHT_BIT_CLAMPS = ("RELU", "RELU6", "RELU_N1_TO_1")


def clamps_as_max_pools(graph: Graph, delegated: frozenset[str]) -> int:
    """After quantization: each 4-D 8-bit RELU, RELU6 or RELU_N1_TO_1 (one no producer could fuse)
    between ops of `delegated` (the kinds XNNPACK runs in 8 bits, which has no 8-bit RELU: the
    graph splits around it onto LiteRT's builtin kernel) becomes a 1x1 MAX_POOL_2D with it as
    fused activation, which XNNPACK takes, after a QUANTIZE to the clamp's calibrated grid when
    that differs from the input's (XNNPACK takes an 8-bit QUANTIZE whose scale ratio is within
    [2^-8, 2^7]): the clamp's kernel requantizes and then clamps on its output grid, and so do
    these two (a bound such as 6 or 1 is rounded on the clamp's own grid, as before).
    Measured: a Conv/Concat/Relu/Conv toy model (56x56x64, int8) 2.45 -> 0.87 ms. Returns how many."""
    producers, consumers = graph.producers(), graph.consumer_map()
    changed = 0
    for op in [op for op in graph.ops if op.kind in EIGHT_BIT_CLAMPS]:
        x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
        if len(x.shape) != 4 or x.dtype != y.dtype or x.dtype.name not in ("INT8", "UINT8") or \
                x.quant is None or y.quant is None or x.quant.is_per_channel or y.quant.is_per_channel:
            continue
        producer = producers.get(x.name)
        readers = consumers.get(y.name, [])
        if producer is None or producer.kind not in delegated or producer.kind == "QUANTIZE" or \
                not any(r.kind in delegated and r.kind != "DEQUANTIZE" for r in readers):
            continue  # at the graph's edge the split costs a partition of one op
        ratio = float(x.quant.scale) / float(y.quant.scale)
        same_grid = x.quant == y.quant
        if not same_grid and not 2.0 ** -8 <= ratio <= 2.0 ** 7:
            continue
        source = x.name
        if not same_grid:
            source = graph.add_activation(f"{y.name}/requantized", y.dtype, y.shape, y.layout)
            graph.tensors[source].quant = y.quant
            graph.insert_before(op, Op("QUANTIZE", [x.name], [source], origin=op.origin))
        index = graph.ops.index(op)
        graph.remove_op(op)
        graph.add_op(Op("MAX_POOL_2D", [source], [y.name], PoolAttrs(fused_activation=op.kind),
                        op.origin), index)
        changed += 1
    return changed


# XNNPACK's 8-bit depthwise convolution is fast up to this many window cells and ~10x slower
# beyond (measured, 256 channels int8, one thread: 5x5 0.044 ms against the pool's 0.066; 6x6 1.43
# against 0.10; MobileNetV2's 7x7 global pool 12.7 ms for the model against 7.5)
DEPTHWISE_FAST_TAPS = 25


def average_pools_as_depthwise(graph: Graph, delegated: frozenset[str],
                                kept_float: frozenset[str] = frozenset()) -> int:
    """After quantization, where the default delegate (`delegated`: the kinds XNNPACK runs in 8
    bits) has no 8-bit AVERAGE_POOL_2D but runs DEPTHWISE_CONV_2D: each average pool that reads no
    padding (VALID, or SAME that pads nothing; count_include_pad=1 pools are a zero PAD and a VALID
    pool, which XNNPACK then folds into the convolution) becomes a depthwise convolution whose
    weights are all 1/(kh*kw), with no bias. Two forms: an 8-bit pool (LiteRT splits the graph
    around it onto its builtin kernel), and a float pool between a DEQUANTIZE and a QUANTIZE of
    8-bit tensors (what planning for --target xnnpack keeps float), unless --float-ops named it
    (`kept_float`: node names).

    Exact on the grid: the weight's scale is 1/(q*kh*kw) with q = 127 (int8) or 255 (uint8), so
    every weight is exactly q steps; the accumulator is q times the window's sum of (input - zero
    point), which the requantization scale s_in/(q*kh*kw*s_out) turns into the window mean on the
    output grid, rounded once, as the pool's own kernel does (both within half a step of the
    mean; they can differ on a tie). Measured: a Conv/AveragePool/Conv toy model (28x28x32,
    int8) runs 0.61 -> 0.44 ms in one partition instead of two.

    Windows of more than DEPTHWISE_FAST_TAPS cells stay pools, except a global pool (one window
    over the whole input, as a 7x7 AveragePool ends MobileNetV2 or ResNet exported that way): a
    MEAN over the spatial axes, which XNNPACK runs in 8 bits, requantizing s_in/(s_out*cells),
    rounded once. Returns how many changed."""
    if "AVERAGE_POOL_2D" in delegated or "DEPTHWISE_CONV_2D" not in delegated:
        return 0
    producers, consumers = graph.producers(), graph.consumer_map()
    changed = 0
    for pool in [op for op in graph.ops if op.kind == "AVERAGE_POOL_2D"]:
        attrs = pool.attrs
        x, y = graph.tensors[pool.inputs[0]], graph.tensors[pool.outputs[0]]
        as_mean = attrs.filter_h * attrs.filter_w > DEPTHWISE_FAST_TAPS
        if as_mean and ("MEAN" not in delegated or y.shape[1:3] != (1, 1) or
                        x.shape[1:3] != (attrs.filter_h, attrs.filter_w) or
                        attrs.fused_activation != "NONE"):
            continue  # (a global pool: one window over the whole input; MEAN fuses no clamp)
        if attrs.padding == "SAME" and any(
                same_padding(x.shape[1 + a], (attrs.filter_h, attrs.filter_w)[a],
                             (attrs.stride_h, attrs.stride_w)[a], 1) != (0, 0) for a in (0, 1)):
            continue  # SAME divides border windows by their real cells: no fixed weight does that
        source, target, remove = x, y, [pool]
        if x.dtype.is_float:  # DEQUANTIZE -> float pool -> QUANTIZE
            dequantize = producers.get(x.name)
            readers = consumers.get(y.name, [])
            if pool.origin in kept_float or dequantize is None or dequantize.kind != "DEQUANTIZE" or \
                    len(readers) != 1 or readers[0].kind != "QUANTIZE" or y.name in graph.outputs:
                continue
            source, target = graph.tensors[dequantize.inputs[0]], graph.tensors[readers[0].outputs[0]]
            remove.append(readers[0])
            if len(consumers.get(x.name, [])) == 1 and x.name not in graph.outputs:
                remove.append(dequantize)
        if source.dtype.name not in ("INT8", "UINT8") or target.dtype != source.dtype or \
                source.quant is None or target.quant is None or source.quant.is_per_channel or \
                target.quant.is_per_channel or source.shape != x.shape or target.shape != y.shape:
            continue
        positions = [graph.ops.index(op) for op in remove]  # in at the last one's place
        index = max(positions) - len(positions) + 1
        for op in remove:
            graph.remove_op(op)
        changed += 1
        if as_mean:  # requantized by MEAN's kernel: s_in / (s_out * cells), one rounding
            axes = graph.add_constant(f"{pool.outputs[0]}/mean_axes", np.array([1, 2], np.int32))
            graph.add_op(Op("MEAN", [source.name, axes], [target.name], ReducerAttrs(keep_dims=True),
                            pool.origin), index)
            continue
        channels, window = x.shape[3], attrs.filter_h * attrs.filter_w
        steps = source.dtype.qmax
        weight_scale = np.float32(1.0 / (steps * window))
        bias_scale = np.float32(float(source.quant.scale) * float(weight_scale))
        weights = graph.add_constant(f"{pool.outputs[0]}/mean_weights",
                                     np.full((1, attrs.filter_h, attrs.filter_w, channels), steps),
                                     source.dtype)
        bias = graph.add_constant(f"{pool.outputs[0]}/mean_bias", np.zeros(channels, np.int32), DType.INT32)
        if source.dtype == DType.INT8:  # per channel, as the depthwise filters tflq writes (1HWO)
            graph.tensors[weights].quant = QuantParams.per_channel(
                DType.INT8, np.full(channels, weight_scale), np.zeros(channels), axis=3)
            graph.tensors[bias].quant = QuantParams.per_channel(
                DType.INT32, np.full(channels, bias_scale), np.zeros(channels), axis=0)
        else:
            graph.tensors[weights].quant = QuantParams.per_tensor(DType.UINT8, weight_scale, 0)
            graph.tensors[bias].quant = QuantParams.per_tensor(DType.INT32, bias_scale, 0)
        conv_attrs = DepthwiseConvAttrs("VALID", attrs.stride_h, attrs.stride_w,
                                        fused_activation=attrs.fused_activation)
        graph.add_op(Op("DEPTHWISE_CONV_2D", [source.name, weights, bias], [target.name], conv_attrs,
                        pool.origin), index)
    if changed:
        graph.remove_unused()
    return changed


def _same_extension(size: int, kernel: int, stride: int, top: int, count: int) -> int | None:
    """How many cells to add at the end of an axis of `size` cells so that SAME padding starts
    `count` windows where ONNX's do (`top` cells before the first) and none of them reads an
    added cell (with none added, SAME clamps where ONNX reads its end padding: the same cells).
    None: no such length (SAME's first padding is at most half of kernel - 1)."""
    reach = (count - 1) * stride - top + kernel  # one past the last cell ONNX's windows read
    for extra in range(stride):
        longer = size + extra
        if same_padding(longer, kernel, stride, 1)[0] == top and -(-longer // stride) >= count \
                and (extra == 0 or reach <= size):
            return extra
    return None


def add_same_windows(ctx, kind: str, x: str, out: str, window: PoolWindow) -> bool:
    """Pool NCHW `x` into `out` with SAME padding where SAME starts ONNX's windows at ONNX's
    positions on `x` made some cells longer at the end (a PAD no kept window reads: its zeros
    only enter the windows SAME adds at the end, which a STRIDED_SLICE drops). SAME skips the
    cells outside the tensor, so each kept window holds exactly ONNX's real cells: their maximum,
    or their mean over their count (AveragePool with count_include_pad=0). False: no such length."""
    top, left = window.read_pads[:2]
    extra = [_same_extension(window.size[a], window.kernel[a], window.strides[a], (top, left)[a],
                             window.out[a]) for a in (0, 1)]
    if None in extra:
        return False
    if any(extra):
        x = add_explicit_pad(ctx, x, (0, 0, extra[0], extra[1]))
    n, c = ctx.shape(x)[:2]
    same = tuple(-(-(window.size[a] + extra[a]) // window.strides[a]) for a in (0, 1))
    if same == window.out:
        ctx.add_op(kind, [x], [out], window.attrs("SAME"))
        return True
    pooled = ctx.new_activation(f"{out}/same_windows", (n, c) + same)
    ctx.add_op(kind, [x], [pooled], window.attrs("SAME"))
    add_slice(ctx, pooled, out, [0, 0, 0, 0], [n, c, *window.out], [1, 1, 1, 1])
    return True


def _edge_pad(op: Op) -> bool:
    return op.kind == "MIRROR_PAD" and op.attrs.mode == "SYMMETRIC"


def average_pool_divisor(window: PoolWindow, count_include_pad: bool) -> np.ndarray:
    """What onnxruntime divides each window's sum by: real cells, or cells inside the explicit padding."""
    per_axis = []
    for a in (0, 1):
        starts = np.arange(window.out[a]) * window.strides[a] - window.pads[a]
        ends = starts + window.kernel[a]
        if count_include_pad:
            counts = np.minimum(ends, window.size[a] + window.pads[a + 2]) - starts
        else:
            counts = np.minimum(ends, window.size[a]) - np.maximum(starts, 0)
        per_axis.append(counts.astype(np.float64))
    return np.outer(per_axis[0], per_axis[1])


def _pool_version(op: Op, graph: Graph) -> int:
    dtype = graph.tensors[op.inputs[0]].dtype.name
    return 3 if dtype == "INT16" else 2 if dtype == "INT8" else 1


def _pool_case(name: str, op_type: str, shape=(1, 3, 8, 8), low: float = -1.0, high: float = 1.0,
               float_parts: bool = False, **attrs) -> Case:
    return Case(name, [helper.make_node(op_type, ["x"], ["y"], **attrs)],
                {"x": rand(*shape, low=low, high=high)}, float_parts=float_parts)


LP_POOL_L2_CASES = [
    _pool_case("lp_pool_l2_3x3_stride2_pads1", "LpPool", (1, 3, 9, 9), low=-2.0, high=2.0,
               kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    one_d_case(_pool_case("lp_pool_l2_1d_k4", "LpPool", (2, 3, 12), low=-2.0, high=2.0,
                          kernel_shape=[4], strides=[2])),
    volume_case(_pool_case("lp_pool_l2_3d_2x2x2", "LpPool", (1, 2, 4, 6, 6), low=-2.0, high=2.0,
                           kernel_shape=[2, 2, 2], strides=[2, 2, 2]), quant_steps=4.0),
]


def _conv_fed_case(name: str, shape, weight_shape, pads) -> Case:
    """Conv (zero pads 1 on every side) then a k3/s2 MaxPool with `pads` of data that may be negative."""
    spatial = len(shape) - 2
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 2 * spatial),
             helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[3] * spatial,
                              strides=[2] * spatial, pads=pads)]
    return Case(name, nodes, {"x": rand(*shape)}, {"w": rand(*weight_shape, seed=1)},
                emits=("CONV_2D", "MAX_POOL_2D", "STRIDED_SLICE"))


class _Pool(OpSpec):
    Attrs = PoolAttrs
    layout = ChannelsLast()
    quant = SameAsInput()  # the u8/i8 kernels need equal input and output parameters
    fused_activation = FusedActivations()  # pooling.cc: clamps only

    def options(self, attrs: PoolAttrs):
        return Pool2DOptionsT(padding=padding_code(attrs.padding), strideW=attrs.stride_w,
                              strideH=attrs.stride_h, filterWidth=attrs.filter_w,
                              filterHeight=attrs.filter_h,
                              fusedActivationFunction=activation_code(attrs.fused_activation))

    def version(self, op: Op, graph: Graph) -> int:
        return _pool_version(op, graph)


@register
class MaxPool2D(_Pool):
    """ONNX MaxPool (2-D, no dilation, no Indices output)."""

    kind = "MAX_POOL_2D"
    quant = SameAsInput(dtypes=WITH_INT16, moves_values=True)
    positively_homogeneous = True
    onnx_types = ("MaxPool",)
    onnx_checks = (Arity(inputs=(1, 1), max_outputs=2), IntAttr(name="ceil_mode", min=0, max=1),
                   IntAttr(name="storage_order", min=0, max=1), *window_checks(weight=None))
    cases = [
        _pool_case("2x2_stride2", "MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        _pool_case("3x3_stride2_pads1", "MaxPool", (1, 4, 12, 12), kernel_shape=[3, 3], strides=[2, 2],
                   pads=[1, 1, 1, 1]),
        _pool_case("pads1_all_negative", "MaxPool", low=-2.0, high=-1.0, kernel_shape=[3, 3],
                   strides=[2, 2], pads=[1, 1, 1, 1]),
        _pool_case("same_upper", "MaxPool", (1, 2, 9, 9), kernel_shape=[3, 3], strides=[2, 2],
                   auto_pad="SAME_UPPER"),
        _pool_case("pads_equal_same", "MaxPool", (1, 2, 7, 7), kernel_shape=[2, 2], strides=[2, 2],
                   pads=[0, 0, 1, 1]),
        _pool_case("ceil_mode", "MaxPool", (1, 2, 8, 8), low=-2.0, high=-1.0, kernel_shape=[3, 3],
                   strides=[2, 2], ceil_mode=1),
        _pool_case("ceil_mode_pads1", "MaxPool", (1, 2, 8, 8), low=-2.0, high=-1.0, kernel_shape=[3, 3],
                   strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
        _pool_case("pads2_stride1", "MaxPool", (1, 2, 6, 7), low=-2.0, high=-1.0, kernel_shape=[3, 3],
                   pads=[2, 1, 2, 2]),
        one_d_case(_pool_case("1d_k3_s2_pads1", "MaxPool", (1, 3, 15), low=-2.0, high=-1.0,
                              kernel_shape=[3], strides=[2], pads=[1, 1])),
        # ResNet's stem: after a ReLU the padding is a zero PAD (which XNNPACK runs)
        Case("relu_pads1_stride2", [helper.make_node("Relu", ["x"], ["r"]),
                                    helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3, 3],
                                                     strides=[2, 2], pads=[1, 1, 1, 1])],
             {"x": rand(1, 3, 10, 10)}),
        # SAME reads these windows, and one more at the end that a STRIDED_SLICE drops
        Case("top_left_pads_same_windows",
             [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                               pads=[1, 1, 0, 0])],
             {"x": rand(1, 3, 9, 9, low=-2.0, high=-1.0)}, emits=("MAX_POOL_2D", "STRIDED_SLICE")),
        # a convolution writes the pool's input: it computes one more row and column, SAME on 13
        _conv_fed_case("after_conv_pads1_stride2", (1, 3, 12, 12), (4, 3, 3, 3), [1, 1, 1, 1]),
        one_d_case(_conv_fed_case("1d_after_conv_pads1_stride2", (1, 3, 16), (4, 3, 3), [1, 1])),
        # 3-D (volume.py): U-Net's 2x2x2/2, C3D's spatial-only 1x3x3 and its padded pool5, ceil_mode,
        # a temporal-only 3x1x1/2 window
        volume_case(_pool_case("3d_2x2x2_stride2", "MaxPool", (1, 3, 4, 6, 6), kernel_shape=[2, 2, 2],
                               strides=[2, 2, 2])),
        volume_case(_pool_case("3d_1x3x3_stride122_pads011", "MaxPool", (1, 2, 3, 8, 8), low=-2.0,
                               high=-1.0, kernel_shape=[1, 3, 3], strides=[1, 2, 2],
                               pads=[0, 1, 1, 0, 1, 1])),
        volume_case(_pool_case("3d_pads011", "MaxPool", (1, 2, 2, 7, 7), kernel_shape=[2, 2, 2],
                               strides=[2, 2, 2], pads=[0, 1, 1, 0, 1, 1])),
        volume_case(_pool_case("3d_ceil_mode", "MaxPool", (1, 2, 3, 7, 7), kernel_shape=[2, 2, 2],
                               strides=[2, 2, 2], ceil_mode=1)),
        volume_case(_pool_case("3d_temporal_3x1x1", "MaxPool", (2, 2, 7, 3, 4), low=-2.0, high=-1.0,
                               kernel_shape=[3, 1, 1], strides=[2, 1, 1], pads=[1, 0, 0, 1, 0, 0])),
    ]

    def from_onnx(self, node, ctx) -> None:
        if ctx.rank(node.input[0]) == 3:
            return import_as_2d(self, node, ctx)
        if ctx.rank(node.input[0]) == 5:
            from tflq.ops.volume import import_pool_3d

            return import_pool_3d(self, node, ctx)
        if len(node.output) > 1 and node.output[1]:
            raise Unsupported(node, "maxpool_indices", "MaxPool's Indices output is not supported")
        window = pool_window(node, ctx)
        x, padding = node.input[0], window.tflite_padding()
        if padding is None and _never_negative(ctx.graph, ctx.tensor(x)):
            x, padding = add_explicit_pad(ctx, x, window.read_pads), "VALID"
        elif padding is None:
            x, padding = add_edge_pad(ctx, x, window), "VALID"
        ctx.add_op(self.kind, [x], [node.output[0]], window.attrs(padding))

    def reference(self, x, *, padding, stride_h, stride_w, filter_h, filter_w):
        kernel, strides = (filter_h, filter_w), (stride_h, stride_w)
        x = pad_nhwc(x, kernel, strides, (1, 1), padding, value=-np.inf)
        return (_window_reduce(np.maximum, x, kernel, strides).astype(np.float32, copy=False),)


@register
class AveragePool2D(_Pool):
    """ONNX AveragePool (2-D, no dilation), count_include_pad 0 or 1."""

    kind = "AVERAGE_POOL_2D"
    quant = SameAsInput(dtypes=WITH_INT16)
    positively_homogeneous = True

    def keeps_channel_means(self, op: Op, graph: Graph) -> bool:
        return True  # (the padded border aside)
    onnx_types = ("AveragePool", "LpPool")
    onnx_checks = (Arity(inputs=(1, 1)), IntAttr(name="ceil_mode", min=0, max=1),
                   IntAttr(name="count_include_pad", min=0, max=1), *window_checks(weight=None))
    cases = [
        _pool_case("2x2_stride2", "AveragePool", kernel_shape=[2, 2], strides=[2, 2]),
        _pool_case("same_upper_exclude_pad", "AveragePool", (1, 2, 9, 9), kernel_shape=[3, 3],
                   strides=[2, 2], auto_pad="SAME_UPPER"),
        _pool_case("pads1_include_pad", "AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                   count_include_pad=1),
        _pool_case("pads1_exclude_pad", "AveragePool", kernel_shape=[3, 3], strides=[2, 2],
                   pads=[1, 1, 1, 1]),
        _pool_case("ceil_mode_include_pad", "AveragePool", (1, 2, 8, 8), kernel_shape=[3, 3],
                   strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
        _pool_case("ceil_mode_exclude_pad", "AveragePool", (1, 2, 8, 8), kernel_shape=[3, 3],
                   strides=[2, 2], ceil_mode=1),
        one_d_case(_pool_case("1d_k3_pads1_exclude_pad", "AveragePool", (2, 3, 12), kernel_shape=[3],
                              pads=[1, 1])),
        # (H, W) then D (volume.py): two roundings of the mean, SameAsInput's 2 steps plus one each
        volume_case(_pool_case("3d_2x2x2_stride2", "AveragePool", (1, 3, 4, 6, 6),
                               kernel_shape=[2, 2, 2], strides=[2, 2, 2]), quant_steps=4.0),
        volume_case(_pool_case("3d_pads1_exclude_pad", "AveragePool", (1, 2, 5, 6, 6),
                               kernel_shape=[3, 3, 3], strides=[2, 2, 2], pads=[1] * 6), quant_steps=4.0),
        volume_case(_pool_case("3d_pads1_include_pad", "AveragePool", (1, 2, 4, 5, 5),
                               kernel_shape=[3, 3, 3], pads=[1] * 6, count_include_pad=1),
                    quant_steps=4.0),
        volume_case(_pool_case("3d_same_upper_temporal", "AveragePool", (1, 3, 5, 4, 4),
                               kernel_shape=[2, 1, 1], strides=[2, 1, 1], auto_pad="SAME_UPPER")),
        # (LpPool p=2 ends in SQRT: its cases are the SQRT spec's, LP_POOL_L2_CASES)
        _pool_case("lp_pool_l1_2x2", "LpPool", (1, 2, 8, 8), low=-2.0, high=2.0, kernel_shape=[2, 2],
                   strides=[2, 2], p=1, float_parts=True),
        _pool_case("lp_pool_l1_3x3_stride2_pads1", "LpPool", (1, 2, 8, 8), low=-2.0, high=2.0,
                   kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], p=1, float_parts=True),
        # the p-norm of the (H, W) stage's p-norms over D is the window's p-norm
        volume_case(_pool_case("lp_pool_l1_3d_2x2x2", "LpPool", (1, 2, 4, 6, 6), low=-2.0, high=2.0,
                               kernel_shape=[2, 2, 2], strides=[2, 2, 2], p=1, float_parts=True),
                    quant_steps=4.0),
    ]

    def from_onnx(self, node, ctx) -> None:
        if ctx.rank(node.input[0]) == 3:
            return import_as_2d(self, node, ctx)
        if ctx.rank(node.input[0]) == 5:
            from tflq.ops.volume import import_pool_3d

            return import_pool_3d(self, node, ctx)
        window = pool_window(node, ctx)
        if node.op_type == "LpPool":
            return self._lp_pool(node, ctx, window)
        include_pad = bool(ctx.attr(node, "count_include_pad", 0))
        padding = window.tflite_padding()
        if padding == "VALID" or (padding == "SAME" and not include_pad):
            ctx.add_op(self.kind, [node.input[0]], [node.output[0]], window.attrs(padding))
            return
        if not include_pad and add_same_windows(ctx, self.kind, node.input[0], node.output[0], window):
            return
        padded = add_explicit_pad(ctx, node.input[0], window.read_pads)
        factor = window.kernel[0] * window.kernel[1] / average_pool_divisor(window, include_pad)
        if np.allclose(factor, 1.0):
            ctx.add_op(self.kind, [padded], [node.output[0]], window.attrs("VALID"))
            return
        n, c = ctx.shape(node.input[0])[:2]
        pooled = ctx.new_activation(f"{node.output[0]}/window_mean", (n, c) + window.out)
        ctx.add_op(self.kind, [padded], [pooled], window.attrs("VALID"))
        rescale = ctx.add_constant(f"{node.name}/divisor_fix", factor.reshape((1, 1) + window.out)
                                   .astype(np.float32))
        ctx.add_op("MUL", [pooled, rescale], [node.output[0]])

    def _lp_pool(self, node, ctx, window: PoolWindow) -> None:
        """ONNX LpPool, p=1 or 2: each window's sum of |x|^p, to the power 1/p. Padded cells add
        nothing, so it is the mean of the terms over the whole window on a zero-padded input (a
        VALID AVERAGE_POOL_2D), times the window's size: kh*kw*AVG(ABS(x)), or
        SQRT(kh*kw*AVG(x*x)). Other p would need POW of arbitrary order on both sides, which only
        runs in float in LiteRT and loses exactness near 0: refused."""
        p = int(ctx.attr(node, "p", 2))
        if p not in (1, 2):
            raise Unsupported(node, "lp_order", f"LpPool with p={p} is not supported (p=1 and p=2 are)")
        x, out = node.input[0], node.output[0]
        n, c = ctx.shape(x)[:2]
        terms = ctx.new_activation(f"{out}/{'abs' if p == 1 else 'square'}", ctx.shape(x))
        ctx.add_op("ABS" if p == 1 else "MUL", [x] if p == 1 else [x, x], [terms])
        padded = add_explicit_pad(ctx, terms, window.read_pads) if any(window.read_pads) else terms
        mean = ctx.new_activation(f"{out}/window_mean", (n, c) + window.out)
        ctx.add_op(self.kind, [padded], [mean], window.attrs("VALID"))
        size = ctx.add_constant(f"{node.name or out}/window_size",
                                np.array(window.kernel[0] * window.kernel[1], np.float32))
        total = out if p == 1 else ctx.new_activation(f"{out}/window_sum", (n, c) + window.out)
        ctx.add_op("MUL", [mean, size], [total])
        if p == 2:
            ctx.add_op("SQRT", [total], [out])

    def reference(self, x, *, padding, stride_h, stride_w, filter_h, filter_w):
        kernel, strides = (filter_h, filter_w), (stride_h, stride_w)

        def window_sums(values: np.ndarray) -> np.ndarray:
            padded = pad_nhwc(values, kernel, strides, (1, 1), padding)
            return _window_reduce(np.add, padded, kernel, strides)

        counts = window_sums(np.ones((1,) + x.shape[1:3] + (1,), np.float32))  # SAME: real cells only
        sums = window_sums(x)
        sums /= counts
        return (sums.astype(np.float32, copy=False),)


def _window_reduce(ufunc, x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int]) -> np.ndarray:
    """ufunc folded over each KHxKW window of a padded NHWC array, one strided pass per window cell
    (a reduction over the window axes of the as_strided view is several times slower)."""
    win = windows(x, kernel, strides, (1, 1))
    result = win[:, :, :, 0, 0, :].copy()
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            if i or j:
                ufunc(result, win[:, :, :, i, j, :], out=result)
    return result
