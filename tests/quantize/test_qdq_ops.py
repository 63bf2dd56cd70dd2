"""QDQ models, one quantized op kind at a time: the written file carries the graph's own
quantization parameters (read back with read_tflite), the kernel's constraints are met where the
graph's parameters break them, and LiteRT agrees with onnxruntime's run of the QDQ graph."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import run_litert, run_onnxruntime, save_model
from tests.delegation import WRITTEN_IN_8_BIT
from tests.quantize.qdq_graphs import (QdqBuilder, activation_params, assert_params, op_of,
                                       tensor_at)
from tflq.backend.tflite_reader import read_tflite
from tflq.config import ConvertConfig
from tflq.pipeline import convert


def _convert(model, tmp_path, **options):
    path = save_model(model, tmp_path / "qdq.onnx")
    report = convert(ConvertConfig(model=path, **options))
    return path, report, read_tflite(report.tflite)


def _agrees(model, report, inputs: dict[str, np.ndarray], step: float, steps: float = 1.0) -> None:
    """LiteRT's outputs are within `steps` output steps of onnxruntime's."""
    expected = run_onnxruntime(model, inputs)
    actual = run_litert(report.tflite, list(inputs.values()))
    for e, a in zip(expected, actual):
        assert e.shape == a.shape
        assert np.max(np.abs(e - a)) <= steps * step * 1.0001, np.max(np.abs(e - a)) / step


def _conv_model(act=np.int8, weights=np.int8, per_channel=True, depthwise=False):
    b = QdqBuilder(seed=1)
    s_in, z_in = activation_params(-1, 1, act)
    x = b.qdq("x", s_in, z_in, act)
    cin = 6 if depthwise else 3
    cout, group = (6, 6) if depthwise else (4, 1)
    w, wq, ws, wz = b.weight((cout, cin // group, 3, 3), axis=0 if per_channel else None,
                             dtype=weights)
    bias, bq = b.bias(cout, np.float32(s_in) * ws)
    s_out, z_out = activation_params(-2.5, 3, act)
    y = b.qdq(b.node("Conv", [x, w, bias], pads=[1, 1, 1, 1], group=group), s_out, z_out, act)
    model = b.model({"x": (1, cin, 8, 8)}, [y])
    return model, (s_in, z_in), (wq, ws, wz), bq, (s_out, z_out)


@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
def test_int8_per_channel_conv_keeps_the_graph_parameters(depthwise, tmp_path):
    model, (s_in, z_in), (wq, ws, _), bq, (s_out, z_out) = _conv_model(depthwise=depthwise)
    _, report, info = _convert(model, tmp_path)
    assert (report.mode, report.dtype) == ("full", "int8")
    assert report.float_ops == [] and report.calibration == {}
    kind, layout, dimension = ("DEPTHWISE_CONV_2D", (1, 2, 3, 0), 3) if depthwise else \
        ("CONV_2D", (0, 2, 3, 1), 0)
    op = op_of(info, kind)
    assert_params(tensor_at(info, op, 0), s_in, z_in, "int8")
    weights = tensor_at(info, op, 1)
    assert_params(weights, ws, np.zeros(ws.size), "int8", dimension)
    assert np.array_equal(weights.data, wq.transpose(layout))
    bias = tensor_at(info, op, 2)
    assert_params(bias, np.float32(s_in) * ws, np.zeros(ws.size), "int32")
    assert np.array_equal(bias.data, bq)
    assert_params(tensor_at(info, op, 0, output=True), s_out, z_out, "int8")
    _agrees(model, report, {"x": np.random.default_rng(0).uniform(-1, 1, (1, 6 if depthwise else 3, 8, 8))
                            .astype(np.float32)}, s_out)


def test_uint8_per_tensor_model_becomes_a_uint8_file(tmp_path):
    model, (s_in, z_in), (wq, ws, wz), bq, (s_out, z_out) = _conv_model(np.uint8, np.uint8, False)
    _, report, info = _convert(model, tmp_path)
    assert report.dtype == "uint8"
    op = op_of(info, "CONV_2D")
    assert_params(tensor_at(info, op, 0), s_in, z_in, "uint8")
    weights = tensor_at(info, op, 1)
    assert_params(weights, ws, wz, "uint8")
    assert np.array_equal(weights.data, wq.transpose(0, 2, 3, 1))
    assert_params(tensor_at(info, op, 2), np.float32(s_in) * ws, 0, "int32")
    assert np.array_equal(tensor_at(info, op, 2).data, bq)
    assert_params(tensor_at(info, op, 0, output=True), s_out, z_out, "uint8")
    _agrees(model, report, {"x": np.random.default_rng(1).uniform(-1, 1, (1, 3, 8, 8))
                            .astype(np.float32)}, s_out)


def test_uint8_activations_with_int8_weights_become_int8(tmp_path):
    """onnxruntime's default QDQ configuration: same grids, zero points moved by -128."""
    model, (s_in, z_in), (_, ws, _), _, (s_out, z_out) = _conv_model(np.uint8, np.int8, True)
    _, report, info = _convert(model, tmp_path)
    assert report.dtype == "int8"
    assert any("zero point - 128" in note for note in report.notes)
    op = op_of(info, "CONV_2D")
    assert_params(tensor_at(info, op, 0), s_in, z_in - 128, "int8")
    assert_params(tensor_at(info, op, 1), ws, np.zeros(ws.size), "int8", 0)
    assert_params(tensor_at(info, op, 0, output=True), s_out, z_out - 128, "int8")
    _agrees(model, report, {"x": np.random.default_rng(2).uniform(-1, 1, (1, 3, 8, 8))
                            .astype(np.float32)}, s_out)


