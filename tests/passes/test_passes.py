"""Passes on small graphs: structure after the pass, and the same numbers before and after."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_onnxruntime
from tflq.config import ConvertConfig
from tflq.frontend.onnx_loader import load_onnx
from tflq.ir.verify import verify
from tflq.passes.fuse import fold_affine_into_producer, fuse_activations
from tflq.passes.layout import to_nhwc
from tflq.pipeline import prepare_graph
from tflq.runtime.interpreter import run_graph

RNG = np.random.default_rng(11)


def _save(tmp_path, nodes, inits, shape=(1, 3, 6, 6)):
    graph = helper.make_graph(nodes, "p", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / "p.onnx")
    onnx.save(model, path)
    return path


def _conv_bn_act(tmp_path, act: str):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"]),
             helper.make_node(act, ["n"], ["y"])]
    inits = {"w": RNG.normal(size=(4, 3, 3, 3)).astype(np.float32),
             "s": RNG.uniform(0.5, 2, 4).astype(np.float32), "b": RNG.normal(size=4).astype(np.float32),
             "m": RNG.normal(size=4).astype(np.float32), "v": RNG.uniform(0.5, 2, 4).astype(np.float32)}
    return _save(tmp_path, nodes, inits)


def _nhwc_run(graph, x):
    return next(iter(run_graph(graph, {graph.inputs[0]: x.transpose(0, 2, 3, 1)}).values()))


def test_batchnorm_folds_and_relu_fuses(tmp_path):
    path = _conv_bn_act(tmp_path, "Relu")
    graph = load_onnx(path).graph
    to_nhwc(graph)
    x = RNG.normal(size=(1, 3, 6, 6)).astype(np.float32)
    before = _nhwc_run(graph, x)
    assert fold_affine_into_producer(graph) == 2  # the MUL and the ADD of the BatchNorm
    assert fuse_activations(graph) == 1
    verify(graph)
    assert [op.kind for op in graph.ops] == ["CONV_2D"]
    assert graph.ops[0].attrs.fused_activation == "RELU"
    np.testing.assert_allclose(_nhwc_run(graph, x), before, rtol=1e-5, atol=1e-5)
    expected = run_onnxruntime(path, {"x": x})[0].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(_nhwc_run(graph, x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("negative", [False, True])
def test_batchnorm_after_relu_folds_its_scale_only_when_positive(negative, tmp_path):
    """relu(y) * a = relu(y * a) for a > 0 only: the MUL folds into the conv, the ADD stays."""
    scale = RNG.uniform(0.5, 2, 4).astype(np.float32)
    if negative:
        scale[1] = -scale[1]
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["y"])]
    inits = {"w": RNG.normal(size=(4, 3, 3, 3)).astype(np.float32),
             "cb": RNG.normal(size=4).astype(np.float32), "s": scale,
             "b": RNG.normal(size=4).astype(np.float32), "m": RNG.normal(size=4).astype(np.float32),
             "v": RNG.uniform(0.5, 2, 4).astype(np.float32)}
    path = _save(tmp_path, nodes, inits)
    graph, _ = prepare_graph(ConvertConfig(model=path))
    kinds = [op.kind for op in graph.ops]
    assert kinds == (["CONV_2D", "MUL", "ADD"] if negative else ["CONV_2D", "ADD"]), kinds
    x = RNG.normal(size=(1, 3, 6, 6)).astype(np.float32)
    expected = run_onnxruntime(path, {"x": x})[0].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(_nhwc_run(graph, x), expected, rtol=1e-4, atol=1e-4)


def test_tanh_is_not_fused_into_a_kernel_that_ignores_it(tmp_path):
    """conv.cc clamps for RELU/RELU6/RELU_N1_TO_1 only: a fused TANH would be dropped in any mode."""
    path = _conv_bn_act(tmp_path, "Tanh")
    graph = load_onnx(path).graph
    to_nhwc(graph)
    fold_affine_into_producer(graph)
    assert fuse_activations(graph) == 0
    for mode in ("float", "full"):
        prepared, _ = prepare_graph(ConvertConfig(model=path, mode=mode))
        assert [op.kind for op in prepared.ops] == ["CONV_2D", "TANH"]


def test_layout_pass_keeps_meaning_and_inserts_no_transpose(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Add", ["c", "bias"], ["a"]),
             helper.make_node("Concat", ["a", "a"], ["cat"], axis=1),
             helper.make_node("ReduceMean", ["cat"], ["y"], axes=[2, 3], keepdims=0)]
    inits = {"w": RNG.normal(size=(4, 3, 1, 1)).astype(np.float32),
             "bias": RNG.normal(size=(4, 1, 1)).astype(np.float32)}
    path = _save(tmp_path, nodes, inits)
    graph = load_onnx(path).graph
    assert to_nhwc(graph) == 0
    assert "TRANSPOSE" not in [op.kind for op in graph.ops]
    x = RNG.normal(size=(1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(_nhwc_run(graph, x), run_onnxruntime(path, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_softmax_over_channels_needs_no_transpose(tmp_path):
    """Imported as transpose -> SOFTMAX -> transpose; on NHWC the channel axis is already last."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Softmax", ["c"], ["s"], axis=1),
             helper.make_node("Conv", ["s", "w2"], ["y"])]
    inits = {"w": RNG.normal(size=(5, 3, 3, 3)).astype(np.float32),
             "w2": RNG.normal(size=(2, 5, 1, 1)).astype(np.float32)}
    path = _save(tmp_path, nodes, inits, shape=(1, 3, 8, 8))
    graph, _ = prepare_graph(ConvertConfig(model=path))
    assert [op.kind for op in graph.ops] == ["CONV_2D", "SOFTMAX", "CONV_2D"]
    x = RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)
    expected = run_onnxruntime(path, {"x": x})[0].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(_nhwc_run(graph, x), expected, rtol=1e-4, atol=1e-5)


