"""PAD, PADV2 and MIRROR_PAD: ONNX Pad, and the explicit padding Conv/Pool need when SAME/VALID do not fit."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from onnx import helper, numpy_helper

from tflq._generated.tflite.MirrorPadOptions import MirrorPadOptionsT
from tflq._generated.tflite.MirrorPadMode import MirrorPadMode
from tflq._generated.tflite.PadOptions import PadOptionsT
from tflq._generated.tflite.PadV2Options import PadV2OptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import WITH_INT16, AxisSensitive, Case, OpSpec, SameAsInput, rand
from tflq.ops.checks import Choice
from tflq.ops.common import constant_pad, quantized_version
from tflq.ops.reshape import add_reshape


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


def _onnx_constant_pad(op: Op, graph: Graph, onnx_axes: list[int], value: float):
    """ONNX Pad of `op`'s constant paddings (PAD, PADV2) on the ONNX tensor of its input."""
    x, paddings = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    if paddings.data is None:
        return None
    rank = x.rank
    pads = np.zeros(2 * rank, np.int64)
    for axis, (before, after) in enumerate(np.asarray(paddings.data).reshape(rank, 2)):
        pads[onnx_axes[axis]], pads[rank + onnx_axes[axis]] = before, after
    name = f"{op.outputs[0]}/onnx_pads"
    initializers = [numpy_helper.from_array(pads, name)]
    inputs = [op.inputs[0], name]
    if value != 0.0:
        initializers.append(numpy_helper.from_array(np.array(value, x.dtype.numpy), f"{op.outputs[0]}/onnx_value"))
        inputs.append(initializers[-1].name)
    return [helper.make_node("Pad", inputs, [op.outputs[0]], mode="constant")], initializers


def _padding_values(op: Op, graph: Graph, value: float) -> tuple[float, ...] | None:
    """(value,) when `op` pads anything with it, () when it pads nothing (constant paddings)."""
    paddings = graph.tensors[op.inputs[1]].data
    if paddings is None:
        return None
    return (value,) if np.any(np.asarray(paddings) > 0) else ()


def _pad_case(name, mode="constant", pads=(0, 0, 1, 2, 0, 0, 2, 1), value=None, opset=17) -> Case:
    consts = {"pads": np.array(pads, np.int64)}
    inputs = ["x", "pads"]
    if value is not None:
        consts["value"] = np.array(value, np.float32)
        inputs.append("value")
    return Case(name, [helper.make_node("Pad", inputs, ["y"], mode=mode)],
                {"x": rand(1, 3, 5, 6)}, consts, opset=opset)


def _gather_pad(ctx, node, pads: np.ndarray, mode: str) -> None:
    """Pad modes TFLite has no kernel for, as one GATHER of constant indices per padded axis:
    'edge' repeats the border element (indices clamped), 'wrap' continues from the other side
    (indices modulo the size). Exact, and same-grid in int8."""
    from tflq.ops.gather import add_gather

    x = node.input[0]
    shape = list(ctx.shape(x))
    rank = len(shape)
    padded = [a for a in range(rank) if pads[a] or pads[rank + a]]
    if not padded:
        ctx.alias(node.output[0], x)
        return
    dtype = ctx.graph.tensors[ctx.tensor(x)].dtype
    for k, axis in enumerate(padded):
        before, after, dim = int(pads[axis]), int(pads[rank + axis]), shape[axis]
        positions = np.arange(-before, dim + after)
        if positions.size == 0:
            raise Unsupported(node, "negative_pad", f"negative pads {pads.tolist()} remove every "
                              f"element of axis {axis} of the {list(ctx.shape(node.input[0]))} input")
        indices = np.clip(positions, 0, dim - 1) if mode == "edge" else np.mod(positions, dim)
        shape[axis] = positions.size
        out = node.output[0] if k == len(padded) - 1 else ctx.new_activation(
            f"{node.output[0]}/{mode}_axis{axis}", tuple(shape), dtype)
        add_gather(ctx, x, out, indices, axis)
        x = out