def test_asking_for_int8_moves_a_uint8_model_to_int8(tmp_path):
    model, (s_in, z_in), _, _, _ = _conv_model(np.uint8, np.uint8, False)
    _, report, info = _convert(model, tmp_path, dtype="int8")
    assert report.dtype == "int8"
    op = op_of(info, "CONV_2D")
    assert_params(tensor_at(info, op, 0), s_in, z_in - 128, "int8")
    weights = tensor_at(info, op, 1)
    assert weights.dtype == "int8" and set(weights.zero_point) == {0}  # requantized symmetric
    assert any("requantized to symmetric int8" in note for note in report.notes)


@pytest.mark.parametrize("form", ["gemm_transB", "gemm", "matmul"])
def test_fully_connected_per_channel_weights(form, tmp_path):
    """ONNX keeps output channels on axis 0 (Gemm transB=1) or 1 (Gemm, MatMul); TFLite on 0."""
    b = QdqBuilder(seed=3)
    s_in, z_in = activation_params(-1, 1)
    x = b.qdq("x", s_in, z_in)
    shape, axis = ((5, 8), 0) if form == "gemm_transB" else ((8, 5), 1)
    w, wq, ws, _ = b.weight(shape, axis=axis)
    if form == "matmul":
        y = b.node("MatMul", [x, w])
    else:
        bias, _ = b.bias(5, np.float32(s_in) * ws)
        y = b.node("Gemm", [x, w, bias], transB=int(form == "gemm_transB"))
    s_out, z_out = activation_params(-4, 4)
    model = b.model({"x": (2, 8)}, [b.qdq(y, s_out, z_out)])
    _, report, info = _convert(model, tmp_path)
    op = op_of(info, "FULLY_CONNECTED")
    weights = tensor_at(info, op, 1)
    assert_params(weights, ws, np.zeros(5), "int8", 0)
    assert np.array_equal(weights.data, wq if axis == 0 else wq.T)
    assert_params(tensor_at(info, op, 0, output=True), s_out, z_out, "int8")
    _agrees(model, report, {"x": np.random.default_rng(3).uniform(-1, 1, (2, 8)).astype(np.float32)},
            s_out)


