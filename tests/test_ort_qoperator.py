"""Models quantized by onnxruntime in its operator format (quantize_static with
QuantFormat.QOperator: QLinearConv, QLinearMatMul, com.microsoft QLinearAdd, QGemm, ...; the
format of the ONNX Model Zoo's int8 models) convert with their own grids: each QLinear op is read
as its float op between DequantizeLinear and QuantizeLinear, the integer moves between them
(MaxPool, Reshape, Resize, Split, Pad...) as float moves on the same grid. onnxruntime quantizes
the float models here; each file is checked against onnxruntime running the QOperator model and
the float one, on the worst sample, and the weight integers are read back through LiteRT.

Before, such models were refused, asking for the float model."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import importorskip, litert_constants, run_litert, run_onnxruntime
from tflq.cli import main
from tflq.ir.quant import sqnr_db

SAMPLES = 6


def _save(nodes, inputs: dict[str, tuple], outputs: dict[str, tuple[int, tuple]], inits: dict, path) -> str:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in outputs.items()],
        [numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def _cnn(path) -> str:
    """Conv+Relu, MaxPool (integers), Conv + residual Add, LeakyRelu, depthwise Conv, x*Sigmoid(x),
    Concat, AveragePool, nearest Resize (integers), GlobalAveragePool, Reshape (integers), MatMul +
    Add, Gemm, Softmax: every QLinear op onnxruntime writes for a CNN."""
    rng = np.random.default_rng(0)

    def weight(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    inits = {"w1": weight(8, 3, 3, 3), "b1": weight(8), "w2": weight(8, 8, 3, 3, scale=0.2), "b2": weight(8),
             "w3": weight(8, 1, 3, 3), "fc": weight(16, 10), "fb": weight(10), "gw": weight(10, 10),
             "gb": weight(10), "shape": np.array([1, 16], np.int64),
             "scales": np.array([1, 1, 2, 2], np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Add", ["c2", "p1"], ["a2"], name="residual"),
             helper.make_node("LeakyRelu", ["a2"], ["l2"], alpha=0.1),
             helper.make_node("Conv", ["l2", "w3"], ["c3"], pads=[1, 1, 1, 1], group=8, name="depthwise"),
             helper.make_node("Sigmoid", ["c3"], ["s3"]),
             helper.make_node("Mul", ["c3", "s3"], ["m3"], name="swish"),
             helper.make_node("Concat", ["m3", "l2"], ["cat"], axis=1),
             helper.make_node("AveragePool", ["cat"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Resize", ["ap", "", "scales"], ["rs"], mode="nearest"),
             helper.make_node("GlobalAveragePool", ["rs"], ["g"]),
             helper.make_node("Reshape", ["g", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["mm"], name="fc"),
             helper.make_node("Add", ["mm", "fb"], ["mb"]),
             helper.make_node("Gemm", ["mb", "gw", "gb"], ["gm"], transB=1, name="gemm"),
             helper.make_node("Softmax", ["gm"], ["y"], axis=1)]
    return _save(nodes, {"x": (1, 3, 16, 16)}, {"y": (TensorProto.FLOAT, (1, 10))}, inits, path)


def _sequence(path) -> str:
    """MatMul + Add on (batch, tokens, features), Transpose, Pad, Split and Concat, Softmax, Gather,
    ArgMax (integers in, indices out), MatMul: the other ops onnxruntime keeps in 8 bits."""
    rng = np.random.default_rng(1)
    inits = {"w": (rng.standard_normal((16, 12)) * 0.3).astype(np.float32),
             "b": (rng.standard_normal(12) * 0.1).astype(np.float32),
             "pads": np.array([0, 0, 1, 0, 0, 1], np.int64),
             "split": np.array([4, 6], np.int64),
             "rows": np.array([0, 2, 5, 7], np.int64),
             "head": (rng.standard_normal((10, 6)) * 0.3).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="proj"),
             helper.make_node("Add", ["m", "b"], ["mb"]),
             helper.make_node("Transpose", ["mb"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Pad", ["t", "pads"], ["p"], mode="constant"),
             helper.make_node("Split", ["p", "split"], ["s0", "s1"], axis=2),
             helper.make_node("Concat", ["s1", "s0"], ["c"], axis=2),
             helper.make_node("Softmax", ["c"], ["sm"], axis=-1),
             helper.make_node("Gather", ["sm", "rows"], ["gt"], axis=1),
             helper.make_node("ArgMax", ["gt"], ["best"], axis=-1, keepdims=0),
             helper.make_node("MatMul", ["gt", "head"], ["y"], name="head")]
    outputs = {"y": (TensorProto.FLOAT, (1, 4, 6)), "best": (TensorProto.INT64, (1, 4))}
    return _save(nodes, {"x": (1, 8, 16)}, outputs, inits, path)


MODELS = {"cnn": (_cnn, (1, 3, 16, 16)), "sequence": (_sequence, (1, 8, 16))}
# (activations, weights, per channel)
SCHEMES = [("QUInt8", "QUInt8", False), ("QInt8", "QInt8", True), ("QUInt8", "QInt8", False)]


def _feeds(shape, seed: int):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(SAMPLES)]


def _qoperator(tmp_path, which: str, scheme) -> tuple[str, str]:
    q = importorskip("onnxruntime.quantization")
    build, shape = MODELS[which]
    src = build(tmp_path / "float.onnx")
    out = str(tmp_path / "qoperator.onnx")
    calibration = iter({"x": x} for x in _feeds(shape, 3))

    class Reader(q.CalibrationDataReader):
        def get_next(self):
            return next(calibration, None)

    activation, weight, per_channel = scheme
    q.quantize_static(src, out, Reader(), quant_format=q.QuantFormat.QOperator,
                      activation_type=getattr(q.QuantType, activation),
                      weight_type=getattr(q.QuantType, weight), per_channel=per_channel)
    return src, out


def _convert(model: str, tmp_path, *args: str):
    out = tmp_path / "out.tflite"
    result = CliRunner().invoke(main, ["convert", model, "-o", str(out), *args])
    return result, out


def _worst_db(path: str, tflite: bytes, feeds) -> float:
    """Worst over samples and float outputs (indices: compared apart)."""
    worst = float("inf")
    for x in feeds:
        for expected, actual in zip(run_onnxruntime(path, {"x": x}), run_litert(tflite, [x])):
            if expected.dtype == np.float32:
                worst = min(worst, sqnr_db(expected, actual))
    return worst


@pytest.mark.parametrize("scheme", SCHEMES, ids=["-".join(map(str, s)) for s in SCHEMES])
@pytest.mark.parametrize("which", sorted(MODELS))
def test_qoperator_model_converts_on_its_own_grids(which, scheme, tmp_path):
    src, qoperator = _qoperator(tmp_path, which, scheme)
    kinds = {n.op_type for n in onnx.load(qoperator).graph.node}
    assert "QLinearMatMul" in kinds  # (the format under test)
    result, out = _convert(qoperator, tmp_path)
    assert result.exit_code == 0, result.output
    assert "operator format" in result.output and "left float: 0" in result.output, result.output
    tflite = out.read_bytes()
    # the weights are onnxruntime's integers (uint8 ones as they are, or moved by 128 to int8)
    model = onnx.load(qoperator)
    stored = [np.sort(w.astype(np.int64).reshape(-1)) for w in (c["values"] for c in litert_constants(tflite)) if w.ndim >= 2]
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype in (np.int8, np.uint8) and values.ndim >= 2:
            mine = np.sort(values.astype(np.int64).reshape(-1))
            assert any(np.array_equal(mine, s) or np.array_equal(mine - 128, s) for s in stored), init.name
    feeds = _feeds(MODELS[which][1], 11)
    # The same grids as onnxruntime's model: within a few steps of it; and as close to the float
    # model as onnxruntime's own quantized model is.
    assert _worst_db(qoperator, tflite, feeds) >= 30.0
    ours, theirs = _worst_db(src, tflite, feeds), min(
        sqnr_db(run_onnxruntime(src, {"x": x})[0], run_onnxruntime(qoperator, {"x": x})[0]) for x in feeds)
    assert ours >= theirs - 3.0, (ours, theirs)
    if which == "sequence":  # ArgMax of the integers: the same indices where the maximum is clear
        x = feeds[0]
        expected, actual = run_onnxruntime(qoperator, {"x": x})[1], run_litert(tflite, [x])[1]
        assert np.mean(expected == actual) >= 0.75


def test_an_unreadable_qlinear_op_is_still_refused(tmp_path):
    """A QLinearConv whose weight is not a constant has no weight grid to keep: refused as before,
    naming the onnxruntime ops."""
    _, qoperator = _qoperator(tmp_path, "cnn", SCHEMES[0])
    model = onnx.load(qoperator)
    conv = next(n for n in model.graph.node if n.op_type == "QLinearConv")
    weight = next(i for i in model.graph.initializer if i.name == conv.input[3])
    model.graph.initializer.remove(weight)
    model.graph.input.append(helper.make_tensor_value_info(weight.name, weight.data_type, list(weight.dims)))
    onnx.save(model, qoperator)
    result, out = _convert(qoperator, tmp_path)
    assert result.exit_code == 1, result.output
    assert "quantized by onnxruntime" in result.output and "QLinearConv" in result.output
    assert "Traceback" not in result.output and not out.exists()
