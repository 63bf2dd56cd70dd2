"""Read onnxruntime's operator-oriented quantization (QuantFormat.QOperator: QLinearConv,
QLinearMatMul, com.microsoft QLinearAdd, QGemm...; what the ONNX Model Zoo's int8 models are) back
as the QDQ graph it stands for.

Each QLinear op computes: dequantize its integer inputs with the scales and zero points it is
given, run the float op, quantize the result on its output grid. So each becomes
DequantizeLinear(inputs) -> the float op -> QuantizeLinear(output), under the op's own name, and
the graph is then a QDQ graph whose grids are the model's own (every integer tensor between two
ops is a QuantizeLinear read by DequantizeLinear nodes). The integer ops between them that only
move or select values (MaxPool, Reshape, Resize, Transpose... on integers) commute with
dequantization: they become the float op between a DequantizeLinear and a QuantizeLinear on the
same grid, which is what they computed.

Biases (int32, zero point 0, scale input scale x weight scale) become a DequantizeLinear of their
integers on that scale. What is not one of the forms below is left as it is, for
tflq.frontend.ort_quantized.refuse_onnxruntime_quantized to name.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CONTRIB = "com.microsoft"
# Integer ops of QOperator graphs that move or select values: f(dequantize(q)) = dequantize(f(q))
# on one grid. (Resize in nearest mode only: interpolating integers rounds.)
_MOVES = frozenset({"MaxPool", "GlobalMaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze",
                    "Identity", "Split", "Slice", "Gather", "DepthToSpace", "SpaceToDepth", "Tile",
                    "Expand", "Resize", "Pad", "ReduceMax", "ReduceMin"})
_INDEX_OUTPUTS = frozenset({"ArgMax", "ArgMin"})  # (integer in, int64 indices out: no grid)


class _Unreadable(Exception):
    """A node of a form this module does not rewrite (it is left for the refusal)."""


class _Rewriter:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.inits = {init.name: init for init in self.graph.initializer}
        self.names = {n for node in self.graph.node for n in list(node.input) + list(node.output)} \
            | set(self.inits) | {v.name for v in self.graph.input}
        self.grids: dict[str, tuple[str, str]] = {}  # integer activation -> (scale, zero point) names
        self.dequantized: dict[tuple[str, str, str, int | None], str] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)

    # ---- names, constants, nodes ----
    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def constant(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.inits[name] = numpy_helper.from_array(value, name)
        self.graph.initializer.append(self.inits[name])
        return name

    def value(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def dequantize(self, value: str, scale: str, zero_point: str, axis: int | None = None) -> str:
        key = (value, scale, zero_point, axis)
        if key not in self.dequantized:
            out = self.fresh(f"{value}_dequantized")
            inputs = [value, scale] + ([zero_point] if zero_point else [])
            attrs = {"axis": axis} if axis is not None else {}
            self.nodes.append(helper.make_node("DequantizeLinear", inputs, [out], name=f"{value}_DequantizeLinear",
                                               **attrs))
            self.dequantized[key] = out
        return self.dequantized[key]

    def quantize(self, value: str, scale: str, zero_point: str, out: str) -> None:
        inputs = [value, scale] + ([zero_point] if zero_point else [])
        self.nodes.append(helper.make_node("QuantizeLinear", inputs, [out], name=f"{out}_QuantizeLinear"))
        self.grids[out] = (scale, zero_point)

    def float_op(self, node: onnx.NodeProto, op_type: str, inputs: list[str], out_scale: str, out_zp: str,
                 drop: tuple[str, ...] = (), **attrs) -> None:
        """`op_type` on float `inputs` under the node's name, its result quantized to the node's
        output; the node's attributes are kept but for `drop`."""
        result = self.fresh(f"{node.output[0]}_float")
        op = helper.make_node(op_type, inputs, [result], name=node.name or result, **attrs)
        op.attribute.extend(a for a in node.attribute if a.name not in drop and a.name not in attrs)
        self.nodes.append(op)
        self.quantize(result, out_scale, out_zp, node.output[0])

    # ---- parameters ----
    def scalar_scale(self, name: str) -> np.ndarray:
        scale = self.value(name)
        if scale is None or scale.size != 1 or not scale.reshape(-1)[0] > 0:  # (inf: the QDQ reader names it)
            raise _Unreadable
        return scale

    def activation(self, value: str, scale: str, zero_point: str) -> str:
        """The float value of an integer input on a per-tensor grid (a constant one too)."""
        self.scalar_scale(scale)
        if zero_point and zero_point not in self.inits:
            raise _Unreadable
        return self.dequantize(value, scale, zero_point)

    def weight(self, value: str, scale: str, zero_point: str, axis: int) -> str:
        """The float value of a constant integer weight, per tensor or per channel along `axis`."""
        q, s = self.value(value), self.value(scale)
        if q is None or s is None or not np.isfinite(s).all() or np.any(s <= 0):
            raise _Unreadable
        if zero_point and zero_point not in self.inits:
            raise _Unreadable
        if s.size == 1:
            if s.ndim:
                scale = self.constant(f"{scale}_scalar", s.reshape(()))
            if zero_point and self.value(zero_point).ndim:
                zero_point = self.constant(f"{zero_point}_scalar", self.value(zero_point).reshape(()))
            return self.dequantize(value, scale, zero_point)
        if s.ndim != 1 or q.shape[axis] != s.size:
            raise _Unreadable
        if zero_point and self.value(zero_point).size != s.size:
            zero_point = self.constant(f"{zero_point}_per_channel",
                                       np.broadcast_to(self.value(zero_point).reshape(-1), s.shape).copy())
        return self.dequantize(value, scale, zero_point, axis % q.ndim)

    def bias(self, value: str, scales: np.ndarray) -> str:
        """An int32 bias on `scales` (one, or one per output channel), zero point 0."""
        q = self.value(value)
        if q is None or q.dtype != np.int32 or q.ndim != 1 or scales.size not in (1, q.size):
            raise _Unreadable
        scale = self.constant(f"{value}_scale", scales.reshape(()) if scales.size == 1
                              else scales.reshape(-1).astype(np.float32))
        return self.dequantize(value, scale, "", None if scales.size == 1 else 0)

    # ---- the ops ----
    def qlinear_conv(self, node: onnx.NodeProto) -> None:
        i = list(node.input) + [""] * (9 - len(node.input))
        x = self.activation(i[0], i[1], i[2])
        w = self.weight(i[3], i[4], i[5], 0)
        inputs = [x, w]
        if i[8]:
            inputs.append(self.bias(i[8], (self.scalar_scale(i[1]) * self.value(i[4])).astype(np.float32)))
        self.float_op(node, "Conv", inputs, i[6], i[7])

    def qlinear_matmul(self, node: onnx.NodeProto) -> None:
        a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = list(node.input) + [""] * (8 - len(node.input))
        x = self.activation(a, a_s, a_zp)
        w = self.weight(b, b_s, b_zp, -1) if b in self.inits else self.activation(b, b_s, b_zp)
        self.float_op(node, "MatMul", [x, w], y_s, y_zp)

    def qgemm(self, node: onnx.NodeProto) -> None:
        i = list(node.input) + [""] * (9 - len(node.input))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        alpha, trans_b = float(attrs.get("alpha", 1.0)), int(attrs.get("transB", 0))
        if not i[7]:
            raise _Unreadable  # (a float output: no grid to keep; rare)
        x = self.activation(i[0], i[1], i[2])
        w = self.weight(i[3], i[4], i[5], 0 if trans_b else 1) if i[3] in self.inits \
            else self.activation(i[3], i[4], i[5])
        inputs = [x, w]
        if i[6]:  # C's scale is alpha / beta x a_scale x b_scale, beta folded in: Gemm's beta is 1
            scales = (alpha * self.scalar_scale(i[1]) * self.value(i[4])).astype(np.float32)
            inputs.append(self.bias(i[6], scales))
        self.float_op(node, "Gemm", inputs, i[7], i[8], drop=("beta",), beta=1.0)

    def unary(self, op_type: str, drop: tuple[str, ...] = ()) -> Callable[[onnx.NodeProto], None]:
        def rewrite(node: onnx.NodeProto) -> None:
            x, x_s, x_zp, y_s, y_zp = list(node.input) + [""] * (5 - len(node.input))
            self.float_op(node, op_type, [self.activation(x, x_s, x_zp)], y_s, y_zp, drop=drop)
        return rewrite

    def binary(self, op_type: str) -> Callable[[onnx.NodeProto], None]:
        def rewrite(node: onnx.NodeProto) -> None:
            a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = list(node.input) + [""] * (8 - len(node.input))
            self.float_op(node, op_type, [self.activation(a, a_s, a_zp), self.activation(b, b_s, b_zp)], y_s, y_zp)
        return rewrite

    def qlinear_average_pool(self, node: onnx.NodeProto, global_: bool = False) -> None:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("channels_last", 0):
            raise _Unreadable
        x, x_s, x_zp, y_s, y_zp = list(node.input) + [""] * (5 - len(node.input))
        self.float_op(node, "GlobalAveragePool" if global_ else "AveragePool",
                      [self.activation(x, x_s, x_zp)], y_s, y_zp, drop=("channels_last",))

    def qlinear_softmax(self, node: onnx.NodeProto) -> None:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axis, opset = int(attrs.get("axis", -1)), int(attrs.get("opset", self.opset))
        if (opset < 13) != (self.opset < 13) and axis not in (-1,):
            raise _Unreadable  # (Softmax-1 and Softmax-13 differ unless the axis is the last one)
        x, x_s, x_zp, y_s, y_zp = list(node.input) + [""] * (5 - len(node.input))
        self.float_op(node, "Softmax", [self.activation(x, x_s, x_zp)], y_s, y_zp, drop=("opset",))

    def qlinear_concat(self, node: onnx.NodeProto) -> None:
        y_s, y_zp, *rest = list(node.input)
        if len(rest) % 3 or not rest:
            raise _Unreadable
        inputs = [self.activation(*rest[k:k + 3]) for k in range(0, len(rest), 3)]
        self.float_op(node, "Concat", inputs, y_s, y_zp)

    def qlinear_reduce_mean(self, node: onnx.NodeProto) -> None:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        x, x_s, x_zp, y_s, y_zp = list(node.input) + [""] * (5 - len(node.input))
        inputs = [self.activation(x, x_s, x_zp)]
        if self.opset >= 18 and "axes" in attrs:
            inputs.append(self.constant(f"{node.output[0]}_axes", np.array(attrs["axes"], np.int64)))
            self.float_op(node, "ReduceMean", inputs, y_s, y_zp, drop=("axes",))
        else:
            self.float_op(node, "ReduceMean", inputs, y_s, y_zp)

    def qlinear_where(self, node: onnx.NodeProto) -> None:
        c, x, x_s, x_zp, y, y_s, y_zp, z_s, z_zp = list(node.input) + [""] * (9 - len(node.input))
        self.float_op(node, "Where", [c, self.activation(x, x_s, x_zp), self.activation(y, y_s, y_zp)], z_s, z_zp)

    def move(self, node: onnx.NodeProto) -> None:
        """An integer op that moves or selects values, on a known grid."""
        scale, zero_point = self.grids[node.input[0]]
        if node.op_type == "Resize":
            mode = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "mode"), b"nearest")
            if mode not in (b"nearest", "nearest"):
                raise _Unreadable
        inputs = [self.dequantize(node.input[0], scale, zero_point)] + list(node.input[1:])
        if node.op_type == "Pad" and len(inputs) > 2 and inputs[2]:  # an integer pad value
            value = self.value(inputs[2])
            if value is None:
                raise _Unreadable
            zp = self.value(zero_point) if zero_point else 0
            inputs[2] = self.constant(f"{inputs[2]}_float", np.asarray(
                (value.astype(np.float64) - np.float64(zp)) * self.value(scale).astype(np.float64), np.float32))
        results = [self.fresh(f"{out}_float") if out else "" for out in node.output]
        op = helper.make_node(node.op_type, inputs, results, name=node.name or results[0])
        op.attribute.extend(node.attribute)
        op.domain = node.domain
        self.nodes.append(op)
        for result, out in zip(results, node.output):
            if out:
                self.quantize(result, scale, zero_point, out)

    def index_op(self, node: onnx.NodeProto) -> None:
        scale, zero_point = self.grids[node.input[0]]
        op = helper.make_node(node.op_type, [self.dequantize(node.input[0], scale, zero_point)],
                              list(node.output), name=node.name)
        op.attribute.extend(node.attribute)
        self.nodes.append(op)

    # ---- the graph ----
    def handlers(self) -> dict[tuple[str, str], Callable[[onnx.NodeProto], None]]:
        return {("", "QLinearConv"): self.qlinear_conv,
                ("", "QLinearMatMul"): self.qlinear_matmul,
                (CONTRIB, "QGemm"): self.qgemm,
                (CONTRIB, "QLinearAdd"): self.binary("Add"),
                (CONTRIB, "QLinearMul"): self.binary("Mul"),
                (CONTRIB, "QLinearSigmoid"): self.unary("Sigmoid"),
                (CONTRIB, "QLinearLeakyRelu"): self.unary("LeakyRelu"),
                (CONTRIB, "QLinearAveragePool"): self.qlinear_average_pool,
                (CONTRIB, "QLinearGlobalAveragePool"): lambda n: self.qlinear_average_pool(n, global_=True),
                (CONTRIB, "QLinearSoftmax"): self.qlinear_softmax,
                (CONTRIB, "QLinearConcat"): self.qlinear_concat,
                (CONTRIB, "QLinearReduceMean"): self.qlinear_reduce_mean,
                (CONTRIB, "QLinearWhere"): self.qlinear_where}

    def run(self) -> Counter:
        handlers = self.handlers()
        rewritten: Counter = Counter()
        for node in self.graph.node:
            domain = "" if node.domain in ("", "ai.onnx") else node.domain
            handler = handlers.get((domain, node.op_type))
            mark = len(self.nodes)
            try:
                if handler is not None:
                    handler(node)
                    rewritten[node.op_type] += 1
                    continue
                if domain == "" and node.input and node.input[0] in self.grids:
                    if node.op_type in _MOVES and node.input[0] not in list(node.input)[1:]:
                        self.move(node)
                        continue
                    if node.op_type in _INDEX_OUTPUTS:
                        self.index_op(node)
                        continue
            except _Unreadable:
                del self.nodes[mark:]  # (the node stays as it was, for the refusal to name)
            if node.op_type == "QuantizeLinear" and domain == "" and len(node.input) > 1:
                self.grids[node.output[0]] = (node.input[1], node.input[2] if len(node.input) > 2 else "")
            self.nodes.append(node)
        if rewritten:  # (each integer tensor keeps its name, type and shape: value_info holds)
            del self.graph.node[:]
            self.graph.node.extend(self.nodes)
        return rewritten


def qdq_from_qoperator(model: onnx.ModelProto) -> Counter:
    """Rewrite onnxruntime's QLinear ops of the main graph (and the integer moves between them) as
    QDQ, in place. Returns how many of each QLinear op were rewritten."""
    return _Rewriter(model).run()