@pytest.mark.parametrize("act", [np.int8, np.uint8], ids=["int8", "uint8"])
def test_add_takes_each_operand_grid(act, tmp_path):
    b = QdqBuilder()
    sa, za = activation_params(-1, 1, act)
    sb, zb = activation_params(-0.5, 2, act)
    so, zo = activation_params(-1.5, 3, act)
    y = b.qdq(b.node("Add", [b.qdq("a", sa, za, act), b.qdq("b", sb, zb, act)]), so, zo, act)
    model = b.model({"a": (1, 4, 5, 5), "b": (1, 4, 5, 5)}, [y])
    _, report, info = _convert(model, tmp_path)
    assert report.dtype == np.dtype(act).name
    op = op_of(info, "ADD")
    assert_params(tensor_at(info, op, 0), sa, za)
    assert_params(tensor_at(info, op, 1), sb, zb)
    assert_params(tensor_at(info, op, 0, output=True), so, zo)
    rng = np.random.default_rng(4)
    _agrees(model, report, {"a": rng.uniform(-1, 1, (1, 4, 5, 5)).astype(np.float32),
                            "b": rng.uniform(-0.5, 2, (1, 4, 5, 5)).astype(np.float32)}, so)


@pytest.mark.parametrize("act", [np.int8, np.uint8], ids=["int8", "uint8"])
def test_concatenation_of_different_grids(act, tmp_path):
    """int8 CONCATENATION needs every input on the output's grid: the odd input is requantized and
    the summary says where; uint8 CONCATENATION rescales by itself."""
    b = QdqBuilder()
    sa, za = activation_params(-1, 1, act)
    sb, zb = activation_params(-2, 2, act)
    relu = b.qdq(b.node("Relu", [b.qdq("a", sa, za, act)]), sa, za, act)
    y = b.qdq(b.node("Concat", [relu, b.qdq("b", sb, zb, act)], axis=1), sb, zb, act)
    model = b.model({"a": (1, 2, 4, 4), "b": (1, 3, 4, 4)}, [y])
    _, report, info = _convert(model, tmp_path)
    op = op_of(info, "CONCATENATION")
    assert_params(tensor_at(info, op, 0, output=True), sb, zb)
    requantized = [n for n in report.notes if "requantized" in n and "relu" in n]
    if act == np.int8:
        assert all(info.tensors[i].scale == [np.float32(sb)] for i in op.inputs)
        assert len(requantized) == 1 and info.op_kinds().count("QUANTIZE") == 3
    else:
        assert_params(tensor_at(info, op, 0), sa, za)
        assert not requantized
    rng = np.random.default_rng(5)
    _agrees(model, report, {"a": rng.uniform(-1, 1, (1, 2, 4, 4)).astype(np.float32),
                            "b": rng.uniform(-2, 2, (1, 3, 4, 4)).astype(np.float32)}, sb)


@pytest.mark.parametrize("onnx_op,kind,fixed", [("Softmax", "SOFTMAX", (1 / 256, -128)),
                                                ("Sigmoid", "LOGISTIC", (1 / 256, -128))])
@pytest.mark.parametrize("matches", [True, False], ids=["graph_uses_fixed", "graph_differs"])
def test_fixed_output_grid(onnx_op, kind, fixed, matches, tmp_path):
    """A kernel with a fixed output grid keeps it; a different graph grid gets a QUANTIZE after
    the op, listed in the summary."""
    b = QdqBuilder()
    s_in, z_in = activation_params(-4, 4)
    s_out, z_out = fixed if matches else activation_params(0, 0.9)
    y = b.qdq(b.node(onnx_op, [b.qdq("x", s_in, z_in)]), s_out, z_out)
    model = b.model({"x": (1, 10)}, [y])
    _, report, info = _convert(model, tmp_path)
    op = op_of(info, kind)
    assert_params(tensor_at(info, op, 0, output=True), fixed[0], fixed[1], "int8")
    notes = [n for n in report.notes if "requantized" in n and kind in n]
    quantize_ops = info.op_kinds().count("QUANTIZE")
    if matches:
        assert not notes and quantize_ops == 1
    else:
        assert len(notes) == 1 and quantize_ops == 2
        out = info.tensors[info.ops[info.op_kinds().index("DEQUANTIZE")].inputs[0]]
        assert_params(out, s_out, z_out)
    _agrees(model, report, {"x": np.random.default_rng(6).uniform(-4, 4, (1, 10)).astype(np.float32)},
            s_out, steps=2)


