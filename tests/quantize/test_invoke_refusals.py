"""Integer kernels that fail the whole invoke on some input values (ops/base.py IntegerRefusal):
LiteRT's int8/uint8 DIV refuses a divisor equal to its zero point (div.cc), int8 SQRT a negative
input (elementwise.cc). A file tflq writes must invoke on any data, so such an op stays float
unless its input's grid cannot hold the refused value. Each model is calibrated on data reaching
the edges of its ranges, and run on data at those edges (a divisor of exactly 0, its zero point)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime
from tflq.backend.tflite_reader import read_tflite
from tflq.config import ConvertConfig
from tflq.ir.quant import sqnr_db
from tflq.pipeline import convert

SHAPE = [1, 16]


def _model(nodes, consts=None, inputs=("a", "b")) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info(n, TensorProto.FLOAT, SHAPE) for n in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
        [numpy_helper.from_array(v, k) for k, v in (consts or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _calibration(low: float, high: float, count: int, seed: int) -> list[np.ndarray]:
    """Uniform samples in [low, high], the first reaching both ends and +-1e-3 (not 0 itself:
    calibration refuses the infinity a divisor of exactly 0 gives)."""
    rng = np.random.default_rng(seed)
    samples = [rng.uniform(low, high, SHAPE).astype(np.float32) for _ in range(count)]
    edges = [low or 1e-3, high] + [v for v in (1e-3, -1e-3) if low <= v <= high]
    samples[0][0, :len(edges)] = edges
    return samples


def _edges(low: float, high: float) -> np.ndarray:
    """Run-time data at the edges: both ends, 0, and values inside half a step of 0."""
    values = np.clip([low, high, 0.0, 1e-6, -1e-6, 1e-4, -1e-4, 0.5 * low, 0.5 * high], low, high)
    return np.resize(values, SHAPE).astype(np.float32)


def _op_dtype(tflite: bytes, kind: str, index: int) -> str:
    info = read_tflite(tflite)
    op = next(op for op in info.ops if op.kind == kind)
    return info.tensors[op.inputs[index]].dtype


def _convert(path: str, dtype: str, calib: list[dict]) -> bytes:
    return convert(ConvertConfig(model=path, mode="full", dtype=dtype, calib=calib)).tflite


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("divisor_range", [(-1.0, 1.0), (0.0, 1.0), (0.5, 1.5)],
                         ids=["contains_0", "from_0", "positive"])
def test_div_by_a_computed_divisor_invokes_on_any_data(divisor_range, dtype, tmp_path):
    """A computed divisor's grid always holds real 0, so the DIV runs float: even a divisor that
    calibration saw positive can drop below half a step at run time."""
    path = str(tmp_path / "div.onnx")
    onnx.save(_model([helper.make_node("Div", ["a", "b"], ["y"])]), path)
    a = _calibration(-2.0, 2.0, 8, 1)
    b = _calibration(*divisor_range, 8, 2)
    tflite = _convert(path, dtype, [{"a": x, "b": d} for x, d in zip(a, b)])
    assert _op_dtype(tflite, "DIV", 1) == "float32"
    for x, d in zip(a + [a[0], a[1]], b + [_edges(*divisor_range), np.zeros(SHAPE, np.float32)]):
        run_litert(tflite, [x, d])  # invokes: no "DIV failed to invoke"
    if divisor_range[0] > 0:  # finite results: the float DIV between 8-bit neighbours is accurate
        worst = min(sqnr_db(run_onnxruntime(path, {"a": x, "b": d})[0], run_litert(tflite, [x, d])[0])
                    for x, d in zip(a, b))
        assert worst >= 30.0


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_div_by_a_constant_away_from_0_stays_integer(dtype, tmp_path):
    path = str(tmp_path / "div.onnx")
    divisor = np.linspace(0.5, 1.5, SHAPE[1]).astype(np.float32).reshape(SHAPE) * np.where(
        np.arange(SHAPE[1]) % 2, 1, -1).astype(np.float32)
    onnx.save(_model([helper.make_node("Div", ["a", "c"], ["y"])], {"c": divisor}, inputs=("a",)), path)
    a = _calibration(-2.0, 2.0, 8, 3)
    tflite = _convert(path, dtype, [{"a": x} for x in a])
    assert _op_dtype(tflite, "DIV", 1) == dtype
    worst = min(sqnr_db(run_onnxruntime(path, {"a": x})[0], run_litert(tflite, [x])[0]) for x in a)
    assert worst >= 30.0


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_div_by_a_constant_near_0_stays_float(dtype, tmp_path):
    """1e-4 quantizes to the zero point on a grid reaching 2.0: the integer DIV would be refused."""
    path = str(tmp_path / "div.onnx")
    divisor = np.linspace(1e-4, 2.0, SHAPE[1]).astype(np.float32).reshape(SHAPE)
    onnx.save(_model([helper.make_node("Div", ["a", "c"], ["y"])], {"c": divisor}, inputs=("a",)), path)
    a = _calibration(-2.0, 2.0, 8, 4)
    tflite = _convert(path, dtype, [{"a": x} for x in a])
    assert _op_dtype(tflite, "DIV", 1) == "float32"
    for x in a:
        run_litert(tflite, [x])


def test_sqrt_on_a_signed_qdq_grid_stays_float(tmp_path):
    """A QDQ model's symmetric int8 grid (zero point 0) before a Sqrt holds negative values, on
    which the int8 SQRT would fail the invoke: it runs float.
    (Calibration never gives such a grid: a range seen >= 0 puts the zero point at -128.)"""
    path = str(tmp_path / "sqrt.onnx")
    consts = {"s_in": np.array(0.01, np.float32), "z_in": np.array(0, np.int8),
              "s_out": np.array(0.01, np.float32), "z_out": np.array(-128, np.int8)}
    nodes = [helper.make_node("QuantizeLinear", ["a", "s_in", "z_in"], ["aq"]),
             helper.make_node("DequantizeLinear", ["aq", "s_in", "z_in"], ["ad"]),
             helper.make_node("Sqrt", ["ad"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "s_out", "z_out"], ["rq"]),
             helper.make_node("DequantizeLinear", ["rq", "s_out", "z_out"], ["y"])]
    onnx.save(_model(nodes, consts, inputs=("a",)), path)
    tflite = convert(ConvertConfig(model=path)).tflite  # a QDQ model: full int8 inferred
    assert _op_dtype(tflite, "SQRT", 0) == "float32"
    for x in _calibration(-1.0, 1.0, 4, 5) + [_edges(-1.0, 1.0)]:
        expected = run_onnxruntime(path, {"a": x})[0]
        actual = run_litert(tflite, [x])[0]  # invokes
        real = x >= 0.05  # where the square root is real and not at the grid's first steps
        np.testing.assert_allclose(actual[real], expected[real], atol=0.02)


def test_sqrt_of_a_non_negative_range_stays_integer(tmp_path):
    """Sqrt(a * a + 0.1): the input's grid starts at its zero point, no negative value exists."""
    path = str(tmp_path / "sqrt.onnx")
    onnx.save(_model([helper.make_node("Mul", ["a", "a"], ["sq"]),
                      helper.make_node("Add", ["sq", "c"], ["s"]), helper.make_node("Sqrt", ["s"], ["y"])],
                     {"c": np.array(0.1, np.float32)}, inputs=("a",)), path)
    a = _calibration(-2.0, 2.0, 8, 6)
    tflite = _convert(path, "int8", [{"a": x} for x in a])
    assert _op_dtype(tflite, "SQRT", 0) == "int8"
    a.append(_edges(-4.0, 4.0))  # beyond the calibrated range: saturates, still invokes
    worst = min(sqnr_db(run_onnxruntime(path, {"a": x})[0], run_litert(tflite, [x])[0]) for x in a[:-1])
    run_litert(tflite, [a[-1]])
    assert worst >= 25.0
