"""CONV_3D: ONNX Conv on [N, C, D, H, W] (NDHWC in the file), written as CONV_2D.

The importer writes CONV_3D (DHWIO filter) and marks its 5-D ends NCDHW, which the layout pass
turns into NDHWC; BatchNorm3d and ReLU then fold into it like into CONV_2D. Before the file is
written, `conv_3d_as_conv_2d` lowers every CONV_3D to one CONV_2D: in NDHWC, [N, D, H, W, C]
viewed as [N*D, H, W, C] is a free RESHAPE, so a 3-D convolution with depth kernel KD is
STRIDED_SLICE of the KD depth-shifted (and depth-strided) views, their CONCATENATION along
channels, a RESHAPE to [N*OD, H, W, KD*C], one CONV_2D over (H, W) with the filter's depth folded
into its input channels, and a RESHAPE back. One accumulation over every tap, as an integer
CONV_3D would do, so the 8-bit result rounds once (KD separate convolutions summed by ADDs would
round each partial sum).

Why always, measured in LiteRT (one thread, default XNNPACK delegate, worst of 4 random samples
against onnxruntime; tests/volume_models: video = R(2+1)D/R3D/X3D-style clip classifier, unet =
3-D U-Net; "layer" = Conv3d 32->64 3x3x3, 3x1x1, 1x3x3 on [1, 32, 8, 28, 28]):
- float: LiteRT's CONV_3D (conv3d.cc) is float32 only, has no groups (X3D's depthwise 3x3x3)
  and XNNPACK does not take it; the lowering is as exact and faster: video 0.86 -> 0.73 ms, unet
  1.49 -> 1.27 ms, layer 29.9 -> 20.7 ms (SQNR 131 / 124 / 123 dB either way);
- full integer: a float CONV_3D island (DEQUANTIZE, float CONV_3D, QUANTIZE) against the
  lowering: int8 video 37.9 dB / 0.82 ms -> 40.9 dB / 0.46 ms, unet 32.6 dB / 2.97 ms ->
  30.8 dB / 0.55 ms, layer 25.6 -> 4.5 ms; uint8 video 38.5 -> 36.3 dB, 0.85 -> 0.80 ms. The
  island keeps float weights (a dB or two better on some models) but is slower and leaves the
  graph not integer, which is what --mode full asks for.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.Conv3DOptions import Conv3DOptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Layout, Op
from tflq.ops import register
from tflq.ops.base import (Case, ChannelsLast, FloatOnly, FusedActivations, Int32Bias, OpSpec,
                           Weight, rand)
from tflq.ops.common import activation_code, constant_pad, padding_code, same_padding

CONV_3D_FLOAT_ONLY = "LiteRT's CONV_3D kernel is float32 only (conv3d.cc)"


@dataclass(frozen=True)
class Conv3DAttrs:
    padding: str = "VALID"
    stride_d: int = 1
    stride_h: int = 1
    stride_w: int = 1
    dilation_d: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    fused_activation: str = "NONE"


def mark_ncdhw(ctx, name: str) -> None:
    """Mark a 5-D activation as what a 3-D op reads or writes (the layout pass makes it NDHWC)."""
    t = ctx.graph.tensors[ctx.tensor(name)]
    if not t.is_constant and t.rank == 5:
        t.layout = Layout.NCDHW


def volume_case(case: Case, quant_steps: float | None = None) -> Case:
    """A case on [N, C, D, H, W] data: run with the ONNX layout kept (the generic op tests feed
    ONNX order; tests/test_volumetric.py covers NDHWC inputs and outputs)."""
    case.options = {**case.options, "keep_io_layout": True}
    if quant_steps is not None:
        case.quant_steps = quant_steps
    return case


def explicit_pads_3d(ctx, node, spatial, kernel, strides, dilations) -> list[int]:
    """ONNX pads [d0, h0, w0, d1, h1, w1] of a 3-D Conv/Pool node (auto_pad resolved)."""
    auto_pad = ctx.attr(node, "auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pairs = [same_padding(s, k, st, d) for s, k, st, d in zip(spatial, kernel, strides, dilations)]
        if auto_pad == "SAME_LOWER":
            pairs = [(after, before) for before, after in pairs]
        return [p[0] for p in pairs] + [p[1] for p in pairs]
    if auto_pad == "VALID":
        return [0] * 6
    return [int(p) for p in ctx.attr(node, "pads", [0] * 6)]


def _same_3d(spatial, kernel, strides, dilations) -> list[int]:
    pairs = [same_padding(s, k, st, d) for s, k, st, d in zip(spatial, kernel, strides, dilations)]
    return [p[0] for p in pairs] + [p[1] for p in pairs]


def _read_pads_3d(spatial, kernel, strides, dilations, pads) -> list[int]:
    """The end padding cut to where the last window ends (a stride can leave some unread)."""
    ends = []
    for a in range(3):
        effective = (kernel[a] - 1) * dilations[a] + 1
        out = (spatial[a] + pads[a] + pads[a + 3] - effective) // strides[a] + 1
        ends.append(max(0, (out - 1) * strides[a] + effective - spatial[a] - pads[a]))
    return list(pads[:3]) + ends


def import_conv_3d(node, ctx) -> None:
    """ONNX Conv on [N, C, D, H, W] as CONV_3D (DHWIO filter; a grouped one is lowered later)."""
    x = node.input[0]
    w = ctx.require_constant(node, 1, "weights")
    b = ctx.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if len(node.input) > 2 and node.input[2] and b is None:
        raise Unsupported(node, "non_constant_input", "input 2 (bias) must be a constant")
    _, cin, d, h, wd = ctx.shape(x)
    cout, cin_group, kd, kh, kw = w.shape
    strides = tuple(int(s) for s in ctx.attr(node, "strides", [1, 1, 1]))
    dilations = tuple(int(s) for s in ctx.attr(node, "dilations", [1, 1, 1]))
    kernel, spatial = (kd, kh, kw), (d, h, wd)
    pads = _read_pads_3d(spatial, kernel, strides, dilations,
                         explicit_pads_3d(ctx, node, spatial, kernel, strides, dilations))
    mark_ncdhw(ctx, x)
    if not any(pads):
        padding = "VALID"
    elif pads == _same_3d(spatial, kernel, strides, dilations):
        padding = "SAME"
    else:
        paddings = np.array([[0, 0], [0, 0]] + [[pads[a], pads[a + 3]] for a in range(3)], np.int32)
        padded = ctx.new_activation(f"{x}/padded", (ctx.shape(x)[0], cin) + tuple(
            s + pads[a] + pads[a + 3] for a, s in enumerate(spatial)))
        ctx.add_op("PAD", [x, ctx.add_constant(f"{x}/paddings", paddings)], [padded])
        mark_ncdhw(ctx, padded)
        x, padding = padded, "VALID"
    bias = np.zeros(cout, np.float32) if b is None else b.astype(np.float32)
    filt = ctx.add_constant(f"{node.input[1]}/dhwio", np.ascontiguousarray(
        w.astype(np.float32).transpose(2, 3, 4, 1, 0)))
    attrs = Conv3DAttrs(padding=padding, stride_d=strides[0], stride_h=strides[1],
                        stride_w=strides[2], dilation_d=dilations[0], dilation_h=dilations[1],
                        dilation_w=dilations[2])
    ctx.add_op("CONV_3D", [x, filt, ctx.add_constant(f"{node.name}/bias", bias)], [node.output[0]],
               attrs)
    mark_ncdhw(ctx, node.output[0])


def conv_3d_reference(x: np.ndarray, w: np.ndarray, b, attrs: Conv3DAttrs) -> np.ndarray:
    """NDHWC `x` convolved with the DHWIO filter `w` (groups: Cin / w's input channels)."""
    from tflq.ops.conv import Conv2D

    kernel = w.shape[:3]
    strides = (attrs.stride_d, attrs.stride_h, attrs.stride_w)
    dilations = (attrs.dilation_d, attrs.dilation_h, attrs.dilation_w)
    if attrs.padding == "SAME":
        pairs = [same_padding(s, k, st, dl) for s, k, st, dl in
                 zip(x.shape[1:4], kernel, strides, dilations)]
        x = constant_pad(x, [(0, 0)] + pairs + [(0, 0)])
    n, d, h, wd, c = x.shape
    od = (d - (kernel[0] - 1) * dilations[0] - 1) // strides[0] + 1
    conv2d = Conv2D()
    y = None
    for i in range(kernel[0]):
        start = i * dilations[0]
        view = x[:, start:start + (od - 1) * strides[0] + 1:strides[0]].reshape(n * od, h, wd, c)
        filters = np.ascontiguousarray(w[i].transpose(3, 0, 1, 2))  # OHWI
        (part,) = conv2d.reference(np.ascontiguousarray(view), filters, None, padding="VALID",
                                   stride_h=strides[1], stride_w=strides[2],
                                   dilation_h=dilations[1], dilation_w=dilations[2])
        y = part if y is None else y + part
    y = y.reshape((n, od) + y.shape[1:])
    if b is not None:
        y = y + b
    return y.astype(np.float32)


def _case(name: str, x_shape, w_shape, seed: int = 0, bias: bool = True, **attrs) -> Case:
    """A 3-D Conv case (written as CONV_2D: conv_3d_as_conv_2d)."""
    consts = {"w": rand(*w_shape, seed=seed + 1, low=-0.5, high=0.5)}
    inputs = ["x", "w"]
    if bias:
        consts["b"] = rand(w_shape[0], seed=seed + 2, low=-0.2, high=0.2)
        inputs.append("b")
    return volume_case(Case(name, [helper.make_node("Conv", inputs, ["y"], **attrs)],
                            {"x": rand(*x_shape, seed=seed)}, consts, emits=("CONV_2D",)))


@register
class Conv3D(OpSpec):
    """ONNX Conv with three spatial axes (imported by Conv2D's importer). Filters are DHWIO."""

    kind = "CONV_3D"
    Attrs = Conv3DAttrs
    layout = ChannelsLast()
    quant = FloatOnly(reason=CONV_3D_FLOAT_ONLY)  # every file has it lowered (conv_3d_as_conv_2d)
    weights = (Weight(1, axis=4, hybrid=False, input_axis=3),)  # DHWIO
    bias = Int32Bias(2)
    fused_activation = FusedActivations()  # conv3d.cc: clamps only
    cases = [
        _case("3x3x3_pad1", (1, 3, 5, 6, 6), (4, 3, 3, 3, 3), pads=[1] * 6),
        _case("stride2_same", (1, 2, 6, 7, 7), (4, 2, 3, 3, 3), strides=[2, 2, 2],
              auto_pad="SAME_UPPER"),
        _case("temporal_3x1x1", (1, 4, 6, 5, 5), (6, 4, 3, 1, 1), pads=[1, 0, 0, 1, 0, 0]),
        _case("spatial_1x3x3_no_bias", (2, 3, 4, 6, 6), (5, 3, 1, 3, 3), bias=False,
              pads=[0, 1, 1, 0, 1, 1]),
        _case("dilated_asymmetric", (1, 2, 7, 6, 6), (3, 2, 2, 3, 3), dilations=[2, 1, 2],
              pads=[1, 0, 2, 0, 1, 1]),
        _case("grouped", (1, 4, 5, 5, 5), (6, 2, 3, 3, 3), group=2, pads=[1] * 6),
        _case("depthwise", (1, 4, 5, 6, 6), (4, 1, 3, 3, 3), group=4, pads=[1] * 6,
              strides=[1, 2, 2]),
    ]

    def reference(self, x, w, b=None, **attrs):
        return (conv_3d_reference(x, w, b, Conv3DAttrs(**attrs)),)

    def options(self, attrs: Conv3DAttrs):
        return Conv3DOptionsT(padding=padding_code(attrs.padding), strideD=attrs.stride_d,
                              strideW=attrs.stride_w, strideH=attrs.stride_h,
                              fusedActivationFunction=activation_code(attrs.fused_activation),
                              dilationDFactor=attrs.dilation_d, dilationWFactor=attrs.dilation_w,
                              dilationHFactor=attrs.dilation_h)

    def version(self, op: Op, graph: Graph) -> int:
        return 1


def conv_3d_as_conv_2d(graph: Graph) -> int:
    """Lower every NDHWC CONV_3D to STRIDED_SLICE + CONCATENATION + RESHAPE + CONV_2D + RESHAPE
    (the module docstring says why in every mode).

    Runs after the layout and fuse passes: a BatchNorm and a ReLU folded into the CONV_3D go with
    its bias, weights and fused activation to the CONV_2D."""
    count = 0
    for op in [o for o in graph.ops if o.kind == "CONV_3D"]:
        _lower_conv_3d(graph, op)
        count += 1
    if count:
        graph.remove_unused()
    return count


def _activation(graph: Graph, base: str, like: str, shape, layout: Layout) -> str:
    t = graph.tensors[like]
    return graph.add_activation(base, t.dtype, tuple(int(s) for s in shape), layout)


def _lower_conv_3d(graph: Graph, op: Op) -> None:
    from tflq.ops.conv import ConvAttrs, DepthwiseConvAttrs

    x_name, y_name = op.inputs[0], op.outputs[0]
    w = graph.tensors[op.inputs[1]].data.astype(np.float32)
    bias = op.inputs[2] if len(op.inputs) > 2 and op.inputs[2] else \
        graph.add_constant(f"{op.origin}/bias", np.zeros(w.shape[4], np.float32))
    a: Conv3DAttrs = op.attrs
    n, d, h, wd, c = graph.tensors[x_name].shape
    kd, kh, kw, cg, cout = w.shape
    groups = c // cg
    new: list[Op] = []
    source = x_name
    if a.padding == "SAME":
        before, after = same_padding(d, kd, a.stride_d, a.dilation_d)
        if before or after:
            padded = _activation(graph, f"{x_name}/depth_padded", x_name,
                                 (n, d + before + after, h, wd, c), Layout.NDHWC)
            paddings = np.array([[0, 0], [before, after], [0, 0], [0, 0], [0, 0]], np.int32)
            new.append(Op("PAD", [source, graph.add_constant(f"{padded}/paddings", paddings)],
                          [padded], origin=op.origin))
            source, d = padded, d + before + after
    od = (d - (kd - 1) * a.dilation_d - 1) // a.stride_d + 1
    if kd == 1 and a.stride_d == 1 and od == d:
        taps, channels = source, c
    else:
        views = []
        for i in range(kd):
            start = i * a.dilation_d
            view = _activation(graph, f"{y_name}/depth_tap{i}", x_name, (n, od, h, wd, c),
                               Layout.NDHWC)
            bounds = [graph.add_constant(f"{view}/{what}", np.array(v, np.int32)) for what, v in (
                ("begin", [0, start, 0, 0, 0]),
                ("end", [n, start + (od - 1) * a.stride_d + 1, h, wd, c]),
                ("strides", [1, a.stride_d, 1, 1, 1]))]
            new.append(Op("STRIDED_SLICE", [source] + bounds, [view], origin=op.origin))
            views.append(view)
        from tflq.ops.concat import ConcatenationAttrs

        channels = kd * c
        if kd == 1:
            taps = views[0]
        elif groups == 1:  # channel i*C + c: tap-major
            taps = _activation(graph, f"{y_name}/depth_taps", x_name, (n, od, h, wd, channels),
                               Layout.NDHWC)
            new.append(Op("CONCATENATION", views, [taps], ConcatenationAttrs(axis=4), origin=op.origin))
        else:  # channel c*KD + i: each group's channels stay together for a grouped CONV_2D
            cells = n * od * h * wd
            columns = []
            for view in views:
                column = _activation(graph, f"{view}/column", x_name, (cells, c, 1), Layout.ANY)
                new.append(Op("RESHAPE", [view, graph.add_constant(
                    f"{column}/shape", np.array([cells, c, 1], np.int32))], [column], origin=op.origin))
                columns.append(column)
            stacked = _activation(graph, f"{y_name}/depth_taps", x_name, (cells, c, kd), Layout.ANY)
            new.append(Op("CONCATENATION", columns, [stacked], ConcatenationAttrs(axis=2),
                          origin=op.origin))
            taps = stacked
    flat = _activation(graph, f"{y_name}/as_2d_input", x_name, (n * od, h, wd, channels), Layout.NHWC)
    new.append(Op("RESHAPE", [taps, graph.add_constant(f"{flat}/shape", np.array(
        [n * od, h, wd, channels], np.int32))], [flat], origin=op.origin))
    y = graph.tensors[y_name]
    _, _, oh, ow, _ = y.shape
    out4 = _activation(graph, f"{y_name}/as_2d", y_name, (n * od, oh, ow, cout), Layout.NHWC)
    common = dict(padding=a.padding, stride_h=a.stride_h, stride_w=a.stride_w,
                  dilation_h=a.dilation_h, dilation_w=a.dilation_w,
                  fused_activation=a.fused_activation)
    if groups == c and cg == 1 and channels == c:  # depthwise with one depth tap
        filt = graph.add_constant(f"{op.inputs[1]}/1hwo", np.ascontiguousarray(w[0][:, :, 0, :][None]))
        conv = Op("DEPTHWISE_CONV_2D", [flat, filt, bias], [out4],
                  DepthwiseConvAttrs(**common, depth_multiplier=cout // c), origin=op.origin)
    else:
        order = (4, 1, 2, 0, 3) if groups == 1 else (4, 1, 2, 3, 0)  # (O, KH, KW, taps x channels)
        filt = graph.add_constant(f"{op.inputs[1]}/ohwi", np.ascontiguousarray(
            w.transpose(order).reshape(cout, kh, kw, channels // groups)))
        conv = Op("CONV_2D", [flat, filt, bias], [out4], ConvAttrs(**common), origin=op.origin)
    conv.statistics = op.statistics
    new.append(conv)
    new.append(Op("RESHAPE", [out4, graph.add_constant(f"{y_name}/shape", np.array(
        y.shape, np.int32))], [y_name], origin=op.origin))
    index = graph.ops.index(op)
    graph.remove_op(op)
    for k, o in enumerate(new):
        graph.add_op(o, index + k)
