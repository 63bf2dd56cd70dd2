"""The CRNN captcha pattern of issue 8: a conv front end, then an LSTM unrolled into Gemm, Sigmoid,
Tanh, Mul and Add, where the last cell state feeds only its Tanh. tflq used to fuse that Tanh into
the ADD as fused_activation_function = TANH, which LiteRT's ADD ignores (12 dB on the real model).
Float must be >= 80 dB against onnxruntime on the worst of 8 inputs; full int8 must run."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime
from tflq.config import ConvertConfig
from tflq.ir.quant import sqnr_db
from tflq.pipeline import convert

STEPS, HIDDEN, CLASSES = 8, 12, 7
SHAPE = (1, 1, 8, 2 * STEPS)
FLOAT_SQNR_DB = 80.0
INT8_SQNR_DB = 20.0


def crnn_model() -> onnx.ModelProto:
    rng = np.random.default_rng(8)
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    # conv front end: [1, 1, 8, 16] -> [1, 4, 4, 8] -> sequence [T=8, 1, F=16]
    y = node("Conv", ["x", const("conv_w", rng.normal(0, 0.5, (4, 1, 3, 3))),
                      const("conv_b", rng.normal(0, 0.1, 4))], "conv", pads=[1, 1, 1, 1])
    y = node("Relu", [y], "relu")
    y = node("MaxPool", [y], "pool", kernel_shape=[2, 2], strides=[2, 2])
    y = node("Reshape", [y, "seq_shape"], "features")  # [1, 16, 8]
    inits.append(numpy_helper.from_array(np.array([1, 16, STEPS], np.int64), "seq_shape"))
    features = node("Transpose", [y], "sequence", perm=[2, 0, 1])  # [T, 1, 16]
    inits.append(numpy_helper.from_array(np.array([1, 16], np.int64), "step_shape"))
    inits.append(numpy_helper.from_array(np.array([HIDDEN] * 4, np.int64), "gate_split"))
    w = const("lstm_w", rng.normal(0, 0.4, (4 * HIDDEN, 16)))
    r = const("lstm_r", rng.normal(0, 0.4, (4 * HIDDEN, HIDDEN)))
    b = const("lstm_b", rng.normal(0, 0.2, 4 * HIDDEN))
    h = const("h_init", np.zeros((1, HIDDEN)))
    c = const("c_init", np.zeros((1, HIDDEN)))
    hidden = []
    for t in range(STEPS):
        inits.append(numpy_helper.from_array(np.array([t], np.int64), f"t{t}"))
        inits.append(numpy_helper.from_array(np.array([t + 1], np.int64), f"t{t + 1}_end"))
        x_t = node("Slice", [features, f"t{t}", f"t{t + 1}_end", "axis0"], f"x{t}")
        x_t = node("Reshape", [x_t, "step_shape"], f"x{t}_flat")
        gates = node("Add", [node("Gemm", [x_t, w, b], f"xw{t}", transB=1),
                             node("Gemm", [h, r], f"hr{t}", transB=1)], f"gates{t}")
        outs = [f"i{t}", f"f{t}", f"g{t}", f"o{t}"]
        nodes.append(helper.make_node("Split", [gates, "gate_split"], outs, axis=1, name=f"split{t}"))
        i_t, f_t = node("Sigmoid", [outs[0]], f"si{t}"), node("Sigmoid", [outs[1]], f"sf{t}")
        g_t, o_t = node("Tanh", [outs[2]], f"tg{t}"), node("Sigmoid", [outs[3]], f"so{t}")
        # at the last step c feeds only its Tanh: the fusion candidate
        c = node("Add", [node("Mul", [f_t, c], f"fc{t}"), node("Mul", [i_t, g_t], f"ig{t}")], f"c{t}")
        h = node("Mul", [o_t, node("Tanh", [c], f"tc{t}")], f"h{t}")
        hidden.append(h)
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    seq = node("Concat", hidden, "hidden", axis=0)  # [T, HIDDEN]
    logits = node("Gemm", [seq, const("fc_w", rng.normal(0, 0.5, (CLASSES, HIDDEN))),
                           const("fc_b", rng.normal(0, 0.1, CLASSES))], "logits", transB=1)
    node("Softmax", [logits], "y", axis=-1)
    graph = helper.make_graph(nodes, "crnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [STEPS, CLASSES]),
                               helper.make_tensor_value_info("logits", TensorProto.FLOAT, [STEPS, CLASSES])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _samples(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 2, SHAPE).astype(np.float32) for _ in range(count)]


def _worst_db(path: str, tflite: bytes, samples) -> float:
    worst = float("inf")
    for x in samples:
        for e, a in zip(run_onnxruntime(path, {"x": x}), run_litert(tflite, [x])):
            assert e.shape == a.shape
            worst = min(worst, sqnr_db(e, a))
    return worst


def test_unrolled_lstm_float_is_exact_on_the_worst_sample(tmp_path):
    path = str(tmp_path / "crnn.onnx")
    onnx.save(crnn_model(), path)
    report = convert(ConvertConfig(model=path))
    # Every Tanh stays an op: the last cell state's ADD carries no fused TANH.
    assert report.op_counts["TANH"] == 2 * STEPS
    assert _worst_db(path, report.tflite, _samples(8, 1)) >= FLOAT_SQNR_DB


def test_unrolled_lstm_int8_runs_in_litert(tmp_path):
    path = str(tmp_path / "crnn.onnx")
    onnx.save(crnn_model(), path)
    calib = _samples(8, 2)
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=[{"x": x} for x in calib]))
    assert _worst_db(path, report.tflite, calib) >= INT8_SQNR_DB
