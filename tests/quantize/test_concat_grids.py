"""int8 CONCATENATION hands its grid back to its inputs' sources only where that grid holds the
source's values: never clipping a tensor other consumers read, nor the input of a fused activation."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime
from tflq.config import ConvertConfig
from tflq.ir.quant import sqnr_db
from tflq.pipeline import convert

RNG = np.random.default_rng(3)


def _model(kind: str) -> onnx.ModelProto:
    inits = []
    if kind == "pool_relu":
        # AVERAGE_POOL with a fused RELU: the pool's input grid must keep the negative values.
        nodes = [helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[2, 2]),
                 helper.make_node("Relu", ["p"], ["r"]),
                 helper.make_node("Relu", ["x"], ["rx"]),
                 helper.make_node("Slice", ["rx", "start", "end", "axes"], ["s"]),
                 helper.make_node("Concat", ["r", "s"], ["y"], axis=1)]
        inits = [numpy_helper.from_array(np.array(v, np.int64), n)
                 for n, v in (("start", [0, 0]), ("end", [7, 7]), ("axes", [2, 3]))]
    else:
        # x feeds both a MAX_POOL into the concatenation and a conv: the pool's output range is
        # narrower than x's, and x on the concatenation's grid would be clipped for the conv.
        w = RNG.normal(0, 0.3, (4, 4, 1, 1)).astype(np.float32)
        nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                 helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1], strides=[2, 2]),
                 helper.make_node("Sigmoid", ["c"], ["g"]),
                 helper.make_node("Concat", ["p", "g"], ["cat"], axis=1),
                 helper.make_node("Conv", ["x", "w"], ["y2"], kernel_shape=[1, 1])]
        inits = [numpy_helper.from_array(w, "w")]
    outputs = ["y"] if kind == "pool_relu" else ["cat", "y2"]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    graph = helper.make_graph(nodes, kind, [x],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("kind", ["pool_relu", "fan_out"])
def test_concatenation_grid_does_not_clip_a_source(kind, tmp_path):
    path = str(tmp_path / f"{kind}.onnx")
    onnx.save(_model(kind), path)
    calib = [RNG.standard_normal((1, 4, 8, 8)).astype(np.float32) for _ in range(4)]
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=[{"x": c} for c in calib]))
    expected = run_onnxruntime(path, {"x": calib[0]})
    actual = run_litert(report.tflite, [calib[0]])
    for e, a in zip(expected, actual):
        assert sqnr_db(e, a) >= 30
