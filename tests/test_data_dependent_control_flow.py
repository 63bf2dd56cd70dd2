"""ONNX control flow whose condition depends on the input data, judged against onnxruntime on
samples that take each path, in float and in quantized files run in LiteRT.

- An If (tf2onnx's tf.cond, a scripted torch `if x.sum() > 0`, torch.cond): tflq computes both
  branches and picks each output with a Where (SELECT_V2), which is the If wherever the branches
  give outputs of one shape and type; branches of different shapes are refused naming the If.
- A Loop with a constant trip count and a condition of the data (tf.while_loop with
  maximum_iterations, a scripted `for ...: if converged: break`): every iteration up to the trip
  count runs, each carried value kept by a Where on whether the Loop still runs. Without a trip
  count, or with scan outputs (whose length the data would decide), it is refused naming the Loop.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime, worst_sqnr_db
from tflq.config import ConvertConfig
from tflq.errors import CalibrationError, UnsupportedModelError
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
        assert worst_sqnr_db(path, full.tflite, feeds) >= 20.0, dtype  # (measured 24.6 dB uint8)


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


def _newton_sqrt_loop(tmp_path, trip=12, scan=False, bounded=True, first_condition_of_data=False):
    """Newton's iteration for sqrt(x), y <- (y + x / y) / 2 from y = x + 1, until no element moves
    by more than 1e-3 (at most `trip` times); a counter of the iterations run is carried too."""
    body_nodes = [helper.make_node("Div", ["x", "y_in"], ["q"]), helper.make_node("Add", ["y_in", "q"], ["s"]),
                  helper.make_node("Mul", ["s", "half"], ["y_out"]), helper.make_node("Sub", ["y_out", "y_in"], ["d"]),
                  helper.make_node("Abs", ["d"], ["ad"]), helper.make_node("ReduceMax", ["ad"], ["moved"], keepdims=0),
                  helper.make_node("Greater", ["moved", "tol"], ["cond_out"]),
                  helper.make_node("Add", ["count_in", "one"], ["count_out"])]
    body_outputs = [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                    helper.make_tensor_value_info("y_out", F, [1, 6]),
                    helper.make_tensor_value_info("count_out", F, [])]
    if scan:
        body_nodes.append(helper.make_node("Identity", ["y_out"], ["per_step"]))
        body_outputs.append(helper.make_tensor_value_info("per_step", F, [1, 6]))
    body = helper.make_graph(body_nodes, "body", [
        helper.make_tensor_value_info("i", TensorProto.INT64, []),
        helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        helper.make_tensor_value_info("y_in", F, [1, 6]), helper.make_tensor_value_info("count_in", F, [])],
        body_outputs)
    start = [helper.make_node("Add", ["x", "one"], ["y0"])]
    if first_condition_of_data:  # the Loop may run no iteration at all
        start += [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
                  helper.make_node("Greater", ["total", "limit"], ["cond0"])]
    else:
        start.append(helper.make_node("Identity", ["true"], ["cond0"]))  # (true as an initializer)
    outs = ["y", "count"] + (["steps"] if scan else [])
    loop = helper.make_node("Loop", ["trip" if bounded else "", "cond0", "y0", "zero"], outs, body=body,
                            name="newton")
    nodes = start + [loop, helper.make_node("Mul", ["y", "count"], ["out"])]
    inits = [_scalar("half", 0.5), _scalar("tol", 1e-3), _scalar("one", 1.0), _scalar("zero", 0.0),
             _scalar("limit", 20.0) if first_condition_of_data else numpy_helper.from_array(np.array(True), "true"),
             numpy_helper.from_array(np.array(trip, np.int64), "trip")]
    return _save(tmp_path, nodes, {"x": [1, 6]}, [("out", F)] + ([("steps", F)] if scan else []), inits,
                 name="newton.onnx")


def _positive_feeds(count=8, seed=3):
    rng = np.random.default_rng(seed)  # from ~0.03 to ~800: samples of larger values need more iterations
    return [{"x": (10.0 ** (rng.uniform(-0.5, 0.5, (1, 6)) + 0.4 * k - 1)).astype(np.float32)}
            for k in range(count)]


@pytest.mark.parametrize("first_condition_of_data", [False, True])
def test_a_loop_that_stops_on_a_condition_of_the_data(first_condition_of_data, tmp_path):
    path = _newton_sqrt_loop(tmp_path, first_condition_of_data=first_condition_of_data)
    feeds = _positive_feeds()
    counts = {float(run_onnxruntime(path, f)[0][0, 0] / np.sqrt(f["x"][0, 0])) for f in feeds}
    assert len({round(c) for c in counts}) > 2  # the samples stop after different iteration counts
    report = convert(ConvertConfig(model=path))
    assert report.op_counts["SELECT_V2"] >= 2 * 12 - 2, report.op_counts
    assert worst_sqnr_db(path, report.tflite, feeds) >= 100.0
    # (four decades of values: no 8-bit grid holds them, so no quantized file is judged here)


def test_a_fixed_point_iteration_until_it_settles_in_every_mode(tmp_path):
    """y <- tanh(W y + x) (a contraction, as a deep-equilibrium layer), until no element moves by
    more than 0.02, at most 10 times. Quantized, a sample may stop one iteration sooner or later;
    near the fixed point that moves the output little."""
    rng = np.random.default_rng(5)
    w = rng.normal(0, 1, (8, 8))
    w *= 0.6 / np.linalg.norm(w, 2)
    body = helper.make_graph([
        helper.make_node("MatMul", ["y_in", "w"], ["m"]), helper.make_node("Add", ["m", "x"], ["a"]),
        helper.make_node("Tanh", ["a"], ["y_out"]), helper.make_node("Sub", ["y_out", "y_in"], ["d"]),
        helper.make_node("Abs", ["d"], ["ad"]), helper.make_node("ReduceMax", ["ad"], ["moved"], keepdims=0),
        helper.make_node("Greater", ["moved", "tol"], ["cond_out"])], "body", [
        helper.make_tensor_value_info("i", TensorProto.INT64, []),
        helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        helper.make_tensor_value_info("y_in", F, [1, 8])], [
        helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
        helper.make_tensor_value_info("y_out", F, [1, 8])])
    nodes = [helper.make_node("Loop", ["trip", "true", "zeros"], ["y"], body=body, name="settle")]
    inits = [numpy_helper.from_array(w.astype(np.float32), "w"), _scalar("tol", 0.02),
             numpy_helper.from_array(np.zeros((1, 8), np.float32), "zeros"),
             numpy_helper.from_array(np.array(True), "true"), numpy_helper.from_array(np.array(10, np.int64), "trip")]
    path = _save(tmp_path, nodes, {"x": [1, 8]}, [("y", F)], inits, name="settle.onnx")
    feeds = [{"x": rng.normal(0, 0.3 + 0.4 * k, (1, 8)).astype(np.float32)} for k in range(8)]
    report = convert(ConvertConfig(model=path))
    assert worst_sqnr_db(path, report.tflite, feeds) >= 100.0
    for dtype in ("uint8", "int8", "int16x8"):
        full = convert(ConvertConfig(model=path, mode="full", dtype=dtype, calib=feeds))
        assert worst_sqnr_db(path, full.tflite, feeds) >= 20.0, dtype  # (measured 24.6 dB uint8)
    # --float-ops names the Loop, as a user sees it: every op its iterations make stays float
    kept = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=feeds, float_ops=("settle",)))
    assert {op.origin.split("/")[0] for op in kept.float_ops} == {"settle"}
    assert "QUANTIZE" not in kept.op_counts and "DEQUANTIZE" not in kept.op_counts, kept.op_counts
    assert worst_sqnr_db(path, kept.tflite, feeds) >= 100.0
    assert not any("changes nothing" in note for note in kept.notes)


def test_a_loop_on_the_data_with_no_trip_count_or_with_scan_outputs_is_refused(tmp_path):
    for kwargs, words in (({"bounded": False}, "no trip count"), ({"scan": True}, "scan outputs")):
        path = _newton_sqrt_loop(tmp_path, **kwargs)
        with pytest.raises(UnsupportedModelError, match="'newton' \\(Loop\\)") as refused:
            convert(ConvertConfig(model=path))
        (diagnostic,) = [d for d in refused.value.diagnostics if d.node == "newton"]
        assert diagnostic.reason_code == "data_dependent_loop" and words in diagnostic.message


def test_a_select_on_a_scalar_condition_keeps_nhwc(tmp_path):
    """An If on the data between two convolutions of an NCHW input: the Where's scalar condition
    broadcasts alike in every layout, so the file has no TRANSPOSE (it had one on each side)."""
    rng = np.random.default_rng(7)
    w1, w2 = (numpy_helper.from_array(rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32), n) for n in ("w1", "w2"))
    then = _branch([helper.make_node("Conv", ["c", "w1"], ["t"], pads=[1, 1, 1, 1])], [("t", F)])
    other = _branch([helper.make_node("Conv", ["c", "w2"], ["e"], pads=[1, 1, 1, 1])], [("e", F)])
    nodes = [helper.make_node("Relu", ["x"], ["c"]),
             *_sum_is_positive(),
             helper.make_node("If", ["cond"], ["b"], name="branchy", then_branch=then, else_branch=other),
             helper.make_node("Mul", ["b", "gate"], ["g"]),  # a [1] activation, too
             helper.make_node("Conv", ["g", "w1"], ["y"], pads=[1, 1, 1, 1])]
    gate = [helper.make_node("ReduceMax", ["x"], ["gate"], keepdims=0)]
    path = _save(tmp_path, gate + nodes, {"x": [1, 4, 6, 6]}, [("y", F)], [_scalar("zero", 0.0), w1, w2])
    feeds = _feeds((1, 4, 6, 6))
    report = convert(ConvertConfig(model=path))
    assert "TRANSPOSE" not in report.op_counts, report.op_counts
    assert worst_sqnr_db(path, report.tflite, feeds) >= 100.0


def test_a_branch_not_taken_that_makes_nan_names_the_if_and_the_way_out(tmp_path):
    """`log(x) if x.min() > 0 else -x`: both branches run, so calibration meets the Log's NaN on
    the samples that take the other branch. The message names the If and --float-ops on it, which
    then converts: the ops only it makes and reads are not calibrated at all."""
    then = _branch([helper.make_node("Log", ["x"], ["t"])], [("t", F)])
    other = _branch([helper.make_node("Neg", ["x"], ["e"])], [("e", F)])
    nodes = [helper.make_node("ReduceMin", ["x"], ["low"], keepdims=0),
             helper.make_node("Greater", ["low", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], name="log_if_positive", then_branch=then, else_branch=other)]
    path = _save(tmp_path, nodes, {"x": [1, 8]}, [("y", F)], [_scalar("zero", 0.0)])
    rng = np.random.default_rng(2)
    feeds = [{"x": (rng.normal(0, 1, (1, 8)) + (4 if k % 2 else 0)).astype(np.float32)} for k in range(6)]
    with pytest.raises(CalibrationError, match="NaN values; it is in the then branch of If 'log_if_positive'.*"
                                               "--float-ops log_if_positive keeps that If float"):
        convert(ConvertConfig(model=path, mode="full", calib=feeds))
    report = convert(ConvertConfig(model=path, mode="full", calib=feeds, float_ops=("log_if_positive",)))
    assert {op.kind for op in report.float_ops} >= {"LOG", "SELECT_V2"}
    assert worst_sqnr_db(path, report.tflite, feeds) >= 30.0
