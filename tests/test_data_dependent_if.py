"""An ONNX If whose condition depends on the input data (tf2onnx's tf.cond, a scripted torch
`if x.sum() > 0`, torch.cond): tflq computes both branches and picks each output with a Where
(SELECT_V2), which is the If wherever the branches give outputs of one shape and type. Judged
against onnxruntime on samples that take each branch, in float and in quantized files run in
LiteRT; branches of different shapes are refused naming the If."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime, worst_sqnr_db
from tflq.config import ConvertConfig
from tflq.errors import UnsupportedModelError
from tflq.pipeline import convert

F = TensorProto.FLOAT


def _branch(nodes, outputs, inits=()):
    return helper.make_graph(nodes, "branch", [], [helper.make_tensor_value_info(o, t, None) for o, t in outputs],
                             list(inits))


def _save(tmp_path, nodes, inputs, outputs, inits, name="if.onnx"):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, F, s) for n, s in inputs.items()],
                              [helper.make_tensor_value_info(o, t, None) for o, t in outputs], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


def _scalar(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.array(value, dtype), name)


def _feeds(shape, count=8, seed=0):
    """Samples with a positive sum and samples with a negative one, alternating."""
    rng = np.random.default_rng(seed)
    feeds = []
    for k in range(count):
        x = rng.normal(0, 1, shape).astype(np.float32)
        x += np.float32((1 if k % 2 else -1) * 0.5 - x.mean())
        feeds.append({"x": x})
    return feeds


def _sum_is_positive():
    return [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
            helper.make_node("Greater", ["total", "zero"], ["cond"])]


def test_both_branches_and_a_select_match_onnxruntime_on_either_branch(tmp_path):
    """Two outputs, outer values read inside the branches, and a nested If on another condition of
    the data."""
    inner = helper.make_node("If", ["cond2"], ["n"], name="inner",
                             then_branch=_branch([helper.make_node("Sigmoid", ["x"], ["s"])], [("s", F)]),
                             else_branch=_branch([helper.make_node("Abs", ["x"], ["a"])], [("a", F)]))
    then = _branch([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["r"]),
                    helper.make_node("ReduceMax", ["x"], ["cond2_f"], keepdims=0),
                    helper.make_node("Greater", ["cond2_f", "one"], ["cond2"]), inner],
                   [("r", F), ("n", F)])
    other = _branch([helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Identity", ["x"], ["same"])],
                    [("t", F), ("same", F)])
    nodes = _sum_is_positive() + [
        helper.make_node("If", ["cond"], ["y1", "y2"], name="branchy", then_branch=then, else_branch=other),
        helper.make_node("Add", ["y1", "y2"], ["y"])]
    rng = np.random.default_rng(1)
    inits = [_scalar("zero", 0.0), _scalar("one", 1.0),
             numpy_helper.from_array(rng.normal(0, 0.3, (16, 16)).astype(np.float32), "w")]
    path = _save(tmp_path, nodes, {"x": [1, 4, 16]}, [("y", F)], inits)
    feeds = _feeds((1, 4, 16))
    feeds[2]["x"][0, 0, 0] = 3.0  # the inner If takes its then branch somewhere
    report = convert(ConvertConfig(model=path))
    assert report.op_counts["SELECT_V2"] == 3, report.op_counts
    assert worst_sqnr_db(path, report.tflite, feeds) >= 100.0
    weights = convert(ConvertConfig(model=path, mode="weights-only", min_weight_elements=16))
    assert worst_sqnr_db(path, weights.tflite, feeds) >= 30.0
    for dtype in ("uint8", "int8"):
        full = convert(ConvertConfig(model=path, mode="full", dtype=dtype, calib=feeds))
        assert worst_sqnr_db(path, full.tflite, feeds) >= 25.0, dtype


def test_an_integer_output_and_a_scalar_condition_of_one_element(tmp_path):
    """A [1]-shaped condition (ONNX allows one element of any rank) and an int64 output that
    feeds a Gather: the select keeps the output's rank and type."""
    then = _branch([helper.make_node("Identity", ["first"], ["i"])], [("i", TensorProto.INT64)])
    other = _branch([helper.make_node("Identity", ["last"], ["j"])], [("j", TensorProto.INT64)])
    nodes = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=1, axes=None),
             helper.make_node("Reshape", ["total", "one_shape"], ["t1"]),
             helper.make_node("Greater", ["t1", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["row"], name="pick", then_branch=then, else_branch=other),
             helper.make_node("Gather", ["x", "row"], ["y"], axis=1)]
    inits = [_scalar("zero", 0.0), numpy_helper.from_array(np.array([1], np.int64), "one_shape"),
             numpy_helper.from_array(np.array(0, np.int64), "first"),
             numpy_helper.from_array(np.array(3, np.int64), "last")]
    path = _save(tmp_path, nodes, {"x": [2, 4, 5]}, [("y", F)], inits)
    feeds = _feeds((2, 4, 5))
    report = convert(ConvertConfig(model=path))
    for feed in feeds:
        (expected,), (actual,) = run_onnxruntime(path, feed), run_litert(report.tflite, [feed["x"]])
        np.testing.assert_array_equal(actual, expected)


def test_branches_of_different_shapes_are_refused_naming_the_if(tmp_path):
    then = _branch([helper.make_node("ReduceSum", ["x"], ["s"], keepdims=1)], [("s", F)])
    other = _branch([helper.make_node("Neg", ["x"], ["n"])], [("n", F)])
    nodes = _sum_is_positive() + [helper.make_node("If", ["cond"], ["y"], name="branchy",
                                                   then_branch=then, else_branch=other)]
    path = _save(tmp_path, nodes, {"x": [1, 4]}, [("y", F)], [_scalar("zero", 0.0)])
    with pytest.raises(UnsupportedModelError, match="'branchy' \\(If\\)") as refused:
        convert(ConvertConfig(model=path))
    (diagnostic,) = [d for d in refused.value.diagnostics if d.node == "branchy"]
    assert diagnostic.reason_code == "data_dependent_if"
    assert "[1, 1] vs [1, 4]" in diagnostic.message
