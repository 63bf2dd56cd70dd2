"""TRANSPOSE_CONV: ONNX ConvTranspose (1-D, 2-D; grouped and dilated), with pads and output_padding.

TFLite's operands are (output_shape int32[4] NHWC, weights OHWI, data NHWC, bias), so the data is
input 2: the layout rule, the weight rule and the bias rule all name their indices explicitly.
TFLite derives the top/left crop of the full transposed output from output_shape and SAME/VALID,
and its kernels (and XNNPACK) expect the data's size to be the one SAME/VALID implies. Padding
that neither reproduces is written as a VALID TRANSPOSE_CONV followed by a STRIDED_SLICE crop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.TransposeConvOptions import TransposeConvOptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import (WITH_INT16, Calibrated, Case, ChannelsLast, FusedActivations, Int32Bias,
                           OpSpec, Weight, rand)
from tflq.ops.checks import Arity, ConstantValues, InputTypes, IntAttr, window_checks
from tflq.ops.common import activation_code, padding_code
from tflq.ops.conv3d import volume_case
from tflq.ops.one_d import import_as_2d, one_d_case
from tflq.ops.slice import add_slice

OUTPUT_SHAPE, WEIGHTS, DATA, BIAS = 0, 1, 2, 3  # TRANSPOSE_CONV operand order


@dataclass(frozen=True)
class TransposeConvAttrs:
    padding: str = "VALID"
    stride_h: int = 1
    stride_w: int = 1
    fused_activation: str = "NONE"


def tflite_crop_and_input(padding: str, out: int, kernel: int, stride: int) -> tuple[int, int]:
    """(cells cropped before the output, data size the kernels expect) for one spatial axis.

    TFLite computes these from the output size, like a forward convolution of the output.
    """
    if padding == "SAME":
        expected = math.ceil(out / stride)
    else:
        expected = (out - kernel + stride) // stride
    total = max((expected - 1) * stride + kernel - out, 0)
    return total // 2, expected


def _fits(padding: str, sizes_in, sizes_out, kernel, strides, heads) -> bool:
    return all(tflite_crop_and_input(padding, o, k, s) == (head, i)
               for i, o, k, s, head in zip(sizes_in, sizes_out, kernel, strides, heads))


def _onnx_pads(node, ctx, sizes_in, kernel, strides, output_padding) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the full transposed output that ONNX removes."""
    output_shape = ctx.attr(node, "output_shape", None)
    if output_shape:
        pads = []
        for i, k, s, adj, o in zip(sizes_in, kernel, strides, output_padding, list(output_shape)[-2:]):
            total = (i - 1) * s + k + adj - int(o)
            if total < 0 or total % 2:
                # onnxruntime puts an odd cell at the end, the ONNX spec at the start.
                raise Unsupported(node, "convtranspose_output_shape",
                                  f"output_shape {list(output_shape)} needs {total} cells of padding; "
                                  f"only an even, non-negative total is unambiguous",
                                  "export with explicit pads instead of output_shape")
            pads.append(total // 2)
        return pads[0], pads[1], pads[0], pads[1]
    pads = [int(p) for p in ctx.attr(node, "pads", None) or [0, 0, 0, 0]]
    return pads[0], pads[1], pads[2], pads[3]


def _dense_undilated(w: np.ndarray, group: int, dilations: tuple[int, ...]) -> np.ndarray:
    """The weights [Cin, Cout, kH, kW] of one ungrouped, undilated ConvTranspose that computes what
    `w` ([Cin, Cout / group, kH, kW]) does with `group` and `dilations`: TRANSPOSE_CONV has neither.
    Groups become a block-diagonal filter (the zeros are exact in every type, and each output
    channel's int8 scale sees only its group's weights); a dilation spreads the taps with zeros
    between them, which is how ONNX defines it (the output size follows (k - 1) * d + 1)."""
    if group > 1:
        cin, cout_g = w.shape[:2]
        dense = np.zeros((cin, cout_g * group) + w.shape[2:], w.dtype)
        cin_g = cin // group
        for g in range(group):
            dense[g * cin_g:(g + 1) * cin_g, g * cout_g:(g + 1) * cout_g] = w[g * cin_g:(g + 1) * cin_g]
        w = dense
    if any(d != 1 for d in dilations):
        dh, dw = dilations
        kh, kw = w.shape[2:]
        spread = np.zeros(w.shape[:2] + ((kh - 1) * dh + 1, (kw - 1) * dw + 1), w.dtype)
        spread[:, :, ::dh, ::dw] = w
        w = spread
    return w


def _case(name: str, x_shape, w_shape, bias: bool = True, seed: int = 0, **attrs) -> Case:
    consts = {"w": rand(*w_shape, seed=seed + 1, low=-0.5, high=0.5)}
    inputs = ["x", "w"]
    if bias:
        consts["b"] = rand(w_shape[1] * attrs.get("group", 1), seed=seed + 2, low=-0.2, high=0.2)
        inputs.append("b")
    return Case(name, [helper.make_node("ConvTranspose", inputs, ["y"], **attrs)],
                {"x": rand(*x_shape, seed=seed)}, consts)


@register
class TransposeConv(OpSpec):
    """ONNX ConvTranspose; weights [Cin, Cout, kH, kW] are written [Cout, kH, kW, Cin] (OHWI)."""

    kind = "TRANSPOSE_CONV"
    onnx_types = ("ConvTranspose",)
    onnx_checks = (Arity(inputs=(2, 3)), IntAttr(name="group", min=1),
                   *window_checks(weight=1, bias=2, transposed=True), InputTypes(index=1),
                   IntAttr(name="output_padding", min=0), ConstantValues(index=1, what="weights"),
                   ConstantValues(index=2, what="bias"))
    Attrs = TransposeConvAttrs
    layout = ChannelsLast(data_inputs=(DATA,))
    quant = Calibrated(dtypes=WITH_INT16)
    weights = (Weight(WEIGHTS, axis=0, hybrid=True),)
    bias = Int32Bias(BIAS, input=DATA, weight=WEIGHTS)
    fused_activation = FusedActivations()  # transpose_conv.cc (version 4): clamps only
    cases = [
        _case("k2_s2", (1, 4, 5, 5), (4, 3, 2, 2), strides=[2, 2]),
        _case("k3_s1_pads1_same", (1, 3, 6, 7), (3, 5, 3, 3), pads=[1, 1, 1, 1]),
        _case("k4_s2_pads1_same", (1, 4, 5, 6), (4, 2, 4, 4), strides=[2, 2], pads=[1, 1, 1, 1]),
        _case("k3_s2_output_padding", (1, 3, 4, 4), (3, 4, 3, 3), strides=[2, 2], output_padding=[1, 1]),
        _case("k3_s2_pads1_output_padding1_crop", (1, 3, 4, 5), (3, 4, 3, 3), strides=[2, 2],
              pads=[1, 1, 1, 1], output_padding=[1, 1]),
        _case("asymmetric_pads_crop", (1, 2, 5, 5), (2, 3, 3, 3), strides=[2, 1], pads=[0, 2, 1, 0]),
        _case("no_bias_output_shape", (1, 3, 4, 4), (3, 2, 3, 3), bias=False, strides=[2, 2],
              output_shape=[7, 7]),
        _case("group2_k3_s2", (1, 4, 4, 5), (4, 3, 3, 3), strides=[2, 2], group=2, pads=[1, 1, 1, 1]),
        _case("depthwise_k4_s2", (1, 3, 4, 4), (3, 1, 4, 4), strides=[2, 2], group=3, pads=[1, 1, 1, 1]),
        _case("dilation2_k3_s2", (1, 3, 4, 5), (3, 2, 3, 3), strides=[2, 2], dilations=[2, 1]),
        one_d_case(_case("1d_k4_s2_pads1", (1, 4, 10), (4, 3, 4), strides=[2], pads=[1, 1])),
        one_d_case(_case("1d_group2_dilation3", (1, 4, 9), (4, 2, 3), strides=[3], group=2, dilations=[3],
                         output_padding=[2], pads=[1, 1])),
        one_d_case(_case("1d_k3_s2_output_padding_crop", (1, 3, 9), (3, 2, 3), strides=[2], pads=[1, 0],
                         output_padding=[1])),
        # 3-D (volume.py): U-Net's 2x2x2/2 up-convolution; spatial padding and output_padding
        volume_case(_case("3d_k2_s2", (1, 4, 3, 4, 4), (4, 3, 2, 2, 2), strides=[2, 2, 2])),
        volume_case(_case("3d_k1x3x3_s122_pads_output_padding", (1, 3, 2, 4, 5), (3, 2, 1, 3, 3),
                          strides=[1, 2, 2], pads=[0, 1, 1, 0, 1, 1], output_padding=[0, 1, 1])),
        volume_case(_case("3d_k2x3x3_s2_no_bias", (2, 2, 2, 3, 3), (2, 3, 2, 3, 3), bias=False,
                          strides=[2, 2, 2], pads=[0, 1, 1, 0, 0, 0])),
    ]

    def from_onnx(self, node, ctx) -> None:
        x = node.input[0]
        if ctx.rank(x) == 3:
            return import_as_2d(self, node, ctx, weight_inputs=(1,))
        if ctx.rank(x) == 5:
            from tflq.ops.volume import import_conv_transpose_3d

            return import_conv_transpose_3d(self, node, ctx)
        if ctx.rank(x) != 4:
            raise Unsupported(node, "convtranspose_rank", f"only 1-D, 2-D and 3-D ConvTranspose are "
                                                          f"supported (input rank {ctx.rank(x)})")
        w = ctx.require_constant(node, 1, "weights")
        b = ctx.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if len(node.input) > 2 and node.input[2] and b is None:
            raise Unsupported(node, "non_constant_input", "input 2 (bias) must be a constant")
        w = _dense_undilated(w, int(ctx.attr(node, "group", 1)),
                             tuple(int(d) for d in ctx.attr(node, "dilations", None) or (1, 1)))
        if ctx.attr(node, "auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
            raise Unsupported(node, "convtranspose_auto_pad",
                              "ConvTranspose auto_pad SAME_* is computed differently by onnxruntime "
                              "and the ONNX spec", "export with explicit pads")
        n, _, h, wd = ctx.shape(x)
        cout, kernel = w.shape[1], tuple(int(k) for k in w.shape[2:])
        strides = tuple(int(s) for s in ctx.attr(node, "strides", None) or (1, 1))
        output_padding = tuple(int(p) for p in ctx.attr(node, "output_padding", None) or (0, 0))
        top, left, bottom, right = _onnx_pads(node, ctx, (h, wd), kernel, strides, output_padding)
        sizes_in = (h, wd)
        sizes_out = tuple((i - 1) * s + k + adj - head - tail for i, s, k, adj, head, tail in
                          zip(sizes_in, strides, kernel, output_padding, (top, left), (bottom, right)))
        if tuple(ctx.shape(node.output[0])[2:]) != sizes_out:
            raise Unsupported(node, "convtranspose_output_shape",
                              f"output size {list(sizes_out)} disagrees with ONNX shape inference")
        filters = ctx.add_constant(f"{node.input[1]}/ohwi", np.ascontiguousarray(w.transpose(1, 2, 3, 0)))
        bias = ctx.add_constant(f"{node.name}/bias", np.zeros(cout, np.float32) if b is None
                                else b.astype(np.float32))
        padding = next((p for p in ("VALID", "SAME")
                        if _fits(p, sizes_in, sizes_out, kernel, strides, (top, left))), None)
        if padding is not None:
            self._emit(ctx, node.output[0], x, filters, bias, (n, cout) + sizes_out, padding, strides)
            return
        # VALID over the whole transposed output (plus output_padding), then crop what ONNX keeps.
        full = tuple(max((i - 1) * s + k, head + o) for i, s, k, head, o in
                     zip(sizes_in, strides, kernel, (top, left), sizes_out))
        uncropped = ctx.new_activation(f"{node.output[0]}/uncropped", (n, cout) + full)
        self._emit(ctx, uncropped, x, filters, bias, (n, cout) + full, "VALID", strides)
        add_slice(ctx, uncropped, node.output[0], [0, 0, top, left],
                  [n, cout, top + sizes_out[0], left + sizes_out[1]], [1, 1, 1, 1])

    @staticmethod
    def _emit(ctx, out: str, x: str, filters: str, bias: str, nchw_shape: tuple[int, ...],
              padding: str, strides: tuple[int, ...]) -> None:
        n, c, h, w = nchw_shape
        shape = ctx.add_constant(f"{out}/output_shape", np.array([n, h, w, c], np.int32))
        ctx.add_op("TRANSPOSE_CONV", [shape, filters, x, bias], [out],
                   TransposeConvAttrs(padding, strides[0], strides[1]))

    def reference(self, output_shape, w, x, b=None, *, padding, stride_h, stride_w):
        n, out_h, out_w, cout = (int(d) for d in output_shape)
        (_, kh, kw, _), (_, h, wd, _) = w.shape, x.shape
        top, _ = tflite_crop_and_input(padding, out_h, kh, stride_h)
        left, _ = tflite_crop_and_input(padding, out_w, kw, stride_w)
        full = np.zeros((n, max((h - 1) * stride_h + kh, top + out_h),
                         max((wd - 1) * stride_w + kw, left + out_w), cout), np.float32)
        for i in range(kh):
            for j in range(kw):
                full[:, i:i + (h - 1) * stride_h + 1:stride_h, j:j + (wd - 1) * stride_w + 1:stride_w] += \
                    x @ w[:, i, j, :].T
        y = full[:, top:top + out_h, left:left + out_w]
        if b is not None:
            y = y + b
        return (y.astype(np.float32),)

    def options(self, attrs: TransposeConvAttrs):
        return TransposeConvOptionsT(padding=padding_code(attrs.padding), strideW=attrs.stride_w,
                                     strideH=attrs.stride_h,
                                     fusedActivationFunction=activation_code(attrs.fused_activation))

    def version(self, op: Op, graph: Graph) -> int:
        if op.attrs.fused_activation != "NONE":
            return 4
        if len(op.inputs) > BIAS and op.inputs[BIAS]:
            return 3
        return 2 if graph.tensors[op.inputs[WEIGHTS]].dtype.name == "INT8" else 1
