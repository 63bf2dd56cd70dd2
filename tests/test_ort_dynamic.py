"""Models quantized by onnxruntime's `quantize_dynamic` (DynamicQuantizeLinear + ConvInteger /
MatMulInteger + Cast + Mul) convert to weights-only files that keep onnxruntime's weight integers
and scales: what a dynamic model computes (weights stored in 8 bits, activations quantized per
run) is what LiteRT's hybrid kernels compute. onnxruntime itself quantizes the float models here;
the files are checked against onnxruntime running the float model and the dynamic one, on the
worst sample, and the integers are read back through LiteRT.

Before, such models were refused, asking for the float model."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import importorskip, litert_constants, run_litert, run_onnxruntime
from tflq.cli import main
from tflq.ir.quant import sqnr_db

SAMPLES = 6


def _model(nodes, inputs: dict[str, tuple], outputs: dict[str, tuple], inits: dict[str, np.ndarray],
           path) -> str:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        [numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def _conv_net(path) -> str:
    """Conv (bias) + Relu + Conv (no bias) + Flatten + MatMul + Add: both integer ops of onnxruntime."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2], name="conv2"),
             helper.make_node("Flatten", ["c2"], ["f"]),
             helper.make_node("MatMul", ["f", "m"], ["mm"], name="fc"),
             helper.make_node("Add", ["mm", "mb"], ["y"])]
    inits = {"w1": rng.normal(size=(16, 3, 3, 3)).astype(np.float32),
             "b1": rng.uniform(-0.5, 0.5, 16).astype(np.float32),
             "w2": rng.normal(size=(16, 16, 3, 3)).astype(np.float32) * 0.2,
             "m": rng.normal(size=(16 * 3 * 3, 32)).astype(np.float32) * 0.1,
             "mb": rng.uniform(-0.5, 0.5, 32).astype(np.float32)}
    return _model(nodes, {"x": (1, 3, 8, 8)}, {"y": (1, 32)}, inits, path)


def _mlp(path) -> str:
    """A 2-layer MLP on a (batch, tokens, features) input: MatMul + Add + Relu + MatMul + Add."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["o"], name="fc2"),
             helper.make_node("Add", ["o", "b2"], ["y"])]
    inits = {"w1": rng.normal(size=(64, 128)).astype(np.float32) * 0.2,
             "b1": rng.uniform(-0.3, 0.3, 128).astype(np.float32),
             "w2": rng.normal(size=(128, 10)).astype(np.float32) * 0.2,
             "b2": rng.uniform(-0.3, 0.3, 10).astype(np.float32)}
    return _model(nodes, {"x": (1, 4, 64)}, {"y": (1, 4, 10)}, inits, path)


def _embedding_lstm(path, direction: str = "forward") -> str:
    """Gather from an embedding table, Transpose to (time, batch, features), LSTM, MatMul: onnxruntime
    gathers the quantized table's integers, moves them, and dequantizes them after (or feeds them to
    the MatMulInteger of a MatMul reading the table directly)."""
    rng = np.random.default_rng(5)
    directions, hidden = (2 if direction == "bidirectional" else 1), 16
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embedding"),
             helper.make_node("Transpose", ["e"], ["t"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["t", "W", "R", "B"], ["Y", "Yh"], hidden_size=hidden,
                              direction=direction, name="lstm"),
             helper.make_node("Reshape", ["Yh", "shape"], ["h"]),
             helper.make_node("MatMul", ["h", "head"], ["y"], name="head"),
             helper.make_node("MatMul", ["e", "proj"], ["z"], name="proj")]
    inits = {"table": rng.normal(size=(60, 24)).astype(np.float32),
             "W": rng.normal(size=(directions, 4 * hidden, 24)).astype(np.float32) * 0.2,
             "R": rng.normal(size=(directions, 4 * hidden, hidden)).astype(np.float32) * 0.2,
             "B": rng.uniform(-0.2, 0.2, (directions, 8 * hidden)).astype(np.float32),
             "shape": np.array([1, directions * hidden], np.int64),
             "head": rng.normal(size=(directions * hidden, 6)).astype(np.float32) * 0.3,
             "proj": rng.normal(size=(24, 6)).astype(np.float32) * 0.3}
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, (1, 7))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 6)),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, (1, 7, 6))],
        [numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def _bidirectional(path) -> str:
    return _embedding_lstm(path, "bidirectional")


MODELS = {"conv": (_conv_net, (1, 3, 8, 8)), "mlp": (_mlp, (1, 4, 64))}
SEQUENCE_MODELS = {"lstm": _embedding_lstm, "bilstm": _bidirectional}


def _dynamic(tmp_path, which: str, per_channel: bool, weight_type: str) -> tuple[str, str]:
    q = importorskip("onnxruntime.quantization")
    build = MODELS[which][0] if which in MODELS else SEQUENCE_MODELS[which]
    src = build(tmp_path / "float.onnx")
    out = str(tmp_path / "dynamic.onnx")
    q.quantize_dynamic(src, out, per_channel=per_channel, weight_type=getattr(q.QuantType, weight_type))
    kinds = {n.op_type for n in onnx.load(out).graph.node}
    assert kinds & {"DynamicQuantizeLinear", "DynamicQuantizeLSTM"}  # (the pattern under test)
    return src, out


def _feeds(shape):
    rng = np.random.default_rng(11)
    return [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(SAMPLES)]


def _convert(model: str, tmp_path, *args: str):
    out = tmp_path / "out.tflite"
    result = CliRunner().invoke(main, ["convert", model, "-o", str(out), *args])
    return result, out


def _worst_db(path: str, tflite: bytes, feeds) -> float:
    return min(sqnr_db(run_onnxruntime(path, {"x": x})[0], run_litert(tflite, [x])[0]) for x in feeds)


def _onnxruntime_weights(path: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{weight name: (integers, scales, zero points)} of onnxruntime's ConvInteger/MatMulInteger."""
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type in ("ConvInteger", "MatMulInteger"):
            weight = node.input[1]
            base = weight[:-len("_quantized")]
            found[weight] = (inits[weight], inits[f"{base}_scale"], inits[node.input[3]])
    return found


