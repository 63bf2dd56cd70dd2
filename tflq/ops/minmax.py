"""MAXIMUM and MINIMUM: ONNX Max and Min (chained for more than two inputs), and the general Clip bounds."""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq._generated.tflite.MaximumMinimumOptions import MaximumMinimumOptionsT
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import WITH_INT16, Case, OpSpec, SameAsInput, Transparent, rand


def _cases(op_type: str) -> list[Case]:
    return [
        Case("same_shape", [helper.make_node(op_type, ["a", "b"], ["y"])],
             {"a": rand(1, 3, 4, 4), "b": rand(1, 3, 4, 4, seed=1)}),
        Case("channel_const", [helper.make_node(op_type, ["a", "c"], ["y"])],
             {"a": rand(1, 3, 4, 4)}, {"c": rand(3, 1, 1, seed=2)}),
        Case("scalar_const_2d", [helper.make_node(op_type, ["a", "c"], ["y"])],
             {"a": rand(2, 5)}, {"c": np.array(0.25, np.float32)}),
        Case("three_inputs_broadcast", [helper.make_node(op_type, ["a", "b", "c"], ["y"])],
             {"a": rand(3, 4), "b": rand(1, 4, seed=3), "c": rand(3, 1, seed=4)}),
    ]


def _clip_case(name: str, low: float | None, high: float | None) -> Case:
    """ONNX Clip with bounds no RELU kind covers: relu.py's importer lowers it to MAXIMUM/MINIMUM."""
    inputs, consts = ["x"], {}
    for key, value in (("lo", low), ("hi", high)):
        if value is not None:
            consts[key] = np.array(value, np.float32)
        inputs.append(key if value is not None else "")
    while inputs[-1] == "":
        inputs.pop()
    return Case(name, [helper.make_node("Clip", inputs, ["y"])], {"x": rand(1, 3, 4, 4, low=-5, high=5)},
                consts)


class _Extremum(OpSpec):
    """Elementwise max/min with broadcasting; the 8-bit kernels compare raw integers, so every
    operand and the output must share one scale and zero point."""

    layout = Transparent()
    quant = SameAsInput(rounding_commutes=True)
    numpy_fn = staticmethod(np.maximum)

    def from_onnx(self, node, ctx) -> None:
        inputs = [name for name in node.input if name]
        out = node.output[0]
        if len(inputs) == 1:
            ctx.alias(out, inputs[0])
            return
        acc = inputs[0]
        for k, name in enumerate(inputs[1:], start=1):
            if k == len(inputs) - 1:
                target = out
            else:
                shape = tuple(np.broadcast_shapes(ctx.shape(acc), ctx.shape(name)))
                target = ctx.new_activation(f"{out}/partial_{k}", shape)
            ctx.add_op(self.kind, [acc, name], [target])
            acc = target

    def reference(self, a, b):
        result = self.numpy_fn(a, b)  # integer data (ScatterND max/min of ids) keeps its type
        return (result.astype(np.float32) if result.dtype.kind == "f" else result,)

    def options(self, attrs):
        return MaximumMinimumOptionsT()

    def version(self, op: Op, graph: Graph) -> int:
        a, b = (graph.tensors[n] for n in op.inputs[:2])
        if a.dtype.name == "INT16":
            return 4
        if a.shape != b.shape and max(a.rank, b.rank) > 4:
            return 3
        return 2 if a.dtype.name == "INT8" else 1


@register
class Maximum(_Extremum):
    """ONNX Max; also the lower bound of a Clip that no RELU kind matches."""

    kind = "MAXIMUM"
    quant = SameAsInput(dtypes=WITH_INT16, rounding_commutes=True, clamps=True)
    onnx_types = ("Max",)
    cases = _cases("Max") + [_clip_case("clip_min_only", 0.5, None),
                             Case("clip_computed_min", [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
                                                        helper.make_node("Clip", ["x", "m"], ["y"])],
                                  {"x": rand(1, 3, 4, 4, low=-5, high=5)}),
                             Case("clip_min_input_max_const", [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
                                  {"x": rand(2, 6, low=-5, high=5), "lo": np.array([-1.5], np.float32)},
                                  {"hi": np.array(2.0, np.float32)}),
                             # one constant read by two MAXIMUMs on different grids (tf2onnx folds
                             # the -0.4 after every LeakyRelu into one): each op needs it on its own
                             Case("shared_const_two_grids",
                                  [helper.make_node("Max", ["x", "c"], ["m"]),
                                   helper.make_node("Mul", ["m", "k"], ["t"]),
                                   helper.make_node("Max", ["t", "c"], ["y"])],
                                  {"x": rand(1, 3, 4, 4, low=-5, high=5)},
                                  {"c": np.array(-0.4, np.float32), "k": np.array(-4.0, np.float32)})]


@register
class Minimum(_Extremum):
    """ONNX Min; also the upper bound of a Clip that no RELU kind matches."""

    kind = "MINIMUM"
    quant = SameAsInput(dtypes=WITH_INT16, rounding_commutes=True, clamps=True)
    onnx_types = ("Min",)
    numpy_fn = staticmethod(np.minimum)
    cases = _cases("Min") + [_clip_case("clip_m2_3", -2.0, 3.0), _clip_case("clip_max_only", None, 2.0)]