@pytest.mark.parametrize("same", [True, False], ids=["same_grid", "other_grid"])
@pytest.mark.parametrize("onnx_op,kind", [("MaxPool", "MAX_POOL_2D"), ("AveragePool", "AVERAGE_POOL_2D")])
def test_pooling_output_grid(onnx_op, kind, same, tmp_path):
    """Pooling kernels need equal input and output grids: an other output grid is a QUANTIZE."""
    b = QdqBuilder()
    s_in, z_in = activation_params(-1, 2)
    s_out, z_out = (s_in, z_in) if same else activation_params(-0.5, 1.5)
    pooled = b.node(onnx_op, [b.qdq("x", s_in, z_in)], kernel_shape=[2, 2], strides=[2, 2])
    model = b.model({"x": (1, 3, 6, 6)}, [b.qdq(pooled, s_out, z_out)])
    _, report, info = _convert(model, tmp_path)
    op = op_of(info, WRITTEN_IN_8_BIT.get(kind, kind))
    assert_params(tensor_at(info, op, 0, output=True), s_in, z_in)
    assert info.op_kinds().count("QUANTIZE") == (1 if same else 2)
    assert any(kind in n and "requantized" in n for n in report.notes) != same
    _agrees(model, report, {"x": np.random.default_rng(7).uniform(-1, 2, (1, 3, 6, 6))
                            .astype(np.float32)}, s_out)


def test_flatten_between_qdq_pairs_needs_no_transpose(tmp_path):
    """onnxruntime wraps Flatten in its own Q/DQ pair; the layout pass must still fold the
    flattening into the weights instead of transposing the activation."""
    b = QdqBuilder(seed=4)
    s_in, z_in = activation_params(0, 2)
    x = b.qdq("x", s_in, z_in)
    flat = b.qdq(b.node("Flatten", [x], axis=1), s_in, z_in)
    w, _, ws, _ = b.weight((4, 3 * 4 * 4), axis=0)
    s_out, z_out = activation_params(-3, 3)
    model = b.model({"x": (1, 3, 4, 4)}, [b.qdq(b.node("Gemm", [flat, w], transB=1), s_out, z_out)])
    _, report, info = _convert(model, tmp_path)
    assert report.transposes_inserted == 0 and "TRANSPOSE" not in info.op_kinds()
    _agrees(model, report, {"x": np.random.default_rng(8).uniform(0, 2, (1, 3, 4, 4))
                            .astype(np.float32)}, s_out)