def test_division_by_a_constant_folds_into_the_conv(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Div", ["c", "d"], ["y"])]
    inits = {"w": RNG.normal(size=(4, 3, 3, 3)).astype(np.float32),
             "d": RNG.uniform(0.5, 2.0, (4, 1, 1)).astype(np.float32)}
    path = _save(tmp_path, nodes, inits)
    graph, _ = prepare_graph(ConvertConfig(model=path))
    assert [op.kind for op in graph.ops] == ["CONV_2D"]
    x = RNG.normal(size=(1, 3, 6, 6)).astype(np.float32)
    expected = run_onnxruntime(path, {"x": x})[0].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(_nhwc_run(graph, x), expected, rtol=1e-4, atol=1e-5)


def test_reduction_on_nhwc_keeps_the_onnx_shape(tmp_path):
    """MEAN over H of a one-channel NHWC tensor gives ONNX's bytes as [N, W, 1]: the result is
    reshaped to ONNX's [N, 1, W] before the broadcasting ADD (else it broadcasts to [N, W, W])."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMean", ["c"], ["m"], axes=[2], keepdims=0),
             helper.make_node("Add", ["m", "b"], ["y"])]
    inits = {"w": RNG.normal(size=(1, 3, 3, 3)).astype(np.float32),
             "b": RNG.normal(size=(6,)).astype(np.float32)}
    path = _save(tmp_path, nodes, inits)
    graph, _ = prepare_graph(ConvertConfig(model=path))
    assert "TRANSPOSE" not in [op.kind for op in graph.ops]
    assert graph.tensors[graph.outputs[0]].shape == (1, 1, 6)
    x = RNG.normal(size=(1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(_nhwc_run(graph, x), run_onnxruntime(path, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_multiplications_by_one_are_removed(tmp_path):
    """x * 1 and x / 1 are x (the TorchScript attention scales its scores and its -inf key
    padding mask by 1.0: that MUL kept the -inf from the masks pass and stopped calibration);
    a one that broadcasts the other operand to a larger shape stays."""
    x = RNG.normal(size=(1, 4, 6)).astype(np.float32)
    nodes = [helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Mul", ["one", "t"], ["m"]),
             helper.make_node("Div", ["m", "one"], ["d"]), helper.make_node("Mul", ["d", "wide"], ["y"])]
    path = _save(tmp_path, nodes, {"one": np.ones((1, 1, 6), np.float32),
                                   "wide": np.ones((2, 4, 6), np.float32)}, shape=x.shape)
    graph, _ = prepare_graph(ConvertConfig(model=path))
    assert [op.kind for op in graph.ops] == ["TANH", "MUL"]
    np.testing.assert_allclose(next(iter(run_graph(graph, {"x": x}).values())),
                               run_onnxruntime(path, {"x": x})[0], rtol=1e-6, atol=1e-6)
