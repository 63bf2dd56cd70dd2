"""A tensor that is zero on every calibration sample (a dead ReLU) still gives a file LiteRT loads
with its default XNNPACK delegate, and the right (zero) result."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime
from tflq.config import ConvertConfig
from tflq.ir.dtypes import DType
from tflq.ir.quant import activation_params, sqnr_db
from tflq.pipeline import convert


def test_all_zero_range_gets_scale_one():
    for dtype in (DType.INT8, DType.UINT8):
        p = activation_params(dtype, 0.0, 0.0)
        assert float(p.scale) == 1.0 and int(p.zero_point) == dtype.qmin


def test_dead_relu_after_fully_connected_loads_and_runs(tmp_path):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w", "b"], ["fc"], transB=1),
             helper.make_node("Relu", ["fc"], ["r"]),
             helper.make_node("Mul", ["r", "s"], ["m"]),
             helper.make_node("Sigmoid", ["m"], ["y"])]
    inits = [numpy_helper.from_array(rng.normal(0, 0.1, (8, 4)).astype(np.float32), "w"),
             numpy_helper.from_array(np.full(8, -5.0, np.float32), "b"),  # the ReLU never fires
             numpy_helper.from_array(rng.uniform(0.5, 1.5, (1, 8)).astype(np.float32), "s")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])
    graph = helper.make_graph(nodes, "dead", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = str(tmp_path / "dead.onnx")
    onnx.save(model, path)
    calib = [rng.standard_normal((1, 4, 6, 6)).astype(np.float32) for _ in range(3)]
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=[{"x": c} for c in calib]))
    actual = run_litert(report.tflite, [calib[0]])[0]
    np.testing.assert_allclose(actual, run_onnxruntime(path, {"x": calib[0]})[0], atol=1 / 256)


def test_tiny_but_nonzero_range_keeps_the_multiplier_xnnpack_accepts(tmp_path):
    """ReLU(x - 1 + 1e-6) on x in [-1, 1]: the output range is [0, 1e-6], which on its own would
    need a conv multiplier of ~16000; LiteRT's XNNPACK delegate refuses 256 or more."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    inits = [numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w"),
             numpy_helper.from_array(np.array([-1 + 1e-6], np.float32), "b")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = str(tmp_path / "tiny.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 1, 4, 4)
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=[{"x": x}]))
    actual = run_litert(report.tflite, [x])[0]  # loads with the default delegate, and runs
    assert np.max(np.abs(actual - run_onnxruntime(path, {"x": x})[0])) <= 1e-5


@pytest.mark.parametrize("factor", [1e17, 2e18, float(np.finfo(np.float32).max)])
def test_huge_range_loads_and_runs_with_int8_io(factor, tmp_path):
    """x * factor + x: int8 grids for values of 1e18 or more would overflow LiteRT's float32
    scale products (ADD's (1 << 20) x scale) and abort allocate_tensors; below that the ops
    run in int8. The huge tensor is also a model output: with 8-bit I/O it stays a float edge."""
    nodes = [helper.make_node("Mul", ["x", "f"], ["big"]), helper.make_node("Add", ["big", "x"], ["y"])]
    graph = helper.make_graph(nodes, "huge", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8]),
                               helper.make_tensor_value_info("big", TensorProto.FLOAT, [1, 8])],
                              [numpy_helper.from_array(np.array(factor, np.float32), "f")])
    path = str(tmp_path / "huge.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    xs = [np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8) * s for s in (1.0, 0.5)]
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", io_type="int8",
                                   calib=[{"x": x} for x in xs]))
    beyond = [op.kind for op in report.float_ops if "beyond what integer kernels represent" in op.reason]
    assert sorted(beyond) == ([] if factor < 1e18 else ["ADD", "MUL"])
    for x in xs:
        for e, a in zip(run_onnxruntime(path, {"x": x}), run_litert(report.tflite, [x])):
            assert sqnr_db(e, a) >= 30.0


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16x8"])
@pytest.mark.parametrize("op", ["Add", "Sub"])
def test_cancelling_add_keeps_a_multiplier_below_one(op, dtype, tmp_path):
    """a = x * 1e7 and b = x - a (or a - x for Sub): a + b is x, on a grid 1e7 times finer than
    its inputs'. LiteRT's ADD/SUB rescale both inputs to 2 x the larger scale / 2^20 and need the
    output multiplier below 1 (else abort at allocate_tensors): the output scale gets a floor."""
    sign = -1.0 if op == "Add" else 1.0
    nodes = [helper.make_node("Mul", ["x", "r"], ["a"]), helper.make_node("Mul", ["x", "s"], ["na"]),
             helper.make_node("Add", ["na", "x"], ["b"]), helper.make_node(op, ["a", "b"], ["y"])]
    inits = [numpy_helper.from_array(np.array(1e7, np.float32), "r"),
             numpy_helper.from_array(np.array(sign * 1e7, np.float32), "s")]
    graph = helper.make_graph(nodes, "cancel", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], inits)
    path = str(tmp_path / "cancel.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    xs = [np.random.default_rng(i).uniform(-1, 1, (1, 16)).astype(np.float32) for i in range(3)]
    report = convert(ConvertConfig(model=path, mode="full", dtype=dtype, calib=[{"x": x} for x in xs]))
    assert not report.float_ops
    for x in xs:  # runs; the result is as coarse as the inputs' grid makes it (1e7 / 255 per step)
        expected, actual = run_onnxruntime(path, {"x": x})[0], run_litert(report.tflite, [x])[0]
        assert np.all(np.isfinite(actual)) and actual.shape == expected.shape
