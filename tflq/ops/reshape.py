"""RESHAPE (ONNX Reshape, Flatten, Squeeze, Unsqueeze) and TRANSPOSE."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from tflq._generated.tflite.TransposeOptions import TransposeOptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import WITH_INT16, Case, LayoutBreaking, OpSpec, PermutesAxes, SameAsInput, rand
from tflq.ops.checks import Arity, Axis, ReshapeCount
from tflq.ops.common import quantized_version


def add_reshape(ctx, x: str, out: str, shape: tuple[int, ...]) -> None:
    """RESHAPE `x` to the static `shape` (the shape is also given as an int32 constant input)."""
    shape_name = ctx.add_constant(f"{out}/shape", np.array(shape, np.int32))
    ctx.add_op("RESHAPE", [x, shape_name], [out])


@register
class Reshape(OpSpec):
    """All static reshapes; ONNX shapes are known after shape inference, so -1 and 0 are resolved."""

    kind = "RESHAPE"
    onnx_types = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")
    onnx_checks = (Arity(inputs=(2, 2), only=("Reshape",)), ReshapeCount(only=("Reshape",)),
                   Axis(name="axis", extra=1, only=("Flatten",)))
    layout = LayoutBreaking()
    quant = SameAsInput(dtypes=WITH_INT16, moves_values=True)

    def keeps_channel_means(self, op: Op, graph: Graph) -> bool:
        return True  # row-major: a last axis of the same size keeps each value's channel
    cases = [
        Case("reshape", [helper.make_node("Reshape", ["x", "s"], ["y"])], {"x": rand(1, 4, 3, 2)},
             {"s": np.array([1, -1, 6], np.int64)}),
        Case("flatten", [helper.make_node("Flatten", ["x"], ["y"], axis=1)], {"x": rand(2, 3, 4, 5)}),
        Case("squeeze", [helper.make_node("Squeeze", ["x", "a"], ["y"])], {"x": rand(1, 3, 1, 5)},
             {"a": np.array([2], np.int64)}),
        Case("unsqueeze", [helper.make_node("Unsqueeze", ["x", "a"], ["y"])], {"x": rand(3, 5)},
             {"a": np.array([0, 3], np.int64)}),
        Case("identity_dropout_cast", [helper.make_node("Identity", ["x"], ["i"]),
                                       helper.make_node("Dropout", ["i"], ["d"]),
                                       helper.make_node("Cast", ["d"], ["c"], to=TensorProto.FLOAT),
                                       helper.make_node("Reshape", ["c", "s"], ["y"])],
             {"x": rand(2, 6)}, {"s": np.array([3, 4], np.int64)}),
    ]

    def from_onnx(self, node, ctx) -> None:
        if node.op_type in ("Identity", "Dropout"):
            return self._pass_through(node, ctx)
        add_reshape(ctx, node.input[0], node.output[0], ctx.shape(node.output[0]))

    @staticmethod
    def _pass_through(node, ctx) -> None:
        """Identity and inference-mode Dropout change nothing: alias them."""
        if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
            raise Unsupported(node, "dropout_mask", "Dropout's mask output is not supported")
        ctx.alias(node.output[0], node.input[0])

    def reference(self, x, shape):
        return (x.reshape(tuple(int(d) for d in shape)),)

    def version(self, op: Op, graph: Graph) -> int:
        return 1


@register
class Transpose(OpSpec):
    """ONNX Transpose; the permutation is an int32 constant input."""

    kind = "TRANSPOSE"
    onnx_types = ("Transpose",)
    onnx_checks = (Arity(inputs=(1, 1)),)
    layout = PermutesAxes()
    quant = SameAsInput(dtypes=WITH_INT16, moves_values=True)
    cases = [
        Case("perm_0213", [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 1, 3])],
             {"x": rand(1, 3, 4, 5)}),
        Case("rank3", [helper.make_node("Transpose", ["x"], ["y"], perm=[2, 0, 1])], {"x": rand(2, 3, 4)}),
        Case("default_reverse", [helper.make_node("Transpose", ["x"], ["y"])], {"x": rand(2, 3, 4)}),
    ]

    def from_onnx(self, node, ctx) -> None:
        rank = ctx.rank(node.input[0])
        perm = ctx.attr(node, "perm", list(range(rank))[::-1])
        perm_name = ctx.add_constant(f"{node.name}/perm", np.array(perm, np.int32))
        ctx.add_op("TRANSPOSE", [node.input[0], perm_name], [node.output[0]])

    def reference(self, x, perm):
        return (np.ascontiguousarray(x.transpose(tuple(int(p) for p in perm))),)

    def options(self, attrs):
        return TransposeOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        x = graph.tensors[op.inputs[0]]
        if x.rank > 5:
            return 6
        if x.dtype.name == "INT16":
            return 5
        if x.rank > 4:
            return 4
        return quantized_version(graph, op)