def _gather_pad_case(name, mode, pads, shape=(1, 3, 5, 6), opset=17) -> Case:
    """Pad(mode) then a zero Pad, so the case emits PAD besides the GATHERs it is about."""
    rank = len(shape)
    zeros = np.zeros(2 * rank, np.int64)
    zeros[rank - 1] = 1
    nodes = [helper.make_node("Pad", ["x", "pads"], ["t"], mode=mode),
             helper.make_node("Pad", ["t", "zeros"], ["y"])]
    return Case(name, nodes, {"x": rand(*shape)}, {"pads": np.array(pads, np.int64), "zeros": zeros},
                opset=opset)


@dataclass(frozen=True)
class MirrorPadAttrs:
    mode: str = "REFLECT"


@register
class Pad(OpSpec):
    """ONNX Pad (constant 0); other constants go to PADV2 (a constant_value computed at run time
    too: PADV2 takes it as a tensor), reflect to MIRROR_PAD, edge and wrap to GATHERs."""

    kind = "PAD"
    onnx_types = ("Pad",)
    positively_homogeneous = True  # zeros: pad(s x) = s pad(x)
    onnx_checks = (Choice(name="mode", values=("constant", "reflect", "edge", "wrap")),)
    layout = AxisSensitive(per_axis_inputs=(1,))
    quant = SameAsInput(dtypes=WITH_INT16, moves_values=True)

    def keeps_channel_means(self, op: Op, graph: Graph) -> bool:
        return True  # the zeros at the border aside, as a convolution's own padding
    cases = [_pad_case("zeros_hw"), _pad_case("zeros_channels", pads=(0, 1, 0, 0, 0, 2, 0, 0)),
             _gather_pad_case("edge_hw", "edge", (0, 0, 2, 1, 0, 0, 1, 3)),
             _gather_pad_case("edge_channels_rank3", "edge", (0, 2, 1, 0, 1, 0), shape=(2, 3, 5), opset=13),
             _gather_pad_case("wrap_hw_opset19", "wrap", (0, 0, 1, 2, 0, 0, 2, 1), opset=19),
             # negative pads crop (torch's F.pad with negative sizes)
             # (a crop alone is a STRIDED_SLICE, whose quantization the Slice cases check)
             replace(_pad_case("crop_hw", pads=(0, 0, -1, 0, 0, 0, -2, -1)), emits=("STRIDED_SLICE",),
                     quantize=False),
             _pad_case("crop_and_pad", pads=(0, 0, -1, 2, 0, 0, 1, -2)),
             _gather_pad_case("edge_crop", "edge", (0, 0, -1, 2, 0, 0, 2, -2))]

    def from_onnx(self, node, ctx) -> None:
        rank = ctx.rank(node.input[0])
        if ctx.opset < 11:
            pads = np.array(ctx.attr(node, "pads"), np.int64)
            value = float(ctx.attr(node, "value", 0.0))
        else:
            pads = ctx.require_constant(node, 1, "pads", sets_shape=True).astype(np.int64)
            given = len(node.input) > 2 and node.input[2]
            value_in = ctx.constant(node.input[2]) if given else None
            value = float(value_in.reshape(())) if value_in is not None else 0.0
            if given and value_in is None:  # computed at run time: PADV2 takes it as a tensor
                value = node.input[2]
        if len(node.input) > 3 and node.input[3]:
            axes = [int(a) % rank for a in ctx.require_constant(node, 3, "axes", sets_shape=True)]
            full = np.zeros(2 * rank, np.int64)
            for k, a in enumerate(axes):
                full[a], full[rank + a] = pads[k], pads[len(axes) + k]
            pads = full
        mode = ctx.attr(node, "mode", "constant")
        if mode in ("edge", "wrap"):
            return _gather_pad(ctx, node, pads, mode)  # (its indices crop as well as pad)
        if np.any(pads < 0):
            return self._pad_then_crop(node, ctx, pads, value, mode)
        self._pad(node, ctx, node.output[0], pads, value, mode)

    def _pad_then_crop(self, node, ctx, pads: np.ndarray, value, mode: str) -> None:
        """Negative pads remove elements (opset 11+, torch's F.pad with negative sizes): the
        positive pads first, as the mode pads them from the whole tensor, then a STRIDED_SLICE
        takes the negative ones off."""
        from tflq.ops.slice import add_slice

        shape = ctx.shape(node.input[0])
        rank = len(shape)
        grown = np.maximum(pads, 0)
        size = [d + int(grown[a]) + int(grown[rank + a]) for a, d in enumerate(shape)]
        begin = [int(max(-pads[a], 0)) for a in range(rank)]
        end = [size[a] - int(max(-pads[rank + a], 0)) for a in range(rank)]
        if any(e <= b for b, e in zip(begin, end)):
            raise Unsupported(node, "negative_pad", f"negative pads {pads.tolist()} remove every "
                              f"element of an axis of the {list(shape)} input")
        x = node.input[0]
        if grown.any():
            x = ctx.new_activation(f"{node.output[0]}/padded", tuple(size),
                                   ctx.graph.tensors[ctx.tensor(node.input[0])].dtype)
            self._pad(node, ctx, x, grown, value, mode)
        add_slice(ctx, x, node.output[0], begin, end, [1] * rank)

    def _pad(self, node, ctx, out: str, pads: np.ndarray, value, mode: str) -> None:
        """`node`'s input padded by the non-negative `pads` (ONNX order) into `out`."""
        rank = len(pads) // 2
        paddings = ctx.add_constant(f"{node.name}/paddings",
                                    np.stack([pads[:rank], pads[rank:]], axis=1).astype(np.int32))
        if mode == "constant":
            if isinstance(value, str):
                shape = ctx.shape(value)
                if int(np.prod(shape)) != 1:
                    raise Unsupported(node, "pad_value", "constant_value must hold one value")
                scalar = ctx.new_activation(f"{out}/pad_value", ())
                add_reshape(ctx, value, scalar, ())
                ctx.add_op("PADV2", [node.input[0], paddings, scalar], [out])
            elif value == 0.0:
                ctx.add_op("PAD", [node.input[0], paddings], [out])
            else:
                value_name = ctx.add_constant(f"{node.name}/value", np.array(value, np.float32))
                ctx.add_op("PADV2", [node.input[0], paddings, value_name], [out])
        elif mode == "reflect":
            ctx.add_op("MIRROR_PAD", [node.input[0], paddings], [out],
                       MirrorPadAttrs("REFLECT"))
        else:
            raise Unsupported(node, "pad_mode", f"Pad mode '{mode}' is not supported",
                              "use mode 'constant', 'reflect', 'edge' or 'wrap'")

    def reference(self, x, paddings):
        return (constant_pad(x, paddings),)

    def onnx_equivalent(self, op, graph, onnx_axes):
        return _onnx_constant_pad(op, graph, onnx_axes, 0.0)

    def extremes_from_input(self, op, graph):
        return _padding_values(op, graph, 0.0)

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
    cases = [_pad_case("value_1_5", value=1.5),
             _pad_case("value_crop_channels", pads=(0, -1, 0, 0, 0, 0, 1, 1), value=0.75),
             Case("value_computed", [helper.make_node("Pad", ["x", "pads", "v"], ["y"])],
                  {"x": rand(1, 3, 5, 6), "v": np.array([0.5], np.float32)},
                  {"pads": np.array((0, 0, 1, 2, 0, 0, 2, 1), np.int64)})]

    def reference(self, x, paddings, value):
        return (constant_pad(x, paddings, np.asarray(value).reshape(())),)

    def onnx_equivalent(self, op, graph, onnx_axes):
        value = graph.tensors[op.inputs[2]].data
        if value is None or np.asarray(value).size != 1:
            return None
        return _onnx_constant_pad(op, graph, onnx_axes, float(np.asarray(value).reshape(())))

    def extremes_from_input(self, op, graph):
        value = graph.tensors[op.inputs[2]].data
        if value is None or np.asarray(value).size != 1:
            return None
        return _padding_values(op, graph, float(np.asarray(value).reshape(())))

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
    cases = [_pad_case("reflect", mode="reflect"),
             _pad_case("reflect_then_crop", mode="reflect", pads=(0, 0, 2, -1, 0, 0, -1, 2))]

    def reference(self, x, paddings, *, mode):
        return (np.pad(x, paddings.astype(np.int64), mode="reflect" if mode == "REFLECT" else "symmetric"),)

    def options(self, attrs):
        return MirrorPadOptionsT(mode=getattr(MirrorPadMode, attrs.mode))

    def version(self, op: Op, graph: Graph) -> int:
        return quantized_version(graph, op, int16=3)
