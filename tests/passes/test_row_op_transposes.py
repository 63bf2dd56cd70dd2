"""hoist_transpose_through_row_op: TRANSPOSE -> SOFTMAX -> TRANSPOSE that keeps the last axis
last is one TRANSPOSE and the SOFTMAX, against onnxruntime."""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime
from tflq.config import ConvertConfig
from tflq.pipeline import convert


def _model(nodes, x_shape, inits=()):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _check(model, tmp_path, x, transposes: int | None, counts: list | None = None):
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    report = convert(ConvertConfig(model=path, keep_io_layout=True))
    expected, = run_onnxruntime(path, {"x": x})
    actual, = run_litert(report.tflite, [x], nchw_io=False)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    if counts is not None:
        counts.append(report.op_counts.get("TRANSPOSE", 0))
    if transposes is not None:
        assert report.op_counts.get("TRANSPOSE", 0) == transposes, report.op_counts


# every p that brings another axis last, with every q that keeps the last axis in place
CASES = [(p, q) for p in itertools.permutations(range(4)) if p[-1] != 3
         for q in itertools.permutations(range(3)) if q != (0, 1, 2)][::5]


@pytest.mark.parametrize("p,q", CASES, ids=[f"{''.join(map(str, p))}-{''.join(map(str, q))}" for p, q in CASES])
def test_softmax_between_transposes_is_one_transpose(p, q, tmp_path):
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=list(p)),
             helper.make_node("Softmax", ["t"], ["s"], axis=-1),
             helper.make_node("Transpose", ["s"], ["y"], perm=list(q) + [3])]
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32) * 3
    _check(_model(nodes, [2, 3, 4, 5]), tmp_path, x, transposes=1)


def test_distribution_head_softmax_feeds_its_convolution_with_one_transpose(tmp_path):
    """YOLOv8's DFL: two heads' outputs flattened to (batch, channels, anchors) and concatenated,
    the box logits split off and viewed as (batch, 4, bins, anchors), bins moved to axis 1, a
    softmax over them, a 1x1 convolution with weights 0..bins-1. Two TRANSPOSEs around the
    SOFTMAX (one into its last axis, one into the convolution's NHWC) were one too many."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(size=(35, 8, 1, 1)).astype(np.float32) * 0.5, "w1"),
             numpy_helper.from_array(rng.normal(size=(35, 8, 1, 1)).astype(np.float32) * 0.5, "w2"),
             numpy_helper.from_array(np.array([1, 35, -1], np.int64), "flat"),
             numpy_helper.from_array(np.array([32, 3], np.int64), "sizes"),
             numpy_helper.from_array(np.array([1, 4, 8, 20], np.int64), "view"),
             numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(1, 8, 1, 1), "bins")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"]),
             helper.make_node("Conv", ["x", "w2"], ["c2"], strides=[2, 2]),
             helper.make_node("Reshape", ["c1", "flat"], ["f1"]),
             helper.make_node("Reshape", ["c2", "flat"], ["f2"]),
             helper.make_node("Concat", ["f1", "f2"], ["cat"], axis=2),
             helper.make_node("Split", ["cat", "sizes"], ["box", "cls"], axis=1),
             helper.make_node("Reshape", ["box", "view"], ["v"]),
             helper.make_node("Transpose", ["v"], ["t"], perm=[0, 2, 1, 3]),
             helper.make_node("Softmax", ["t"], ["s"], axis=1),
             helper.make_node("Conv", ["s", "bins"], ["d"]),
             helper.make_node("Flatten", ["d"], ["y"])]
    x = rng.normal(size=(1, 8, 4, 4)).astype(np.float32)
    counts = []
    _check(_model(nodes, [1, 8, 4, 4], inits), tmp_path, x, transposes=None, counts=counts)
    # keep_io: the input's, and one to the flattened ONNX order [4, anchors] at the output: the
    # heads' transposes sink through the concat, split and DFL to meet there (passes/sink.py; 4
    # with one per head, 5 before the hoist)
    assert counts == [2], counts
