"""Models that onnxruntime already quantized in forms tflq cannot read back (com.microsoft contrib
ops such as QAttention; QLinear or dynamic patterns wired otherwise than onnxruntime writes them)
are refused through the CLI with one message asking for the float model (exit 1, no traceback,
no file); the models onnxruntime's own quantizers write convert."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import importorskip
from tflq.cli import main


def _float_model(path: str) -> str:
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Add", ["r", "r"], ["a"]),
             helper.make_node("Flatten", ["a"], ["f"]),
             helper.make_node("MatMul", ["f", "m"], ["y"])]
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b"),
             numpy_helper.from_array(rng.normal(size=(4 * 6 * 6, 5)).astype(np.float32), "m")]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


class _Samples:
    """onnxruntime's CalibrationDataReader protocol over a few seeded samples."""

    def __init__(self) -> None:
        rng = np.random.default_rng(4)
        self.samples = iter([{"x": rng.normal(size=(1, 3, 6, 6)).astype(np.float32)} for _ in range(4)])

    def get_next(self):
        return next(self.samples, None)

    def rewind(self):  # newer onnxruntime versions call it
        pass


def _quantized(tmp_path, how: str) -> str:
    q = importorskip("onnxruntime.quantization")
    src = _float_model(str(tmp_path / "float.onnx"))
    out = str(tmp_path / f"{how}.onnx")
    if how == "dynamic_int8":
        q.quantize_dynamic(src, out, weight_type=q.QuantType.QInt8)
    elif how == "dynamic_uint8":
        q.quantize_dynamic(src, out, weight_type=q.QuantType.QUInt8)
    elif how == "qoperator":
        q.quantize_static(src, out, _Samples(), quant_format=q.QuantFormat.QOperator)
    elif how == "qdq":
        q.quantize_static(src, out, _Samples(), quant_format=q.QuantFormat.QDQ)
    return out


def _contrib_model(path: str, op_type: str, inside_if: bool = False) -> str:
    """A com.microsoft node (not runnable here, only recognisable), optionally in an If branch."""
    node = helper.make_node(op_type, ["x"], ["y"], domain="com.microsoft", name=f"my_{op_type}")
    if inside_if:
        branch = helper.make_graph([node], "then", [],
                                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
        other = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "else", [],
                                  [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])])
        node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other, name="if")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])]
    inits = [numpy_helper.from_array(np.array(True), "cond")] if inside_if else []
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]
    graph = helper.make_graph([node], "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _convert(model: str, tmp_path):
    out = tmp_path / "out.tflite"
    result = CliRunner().invoke(main, ["convert", model, "-o", str(out)], catch_exceptions=False)
    return result, out


def _assert_refused(result, out, op_types):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output  # one message, no per-node table
    assert "quantized by onnxruntime" in lines[0] and "float model" in lines[0]
    for op_type in op_types:
        assert op_type in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("op_type", ["QGemm", "QLinearSigmoid", "QAttention", "DynamicQuantizeMatMul",
                                     "MatMulIntegerToFloat", "QuantizeBFP"])
def test_contrib_quantized_ops_are_refused_the_same_way(op_type, tmp_path):
    result, out = _convert(_contrib_model(str(tmp_path / "m.onnx"), op_type), tmp_path)
    _assert_refused(result, out, [op_type])


def test_a_quantized_op_inside_a_branch_is_found(tmp_path):
    result, out = _convert(_contrib_model(str(tmp_path / "m.onnx"), "QLinearAdd", inside_if=True), tmp_path)
    _assert_refused(result, out, ["QLinearAdd"])


def test_other_contrib_ops_get_the_usual_message(tmp_path):
    """(QuickGelu, the example before, converts now: tests/test_ort_fused.py.)"""
    result, out = _convert(_contrib_model(str(tmp_path / "m.onnx"), "WordConvEmbedding"), tmp_path)
    assert result.exit_code == 1
    assert "quantized by onnxruntime" not in result.output
    assert "my_WordConvEmbedding" in result.output and "unsupported_op" in result.output
    assert not out.exists()


@pytest.mark.parametrize("how", ["qdq", "dynamic_int8", "dynamic_uint8", "qoperator"])
def test_onnxruntime_quantized_models_convert(how, tmp_path):
    """(What they compute: tests/test_ort_dynamic.py, tests/test_ort_qoperator.py.)"""
    result, out = _convert(_quantized(tmp_path, how), tmp_path)
    assert result.exit_code == 0, result.output
    assert os.path.getsize(out) > 0