def test_part_left_float_stays_float_unless_calibrated(tmp_path):
    """Only the first Conv is quantized in the graph: the second stays float between DEQUANTIZE
    and QUANTIZE, with the reason; --calib quantizes it from calibrated ranges."""
    b = QdqBuilder(seed=5)
    s_in, z_in = activation_params(-1, 1)
    w1, _, ws1, _ = b.weight((4, 3, 3, 3))
    s_mid, z_mid = activation_params(-3, 3)
    mid = b.qdq(b.node("Conv", [b.qdq("x", s_in, z_in), w1], pads=[1, 1, 1, 1]), s_mid, z_mid)
    w2 = b.const("w2", b.rng.uniform(-0.3, 0.3, (2, 4, 3, 3)).astype(np.float32))
    model = b.model({"x": (1, 3, 6, 6)}, [b.node("Conv", [mid, w2], pads=[1, 1, 1, 1])])
    x = np.random.default_rng(9).uniform(-1, 1, (1, 3, 6, 6)).astype(np.float32)
    _, report, info = _convert(model, tmp_path)
    assert [f.kind for f in report.float_ops] == ["CONV_2D"]
    assert "leaves" in report.float_ops[0].reason and "--calib" in report.float_ops[0].reason
    assert info.op_kinds().count("CONV_2D") == 2 and "DEQUANTIZE" in info.op_kinds()
    float_conv = [op for op in info.ops if op.kind == "CONV_2D"][1]
    assert tensor_at(info, float_conv, 1).dtype == "float32"
    expected = run_onnxruntime(model, {"x": x})[0]
    assert np.max(np.abs(run_litert(report.tflite, [x])[0] - expected)) < 1e-4
    _, calibrated, info = _convert(model, tmp_path, calib=[{"x": x}])
    assert calibrated.float_ops == [] and calibrated.calibration["samples"] == 1
    assert all(tensor_at(info, op, 1).dtype == "int8" for op in info.ops if op.kind == "CONV_2D")


def test_weights_at_minus_128_move_to_minus_127(tmp_path):
    """PyTorch's symmetric int8 weights use [-128, 127]; TFLite's int8 spec [-127, 127]."""
    b = QdqBuilder()
    s_in, z_in = activation_params(-1, 1)
    wq = np.array([[-128, 5, 127], [3, -128, -7]], np.int8)
    w = b.quantized(wq, np.array([0.01, 0.02], np.float32), np.zeros(2, np.int8), axis=0)
    s_out, z_out = activation_params(-4, 4)
    model = b.model({"x": (1, 3)}, [b.qdq(b.node("Gemm", [b.qdq("x", s_in, z_in), w], transB=1),
                                          s_out, z_out)])
    _, report, info = _convert(model, tmp_path)
    weights = tensor_at(info, op_of(info, "FULLY_CONNECTED"), 1)
    assert_params(weights, [0.01, 0.02], [0, 0], "int8", 0)
    assert np.array_equal(weights.data, np.maximum(wq, -127))
    assert any("2 weight value(s) at -128" in n for n in report.notes)


def test_bias_scale_differing_from_the_product_is_requantized_with_a_note(tmp_path):
    b = QdqBuilder(seed=6)
    s_in, z_in = activation_params(-1, 1)
    w, _, ws, _ = b.weight((4, 6), axis=0)
    bias, bq = b.bias(4, np.float32(s_in) * ws * 1.5)
    s_out, z_out = activation_params(-4, 4)
    model = b.model({"x": (1, 6)}, [b.qdq(b.node("Gemm", [b.qdq("x", s_in, z_in), w, bias],
                                                 transB=1), s_out, z_out)])
    _, report, info = _convert(model, tmp_path)
    bias_t = tensor_at(info, op_of(info, "FULLY_CONNECTED"), 2)
    assert_params(bias_t, np.float32(s_in) * ws, np.zeros(4), "int32")
    assert np.array_equal(bias_t.data, np.rint(bq * 1.5).astype(np.int32)) or \
        np.max(np.abs(bias_t.data - bq * 1.5)) <= 1
    assert any("bias scale differs" in n for n in report.notes)
    _agrees(model, report, {"x": np.random.default_rng(10).uniform(-1, 1, (1, 6)).astype(np.float32)},
            s_out)


def _batch_norm(b: QdqBuilder, x: str, gamma: np.ndarray, var: np.ndarray) -> str:
    channels = gamma.size
    return b.node("BatchNormalization", [x, b.const("gamma", gamma),
                                         b.const("beta", b.rng.uniform(-0.2, 0.2, channels).astype(np.float32)),
                                         b.const("mean", b.rng.uniform(-0.2, 0.2, channels).astype(np.float32)),
                                         b.const("var", var)], epsilon=1e-5)


