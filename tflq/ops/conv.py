"""CONV_2D and DEPTHWISE_CONV_2D: ONNX Conv (plain, grouped, depthwise, dilated, padded)."""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.Conv2DOptions import Conv2DOptionsT
from tflq._generated.tflite.DepthwiseConv2DOptions import DepthwiseConv2DOptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import (WITH_INT16, Calibrated, Case, ChannelsLast, FusedActivations, Int32Bias,
                           OpSpec, Weight, rand)
from tflq.ops.checks import Arity, ConstantValues, InputTypes, IntAttr, window_checks
from tflq.ops.common import (activation_code, choose_padding, onnx_pads, pad_nhwc, padding_code,
                             read_pads, same_padding, windows)
from tflq.ops.one_d import import_as_2d, one_d_case
from tflq.ops.pad import add_explicit_pad


def extend_convolution_output(graph: Graph, conv: Op, extra: tuple[int, int]) -> None:
    """Make `conv` (CONV_2D or DEPTHWISE_CONV_2D, NHWC) compute `extra` (rows, columns) more
    output cells at the bottom and right. Its input is zero-padded further there (its own PAD,
    or a new one, with the convolution VALID: XNNPACK folds such a PAD into the convolution), so
    every existing output cell reads the same input cells and keeps its value; the new cells
    read the end padding and hold whatever that gives."""
    x, out = conv.inputs[0], conv.outputs[0]
    attrs = conv.attrs
    kernel = graph.tensors[conv.inputs[1]].shape[1:3]  # OHWI and 1HWO filters alike
    strides, dilations = (attrs.stride_h, attrs.stride_w), (attrs.dilation_h, attrs.dilation_w)
    own_pad = graph.producer(x)
    if own_pad is not None and own_pad.kind == "PAD" and own_pad.origin == conv.origin and \
            x not in graph.outputs and len(graph.consumers(x)) == 1:
        source = own_pad.inputs[0]
        paddings = graph.tensors[own_pad.inputs[1]].data.astype(np.int64)
    else:
        own_pad, source = None, x
        paddings = np.zeros((4, 2), np.int64)
        if attrs.padding == "SAME":
            for a in (0, 1):
                paddings[a + 1] = same_padding(graph.tensors[x].shape[a + 1], kernel[a], strides[a],
                                               dilations[a])
    n, h, w, c = graph.tensors[out].shape
    rows = (h, w)
    for a in (0, 1):
        if extra[a]:
            effective = (kernel[a] - 1) * dilations[a] + 1
            needed = (rows[a] + extra[a] - 1) * strides[a] + effective
            paddings[a + 1, 1] = needed - graph.tensors[source].shape[a + 1] - paddings[a + 1, 0]
    source_tensor = graph.tensors[source]
    padded_shape = tuple(int(d + p.sum()) for d, p in zip(source_tensor.shape, paddings))
    constant = graph.add_constant(f"{source}/paddings", paddings.astype(np.int32))
    if own_pad is not None:
        own_pad.inputs[1] = constant
        graph.tensors[x].shape = padded_shape
    else:
        padded = graph.add_activation(f"{source}/padded", source_tensor.dtype, padded_shape,
                                      source_tensor.layout)
        graph.tensors[padded].quant = source_tensor.quant
        graph.insert_before(conv, Op("PAD", [source, constant], [padded], origin=conv.origin))
        conv.inputs[0] = padded
        conv.replace_attrs(padding="VALID")
    graph.tensors[out].shape = (n, h + extra[0], w + extra[1], c)


@dataclass(frozen=True)
class ConvAttrs:
    padding: str = "VALID"
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    fused_activation: str = "NONE"


@dataclass(frozen=True)
class DepthwiseConvAttrs(ConvAttrs):
    depth_multiplier: int = 1


def _is_hybrid(graph: Graph, op: Op) -> bool:
    return graph.tensors[op.inputs[0]].dtype.is_float and not graph.tensors[op.inputs[1]].dtype.is_float


