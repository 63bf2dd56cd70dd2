"""Weights-only mode: the file's weights are 8-bit with the parameters the scheme prescribes
(read back from the file, checked against hand-computed values) and the model still runs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.conftest import relative_error, run_litert, run_onnxruntime
from tflq.backend.tflite_reader import read_tflite
from tflq.config import ConvertConfig
from tflq.errors import InvalidModelError
from tflq.ir.quant import sqnr_db
from tflq.pipeline import convert

RNG = np.random.default_rng(7)
CONV_W = RNG.normal(0, 0.3, (16, 3, 3, 3)).astype(np.float32)
CONV_W[5] *= 4  # one channel with a much larger range: per-channel scales must differ
CONV_B = RNG.normal(0, 0.1, 16).astype(np.float32)
FC_W = RNG.normal(0, 0.05, (10, 16 * 6 * 6)).astype(np.float32)
FC_B = RNG.normal(0, 0.1, 10).astype(np.float32)


def _model(conv_w=CONV_W) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    inits = [onnx.numpy_helper.from_array(v, n) for n, v in
             (("w", conv_w), ("b", CONV_B), ("fw", FC_W), ("fb", FC_B))]
    graph = helper.make_graph(nodes, "wq", [helper.make_tensor_value_info("x", 1, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", 1, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "wq.onnx"
    onnx.save(_model(), path)
    return str(path)


def _convert(path, dtype, tmp_path):
    return convert(ConvertConfig(model=path, output=str(tmp_path / f"{dtype}.tflite"),
                                 mode="weights-only", dtype=dtype, min_weight_elements=100))


def _tensor_by_values(info, dtype, shape):
    return [t for t in info.tensors if t.dtype == dtype and t.shape == list(shape) and t.data is not None]


def test_uint8_weights_are_asymmetric_per_tensor(model_path, tmp_path):
    info = read_tflite(_convert(model_path, "uint8", tmp_path).tflite)
    conv_w = CONV_W.transpose(0, 2, 3, 1)  # OHWI
    (t,) = _tensor_by_values(info, "uint8", conv_w.shape)
    lo, hi = min(conv_w.min(), 0.0), max(conv_w.max(), 0.0)
    scale = (hi - lo) / 255
    zero_point = int(np.round(-lo / scale))
    assert len(t.scale) == 1 and t.scale[0] == pytest.approx(scale, rel=1e-6)
    assert t.zero_point == [zero_point]
    dequantized = (t.data.astype(np.float64) - zero_point) * t.scale[0]
    assert np.max(np.abs(dequantized - conv_w)) <= t.scale[0] / 2 + 1e-7
    assert "DEQUANTIZE" in info.op_kinds()
    assert all(op.version == 1 for op in info.ops if op.kind == "DEQUANTIZE")


def test_int8_weights_are_symmetric_per_channel_and_hybrid(model_path, tmp_path):
    info = read_tflite(_convert(model_path, "int8", tmp_path).tflite)
    conv_w = CONV_W.transpose(0, 2, 3, 1)
    (t,) = _tensor_by_values(info, "int8", conv_w.shape)
    expected_scales = np.abs(conv_w).reshape(16, -1).max(axis=1) / 127
    np.testing.assert_allclose(t.scale, expected_scales, rtol=1e-6)
    assert t.zero_point == [0] * 16 and t.quantized_dimension == 0
    assert t.data.min() >= -127
    dequantized = t.data.astype(np.float64) * np.array(t.scale).reshape(16, 1, 1, 1)
    assert np.all(np.abs(dequantized - conv_w) <= np.array(t.scale).reshape(16, 1, 1, 1) / 2 + 1e-7)
    # Hybrid kernels read int8 weights directly: no DEQUANTIZE, and the versions say so.
    assert "DEQUANTIZE" not in info.op_kinds()
    versions = {op.kind: op.version for op in info.ops}
    assert versions["CONV_2D"] == 5 and versions["FULLY_CONNECTED"] == 12
    # Biases stay float.
    assert all(t.dtype == "float32" for t in info.tensors if t.shape == [16] and t.data is not None)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_weights_only_runs_in_litert(model_path, tmp_path, dtype):
    x = RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)
    expected = run_onnxruntime(model_path, {"x": x})[0]
    report = _convert(model_path, dtype, tmp_path)
    actual = run_litert(report.tflite, [x])[0]
    # A harsh toy (one conv channel has 4x the range of the others); the sample and benchmark
    # models are held to the 35 dB in test_e2e.
    assert sqnr_db(expected, actual) >= 30
    assert relative_error(expected, actual) < 0.1
    assert report.weights and all(w["sqnr_db"] > 35 for w in report.weights)


def test_small_constants_stay_float(model_path, tmp_path):
    report = convert(ConvertConfig(model=model_path, mode="weights-only", min_weight_elements=1024))
    info = read_tflite(report.tflite)
    quantized = [t for t in info.tensors if t.dtype == "uint8"]
    assert [t.shape for t in quantized] == [[10, 576]]  # only the FC weights are that large


def test_nan_weights_are_refused(tmp_path):
    bad = CONV_W.copy()
    bad[0, 0, 0, 0] = np.nan
    path = tmp_path / "nan.onnx"
    onnx.save(_model(bad), path)
    out = tmp_path / "nan.tflite"
    with pytest.raises(InvalidModelError, match="NaN"):
        convert(ConvertConfig(model=str(path), output=str(out), mode="weights-only"))
    assert not out.exists()
