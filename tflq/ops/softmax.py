"""SOFTMAX and LOG_SOFTMAX: ONNX Softmax and LogSoftmax (TFLite normalises the last axis; others are swapped there)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.LogSoftmaxOptions import LogSoftmaxOptionsT
from tflq._generated.tflite.SoftmaxOptions import SoftmaxOptionsT
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import WITH_INT16, Case, FixedOutput, LayoutBreaking, OpSpec, rand
from tflq.ops.checks import Axis
from tflq.ops.common import quantized_version
from tflq.ops.reshape import add_reshape


def _case(name: str, op_type: str, x: np.ndarray, opset: int = 17, **attrs) -> Case:
    return Case(name, [helper.make_node(op_type, ["x"], ["y"], **attrs)], {"x": x}, opset=opset)


def _cases(op_type: str) -> list[Case]:
    return [
        _case("last_axis_default", op_type, rand(2, 10, low=-4, high=4)),
        _case("rank4_axis_3", op_type, rand(1, 3, 4, 6, low=-4, high=4), axis=3),
        _case("rank4_channels_axis_1", op_type, rand(1, 5, 4, 6, low=-4, high=4), axis=1),
        _case("rank4_axis_2_yolo_dfl", op_type, rand(1, 4, 16, 8, low=-4, high=4), axis=1),
        _case("rank3_axis_m1", op_type, rand(2, 5, 7, low=-4, high=4), axis=-1),
        _case("opset11_default_2d", op_type, rand(3, 8, low=-4, high=4), opset=11),
        _case("opset11_flatten_axis1", op_type, rand(1, 3, 4, 4, low=-4, high=4), opset=11),
    ]


@dataclass(frozen=True)
class SoftmaxAttrs:
    beta: float = 1.0


class _LastAxis(OpSpec):
    """Shared import: accept the last axis; opset < 13 flattens to 2-D first (its definition).

    LayoutBreaking: the kernel normalises the last axis, so a rank-4 input must be in ONNX order
    (in NHWC the last axis would be C, not W).
    """

    layout = LayoutBreaking()

    def from_onnx(self, node, ctx) -> None:
        x, out = node.input[0], node.output[0]
        shape = ctx.shape(x)
        rank = len(shape)
        axis = ctx.normalize_axis(int(ctx.attr(node, "axis", -1 if ctx.opset >= 13 else 1)), rank)
        if axis == rank - 1:
            ctx.add_op(self.kind, [x], [out], self.Attrs())
            return
        if ctx.opset >= 13:
            # The kernel normalises the last axis: swap `axis` to the end and back (the two
            # TRANSPOSEs are the op's own semantics; the cleanup passes merge them with neighbours).
            perm = list(range(rank))
            perm[axis], perm[-1] = perm[-1], perm[axis]
            swapped_shape = tuple(shape[p] for p in perm)
            swapped = ctx.new_activation(f"{out}/axis_last", swapped_shape)
            ctx.add_op("TRANSPOSE", [x, ctx.add_constant(f"{out}/perm_in", np.array(perm, np.int32))],
                       [swapped])
            normalised = ctx.new_activation(f"{out}/axis_last_{self.kind.lower()}", swapped_shape)
            ctx.add_op(self.kind, [swapped], [normalised], self.Attrs())
            ctx.add_op("TRANSPOSE", [normalised, ctx.add_constant(f"{out}/perm_out",
                                                                  np.array(perm, np.int32))], [out])
            return
        # Before opset 13 the input is coerced to [prod(shape[:axis]), prod(shape[axis:])].
        flat_shape = (int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis:], dtype=np.int64)))
        flat = ctx.new_activation(f"{out}/flat", flat_shape)
        add_reshape(ctx, x, flat, flat_shape)
        normalised = ctx.new_activation(f"{out}/flat_{self.kind.lower()}", flat_shape)
        ctx.add_op(self.kind, [flat], [normalised], self.Attrs())
        add_reshape(ctx, normalised, out, shape)

    def version(self, op: Op, graph: Graph) -> int:
        return quantized_version(graph, op, int16=3)


@register
class Softmax(_LastAxis):
    """ONNX Softmax."""

    kind = "SOFTMAX"
    row_wise = True
    onnx_types = ("Softmax",)
    onnx_checks = (Axis(name="axis"),)
    Attrs = SoftmaxAttrs
    quant = FixedOutput(dtypes=WITH_INT16, scale=1 / 256, zero_point_int8=-128)  # int8 kernel enforces both
    cases = _cases("Softmax")

    def reference(self, x, *, beta):
        z = beta * (x.astype(np.float64) - x.max(axis=-1, keepdims=True))
        e = np.exp(z)
        return ((e / e.sum(axis=-1, keepdims=True)).astype(np.float32),)

    def options(self, attrs: SoftmaxAttrs):
        return SoftmaxOptionsT(beta=attrs.beta)  # the schema default 0.0 would give a uniform output

    def negligible_below_row_max(self, op: Op) -> float | None:
        # e^-16 = 1.1e-7 of the row's largest weight: far below the int8 output step of 1/256
        return 16.0 / op.attrs.beta if op.attrs.beta > 0 else None


@register
class LogSoftmax(_LastAxis):
    """ONNX LogSoftmax."""

    kind = "LOG_SOFTMAX"
    row_wise = True
    onnx_types = ("LogSoftmax",)
    onnx_checks = (Axis(name="axis"),)
    quant = FixedOutput(scale=16 / 256, zero_point_int8=127)  # 8-bit kernel enforces both
    cases = _cases("LogSoftmax")

    def reference(self, x):
        z = x.astype(np.float64) - x.max(axis=-1, keepdims=True)
        return ((z - np.log(np.exp(z).sum(axis=-1, keepdims=True))).astype(np.float32),)

    def options(self, attrs):
        return LogSoftmaxOptionsT()
