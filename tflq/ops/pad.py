"""PAD, PADV2 and MIRROR_PAD: ONNX Pad, and the explicit padding Conv/Pool need when SAME/VALID do not fit."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.MirrorPadOptions import MirrorPadOptionsT
from tflq._generated.tflite.MirrorPadMode import MirrorPadMode
from tflq._generated.tflite.PadOptions import PadOptionsT
from tflq._generated.tflite.PadV2Options import PadV2OptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import WITH_INT16, AxisSensitive, Case, OpSpec, SameAsInput, rand
from tflq.ops.checks import Choice
from tflq.ops.common import quantized_version


def add_explicit_pad(ctx, x: str, pads: tuple[int, int, int, int], value: float = 0.0) -> str:
    """Zero-pad (or `value`-pad) the spatial axes of an NCHW tensor by (top, left, bottom, right)."""
    n, c, h, w = ctx.shape(x)
    top, left, bottom, right = pads
    paddings = np.array([[0, 0], [0, 0], [top, bottom], [left, right]], np.int32)
    out = ctx.new_activation(f"{x}/padded", (n, c, h + top + bottom, w + left + right))
    inputs = [x, ctx.add_constant(f"{x}/paddings", paddings)]
    if value == 0.0:
        ctx.add_op("PAD", inputs, [out])
    else:
        inputs.append(ctx.add_constant(f"{x}/pad_value", np.array(value, np.float32)))
        ctx.add_op("PADV2", inputs, [out])
    return out


def _pad_case(name, mode="constant", pads=(0, 0, 1, 2, 0, 0, 2, 1), value=None, opset=17) -> Case:
    consts = {"pads": np.array(pads, np.int64)}
    inputs = ["x", "pads"]
    if value is not None:
        consts["value"] = np.array(value, np.float32)
        inputs.append("value")
    return Case(name, [helper.make_node("Pad", inputs, ["y"], mode=mode)],
                {"x": rand(1, 3, 5, 6)}, consts, opset=opset)


@dataclass(frozen=True)
class MirrorPadAttrs:
    mode: str = "REFLECT"


@register
class Pad(OpSpec):
    """ONNX Pad (constant 0); other constants go to PADV2, reflect to MIRROR_PAD."""

    kind = "PAD"
    onnx_types = ("Pad",)
    onnx_checks = (Choice(name="mode", values=("constant", "reflect", "edge", "wrap")),)
    layout = AxisSensitive(per_axis_inputs=(1,))
    quant = SameAsInput(dtypes=WITH_INT16, moves_values=True)
    cases = [_pad_case("zeros_hw"), _pad_case("zeros_channels", pads=(0, 1, 0, 0, 0, 2, 0, 0))]

    def from_onnx(self, node, ctx) -> None:
        rank = ctx.rank(node.input[0])
        if ctx.opset < 11:
            pads = np.array(ctx.attr(node, "pads"), np.int64)
            value = float(ctx.attr(node, "value", 0.0))
        else:
            pads = ctx.require_constant(node, 1, "pads").astype(np.int64)
            value_in = ctx.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if len(node.input) > 2 and node.input[2] and value_in is None:
                raise Unsupported(node, "non_constant_input", "input 2 (constant_value) must be a constant")
            value = float(value_in) if value_in is not None else 0.0
        if len(node.input) > 3 and node.input[3]:
            axes = [int(a) % rank for a in ctx.require_constant(node, 3, "axes")]
            full = np.zeros(2 * rank, np.int64)
            for k, a in enumerate(axes):
                full[a], full[rank + a] = pads[k], pads[len(axes) + k]
            pads = full
        if np.any(pads < 0):
            raise Unsupported(node, "negative_pad", "negative pads (cropping) are not supported")
        paddings = ctx.add_constant(f"{node.name}/paddings",
                                    np.stack([pads[:rank], pads[rank:]], axis=1).astype(np.int32))
        mode = ctx.attr(node, "mode", "constant")
        if mode == "constant":
            if value == 0.0:
                ctx.add_op("PAD", [node.input[0], paddings], [node.output[0]])
            else:
                value_name = ctx.add_constant(f"{node.name}/value", np.array(value, np.float32))
                ctx.add_op("PADV2", [node.input[0], paddings, value_name], [node.output[0]])
        elif mode == "reflect":
            ctx.add_op("MIRROR_PAD", [node.input[0], paddings], [node.output[0]],
                       MirrorPadAttrs("REFLECT"))
        else:
            raise Unsupported(node, "pad_mode", f"Pad mode '{mode}' is not supported",
                              "use mode 'constant' or 'reflect'")

    def reference(self, x, paddings):
        return (np.pad(x, paddings.astype(np.int64)),)

    def options(self, attrs):
        return PadOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        x = graph.tensors[op.inputs[0]]
        if x.rank > 4:
            return 4
        return quantized_version(graph, op, int16=3)


@register
class PadV2(OpSpec):
    """Constant padding with a non-zero value (emitted by Pad's importer)."""

    kind = "PADV2"
    layout = AxisSensitive(per_axis_inputs=(1,))
    quant = SameAsInput(dtypes=WITH_INT16, rounding_commutes=True)
    cases = [_pad_case("value_1_5", value=1.5)]

    def reference(self, x, paddings, value):
        return (np.pad(x, paddings.astype(np.int64), constant_values=value),)

    def options(self, attrs):
        return PadV2OptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        return Pad.version(self, op, graph)


@register
class MirrorPad(OpSpec):
    """ONNX Pad with mode 'reflect'."""

    kind = "MIRROR_PAD"
    Attrs = MirrorPadAttrs
    layout = AxisSensitive(per_axis_inputs=(1,))
    quant = SameAsInput(dtypes=WITH_INT16, moves_values=True)
    cases = [_pad_case("reflect", mode="reflect")]

    def reference(self, x, paddings, *, mode):
        return (np.pad(x, paddings.astype(np.int64), mode="reflect" if mode == "REFLECT" else "symmetric"),)

    def options(self, attrs):
        return MirrorPadOptionsT(mode=getattr(MirrorPadMode, attrs.mode))

    def version(self, op: Op, graph: Graph) -> int:
        return quantized_version(graph, op, int16=3)
