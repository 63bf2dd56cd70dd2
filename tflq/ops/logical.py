"""LOGICAL_AND, LOGICAL_OR, LOGICAL_NOT: ONNX And, Or, Not on bool tensors (Xor is NOT_EQUAL)."""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq._generated.tflite.LogicalAndOptions import LogicalAndOptionsT
from tflq._generated.tflite.LogicalNotOptions import LogicalNotOptionsT
from tflq._generated.tflite.LogicalOrOptions import LogicalOrOptionsT
from tflq.ops import register_family
from tflq.ops.base import Case, FloatOnly, OpSpec, Transparent

_A = np.array([[True, False, True, False]])
_B = np.array([[True, True, False, False]])


def _logical_cases(op_type: str) -> list[Case]:
    return [
        Case("same_shape", [helper.make_node(op_type, ["a", "b"], ["y"])], {"a": _A, "b": _B}),
        Case("broadcast_const", [helper.make_node(op_type, ["a", "c"], ["y"])], {"a": _A.reshape(2, 2)},
             {"c": np.array([True, False])}),
        Case("from_comparisons", [helper.make_node("Greater", ["x", "lo"], ["p"]),
                                  helper.make_node("Less", ["x", "hi"], ["q"]),
                                  helper.make_node(op_type, ["p", "q"], ["y"])],
             {"x": np.linspace(-2, 2, 12, dtype=np.float32).reshape(1, 3, 2, 2)},
             {"lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32)}),
    ]


class _Logical(OpSpec):
    """bool in, bool out: never quantized, never a float island."""

    layout = Transparent()
    quant = FloatOnly()
    numpy_fn = staticmethod(np.logical_and)
    Options = LogicalAndOptionsT

    def from_onnx(self, node, ctx) -> None:
        ctx.add_op(self.kind, list(node.input), [node.output[0]])

    def reference(self, *inputs):
        return (self.numpy_fn(*inputs),)

    def options(self, attrs):
        return self.Options()


register_family(
    _Logical,
    dict(kind="LOGICAL_AND", onnx_types=("And",), numpy_fn=np.logical_and, Options=LogicalAndOptionsT,
         cases=_logical_cases("And")),
    dict(kind="LOGICAL_OR", onnx_types=("Or",), numpy_fn=np.logical_or, Options=LogicalOrOptionsT,
         cases=_logical_cases("Or")),
    dict(kind="LOGICAL_NOT", onnx_types=("Not",), numpy_fn=np.logical_not, Options=LogicalNotOptionsT,
         cases=[Case("not", [helper.make_node("Not", ["a"], ["y"])], {"a": _A}),
                Case("not_of_equal_nchw", [helper.make_node("Equal", ["x", "c"], ["e"]),
                                           helper.make_node("Not", ["e"], ["y"])],
                     {"x": np.round(np.linspace(-2, 2, 24, dtype=np.float32)).reshape(1, 2, 3, 4)},
                     {"c": np.array(1.0, np.float32)})]),
)
