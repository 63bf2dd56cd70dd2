"""Models exported from TensorFlow/Keras (tf2onnx): 4-D inputs already NHWC, followed by a Transpose
to NCHW, and outputs produced by a Transpose back to NHWC. The file keeps the ONNX input and output
shapes and holds no TRANSPOSE; float matches onnxruntime on the worst of 8 inputs; int8 runs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import litert_interpreter, run_litert, run_onnxruntime
from tflq.config import ConvertConfig
from tflq.ir.quant import sqnr_db
from tflq.pipeline import convert

FLOAT_SQNR_DB = 80.0
INT8_SQNR_DB = 25.0
SAMPLES = 8


def _model(kind: str) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """x [N, H, W, C] -> Transpose to NCHW -> convs -> an NHWC output (or a flatten into a Gemm)."""
    rng = np.random.default_rng(len(kind))
    shape = (1, 20, 8, 1) if kind == "one_channel" else (1, 12, 10, 3)
    c = shape[3]
    inits, nodes = [], []

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
    nodes.append(helper.make_node("Conv", ["x_nchw", const("w1", rng.normal(0, 0.5, (8, c, 3, 3))),
                                           const("b1", rng.normal(0, 0.1, 8))], ["c1"], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    nodes.append(helper.make_node("Conv", ["r1", const("w2", rng.normal(0, 0.3, (6, 8, 3, 3))),
                                           const("b2", rng.normal(0, 0.1, 6))], ["c2"],
                                  pads=[1, 1, 1, 1], strides=[2, 2]))
    h, w = (shape[1] + 1) // 2, (shape[2] + 1) // 2
    if kind in ("back_to_nhwc", "one_channel"):
        nodes.append(helper.make_node("Transpose", ["c2"], ["y"], perm=[0, 2, 3, 1]))
        out_shape = (1, h, w, 6)
    elif kind == "back_then_flatten":  # Keras Flatten after a Conv2D: NHWC order into the Dense
        nodes.append(helper.make_node("Transpose", ["c2"], ["c2_nhwc"], perm=[0, 2, 3, 1]))
        nodes.append(helper.make_node("Reshape", ["c2_nhwc", const("flat", [1, -1], np.int64)], ["f"]))
        nodes.append(helper.make_node("MatMul", ["f", const("m", rng.normal(0, 0.1, (h * w * 6, 5)))], ["y"]))
        out_shape = (1, 5)
    else:  # "pooled": global pool, flatten, Gemm
        nodes.append(helper.make_node("GlobalAveragePool", ["c2"], ["g"]))
        nodes.append(helper.make_node("Flatten", ["g"], ["f"]))
        nodes.append(helper.make_node("Gemm", ["f", const("m", rng.normal(0, 0.3, (5, 6)))], ["y"], transB=1))
        out_shape = (1, 5)
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model, shape


KINDS = ["back_to_nhwc", "back_then_flatten", "pooled", "one_channel"]


def _samples(shape, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(count)]


def _worst_db(path: str, tflite: bytes, samples) -> float:
    worst = float("inf")
    for x in samples:  # the file's input is the ONNX [N, H, W, C] input: fed as it is
        expected = run_onnxruntime(path, {"x": x})[0]
        actual = run_litert(tflite, [x], nchw_io=False)[0]
        assert actual.shape == expected.shape
        worst = min(worst, sqnr_db(expected, actual))
    return worst


@pytest.mark.parametrize("keep_io_layout", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_nhwc_input_keeps_its_shape_and_no_transpose_remains(kind, keep_io_layout, tmp_path):
    model, shape = _model(kind)
    path = str(tmp_path / f"{kind}.onnx")
    onnx.save(model, path)
    report = convert(ConvertConfig(model=path, keep_io_layout=keep_io_layout))
    assert report.op_counts.get("TRANSPOSE", 0) == 0, report.op_counts
    interpreter = litert_interpreter(report.tflite)
    assert tuple(interpreter.get_input_details()[0]["shape"]) == shape
    out_shape = tuple(d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim)
    assert tuple(interpreter.get_output_details()[0]["shape"]) == out_shape
    assert _worst_db(path, report.tflite, _samples(shape, SAMPLES, 1)) >= FLOAT_SQNR_DB


@pytest.mark.parametrize("kind", KINDS)
def test_nhwc_input_int8_runs_in_litert(kind, tmp_path):
    model, shape = _model(kind)
    path = str(tmp_path / f"{kind}.onnx")
    onnx.save(model, path)
    calib = _samples(shape, SAMPLES, 2)
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=[{"x": x} for x in calib]))
    assert report.op_counts.get("TRANSPOSE", 0) == 0, report.op_counts
    assert _worst_db(path, report.tflite, calib) >= INT8_SQNR_DB