def test_pytorch_conv_batchnorm_qat_export_folds_into_one_conv(tmp_path):
    """PyTorch's fused Conv-BatchNorm QAT module exports Conv(fake-quantized w * f) -> Div(f) ->
    Add(bias) -> BatchNormalization(factor f) -> Relu: one quantized CONV_2D on the graph's grid."""
    b = QdqBuilder(seed=7)
    s_in, z_in = activation_params(-1, 1)
    var = b.rng.uniform(0.5, 2, 4).astype(np.float32)
    gamma = b.rng.uniform(0.5, 1.5, 4).astype(np.float32)
    factor = (gamma / np.sqrt(var + np.float32(1e-5))).astype(np.float32)
    w = b.rng.uniform(-0.5, 0.5, (4, 3, 3, 3)).astype(np.float32) * factor.reshape(4, 1, 1, 1)
    ws = (np.abs(w).max(axis=(1, 2, 3)) / 127.5).astype(np.float32)
    wz = np.zeros(4, np.int8)
    s, z = b.const("ws", ws), b.const("wz", wz)
    wq = b.node("DequantizeLinear", [b.node("QuantizeLinear", [b.const("w", w), s, z], axis=0), s, z],
                axis=0)
    conv = b.node("Conv", [b.qdq("x", s_in, z_in), wq, b.const("zero", np.zeros(4, np.float32))],
                  pads=[1, 1, 1, 1])
    scaled = b.node("Div", [conv, b.const("f", factor.reshape(1, 4, 1, 1))])
    shifted = b.node("Add", [scaled, b.const("bias", b.rng.uniform(-0.1, 0.1, (1, 4, 1, 1))
                                            .astype(np.float32))])
    s_out, z_out = activation_params(0, 4)
    y = b.qdq(b.node("Relu", [_batch_norm(b, shifted, gamma, var)]), s_out, z_out)
    model = b.model({"x": (1, 3, 6, 6)}, [y])
    _, report, info = _convert(model, tmp_path)
    assert report.float_ops == [] and info.op_kinds().count("CONV_2D") == 1
    assert not {"DIV", "MUL", "ADD"} & set(info.op_kinds())
    assert_params(tensor_at(info, op_of(info, "CONV_2D"), 1), ws, np.zeros(4), "int8", 0)
    _agrees(model, report, {"x": np.random.default_rng(11).uniform(-1, 1, (1, 3, 6, 6))
                            .astype(np.float32)}, s_out)


def test_batchnorm_folded_into_per_channel_weights_keeps_their_integers(tmp_path):
    """A BatchNorm after a Conv with per-channel QDQ weights (no QDQ between) scales each channel:
    the integers stay, each channel's scale takes the BatchNorm factor."""
    b = QdqBuilder(seed=8)
    s_in, z_in = activation_params(-1, 1)
    w, wq, ws, _ = b.weight((4, 3, 3, 3))
    gamma = np.array([0.5, -1.25, 2.0, 1.0], np.float32)
    var = np.array([1.0, 0.25, 4.0, 2.0], np.float32)
    conv = b.node("Conv", [b.qdq("x", s_in, z_in), w], pads=[1, 1, 1, 1])
    s_out, z_out = activation_params(-3, 3)
    model = b.model({"x": (1, 3, 6, 6)}, [b.qdq(_batch_norm(b, conv, gamma, var), s_out, z_out)])
    _, report, info = _convert(model, tmp_path)
    assert not any("requantized" in n for n in report.notes), report.notes
    weights = tensor_at(info, op_of(info, "CONV_2D"), 1)
    factor = gamma / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(weights.scale, ws * np.abs(factor), rtol=1e-5)
    assert np.array_equal(weights.data, (wq * np.sign(factor).reshape(4, 1, 1, 1).astype(np.int8))
                          .transpose(0, 2, 3, 1))
    _agrees(model, report, {"x": np.random.default_rng(12).uniform(-1, 1, (1, 3, 6, 6))
                            .astype(np.float32)}, s_out)


