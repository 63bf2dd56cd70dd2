"""--mode float16: float constants stored as float16 behind DEQUANTIZE (the TF converter's scheme).

Every registry case with a float constant large enough to be stored (16 elements or more; the other
cases give the float file) converts, runs in LiteRT and stays within float16's rounding of
onnxruntime's float output; XNNPACK takes the whole file; the size halves."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.conftest import case_model, relative_error, run_litert, run_onnxruntime, save_graph, save_model
from tests.delegation import xnnpack_delegation
from tflq import ops as registry
from tflq.backend.tflite_reader import read_tflite
from tflq.cli import main
from tflq.config import ConvertConfig
from tflq.pipeline import convert
from tflq.quantize.float16 import FLOAT16_MIN_ELEMENTS

# float16 keeps 11 significant bits: each stored weight is off by at most 2^-11 of itself, and a
# dot product's error stays within a few of those relative to the output's largest magnitude.
FLOAT16_TOLERANCE = 2e-3
SAMPLE = "sample_models/digits_cnn.onnx"


def _stores_float16(case) -> bool:
    return "mode" not in case.options and any(
        v.dtype == np.float32 and v.size >= FLOAT16_MIN_ELEMENTS for v in case.consts.values())


CASES = [(spec.kind, case) for spec in registry.all_specs() for case in spec.cases if _stores_float16(case)]


@pytest.mark.parametrize("kind,case", CASES, ids=[f"{k}-{c.name}" for k, c in CASES])
def test_registry_case_in_float16_matches_onnxruntime(kind, case, tmp_path):
    model = case_model(case)
    path = save_model(model, tmp_path / "m.onnx")
    expected = run_onnxruntime(model, case.inputs)
    report = convert(ConvertConfig(model=path, **{**case.options, "mode": "float16"}))
    info = read_tflite(report.tflite)
    halves = [t for t in info.tensors if t.dtype == "float16"]
    assert halves and all(t.data is not None for t in halves)
    consumers = {i: op.kind for op in info.ops for i in op.inputs}
    assert {consumers[t.index] for t in halves} == {"DEQUANTIZE"}
    actual = run_litert(report.tflite, list(case.inputs.values()))
    for e, a in zip(expected, actual):
        assert e.shape == a.shape
        assert relative_error(e, a) <= max(case.tolerance, FLOAT16_TOLERANCE)


def _conv_model(path, bias_scale=0.1, extra=None) -> str:
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array((rng.standard_normal((64, 32, 3, 3)) * 0.1).astype(np.float32), "w"),
             numpy_helper.from_array((rng.standard_normal(64) * bias_scale).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    if extra is not None:
        inits.append(numpy_helper.from_array(extra, "big"))
        nodes.append(helper.make_node("Add", ["y", "big"], ["z"]))
    return save_graph(path, nodes, {"x": [1, 32, 8, 8]}, nodes[-1].output[0], inits)


def test_weights_halve_the_file_and_xnnpack_takes_all(tmp_path):
    path = _conv_model(tmp_path / "conv.onnx")
    float_file = convert(ConvertConfig(model=path, mode="float")).tflite
    report = convert(ConvertConfig(model=path, mode="float16"))
    assert len(report.tflite) <= 0.51 * len(float_file)
    info = read_tflite(report.tflite)
    bias = next(t for t in info.tensors if t.data is not None and t.shape == [64])
    assert bias.dtype == "float32"  # XNNPACK refuses a float16 bias next to a float32 filter
    assert xnnpack_delegation(report.tflite).undelegated == []
    assert xnnpack_delegation(convert(ConvertConfig(model=SAMPLE, mode="float16")).tflite).undelegated == []
    assert any("float16: 1 constant(s) stored as float16" in n for n in report.notes), report.notes


def test_values_beyond_float16_stay_float32_with_a_note(tmp_path):
    mask = np.full((1, 64, 8, 8), -1e9, np.float32)
    path = _conv_model(tmp_path / "mask.onnx", extra=mask)
    report = convert(ConvertConfig(model=path, mode="float16"))
    assert any("kept float32" in n and "'big" in n for n in report.notes), report.notes
    x = np.random.default_rng(0).standard_normal((1, 32, 8, 8)).astype(np.float32)
    (actual,) = run_litert(report.tflite, [x])
    assert np.all(np.isfinite(actual)) and np.all(actual < -1e8)


def test_calibration_data_with_float16_is_unused_and_said(tmp_path):
    from click.testing import CliRunner

    out = tmp_path / "d.tflite"
    result = CliRunner().invoke(main, ["convert", SAMPLE, "-o", str(out), "--mode", "float16",
                                       "--calib", "sample_models/digits_calib"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "--calib unused" in result.output
    assert read_tflite(out.read_bytes()).tensor  # a readable file


# ---- float16 models (torch's model.half()): float16 inputs, outputs and weights -----------------
def _half_model(path) -> str:
    """Conv (float16 weights) -> Relu -> Add of a float16 constant -> MaxPool -> two float16
    outputs (one the pooled value, one through an Identity), as `model.half()` exports them."""
    rng = np.random.default_rng(7)
    f16 = onnx.TensorProto.FLOAT16
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float16), "w"),
             numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float16), "b"),
             numpy_helper.from_array(rng.standard_normal((8, 1, 1)).astype(np.float16), "c")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["r"]),
             helper.make_node("Add", ["r", "c"], ["a"]),
             helper.make_node("MaxPool", ["a"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Identity", ["a"], ["z"])]
    graph = helper.make_graph(nodes, "half", [helper.make_tensor_value_info("x", f16, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", f16, None),
                               helper.make_tensor_value_info("z", f16, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return save_model(model, path)


HALF_INPUTS = [np.random.default_rng(s).standard_normal((1, 3, 8, 8)).astype(np.float16) for s in range(4)]


def test_float16_model_keeps_its_float16_interface_and_computes_in_float32(tmp_path):
    path = _half_model(tmp_path / "half.onnx")
    report = convert(ConvertConfig(model=path))
    info = read_tflite(report.tflite)
    interface = [info.tensors[i] for i in list(info.inputs) + list(info.outputs)]
    assert [t.dtype for t in interface] == ["float16"] * 3
    # inside: float32 only, between one CAST per input and output
    assert report.op_counts["CAST"] == 3
    assert all(t.dtype == "float32" for t in info.tensors if t.data is not None)
    for x in HALF_INPUTS:
        expected = run_onnxruntime(path, {"x": x})
        actual = run_litert(report.tflite, [x])
        for e, a in zip(expected, actual):
            assert a.dtype == np.float16 and e.shape == a.shape
            # onnxruntime rounds each float16 op's result, the file only its outputs
            assert relative_error(e, a) <= FLOAT16_TOLERANCE


@pytest.mark.parametrize("io_type", [None, "int8"])
def test_float16_model_quantizes_calibrating_in_float(io_type, tmp_path):
    from tflq.ir.quant import sqnr_db

    path = _half_model(tmp_path / "half.onnx")
    calib = [{"x": np.random.default_rng(100 + s).standard_normal((1, 3, 8, 8)).astype(
        np.float32 if io_type else np.float16)} for s in range(8)]
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=calib, io_type=io_type))
    info = read_tflite(report.tflite)
    io = {info.tensors[i].dtype for i in list(info.inputs) + list(info.outputs)}
    assert io == ({"int8"} if io_type else {"float16"})
    assert report.op_counts.get("CAST", 0) == (0 if io_type else 3)
    for x in HALF_INPUTS:
        for e, a in zip(run_onnxruntime(path, {"x": x}), run_litert(report.tflite, [x])):
            assert sqnr_db(e.astype(np.float32), a.astype(np.float32)) > 30
