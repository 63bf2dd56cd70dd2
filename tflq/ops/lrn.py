"""LOCAL_RESPONSE_NORMALIZATION: ONNX LRN, the cross-channel normalization of the classic CNNs
(AlexNet, CaffeNet, GoogLeNet, ZFNet of the ONNX model zoo).

ONNX: y = x / (bias + alpha / size * sum(x^2 over the window of channels around c))^beta, the
window reaching floor((size - 1) / 2) channels below c and ceil((size - 1) / 2) above. TFLite's
kernel (local_response_norm.cc) sums over [c - radius, c + radius] of the last (NHWC channel)
axis and multiplies by alpha itself, so an odd size is radius = (size - 1) / 2 with alpha / size;
an even size has a window TFLite cannot place. Float only: LiteRT has no integer kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.LocalResponseNormalizationOptions import LocalResponseNormalizationOptionsT
from tflq.errors import Unsupported
from tflq.ops import register
from tflq.ops.base import Case, ChannelsLast, OpSpec, rand
from tflq.ops.checks import FloatAttr, IntAttr


@dataclass(frozen=True)
class LrnAttrs:
    radius: int = 2
    bias: float = 1.0
    alpha: float = 1e-4
    beta: float = 0.75


def _case(name: str, shape, **attrs) -> Case:
    return Case(name, [helper.make_node("LRN", ["x"], ["y"], **attrs)], {"x": rand(*shape, low=-3.0, high=3.0)})


@register
class LocalResponseNormalization(OpSpec):
    kind = "LOCAL_RESPONSE_NORMALIZATION"
    onnx_types = ("LRN",)
    onnx_checks = (IntAttr(name="size", min=1), FloatAttr(name="alpha"), FloatAttr(name="beta"),
                   FloatAttr(name="bias"))
    Attrs = LrnAttrs
    layout = ChannelsLast()
    cases = [
        _case("size5_alexnet", (1, 8, 3, 3), size=5, alpha=1e-4, beta=0.75, bias=1.0),
        _case("size3_strong", (2, 6, 2, 4), size=3, alpha=0.5, beta=0.5, bias=2.0),
        _case("size1", (1, 4, 2, 2), size=1, alpha=0.3),
    ]

    def from_onnx(self, node, ctx) -> None:
        x = node.input[0]
        if ctx.rank(x) != 4:
            raise Unsupported(node, "lrn_rank", f"LRN of a {ctx.rank(x)}-D input (TFLite's kernel "
                                                f"takes 4-D [N, C, H, W])")
        size = int(ctx.attr(node, "size", 0))
        if size % 2 == 0:
            raise Unsupported(node, "lrn_even_size", f"LRN size {size}: an even window reaches "
                              f"one channel further above than below, which TFLite's symmetric "
                              f"radius cannot express")
        alpha = float(ctx.attr(node, "alpha", 1e-4))
        attrs = LrnAttrs(radius=(size - 1) // 2, bias=float(ctx.attr(node, "bias", 1.0)),
                         alpha=alpha / size, beta=float(ctx.attr(node, "beta", 0.75)))
        ctx.add_op(self.kind, [x], [node.output[0]], attrs)

    def reference(self, x, *, radius: int, bias: float, alpha: float, beta: float):
        squared = np.square(x.astype(np.float64))
        channels = x.shape[-1]
        padded = np.pad(squared, [(0, 0)] * (x.ndim - 1) + [(radius, radius)])
        window = sum(padded[..., k:k + channels] for k in range(2 * radius + 1))
        return ((x / np.power(bias + alpha * window, beta)).astype(np.float32),)

    def options(self, attrs: LrnAttrs) -> LocalResponseNormalizationOptionsT:
        return LocalResponseNormalizationOptionsT(radius=attrs.radius, bias=attrs.bias,
                                                  alpha=attrs.alpha, beta=attrs.beta)
