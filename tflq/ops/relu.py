"""RELU, RELU6 and RELU_N1_TO_1: ONNX Relu and the Clip ranges TFLite has kernels for."""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import WITH_INT16, ZERO_CLAMPED, Calibrated, Case, OpSpec, SameAsInput, Transparent, rand
from tflq.ops.common import quantized_version

CLIP_KINDS = {(0.0, 6.0): "RELU6", (0.0, np.inf): "RELU", (-1.0, 1.0): "RELU_N1_TO_1"}


def _clip_case(name: str, low, high) -> Case:
    consts, inputs = {}, ["x"]
    for key, value in (("lo", low), ("hi", high)):
        if value is None:
            inputs.append("")
        else:
            consts[key] = np.array(value, np.float32)
            inputs.append(key)
    while inputs and inputs[-1] == "":
        inputs.pop()
    return Case(name, [helper.make_node("Clip", inputs, ["y"])], {"x": rand(1, 3, 4, 4, low=-8, high=8)},
                consts)


def never_negative(graph: Graph, name: str) -> bool:
    """Whether tensor `name` comes straight out of a clamp to [0, high] (RELU, RELU6, ...)."""
    from tflq import ops as registry

    producer = graph.producer(name)
    if producer is None:
        return False
    spec = registry.spec(producer.kind)
    return isinstance(spec, _ClampSpec) and spec.low >= 0.0


def clamped_at_zero(producer: Op | None, name: str) -> bool:
    """Whether tensor `name`, made by `producer`, is clamped below at 0, by a clamp op (RELU,
    RELU6) or by the op's fused activation: its minimum over any values is then 0 as soon as
    one of them is."""
    from tflq import ops as registry

    if producer is None or not producer.outputs or name != producer.outputs[0]:
        return False
    spec = registry.spec(producer.kind)
    if isinstance(spec, _ClampSpec):
        return spec.low == 0.0
    return getattr(producer.attrs, "fused_activation", "NONE") in ZERO_CLAMPED


class _ClampSpec(OpSpec):
    layout = Transparent()
    quant = Calibrated()
    elementwise = True
    low, high = 0.0, np.inf

    def reference(self, x):
        return (np.clip(x, self.low, self.high).astype(np.float32, copy=False),)

    def version(self, op: Op, graph: Graph) -> int:
        return quantized_version(graph, op, int16=3)  # RELU, RELU6