def _channel_multisets(values: np.ndarray, axis: int) -> list[list[int]]:
    moved = np.moveaxis(values.astype(np.int64), axis, 0).reshape(values.shape[axis], -1)
    return [sorted(row.tolist()) for row in moved]


def _kept(stored: list[dict], integers: np.ndarray, scales: np.ndarray, zero_points: np.ndarray) -> bool:
    """Some tensor of the file holds these integers (each output channel's, in the file's layout)
    on these scales, moved to zero point 0 where the file stores them as symmetric int8."""
    axis = 0 if integers.ndim == 4 else 1  # (Conv OIHW, MatMul (K, N))
    for s in stored:
        if s["values"].size != integers.size:
            continue
        n = integers.shape[axis]
        file_zero_points = np.broadcast_to(np.asarray(s["zero_points"], np.int64), (n,))
        graph_zero_points = np.broadcast_to(zero_points.astype(np.int64), (n,))
        shift = 0
        if s["values"].dtype == np.int8 and integers.dtype == np.uint8:
            # uint8 read as int8: symmetric (zero point 0) where the integers fit around the zero
            # point, else the same grid moved by 128
            shift = graph_zero_points if not np.any(file_zero_points) else 128
        if not np.array_equal(graph_zero_points - shift, file_zero_points) and np.any(file_zero_points):
            continue
        moved = np.moveaxis(integers.astype(np.int64), axis, -1) - shift
        ours = _channel_multisets(s["values"], 0)  # (CONV_2D OHWI, FULLY_CONNECTED (N, K))
        if _channel_multisets(moved, moved.ndim - 1) != ours:
            continue
        if np.array_equal(np.broadcast_to(scales.astype(np.float32), (n,)),
                          np.broadcast_to(np.asarray(s["scales"], np.float32), (n,))):
            return True
    return False


