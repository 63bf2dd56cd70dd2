"""Float -> integer Casts of values outside the target's range (undefined in ONNX): one rule,
tflq.ops.cast.cast_values, in the file (LiteRT), in tflq's reference interpreter (calibration's
numpy engine), in import-time folding of a constant; and onnxruntime's answer wherever it is
defined by the hardware's int32 conversion (|x| < 2^31): it wraps modulo 2^8 for int8/uint8,
where a direct LiteRT CAST would clamp (-1.5 -> uint8 0 instead of onnxruntime's 255)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime
from tflq import convert
from tflq.frontend.onnx_loader import load_onnx
from tflq.runtime.interpreter import run_graph

VALUES = np.array([[-3e9, -70000.5, -300.7, -129.5, -128.9, -1.5, -0.7, 0.0, 0.4, 1.9, 127.9, 128.5,
                    200.2, 255.9, 256.3, 300.1, 1e9, 2147483520.0, 3e9, np.nan, np.inf, -np.inf]],
                  np.float32)
IN_INT32 = np.abs(np.nan_to_num(VALUES, nan=np.inf)) < 2.0 ** 31  # where onnxruntime's answer is defined


def _model(to: int, constant: bool) -> onnx.ModelProto:
    """y = float(Cast(v, to)) with v the input x, or (constant) x * 0 + float(Cast(VALUES))."""
    nodes = [helper.make_node("Cast", ["v"], ["c"], to=to, name="cast"),
             helper.make_node("Cast", ["c"], ["cf"], to=TensorProto.FLOAT, name="back")]
    inits = []
    if constant:
        inits = [numpy_helper.from_array(VALUES, "v"), numpy_helper.from_array(np.zeros((), np.float32), "zero")]
        nodes += [helper.make_node("Mul", ["x", "zero"], ["x0"], name="mul"),
                  helper.make_node("Add", ["x0", "cf"], ["y"], name="add")]
    else:
        nodes = [helper.make_node("Identity", ["x"], ["v"], name="id")] + nodes + \
                [helper.make_node("Identity", ["cf"], ["y"], name="out")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(VALUES.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(VALUES.shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("to", [TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32],
                         ids=["uint8", "int8", "int32"])
def test_one_rule_for_float_to_integer_casts_out_of_range(to, tmp_path):
    results = {}
    for constant in (False, True):
        path = str(tmp_path / f"cast_{constant}.onnx")
        onnx.save(_model(to, constant), path)
        tflite = tmp_path / f"cast_{constant}.tflite"
        convert(path, str(tflite))
        feed = np.zeros_like(VALUES) if constant else VALUES
        (results[f"litert_{constant}"],) = run_litert(tflite.read_bytes(), [feed])
        load = load_onnx(path)
        results[f"reference_{constant}"] = run_graph(load.graph, {"x": feed})["y"]
        if not constant:
            (expected,) = run_onnxruntime(path, {"x": VALUES})
    first = results["litert_False"]
    for name, value in results.items():  # the file, the interpreter and folding agree everywhere
        np.testing.assert_array_equal(value, first, err_msg=name)
    if to == TensorProto.INT32:  # LiteRT's int32 CAST clamps; onnxruntime agrees inside the range
        np.testing.assert_array_equal(first[IN_INT32], expected[IN_INT32])
        return
    np.testing.assert_array_equal(first[IN_INT32], expected[IN_INT32])  # onnxruntime's wrap
    wrapped = {TensorProto.UINT8: 255.0, TensorProto.INT8: -1.0}[to]
    assert first[0, list(VALUES[0]).index(np.float32(-1.5))] == wrapped
