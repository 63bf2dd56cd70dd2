"""Seeded ONNX models shaped like PyTorch's exports (Conv + BatchNormalization + Clip/Relu, Flatten,
Gemm), built with onnx.helper so the tests need no PyTorch: MobileNetV2 and ResNet-18 at any input
size, and a small YOLO-style detector (SiLU, Concat, nearest Resize, a reshaped head)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class GraphBuilder:
    """Collects nodes and initializers; every helper returns the name of the value it made."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: int = 1, **attrs) -> str | list[str]:
        names = [self.name(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=f"/{names[0]}", **attrs))
        return names[0] if outputs == 1 else names

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
             bias: bool = False) -> str:
        fan_in = cin // groups * k * k
        w = self.rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin // groups, k, k)).astype(np.float32)
        inputs = [x, self.const("w", w)]
        if bias:
            inputs.append(self.const("b", self.rng.normal(0, 0.1, cout).astype(np.float32)))
        return self.node("Conv", inputs, kernel_shape=[k, k], strides=[stride, stride],
                         pads=[k // 2] * 4, group=groups, dilations=[1, 1])

    def bn(self, x: str, c: int) -> str:
        return self.node("BatchNormalization", [
            x, self.const("gamma", self.rng.uniform(0.5, 1.5, c).astype(np.float32)),
            self.const("beta", self.rng.normal(0, 0.25, c).astype(np.float32)),
            self.const("mean", self.rng.normal(0, 0.5, c).astype(np.float32)),
            self.const("var", self.rng.uniform(0.5, 2.0, c).astype(np.float32))], epsilon=1e-5)

    def relu6(self, x: str) -> str:
        return self.node("Clip", [x, self.const("min", np.array(0, np.float32)),
                                  self.const("max", np.array(6, np.float32))])

    def silu(self, x: str) -> str:
        return self.node("Mul", [x, self.node("Sigmoid", [x])])

    def model(self, x: str, out: str, input_shape, opset: int = 13) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("Identity", [out], ["logits"], name="/output"))
        graph = helper.make_graph(self.nodes, "zoo",
                                  [helper.make_tensor_value_info(x, TensorProto.FLOAT, input_shape)],
                                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
                                  self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 7
        return model


def mobilenet_v2(size: int = 224, classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    b = GraphBuilder(seed)
    x = b.relu6(b.bn(b.conv("input", 3, 32, 3, 2), 32))
    cin = 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = x
            if t != 1:
                y = b.relu6(b.bn(b.conv(y, cin, hidden, 1), hidden))
            y = b.relu6(b.bn(b.conv(y, hidden, hidden, 3, stride, groups=hidden), hidden))
            y = b.bn(b.conv(y, hidden, c, 1), c)
            x = b.node("Add", [x, y]) if stride == 1 and cin == c else y
            cin = c
    x = b.relu6(b.bn(b.conv(x, cin, 1280, 1), 1280))
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1)
    fc = b.rng.normal(0, 0.01, (classes, 1280)).astype(np.float32)
    x = b.node("Gemm", [x, b.const("fc_w", fc), b.const("fc_b", np.zeros(classes, np.float32))],
               transB=1)
    return b.model("input", x, ["batch", 3, size, size])


def resnet18(size: int = 224, classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    b = GraphBuilder(seed)
    x = b.node("Relu", [b.bn(b.conv("input", 3, 64, 7, 2), 64)])
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for c, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for i in range(2):
            s = stride if i == 0 else 1
            y = b.node("Relu", [b.bn(b.conv(x, cin, c, 3, s), c)])
            y = b.bn(b.conv(y, c, c, 3), c)
            shortcut = b.bn(b.conv(x, cin, c, 1, s), c) if (s != 1 or cin != c) else x
            x = b.node("Relu", [b.node("Add", [y, shortcut])])
            cin = c
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1)
    fc = b.rng.normal(0, 0.02, (classes, 512)).astype(np.float32)
    x = b.node("Gemm", [x, b.const("fc_w", fc), b.const("fc_b", np.zeros(classes, np.float32))],
               transB=1)
    return b.model("input", x, ["batch", 3, size, size])


def yolo_like(size: int = 64, seed: int = 0) -> onnx.ModelProto:
    """Backbone of Conv+BN+SiLU, an upsampled skip joined by Concat, and a detection head whose
    output is reshaped and transposed to [batch, anchors*cells, 5 + classes] like YOLOv5's."""
    b = GraphBuilder(seed)
    c1 = b.silu(b.bn(b.conv("input", 3, 16, 3, 2), 16))
    c2 = b.silu(b.bn(b.conv(c1, 16, 32, 3, 2), 32))
    c3 = b.silu(b.bn(b.conv(c2, 32, 32, 3, 2), 32))
    up = b.node("Resize", [c3, "", b.const("scales", np.array([1, 1, 2, 2], np.float32))],
                mode="nearest")
    merged = b.node("Concat", [up, c2], axis=1)
    p = b.silu(b.bn(b.conv(merged, 64, 32, 3), 32))
    head = b.conv(p, 32, 3 * 9, 1, bias=True)  # 3 anchors x (5 + 4 classes)
    cells = (size // 4) ** 2
    r = b.node("Reshape", [head, b.const("shape", np.array([1, 3, 9, size // 4, size // 4], np.int64))])
    t = b.node("Transpose", [r], perm=[0, 1, 3, 4, 2])
    out = b.node("Reshape", [b.node("Sigmoid", [t]),
                             b.const("shape", np.array([1, 3 * cells, 9], np.int64))])
    return b.model("input", out, [1, 3, size, size], opset=14)


def squeeze_excite(size: int = 16, channels: int = 16, seed: int = 0) -> onnx.ModelProto:
    """MobileNetV3-style block: conv, a squeeze-excitation gate (global pool, two 1x1 convs,
    HardSigmoid or Sigmoid) multiplied back onto the features, then HardSwish."""
    b = GraphBuilder(seed)
    x = b.node("HardSwish", [b.bn(b.conv("input", 3, channels, 3), channels)])
    squeezed = b.node("GlobalAveragePool", [x])
    hidden = b.node("Relu", [b.conv(squeezed, channels, channels // 4, 1, bias=True)])
    gate = b.node("Sigmoid", [b.conv(hidden, channels // 4, channels, 1, bias=True)])
    y = b.node("Mul", [x, gate])
    out = b.conv(y, channels, 8, 1, bias=True)
    return b.model("input", out, [1, 3, size, size], opset=14)


# name -> (builder, input size), the models the end-to-end tests convert.
ZOO = {"mobilenet_v2": (mobilenet_v2, 224), "resnet18": (resnet18, 224), "yolo_like": (yolo_like, 64)}
