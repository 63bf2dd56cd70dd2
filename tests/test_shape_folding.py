"""Shape arithmetic and control flow that static input shapes decide are folded before import.

Every model here has static inputs; each converts, and LiteRT matches onnxruntime on it, or it is
refused with the node that depends on data named.
"""
from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import relative_error, run_litert, run_onnxruntime
from tflq.config import ConvertConfig
from tflq.errors import UnsupportedModelError
from tflq.frontend import control_flow
from tflq.pipeline import convert

F = TensorProto.FLOAT


def _const(name, value, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _model(nodes, inputs, inits=(), outputs=("y",), opset=17):
    graph = helper.make_graph(nodes, "m", inputs,
                              [helper.make_tensor_value_info(o, F, None) for o in outputs], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _check(tmp_path, model, feeds, tolerance=1e-5):
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    report = convert(ConvertConfig(model=path))
    expected = run_onnxruntime(path, feeds)
    actual = run_litert(report.tflite, list(feeds.values()))
    for e, a in zip(expected, actual):
        assert e.shape == a.shape
        assert relative_error(e, a) <= tolerance
    return report


def _x(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _subgraph(nodes, inputs, outputs, inits=()):
    return helper.make_graph(nodes, "body", inputs, outputs, list(inits))


def test_shape_chain_through_where_equal_range_expand(tmp_path):
    """BERT's position ids and mask broadcast: Shape -> Gather -> Range -> Unsqueeze -> Expand, and a
    reshape target built with Equal/Where (PyTorch's -1 handling), with a stale symbolic value_info."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["seq"], axis=0),
        helper.make_node("Range", ["zero", "seq", "one"], ["pos"]),
        helper.make_node("Unsqueeze", ["pos", "axes0"], ["pos1"]),
        helper.make_node("Unsqueeze", ["seq", "axes0"], ["seq1"]),
        helper.make_node("Slice", ["s", "axes0", "one1"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "seq1"], ["target"], axis=0),
        helper.make_node("Equal", ["target", "minus1"], ["is_neg"]),
        helper.make_node("ConstantOfShape", ["two"], ["ones"],
                         value=numpy_helper.from_array(np.array([1], np.int64))),
        helper.make_node("Where", ["is_neg", "ones", "target"], ["target2"]),
        helper.make_node("Expand", ["pos1", "target2"], ["posx"]),
        helper.make_node("Cast", ["posx"], ["posf"], to=F),
        helper.make_node("Unsqueeze", ["posf", "axes2"], ["posf2"]),
        helper.make_node("Add", ["x", "posf2"], ["y"]),
    ]
    inits = [_const("zero", 0), _const("one", 1), _const("axes0", [0]), _const("one1", [1]),
             _const("minus1", -1), _const("two", [2]), _const("axes2", [2])]
    model = _model(nodes, [helper.make_tensor_value_info("x", F, ["batch", 6, 4])], inits)
    model.graph.value_info.append(helper.make_tensor_value_info("pos", TensorProto.INT64, ["seq"]))
    report = _check(tmp_path, model, {"x": _x(1, 6, 4)})
    assert report.op_counts == {"ADD": 1}


def test_reshape_of_a_data_shape_and_an_empty_slice(tmp_path):
    """A Slice folded to an empty tensor feeds a Concat (x.shape[:0] + (-1,)), and an op whose output
    has no elements is a constant."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "zero1", "zero1"], ["empty"]),
        helper.make_node("Concat", ["empty", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Slice", ["x", "zero1", "zero1", "one1"], ["nothing"]),
        helper.make_node("Shape", ["nothing"], ["ns"]),
        helper.make_node("Gather", ["ns", "zero"], ["n0"], axis=0),
        helper.make_node("Cast", ["n0"], ["n0f"], to=F),
        helper.make_node("Add", ["flat", "n0f"], ["y"]),
    ]
    inits = [_const("zero", 0), _const("zero1", [0]), _const("one1", [1]), _const("minus1", [-1])]
    model = _model(nodes, [helper.make_tensor_value_info("x", F, [2, 3, 4])], inits)
    _check(tmp_path, model, {"x": _x(2, 3, 4)})


def test_if_on_a_shape_condition_is_inlined(tmp_path):
    """if x.shape[1] == 3: relu(x) * w else: neg(x); the taken branch reads an outer value."""
    then_g = _subgraph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "w"], ["t"])],
                       [], [helper.make_tensor_value_info("t", F, None)])
    else_g = _subgraph([helper.make_node("Neg", ["x"], ["t"])], [], [helper.make_tensor_value_info("t", F, None)])
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "one"], ["c"], axis=0),
             helper.make_node("Equal", ["c", "three"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)]
    inits = [_const("one", 1), _const("three", 3), _const("w", 2.0, np.float32)]
    model = _model(nodes, [helper.make_tensor_value_info("x", F, [1, 3, 5])], inits)
    report = _check(tmp_path, model, {"x": _x(1, 3, 5)})
    assert report.op_counts == {"RELU": 1, "MUL": 1}


