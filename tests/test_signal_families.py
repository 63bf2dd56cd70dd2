"""Reduced cases from probing exported speech, recurrent, 1-D signal, detection/segmentation and
control-flow models (torch.onnx.export of wav2vec2-style extractors, KWS CNNs, conformer conv
modules, mel front ends, TCNs, vocoders, YOLO decodes, UNets), each judged against onnxruntime on
the worst sample, with the file run in LiteRT."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime, save_model
from tflq.config import ConvertConfig
from tflq.ir.quant import sqnr_db
from tflq.pipeline import convert


def _worst_db(path: str, tflite: bytes, feeds: list[dict]) -> float:
    worst = float("inf")
    for feed in feeds:
        expected, actual = run_onnxruntime(path, feed), run_litert(tflite, list(feed.values()))
        worst = min(worst, min(sqnr_db(e, a) for e, a in zip(expected, actual)))
    return worst


def _model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                           for n, s in inputs.items()],
                              [helper.make_tensor_value_info(n, t, s) for n, (t, s) in outputs.items()],
                              list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("ftype", [TensorProto.DOUBLE, TensorProto.FLOAT16])
def test_float64_and_float16_values_compute_in_float32(ftype, tmp_path):
    """YOLOv8's anchor grid traced from torch.arange(h) + 0.5 is float64 in the export: Casts to
    double feed a Concat with the float32 class scores and the graph output is double. Float-to-float
    Casts were aliases but the values kept their ONNX type, so the file held a FLOAT64 ADD and
    CONCATENATION next to float32 ones and LiteRT refused it at prepare (concatenation.cc: output
    FLOAT64 != input FLOAT32; add.cc FLOAT32 != FLOAT16 for float16). Every float value now
    computes in float32 and the note says so of the output."""
    np_type = helper.tensor_dtype_to_np_dtype(ftype)
    nodes = [helper.make_node("Cast", ["x"], ["xd"], to=ftype),
             helper.make_node("Add", ["xd", "anchor"], ["box"]),
             helper.make_node("Sigmoid", ["x"], ["score"]),
             helper.make_node("Cast", ["score"], ["scored"], to=ftype),
             helper.make_node("Concat", ["box", "scored"], ["y"], axis=1)]
    anchor = numpy_helper.from_array((np.arange(6) + 0.5).astype(np_type).reshape(1, 6), "anchor")
    path = save_model(_model(nodes, {"x": [1, 6]}, {"y": (ftype, [1, 12])}, [anchor]), tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.normal(0, 2, (1, 6)).astype(np.float32)} for _ in range(4)]
    report = convert(ConvertConfig(model=path))
    assert any("output 'y'" in n and "float32" in n for n in report.notes), report.notes
    assert _worst_db(path, report.tflite, feeds) >= (100.0 if ftype == TensorProto.DOUBLE else 60.0)
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=feeds))
    assert _worst_db(path, report.tflite, feeds) >= 30.0