@pytest.mark.parametrize("weight_type", ["QInt8", "QUInt8"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("which", sorted(MODELS))
def test_dynamic_model_converts_keeping_onnxruntime_weight_integers(which, per_channel, weight_type,
                                                                    tmp_path):
    src, dynamic = _dynamic(tmp_path, which, per_channel, weight_type)
    result, out = _convert(dynamic, tmp_path)
    assert result.exit_code == 0, result.output
    assert "mode weights-only" in result.output and "dynamically quantized" in result.output
    tflite = out.read_bytes()
    stored = litert_constants(tflite)
    weights = _onnxruntime_weights(dynamic)
    for name, (integers, scales, zero_points) in weights.items():
        assert _kept(stored, integers, scales, zero_points), name
    # 8-bit weights: about the dynamic ONNX file's size, not the float one's
    assert len(tflite) < 0.4 * os.path.getsize(src), (len(tflite), os.path.getsize(src))
    feeds = _feeds(MODELS[which][1])
    # The same weights as onnxruntime's dynamic model, activations quantized per run by LiteRT's
    # hybrid kernels (per row) rather than per tensor: close to both.
    assert _worst_db(dynamic, tflite, feeds) >= 30.0
    assert _worst_db(src, tflite, feeds) >= 30.0


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("which", sorted(SEQUENCE_MODELS))
def test_dynamic_embedding_and_lstm_convert_keeping_onnxruntime_integers(which, per_channel, tmp_path):
    """DynamicQuantizeLSTM becomes the LSTM of its dequantized weights (per direction, per gate
    column where onnxruntime scales so); the gathered table's integers are dequantized before the
    Gather and Transpose that moved them."""
    src, dynamic = _dynamic(tmp_path, which, per_channel, "QInt8")
    kinds = [n.op_type for n in onnx.load(dynamic).graph.node]
    assert "DynamicQuantizeLSTM" in kinds and "MatMulInteger" in kinds
    result, out = _convert(dynamic, tmp_path)
    assert result.exit_code == 0, result.output
    assert "DynamicQuantizeLSTM x1" in result.output and "mode weights-only" in result.output
    tflite = out.read_bytes()
    stored = litert_constants(tflite)
    model = onnx.load(dynamic)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    table = inits["table_quantized"]  # (per tensor, uint8: kept on its grid behind a DEQUANTIZE)
    assert any(np.array_equal(s["values"], table) and list(s["zero_points"]) == [int(inits["table_zero_point"])]
               for s in stored)
    lstm = next(n for n in model.graph.node if n.op_type == "DynamicQuantizeLSTM")
    for q, scale in ((lstm.input[1], lstm.input[8]), (lstm.input[2], lstm.input[10])):
        values, scales = inits[q], inits[scale].reshape(inits[q].shape[0], -1)
        for d in range(values.shape[0]):  # each direction's (inputs, 4 x hidden) integers, per column
            columns = sorted(sorted(c) for c in values[d].T.astype(int).tolist())
            assert any(s["values"].shape == values[d].T.shape
                       and sorted(sorted(r) for r in s["values"].astype(int).tolist()) == columns
                       and np.array_equal(np.broadcast_to(s["scales"], (values.shape[2],)),
                                          np.broadcast_to(scales[d], (values.shape[2],)))
                       for s in stored), (q, d)
    ids = np.random.default_rng(8).integers(0, 60, (SAMPLES, 1, 7))
    for reference, floor in ((dynamic, 30.0), (src, 30.0)):
        worst = min(min(sqnr_db(e, a) for e, a in zip(run_onnxruntime(reference, {"ids": i}),
                                                       run_litert(tflite, [i.astype(np.int64)])))
                    for i in ids)
        assert worst >= floor, (reference, worst)


def test_dynamic_model_converts_from_the_library_too(tmp_path):
    from tflq import convert
    _, dynamic = _dynamic(tmp_path, "mlp", True, "QInt8")
    out = tmp_path / "lib.tflite"
    convert(dynamic, str(out))
    assert _worst_db(dynamic, out.read_bytes(), _feeds(MODELS["mlp"][1])) >= 30.0


def test_a_dynamic_pattern_that_is_not_provable_is_still_refused(tmp_path):
    """A DynamicQuantizeLinear whose integer output another op also reads: no float op stands for it."""
    _, dynamic = _dynamic(tmp_path, "mlp", False, "QInt8")
    model = onnx.load(dynamic)
    quantize = next(n for n in model.graph.node if n.op_type == "DynamicQuantizeLinear")
    model.graph.node.append(helper.make_node("Cast", [quantize.output[0]], ["leak"], to=TensorProto.FLOAT))
    model.graph.output.append(helper.make_tensor_value_info("leak", TensorProto.FLOAT, None))
    onnx.save(model, dynamic)
    result, out = _convert(dynamic, tmp_path)
    assert result.exit_code == 1, result.output
    assert "quantized by onnxruntime" in result.output and "DynamicQuantizeLinear" in result.output
    assert "Traceback" not in result.output and not out.exists()


def _optimized(path: str, tmp_path) -> str:
    """The model as onnxruntime's graph optimizer saves it (its fusions: DynamicQuantizeMatMul)."""
    ort = importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return options.optimized_model_filepath


@pytest.mark.parametrize("weight_type", ["QInt8", "QUInt8"])
@pytest.mark.parametrize("which", sorted(MODELS))
def test_a_dynamic_model_onnxruntime_optimized_converts(which, weight_type, tmp_path):
    """onnxruntime fuses DynamicQuantizeLinear + MatMulInteger + Cast + Mul (+ the bias Add) into
    com.microsoft DynamicQuantizeMatMul when it optimizes (and saves) a dynamic model: read as
    MatMul of the weight's DequantizeLinear (+ Add)."""
    src, dynamic = _dynamic(tmp_path, which, True, weight_type)
    optimized = _optimized(dynamic, tmp_path)
    kinds = [n.op_type for n in onnx.load(optimized).graph.node]
    assert "DynamicQuantizeMatMul" in kinds
    result, out = _convert(optimized, tmp_path)
    assert result.exit_code == 0, result.output
    assert "DynamicQuantizeMatMul x" in result.output
    tflite = out.read_bytes()
    stored = litert_constants(tflite)
    for name, (integers, scales, zero_points) in _onnxruntime_weights(dynamic).items():
        assert _kept(stored, integers, scales, zero_points), name
    feeds = _feeds(MODELS[which][1])
    assert _worst_db(optimized, tflite, feeds) >= 30.0
    assert _worst_db(src, tflite, feeds) >= 30.0


@pytest.mark.parametrize("per_column", [False, True], ids=["per_tensor", "per_column"])
def test_matmul_integer_to_float_reads_as_matmul_and_bias(per_column, tmp_path):
    """com.microsoft MatMulIntegerToFloat (onnxruntime's fusion when a DynamicQuantizeLinear feeds
    several MatMulIntegers) of a DynamicQuantizeLinear's output, with a bias; onnxruntime runs it."""
    rng = np.random.default_rng(9)
    integers = rng.integers(-127, 128, (64, 24)).astype(np.int8)
    scales = (rng.uniform(0.002, 0.01, 24) if per_column else np.array([0.006])).astype(np.float32)
    inits = {"w": integers, "w_scale": scales if per_column else scales.reshape(()),
             "w_zp": np.zeros(scales.shape if per_column else (), np.int8),
             "bias": rng.uniform(-0.3, 0.3, 24).astype(np.float32)}
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulIntegerToFloat", ["xq", "w", "xs", "w_scale", "xz", "w_zp", "bias"], ["m"],
                              domain="com.microsoft", name="fused"),
             helper.make_node("MatMulIntegerToFloat", ["xq", "w", "xs", "w_scale", "xz", "w_zp"], ["n"],
                              domain="com.microsoft", name="fused_no_bias"),
             helper.make_node("Add", ["m", "n"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 5, 64))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 5, 24))],
                              [numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    path = str(tmp_path / "fused.onnx")
    onnx.save(model, path)
    result, out = _convert(path, tmp_path)
    assert result.exit_code == 0, result.output
    assert "MatMulIntegerToFloat x2" in result.output
    tflite = out.read_bytes()
    assert _kept(litert_constants(tflite), integers, scales, inits["w_zp"])
    assert _worst_db(path, tflite, _feeds((1, 5, 64))) >= 30.0
