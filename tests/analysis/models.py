"""Small ONNX models for the accuracy tooling's tests, built with onnx.helper."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BAD_LAYER = "bad_conv"


def bad_layer_model(seed: int = 0) -> onnx.ModelProto:
    """Conv-ReLU x4, global pool and a classifier, where conv `bad_conv` has one weight per output
    channel 400x the others on an input channel that is almost 0: int8 (per channel or not) keeps
    the outliers and rounds every useful weight of that layer to a step of 40/127, so it alone
    makes the error; kept float it costs nothing."""
    rng = np.random.default_rng(seed)
    channels, size = 8, 10
    inits, nodes = [], []

    def conv(name: str, x: str, cin: int, w: np.ndarray | None = None, b: np.ndarray | None = None) -> str:
        w = rng.normal(0, 0.4, (channels, cin, 3, 3)).astype(np.float32) if w is None else w
        b = rng.normal(0, 0.1, channels).astype(np.float32) if b is None else b
        inits.extend([numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_out"],
                                      name=name, pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"{name}_out"], [f"{name}_relu"], name=f"{name}_relu"))
        return f"{name}_relu"

    y = conv("conv1", "input", 3)
    w2 = rng.normal(0, 0.4, (channels, channels, 3, 3)).astype(np.float32)
    b2 = rng.normal(0, 0.1, channels).astype(np.float32)
    # channel 0 of conv2 is the constant 0.01 after the ReLU: nearly silent, not exactly 0 (a channel
    # that is provably 0 has the weights reading it zeroed, quantize/dead_channels.py)
    w2[0], b2[0] = 0.0, 0.01
    y = conv("conv2", y, channels, w2, b2)
    wb = rng.normal(0, 0.1, (channels, channels, 3, 3)).astype(np.float32)
    wb[:, 0, 1, 1] = 40.0  # the outliers, on the silent channel
    y = conv(BAD_LAYER, y, channels, wb)
    y = conv("conv4", y, channels)
    nodes.append(helper.make_node("GlobalAveragePool", [y], ["pooled"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"))
    inits.append(numpy_helper.from_array(rng.normal(0, 0.5, (10, channels)).astype(np.float32), "fc_w"))
    inits.append(numpy_helper.from_array(rng.normal(0, 0.1, 10).astype(np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(nodes, "bad_layer", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def samples(count: int, seed: int, shape=(1, 3, 10, 10)) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.normal(0, 1, shape).astype(np.float32)} for _ in range(count)]