def test_loop_with_constant_trip_count_is_unrolled(tmp_path):
    """for i in range(3): h = relu(h @ w - i); also collecting every h (a scan output)."""
    body = _subgraph(
        [helper.make_node("MatMul", ["h_in", "w"], ["hw"]),
         helper.make_node("Cast", ["i"], ["fi"], to=F),
         helper.make_node("Sub", ["hw", "fi"], ["a"]),
         helper.make_node("Relu", ["a"], ["h_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["h_out"], ["scan"])],
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", F, [1, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", F, [1, 4]),
         helper.make_tensor_value_info("scan", F, [1, 4])])
    nodes = [helper.make_node("Loop", ["trip", "", "x"], ["y", "all"], body=body)]
    w = (np.random.default_rng(5).normal(size=(4, 4)) / 2).astype(np.float32)
    inits = [_const("trip", 3), numpy_helper.from_array(w, "w")]
    model = _model(nodes, [helper.make_tensor_value_info("x", F, [1, 4])], inits, outputs=("y", "all"))
    report = _check(tmp_path, model, {"x": _x(1, 4)})
    assert report.op_counts["FULLY_CONNECTED"] == 3


def test_loop_whose_condition_folds_runs_until_false(tmp_path):
    """while i < 2 (computed in the body): the condition folds each iteration."""
    body = _subgraph(
        [helper.make_node("Add", ["v_in", "x"], ["v_out"]),
         helper.make_node("Less", ["i", "one"], ["cond_out"])],
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", F, [2, 3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", F, [2, 3])])
    nodes = [helper.make_node("Loop", ["", "true", "x"], ["y"], body=body)]
    inits = [_const("one", 1), numpy_helper.from_array(np.array(True), "true")]
    model = _model(nodes, [helper.make_tensor_value_info("x", F, [2, 3])], inits)
    report = _check(tmp_path, model, {"x": _x(2, 3)})
    assert report.op_counts == {"ADD": 2}


def _scan_model(axis_in=0, reverse_in=0, axis_out=0, reverse_out=0, steps=5):
    """h = tanh(h @ w + x_t) over the steps of x, emitting every h and a running sum."""
    body = _subgraph(
        [helper.make_node("MatMul", ["h_in", "w"], ["hw"]), helper.make_node("Add", ["hw", "x_t"], ["a"]),
         helper.make_node("Tanh", ["a"], ["h_out"]), helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
         helper.make_node("Identity", ["h_out"], ["h_scan"])],
        [helper.make_tensor_value_info(n, F, [1, 4]) for n in ("h_in", "s_in", "x_t")],
        [helper.make_tensor_value_info(n, F, [1, 4]) for n in ("h_out", "s_out", "h_scan")])
    shape = [1, 4]
    shape.insert(axis_in, steps)
    node = helper.make_node("Scan", ["h0", "s0", "x"], ["h", "s", "hs"], body=body, num_scan_inputs=1,
                            scan_input_axes=[axis_in], scan_input_directions=[reverse_in],
                            scan_output_axes=[axis_out], scan_output_directions=[reverse_out], name="rnn_scan")
    w = (np.random.default_rng(6).normal(size=(4, 4)) / 2).astype(np.float32)
    inputs = [helper.make_tensor_value_info("h0", F, [1, 4]), helper.make_tensor_value_info("s0", F, [1, 4]),
              helper.make_tensor_value_info("x", F, shape)]
    return _model([node], inputs, [numpy_helper.from_array(w, "w")], outputs=("h", "s", "hs")), shape


@pytest.mark.parametrize("axis_in,reverse_in,axis_out,reverse_out",
                         [(0, 0, 0, 0), (1, 1, 0, 0), (2, 0, 1, 1), (0, 1, -1, 0)])
def test_scan_is_unrolled(tmp_path, axis_in, reverse_in, axis_out, reverse_out):
    """Scan (any scan axes and directions) unrolls into its body once per step."""
    model, shape = _scan_model(axis_in, reverse_in, axis_out, reverse_out)
    report = _check(tmp_path, model, {"h0": _x(1, 4), "s0": _x(1, 4, seed=1), "x": _x(*shape, seed=2)})
    assert report.op_counts["TANH"] == 5