@register
class Relu(_ClampSpec):
    """ONNX Relu, and Clip(0, inf); Clip with other bounds dispatches by range."""

    kind = "RELU"
    quant = Calibrated(dtypes=WITH_INT16)
    positively_homogeneous = True
    onnx_types = ("Relu", "Clip")
    cases = [Case("relu", [helper.make_node("Relu", ["x"], ["y"])], {"x": rand(1, 3, 4, 4)}),
             _clip_case("clip_0_inf", 0.0, None),
             # torch's count.clamp(min=1) of an int64 mask sum: MAXIMUM of its type (LiteRT
             # refused the file when the bound was float32: "INT64 != FLOAT32")
             Case("clip_int64_min", [helper.make_node("Clip", ["x", "lo"], ["y"])],
                  {"x": np.array([[-3, 0, 1, 2, 9]], np.int64)}, {"lo": np.array(1, np.int64)},
                  quantize=False, emits=("MAXIMUM",)),
             # an integer Clip(0, 6) is no RELU6 (that kernel takes no integers)
             Case("clip_int32_0_6", [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
                  {"x": np.array([[-3, 0, 1, 6, 9]], np.int32)},
                  {"lo": np.array(0, np.int32), "hi": np.array(6, np.int32)},
                  quantize=False, emits=("MAXIMUM", "MINIMUM"))]

    def from_onnx(self, node, ctx) -> None:
        if node.op_type == "Relu":
            ctx.add_op("RELU", [node.input[0]], [node.output[0]])
            return
        low, high = self._clip_bounds(node, ctx)
        if isinstance(low, str) or isinstance(high, str):
            self._clip_with_tensors(node, ctx, low, high)
            return
        kind = CLIP_KINDS.get((low, high))
        if kind is not None and ctx.graph.tensors[ctx.tensor(node.input[0])].dtype.is_float:
            ctx.add_op(kind, [node.input[0]], [node.output[0]])
            return
        self._clip_with_min_max(node, ctx, low, high)

    @staticmethod
    def _clip_bounds(node, ctx) -> tuple[float | str, float | str]:
        """Each bound as a number, or as the name of the tensor that computes it at run time."""
        if ctx.opset < 11:
            return (float(ctx.attr(node, "min", -np.inf)), float(ctx.attr(node, "max", np.inf)))
        bounds: list[float | str] = []
        for index, default in ((1, -np.inf), (2, np.inf)):
            given = len(node.input) > index and node.input[index]
            value = ctx.constant(node.input[index]) if given else None
            bounds.append(float(value.reshape(())) if value is not None else node.input[index] if given
                          else default)
        return bounds[0], bounds[1]

    @staticmethod
    def _clip_with_tensors(node, ctx, low: float | str, high: float | str) -> None:
        """A bound computed at run time: MAXIMUM/MINIMUM take it as a tensor. A one-value bound is
        reshaped to the data's rank of ones, which broadcasts the same in NCHW and NHWC (the
        layout pass then moves no axis)."""
        from tflq.ops.reshape import add_reshape

        x, out = node.input[0], node.output[0]
        shape = ctx.shape(x)
        dtype = ctx.graph.tensors[ctx.tensor(x)].dtype  # (integer Clip: bounds of its type)
        operands = []
        for what, bound in (("min", low), ("max", high)):
            if not isinstance(bound, str):
                operands.append(ctx.add_constant(f"{node.name}/{what}", np.array(bound, dtype.numpy))
                                if np.isfinite(bound) else "")
                continue
            if int(np.prod(ctx.shape(bound))) != 1:
                raise Unsupported(node, "clip_bound_shape", f"Clip's {what} must be a scalar")
            ones = ctx.new_activation(f"{out}/{what}_broadcast", (1,) * len(shape), dtype)
            add_reshape(ctx, bound, ones, (1,) * len(shape))
            operands.append(ones)
        if operands[0] and operands[1]:
            mid = ctx.new_activation(f"{out}/lower_clamped", shape, dtype)
            ctx.add_op("MAXIMUM", [x, operands[0]], [mid])
            ctx.add_op("MINIMUM", [mid, operands[1]], [out])
        elif operands[0]:
            ctx.add_op("MAXIMUM", [x, operands[0]], [out])
        else:
            ctx.add_op("MINIMUM", [x, operands[1]], [out])

    @staticmethod
    def _clip_with_min_max(node, ctx, low: float, high: float) -> None:
        from tflq import ops as registry

        try:
            registry.spec("MAXIMUM"), registry.spec("MINIMUM")
        except KeyError:
            raise Unsupported(node, "clip_range", f"Clip({low}, {high}) is not supported") from None
        x, out = node.input[0], node.output[0]
        # an integer Clip (torch's clamp of a count) keeps its type: bounds of it, no RELU kind
        dtype = ctx.graph.tensors[ctx.tensor(x)].dtype
        if np.isfinite(low) and np.isfinite(high):
            mid = ctx.new_activation(f"{out}/lower_clamped", ctx.shape(x), dtype)
            ctx.add_op("MAXIMUM", [x, ctx.add_constant(f"{node.name}/min", np.array(low, dtype.numpy))], [mid])
            ctx.add_op("MINIMUM", [mid, ctx.add_constant(f"{node.name}/max", np.array(high, dtype.numpy))],
                       [out])
        elif np.isfinite(low):
            ctx.add_op("MAXIMUM", [x, ctx.add_constant(f"{node.name}/min", np.array(low, dtype.numpy))], [out])
        elif np.isfinite(high):
            ctx.add_op("MINIMUM", [x, ctx.add_constant(f"{node.name}/max", np.array(high, dtype.numpy))], [out])
        else:
            ctx.alias(out, x)


@register
class Relu6(_ClampSpec):
    kind = "RELU6"
    # TFLite Micro's int8 RELU6 clamps on the input's grid and never requantizes
    # (activations_common.cc Relu6Prepare), so the output must share the input's params.
    quant = SameAsInput(dtypes=WITH_INT16)
    high = 6.0
    cases = [_clip_case("clip_0_6", 0.0, 6.0)]


@register
class ReluN1To1(_ClampSpec):
    kind = "RELU_N1_TO_1"
    low, high = -1.0, 1.0
    cases = [_clip_case("clip_m1_1", -1.0, 1.0)]

    def version(self, op: Op, graph: Graph) -> int:
        return 1