def _affine_int8_weight_model():
    """uint8 activations, a Conv whose per-tensor int8 weights have a non-zero zero point (PyTorch's
    per_tensor_affine QAT weights)."""
    b = QdqBuilder(seed=4)
    s_in, z_in = activation_params(-1, 1, np.uint8)
    x = b.qdq("x", s_in, z_in, np.uint8)
    w = b.rng.uniform(-0.2, 0.6, (4, 3, 3, 3)).astype(np.float32)
    ws, wz = activation_params(float(w.min()), float(w.max()), np.int8)
    wq = np.clip(np.rint(w / ws) + wz, -128, 127).astype(np.int8)
    bias, _ = b.bias(4, np.float32(s_in) * np.float32(ws))
    s_out, z_out = activation_params(-4, 6, np.uint8)
    y = b.qdq(b.node("Conv", [x, b.quantized(wq, ws, wz), bias], pads=[1, 1, 1, 1]), s_out, z_out,
              np.uint8)
    return b.model({"x": (1, 3, 8, 8)}, [y]), (wq, ws, wz), s_out


def test_int8_weights_with_a_zero_point_keep_their_grid_in_uint8(tmp_path):
    """int8 kernels need weight zero point 0, so int8 requantized these weights (off the QDQ
    model: a MobileNetV2 block QAT-trained this way was 5 output steps away); uint8 kernels take
    any zero point, and int8 weights move there exactly (+128)."""
    model, (wq, ws, wz), s_out = _affine_int8_weight_model()
    assert int(wz) != 0
    _, report, info = _convert(model, tmp_path)
    assert report.dtype == "uint8"
    assert not any("requantized" in note for note in report.notes), report.notes
    weights = tensor_at(info, op_of(info, "CONV_2D"), 1)
    assert_params(weights, ws, int(wz) + 128, "uint8")
    assert np.array_equal(weights.data, (wq.astype(np.int16) + 128).astype(np.uint8).transpose(0, 2, 3, 1))
    rng = np.random.default_rng(5)
    for _ in range(3):
        _agrees(model, report, {"x": rng.uniform(-1.2, 1.2, (1, 3, 8, 8)).astype(np.float32)}, s_out)
    _, report, _ = _convert(model, tmp_path, dtype="int8")  # asked for: int8, requantized
    assert report.dtype == "int8"
    assert any("requantized to symmetric int8" in note for note in report.notes)


def test_int8_weights_with_a_zero_point_that_fit_symmetric_int8_stay_int8(tmp_path):
    """(q - zero point) within [-127, 127]: int8 keeps their scale exactly, so the file stays int8."""
    b = QdqBuilder(seed=6)
    s_in, z_in = activation_params(-1, 1, np.uint8)
    x = b.qdq("x", s_in, z_in, np.uint8)
    wq = b.rng.integers(-100, 101, (4, 3, 3, 3)).astype(np.int8)
    ws, wz = np.float32(0.004), np.int8(5)
    bias, _ = b.bias(4, np.float32(s_in) * ws)
    s_out, z_out = activation_params(-4, 6, np.uint8)
    y = b.qdq(b.node("Conv", [x, b.quantized(wq, ws, wz), bias], pads=[1, 1, 1, 1]), s_out, z_out,
              np.uint8)
    model = b.model({"x": (1, 3, 8, 8)}, [y])
    _, report, info = _convert(model, tmp_path)
    assert report.dtype == "int8"
    weights = tensor_at(info, op_of(info, "CONV_2D"), 1)
    assert_params(weights, ws, 0, "int8")
    assert np.array_equal(weights.data, (wq.astype(np.int16) - 5).astype(np.int8).transpose(0, 2, 3, 1))
    _agrees(model, report, {"x": np.random.default_rng(7).uniform(-1.2, 1.2, (1, 3, 8, 8))
                            .astype(np.float32)}, s_out)