def test_overlong_scan_is_refused_naming_it(tmp_path):
    model, _ = _scan_model(steps=control_flow.MAX_LOOP_ITERATIONS + 1)
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    with pytest.raises(UnsupportedModelError) as info:
        convert(ConvertConfig(model=path))
    assert [(d.node, d.reason_code) for d in info.value.diagnostics] == [("rnn_scan", "loop_too_long")]


def _loop_model(trip):
    body = _subgraph([helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                      helper.make_node("Neg", ["v_in"], ["v_out"])],
                     [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                      helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                      helper.make_tensor_value_info("v_in", F, [2])],
                     [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                      helper.make_tensor_value_info("v_out", F, [2])])
    return _model([helper.make_node("Loop", ["trip", "", "x"], ["y"], body=body, name="the_loop")],
                  [helper.make_tensor_value_info("x", F, [2])], [_const("trip", trip)])


def test_enormous_trip_count_is_refused_at_once(tmp_path):
    path = str(tmp_path / "m.onnx")
    onnx.save(_loop_model(10**15), path)
    start = time.perf_counter()
    with pytest.raises(UnsupportedModelError) as info:
        convert(ConvertConfig(model=path))
    assert time.perf_counter() - start < 10
    (diag,) = info.value.diagnostics
    assert (diag.node, diag.reason_code) == ("the_loop", "loop_too_long")
    assert str(control_flow.MAX_LOOP_ITERATIONS) in diag.message


def test_data_dependent_control_flow_and_shapes_are_named(tmp_path):
    """An If on a value of the data whose branches differ in shape (one of the same shape becomes
    a Where: tests/test_data_dependent_if.py), and a Reshape to a shape read from the data, are
    both named."""
    branch = _subgraph([helper.make_node("Neg", ["x"], ["t"])], [], [helper.make_tensor_value_info("t", F, None)])
    other = _subgraph([helper.make_node("ReduceSum", ["x"], ["r"], keepdims=1)], [],
                      [helper.make_tensor_value_info("r", F, None)])
    nodes = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero_f"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other, name="branchy"),
             helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT64),
             helper.make_node("Abs", ["xi"], ["xa"]),
             helper.make_node("ReduceMax", ["xa"], ["m"], keepdims=1),
             helper.make_node("Reshape", ["m", "minus1"], ["m1"]),
             helper.make_node("ConstantOfShape", ["m1"], ["z"], name="zeros_of_data"),
             helper.make_node("Relu", ["z"], ["y2"])]
    inits = [_const("zero_f", 0.0, np.float32), _const("minus1", [-1])]
    model = _model(nodes, [helper.make_tensor_value_info("x", F, [4])], inits, outputs=("y", "y2"))
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    with pytest.raises(UnsupportedModelError) as info:
        convert(ConvertConfig(model=path))
    by_node = {d.node: d for d in info.value.diagnostics}
    assert by_node["branchy"].reason_code == "data_dependent_if"
    relu = next(d for d in info.value.diagnostics if d.op_type == "Relu")
    assert relu.reason_code == "data_dependent_shape"
    assert "zeros_of_data" in relu.message and "--input-shape" not in str(relu)


def test_gather_nd_with_constant_indices_is_a_gather(tmp_path):
    """torch.export's mask[batch_idx, kv_idx] with folded index grids; negative indices wrap."""
    indices = np.array([[[0, 1], [1, -1]], [[1, 0], [0, 2]]], np.int64)
    nodes = [helper.make_node("GatherND", ["x", "idx"], ["g"]),
             helper.make_node("Relu", ["g"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", F, [2, 3, 4])], [_const("idx", indices)])
    report = _check(tmp_path, model, {"x": _x(2, 3, 4)})
    assert "GATHER" in report.op_counts


def test_added_mask_of_zeros_is_dropped(tmp_path):
    """ViT's eager attention adds Where(no mask) = zeros to its scores: the ADD does nothing. A zero
    that broadcasts the other input to a larger shape stays."""
    nodes = [helper.make_node("Add", ["x", "zeros"], ["a"]),
             helper.make_node("Softmax", ["a"], ["s"], axis=-1),
             helper.make_node("Add", ["s", "zeros_wide"], ["y"])]
    inits = [numpy_helper.from_array(np.zeros((1, 1, 5, 5), np.float32), "zeros"),
             numpy_helper.from_array(np.zeros((2, 2, 5, 5), np.float32), "zeros_wide")]
    model = _model(nodes, [helper.make_tensor_value_info("x", F, [1, 2, 5, 5])], inits)
    report = _check(tmp_path, model, {"x": _x(1, 2, 5, 5)})
    assert report.op_counts["ADD"] == 1