def _per_channel(graph: Graph, name: str) -> bool:
    quant = graph.tensors[name].quant
    return quant is not None and quant.is_per_channel


def _conv_case(name: str, x_shape, w_shape, seed: int = 0, bias: bool = True, **attrs) -> Case:
    consts = {"w": rand(*w_shape, seed=seed + 1, low=-0.5, high=0.5)}
    inputs = ["x", "w"]
    if bias:
        consts["b"] = rand(w_shape[0], seed=seed + 2, low=-0.2, high=0.2)
        inputs.append("b")
    return Case(name, [helper.make_node("Conv", inputs, ["y"], **attrs)],
                {"x": rand(*x_shape, seed=seed)}, consts)


@register
class Conv2D(OpSpec):
    """ONNX Conv. Filters are written OHWI; depthwise groups become DEPTHWISE_CONV_2D."""

    kind = "CONV_2D"
    onnx_types = ("Conv",)
    onnx_checks = (Arity(inputs=(2, 3)), IntAttr(name="group", min=1), *window_checks(weight=1, bias=2),
                   InputTypes(index=1), ConstantValues(index=1, what="weights"),
                   ConstantValues(index=2, what="bias"))
    Attrs = ConvAttrs
    layout = ChannelsLast()
    quant = Calibrated(dtypes=WITH_INT16)
    weights = (Weight(1, axis=0, hybrid=True, input_axis=3),)  # OHWI
    bias = Int32Bias(2)
    fused_activation = FusedActivations()  # conv.cc: clamps only
    cases = [
        _conv_case("3x3_pad1", (1, 3, 8, 8), (4, 3, 3, 3), pads=[1, 1, 1, 1]),
        _conv_case("stride2_same", (1, 4, 9, 9), (6, 4, 3, 3), strides=[2, 2], auto_pad="SAME_UPPER"),
        _conv_case("1x1_no_bias", (1, 8, 5, 5), (4, 8, 1, 1), bias=False),
        _conv_case("dilated", (1, 3, 10, 10), (5, 3, 3, 3), dilations=[2, 2], pads=[2, 2, 2, 2]),
        _conv_case("asymmetric_pads", (1, 3, 7, 7), (4, 3, 3, 3), pads=[0, 1, 2, 1]),
        _conv_case("grouped", (1, 4, 6, 6), (8, 2, 3, 3), group=2, pads=[1, 1, 1, 1]),
        _conv_case("5x5_stride2_valid", (2, 3, 11, 11), (4, 3, 5, 5), strides=[2, 2]),
        one_d_case(_conv_case("1d_k5_pads2", (1, 4, 20), (6, 4, 5), pads=[2, 2])),
        one_d_case(_conv_case("1d_stride2_dilated", (2, 3, 23), (5, 3, 3), strides=[2], dilations=[2],
                              pads=[2, 1])),
        one_d_case(_conv_case("1d_grouped_same", (1, 4, 15), (8, 2, 3), group=2, auto_pad="SAME_UPPER")),
    ]

    def acts_on_rows(self, op: Op, graph: Graph) -> bool:
        """A 1x1 filter at stride 1 (padding is none for it either way) is a matrix product of each
        pixel's channels: YOLOv8's DFL reads a softmax over bins this way."""
        weights = graph.tensors[op.inputs[1]]
        return weights.rank == 4 and weights.shape[1:3] == (1, 1) and \
            (op.attrs.stride_h, op.attrs.stride_w) == (1, 1)

    def from_onnx(self, node, ctx) -> None:
        x, w_name = node.input[0], node.input[1]
        if ctx.rank(x) == 3:
            return import_as_2d(self, node, ctx, weight_inputs=(1,))
        if ctx.rank(x) == 5:
            from tflq.ops.conv3d import import_conv_3d

            return import_conv_3d(node, ctx)
        if ctx.rank(x) != 4:
            raise Unsupported(node, "conv_rank", f"only 1-D, 2-D and 3-D convolution are supported "
                                                 f"(input rank {ctx.rank(x)})")
        w = ctx.require_constant(node, 1, "weights")
        b = ctx.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if len(node.input) > 2 and node.input[2] and b is None:
            raise Unsupported(node, "non_constant_input", "input 2 (bias) must be a constant")
        _, cin, h, wd = ctx.shape(x)
        cout, cin_group, kh, kw = w.shape
        group = int(ctx.attr(node, "group", 1))
        strides = tuple(ctx.attr(node, "strides", [1, 1]))
        dilations = tuple(ctx.attr(node, "dilations", [1, 1]))
        pads = read_pads((h, wd), (kh, kw), strides, dilations,
                         onnx_pads(ctx, node, (h, wd), (kh, kw), strides, dilations))
        bias = np.zeros(cout, np.float32) if b is None else b.astype(np.float32)
        padding = choose_padding((h, wd), (kh, kw), strides, dilations, pads)
        if padding is None:
            x = add_explicit_pad(ctx, x, pads)
            padding = "VALID"
        common = dict(padding=padding, stride_h=strides[0], stride_w=strides[1],
                      dilation_h=dilations[0], dilation_w=dilations[1])
        w_name = node.input[1]
        if group == 1:
            filt = ctx.add_constant(f"{w_name}/ohwi", w.transpose(0, 2, 3, 1))
            ctx.add_op("CONV_2D", [x, filt, ctx.add_constant(f"{node.name}/bias", bias)],
                       [node.output[0]], ConvAttrs(**common))
        elif group == cin and cin_group == 1:
            filt = ctx.add_constant(f"{w_name}/1hwo", w.transpose(1, 2, 3, 0))
            ctx.add_op("DEPTHWISE_CONV_2D", [x, filt, ctx.add_constant(f"{node.name}/bias", bias)],
                       [node.output[0]], DepthwiseConvAttrs(**common, depth_multiplier=cout // cin))
        else:
            filt = ctx.add_constant(f"{w_name}/ohwi", w.transpose(0, 2, 3, 1))
            ctx.add_op("CONV_2D", [x, filt, ctx.add_constant(f"{node.name}/bias", bias)],
                       [node.output[0]], ConvAttrs(**common))

    def matmul_rows(self, x, weight_shape, attrs):
        kernel = tuple(weight_shape[1:3])
        strides, dilations = (attrs.stride_h, attrs.stride_w), (attrs.dilation_h, attrs.dilation_w)
        if x.shape[3] != weight_shape[3]:
            return None  # grouped: not one product
        win = windows(pad_nhwc(x, kernel, strides, dilations, attrs.padding), kernel, strides, dilations)
        return win.reshape(1, -1, kernel[0] * kernel[1] * weight_shape[3])

    def reference(self, x, w, b=None, *, padding, stride_h, stride_w, dilation_h, dilation_w):
        # 2-D GEMMs: im2col rows [N*OH*OW, KH*KW*C] times the filter as a [KH*KW*C, O] matrix.
        # numpy's matmul of a 4-D array by a matrix is a stack of small GEMMs, one per image
        # row, measurably slower.
        strides, dilations, kernel = (stride_h, stride_w), (dilation_h, dilation_w), w.shape[1:3]
        x = pad_nhwc(x, kernel, strides, dilations, padding)
        cout, cg = w.shape[0], w.shape[3]
        groups = x.shape[3] // cg
        if groups == 1 and kernel != (1, 1) and x.dtype == w.dtype == np.float32:
            y = _blocked_im2col_gemm(windows(x, kernel, strides, dilations), _filter_matrix(w))
            if b is not None:
                y += b
            return (y,)
        if kernel == (1, 1):
            rows = x[:, ::stride_h, ::stride_w, :] if strides != (1, 1) else x
            out_shape = rows.shape[:3]
            rows = rows.reshape(-1, x.shape[3])
            per_group = [rows[:, g * cg:(g + 1) * cg] for g in range(groups)]
        else:
            win = windows(x, kernel, strides, dilations)
            out_shape = win.shape[:3]
            per_group = [win[..., g * cg:(g + 1) * cg].reshape(-1, kernel[0] * kernel[1] * cg)
                         for g in range(groups)]
        filters = _filter_matrix(w)
        og = cout // groups
        if groups == 1:
            y = per_group[0] @ filters
        else:
            y = np.empty((per_group[0].shape[0], cout), np.result_type(x, w))
            for g, rows in enumerate(per_group):
                np.matmul(rows, filters[:, g * og:(g + 1) * og], out=y[:, g * og:(g + 1) * og])
        if b is not None:
            y += b
        return (y.reshape(out_shape + (cout,)).astype(np.float32, copy=False),)

    def options(self, attrs: ConvAttrs):
        return Conv2DOptionsT(padding=padding_code(attrs.padding), strideW=attrs.stride_w,
                              strideH=attrs.stride_h, dilationWFactor=attrs.dilation_w,
                              dilationHFactor=attrs.dilation_h,
                              fusedActivationFunction=activation_code(attrs.fused_activation))

    def hybrid_supported(self, op: Op, graph: Graph) -> bool:
        """The hybrid conv kernel has no grouped variant."""
        return graph.tensors[op.inputs[0]].shape[3] == graph.tensors[op.inputs[1]].shape[3]

    def version(self, op: Op, graph: Graph) -> int:
        x, w = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
        grouped = x.shape[3] != w.shape[3]
        if x.dtype.name == "INT8" and w.dtype.name == "INT8":
            return 3
        if grouped:
            return 6
        if _is_hybrid(graph, op):
            return 5 if _per_channel(graph, op.inputs[1]) else 2
        return 1


@register
class DepthwiseConv2D(OpSpec):
    """Emitted by Conv2D's importer for ONNX Conv with group == input channels."""

    kind = "DEPTHWISE_CONV_2D"
    Attrs = DepthwiseConvAttrs
    layout = ChannelsLast()
    quant = Calibrated(dtypes=WITH_INT16)
    # LiteRT's hybrid depthwise kernel is slow (XNNPACK does not take it), while XNNPACK turns
    # DEQUANTIZE of a constant int8 filter into float weights at load: measured on MobileNetV2,
    # weights-only int8 runs at 0.7x float latency this way and 2.7x with the hybrid kernel.
    weights = (Weight(1, axis=3, hybrid=False, input_axis=3),)  # 1HWO
    bias = Int32Bias(2)
    fused_activation = FusedActivations()  # depthwise_conv.cc: clamps only
    cases = [
        _conv_case("depthwise_3x3", (1, 6, 8, 8), (6, 1, 3, 3), group=6, pads=[1, 1, 1, 1]),
        _conv_case("depthwise_stride2", (1, 4, 9, 9), (4, 1, 3, 3), group=4, strides=[2, 2],
                   pads=[1, 1, 1, 1]),
        _conv_case("depthwise_multiplier2", (1, 3, 6, 6), (6, 1, 3, 3), group=3),
        _conv_case("depthwise_dilated", (1, 4, 9, 9), (4, 1, 3, 3), group=4, dilations=[2, 2],
                   pads=[2, 2, 2, 2]),
        # at DEPTHWISE_EINSUM_CHANNELS channels the reference kernel takes its other path
        _conv_case("depthwise_wide", (1, 192, 5, 5), (192, 1, 3, 3), group=192, pads=[1, 1, 1, 1]),
        one_d_case(_conv_case("1d_depthwise_dilated", (1, 4, 17), (8, 1, 3), group=4, dilations=[3],
                              pads=[3, 3])),
    ]

    def matmul_rows(self, x, weight_shape, attrs):
        # channel c is its own product: rows [C, M, KH*KW], filters [C, 1, KH*KW]
        kernel = tuple(weight_shape[1:3])
        strides, dilations = (attrs.stride_h, attrs.stride_w), (attrs.dilation_h, attrs.dilation_w)
        if attrs.depth_multiplier != 1:
            return None
        win = windows(pad_nhwc(x, kernel, strides, dilations, attrs.padding), kernel, strides, dilations)
        return np.moveaxis(win.reshape(-1, kernel[0] * kernel[1], weight_shape[3]), 2, 0)

    def weight_to_filters(self, w):
        return w.reshape(-1, w.shape[3]).T[:, None, :]

    def filters_to_weight(self, filters, shape):
        return filters[:, 0, :].T.reshape(shape)

    def reference(self, x, w, b=None, *, padding, stride_h, stride_w, dilation_h, dilation_w,
                  depth_multiplier):
        strides, dilations, kernel = (stride_h, stride_w), (dilation_h, dilation_w), w.shape[1:3]
        if depth_multiplier > 1:
            x = np.repeat(x, depth_multiplier, axis=3)
        if x.dtype != np.float32 or w.dtype != np.float32:
            x, w = x.astype(np.float32), w.astype(np.float32)
        if stride_w == 1 and x.shape[3] < DEPTHWISE_EINSUM_CHANNELS:
            pads = (0, 0, 0, 0)
            if padding == "SAME":
                pads = (same_padding(x.shape[1], kernel[0], stride_h, dilation_h)
                        + same_padding(x.shape[2], kernel[1], stride_w, dilation_w))
            y = _depthwise_taps(x, w[0], strides, dilations, pads)
        else:
            x = pad_nhwc(x, kernel, strides, dilations, padding)
            y = np.einsum("nhwijc,ijc->nhwc", windows(x, kernel, strides, dilations), w[0])
        if b is not None:
            y += b
        return (y,)

    def options(self, attrs: DepthwiseConvAttrs):
        return DepthwiseConv2DOptionsT(
            padding=padding_code(attrs.padding), strideW=attrs.stride_w, strideH=attrs.stride_h,
            depthMultiplier=attrs.depth_multiplier, dilationWFactor=attrs.dilation_w,
            dilationHFactor=attrs.dilation_h,
            fusedActivationFunction=activation_code(attrs.fused_activation))

    def version(self, op: Op, graph: Graph) -> int:
        x, w = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
        attrs = op.attrs
        if x.dtype.name == "INT8" and w.dtype.name == "INT8":
            return 3
        if _is_hybrid(graph, op):
            return 6 if _per_channel(graph, op.inputs[1]) else 4
        if attrs.dilation_h != 1 or attrs.dilation_w != 1:
            return 2
        return 1


_filter_matrices: dict[int, tuple[weakref.ref, np.ndarray]] = {}


def _filter_matrix(w: np.ndarray) -> np.ndarray:
    """The OHWI filter as a C-contiguous [KH*KW*I, O] matrix, made once per filter array (kept
    while the array lives). OpenBLAS's sgemm runs 5-15% faster on ResNet's convolutions with
    this operand than with the transposed view of the [O, KH*KW*I] filter."""
    entry = _filter_matrices.get(id(w))
    if entry is not None and entry[0]() is w:
        return entry[1]
    matrix = np.ascontiguousarray(w.reshape(w.shape[0], -1).T)
    try:
        key = id(w)
        cache = _filter_matrices  # (bound now: the module's globals may be gone at exit)
        _filter_matrices[key] = (weakref.ref(w, lambda _, key=key: cache.pop(key, None)), matrix)
    except TypeError:  # not weak-referenceable: no caching
        pass
    return matrix


IM2COL_BLOCK_BYTES = 1 << 20  # about a core's L2 cache


def _blocked_im2col_gemm(win: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """[N, OH, OW, KH, KW, C] windows times the [KH*KW*C, O] filter: im2col of a few output rows
    at a time into one buffer that stays in cache, each block one GEMM into the output (on
    ResNet-18's convolutions ~10% less CPU than one im2col matrix of the whole image)."""
    n, oh, ow = win.shape[:3]
    depth, cout = filters.shape
    y = np.empty((n, oh, ow, cout), np.float32)
    rows = max(1, IM2COL_BLOCK_BYTES // (ow * depth * 4))
    buffer = np.empty((n, min(rows, oh)) + win.shape[2:], np.float32)
    for r0 in range(0, oh, rows):
        r1 = min(oh, r0 + rows)
        block = buffer[:, :r1 - r0]
        block[...] = win[:, r0:r1]
        if n == 1 or r1 - r0 == oh:
            np.matmul(block.reshape(-1, depth), filters, out=y[:, r0:r1].reshape(-1, cout))
        else:  # a batch: y[:, r0:r1] is no single matrix
            y[:, r0:r1] = (block.reshape(-1, depth) @ filters).reshape(n, r1 - r0, ow, cout)
    return y


# Measured on MobileNetV2's depthwise layers (numpy 2.4, one thread): with a unit column stride,
# one multiply-add pass per filter tap over whole [OW, C] rows is fastest below this many
# channels (3x faster than einsum at 32); einsum's single pass wins at wider channels and with
# strided columns, where the tap passes' inner loops shrink to C elements.
DEPTHWISE_EINSUM_CHANNELS = 192


def _depthwise_taps(x: np.ndarray, w: np.ndarray, strides, dilations,
                    pads: tuple[int, int, int, int] = (0, 0, 0, 0)) -> np.ndarray:
    """Depthwise convolution of NHWC float32 `x` by [KH, KW, C] `w` with a column stride of 1,
    zero-padded by `pads` (top, bottom, left, right) without copying `x`: a multiply-add per
    tap over the output cells whose input is real. The tap's weights are tiled along the output
    row so that numpy runs each pass as loops over (output columns x C) contiguous values
    (broadcasting a [C] vector would cut them into loops of C)."""
    n, h, width, c = x.shape
    kh, kw = w.shape[:2]
    (sh, _), (dh, dw), (top, bottom, left, right) = strides, dilations, pads
    oh = (h + top + bottom - (kh - 1) * dh - 1) // sh + 1
    ow = width + left + right - (kw - 1) * dw
    tiled = np.empty((kh, kw, ow, c), np.float32)
    tiled[...] = w[:, :, None, :]
    taps = []
    for i in range(kh):
        r0 = max(0, -(-(top - i * dh) // sh))
        r1 = min(oh, (h - 1 + top - i * dh) // sh + 1)
        for j in range(kw):
            q0, q1 = max(0, left - j * dw), min(ow, width + left - j * dw)
            if r1 > r0 and q1 > q0:
                first = r0 * sh + i * dh - top
                source = x[:, first:first + (r1 - r0 - 1) * sh + 1:sh,
                           q0 + j * dw - left:q1 + j * dw - left]
                taps.append(((r0, r1, q0, q1), source, tiled[i, j, q0:q1]))
    full = next((k for k, (box, _, _) in enumerate(taps) if box == (0, oh, 0, ow)), None)
    if full is None:
        y = np.zeros((n, oh, ow, c), np.float32)
    else:
        y = np.empty((n, oh, ow, c), np.float32)
        np.multiply(taps[full][1], taps[full][2], out=y)
    scratch = np.empty_like(y)
    for k, ((r0, r1, q0, q1), source, weights) in enumerate(taps):
        if k != full:
            part = scratch[:, :r1 - r0, :q1 - q0]
            np.multiply(source, weights, out=part)
            y[:, r0:r1, q0:q1] += part
    return y
