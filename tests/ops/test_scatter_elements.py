"""ScatterElements beyond the registry cases (tflq/ops/scatter_nd.py): all-constant inputs fold to
a constant, a torch one-hot (zeros.scatter_(1, argmax, 1)) runs in LiteRT as onnxruntime does, and
run-time indices that would need more rounds than the limit are refused naming the node."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime
from tflq import convert
from tflq.backend.tflite_reader import read_tflite
from tflq.errors import UnsupportedModelError


def _save(tmp_path, nodes, x_shape, inits=(), opset=16, index_input=None) -> str:
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    if index_input is not None:
        inputs.append(helper.make_tensor_value_info("i", TensorProto.INT64, list(index_input)))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    return path


def test_all_constant_scatter_elements_folds(tmp_path):
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    inits = [numpy_helper.from_array(data, "d"), numpy_helper.from_array(np.array([[3, 0], [1, 1]], np.int64), "ci"),
             numpy_helper.from_array(np.array([[-1.0, -2.0], [-3.0, -4.0]], np.float32), "u")]
    path = _save(tmp_path, [helper.make_node("ScatterElements", ["d", "ci", "u"], ["s"], axis=1, name="scatter"),
                            helper.make_node("Add", ["x", "s"], ["y"], name="add")], (3, 4), inits)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    out = tmp_path / "m.tflite"
    convert(path, str(out))
    kinds = [op.kind for op in read_tflite(out.read_bytes()).ops]
    assert "SCATTER_ND" not in kinds, kinds
    (expected,) = run_onnxruntime(path, {"x": x})
    (got,) = run_litert(out.read_bytes(), [x])
    np.testing.assert_array_equal(got, expected)


def test_torch_one_hot_from_argmax(tmp_path):
    """zeros_like(x).scatter_(1, x.argmax(1, keepdim=True), 1.0): run-time indices, one per row."""
    nodes = [helper.make_node("ArgMax", ["x"], ["a"], axis=1, keepdims=1, name="argmax"),
             helper.make_node("Mul", ["x", "zero"], ["z"], name="zeros"),
             helper.make_node("Expand", ["one", "ashape"], ["ones"], name="ones"),
             helper.make_node("ScatterElements", ["z", "a", "ones"], ["y"], axis=1, name="scatter")]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero"),
             numpy_helper.from_array(np.ones((), np.float32), "one"),
             numpy_helper.from_array(np.array([4, 1], np.int64), "ashape")]
    path = _save(tmp_path, nodes, (4, 10), inits)
    out = tmp_path / "m.tflite"
    convert(path, str(out))
    for seed in range(3):
        x = np.random.default_rng(seed).normal(size=(4, 10)).astype(np.float32)
        (expected,) = run_onnxruntime(path, {"x": x})
        (got,) = run_litert(out.read_bytes(), [x])
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("reduction", ["none", "max"])
def test_run_time_indices_needing_too_many_rounds_are_refused(reduction, tmp_path):
    attrs = {"axis": 1} if reduction == "none" else {"axis": 1, "reduction": reduction}
    path = _save(tmp_path, [helper.make_node("ScatterElements", ["x", "i", "x"], ["y"], name="the_scatter", **attrs)],
                 (2, 100), opset=18, index_input=(2, 100))
    with pytest.raises(UnsupportedModelError) as info:
        convert(path, str(tmp_path / "m.tflite"))
    text = " ".join(str(d) for d in info.value.diagnostics)
    assert "the_scatter" in text and "100 rounds" in text and "scatter_reduction_rounds" in text, text
    assert not (tmp_path / "m.tflite").exists()
