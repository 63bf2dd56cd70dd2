"""ScatterND quantized: the dynamo exporter writes an in-place slice write (x[:, :, 0] = y,
Funnel's relative positions) as a ScatterND with constant indices. tflq lowers it to a SELECT_V2
between the data and a SCATTER_ND of the updates into zeros, which reads only the written
positions: the SCATTER_ND then runs on the updates' 8-bit integers (before it stayed float, a
DEQUANTIZE/QUANTIZE pair around it in every attention layer). With reduction 'add' the zeros
are read (data + scattered), and raw integer zeros are not the grid's zero point: it stays float.
Against onnxruntime on the worst of several samples, full int8 and uint8."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime, save_model
from tflq import convert
from tflq.backend.tflite_reader import read_tflite
from tflq.ir.quant import sqnr_db
from tflq.ops.scatter_nd import ZEROS_READ


def _slice_write(reduction: str):
    """y = x * 2 with column 0 of each row replaced by (or, 'add', plus) x[..., 1] * 3: ScatterND
    of constant indices [[[0, r, 0]] for r in rows], as torch.onnx's slice_scatter."""
    rows = 6
    indices = np.array([[[0, r, 0]] for r in range(rows)], np.int64)  # [rows, 1, 3]
    consts = [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
              numpy_helper.from_array(np.array(3.0, np.float32), "three"),
              numpy_helper.from_array(indices, "idx"),
              numpy_helper.from_array(np.array([1], np.int64), "start"),
              numpy_helper.from_array(np.array([2], np.int64), "end"),
              numpy_helper.from_array(np.array([2], np.int64), "axis"),
              numpy_helper.from_array(np.array([rows, 1], np.int64), "update_shape")]
    N = helper.make_node
    attrs = {} if reduction == "none" else {"reduction": reduction}
    nodes = [N("Mul", ["x", "two"], ["data"]), N("Slice", ["x", "start", "end", "axis"], ["column"]),
             N("Mul", ["column", "three"], ["scaled"]), N("Reshape", ["scaled", "update_shape"], ["updates"]),
             N("ScatterND", ["data", "idx", "updates"], ["written"], **attrs), N("Tanh", ["written"], ["y"])]
    graph = helper.make_graph(nodes, "slice_write", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, rows, 8])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    return model


def _samples(seed: int, count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal((1, 6, 8)) * 0.4).astype(np.float32)} for _ in range(count)]


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("reduction", ["none", "add"])
def test_slice_write_runs_integer_unless_its_zeros_are_read(reduction, dtype, tmp_path):
    model = _slice_write(reduction)
    path = save_model(model, tmp_path / "m.onnx")
    report = convert(path, mode="full", dtype=dtype, calib=_samples(1, 8))
    info = read_tflite(report.tflite)
    scatters = [op for op in info.ops if op.kind == "SCATTER_ND"]
    assert len(scatters) == 1, info.op_kinds()
    updates = info.tensors[scatters[0].inputs[1]]
    if reduction == "none":
        assert report.float_ops == [], report.to_text()
        assert updates.dtype == dtype and updates.scale == info.tensors[scatters[0].outputs[0]].scale
    else:
        assert [(op.kind, op.reason) for op in report.float_ops] == [("SCATTER_ND", ZEROS_READ)]
        assert updates.dtype == "float32"
    worst = min(sqnr_db(run_onnxruntime(model, s)[0], run_litert(report.tflite, [s["x"]])[0])
                for s in _samples(99, 8))
    assert worst >= 30.0, f"{reduction} {dtype}: worst {worst:.1f} dB"
