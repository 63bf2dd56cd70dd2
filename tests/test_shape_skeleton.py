"""Shape inference on a model's skeleton (tflq.frontend.skeleton): the same shapes as ONNX's own
inference on the whole model, and the same errors, without the data of the large initializers."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper, shape_inference

from tflq.errors import InvalidModelError
from tflq.frontend.onnx_loader import load_onnx
from tflq.frontend.skeleton import SKELETON_ELEMENTS, skeleton, take_inferred


def _model(weight_shape=(16, 8, 3, 3), ir_version=8, weight_as_input=False):
    """Conv with a large weight, then a Reshape whose shape is a small constant, then a Gemm with a
    large weight inside an If branch (outer-scope use)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=weight_shape).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(size=(10, 16 * 6 * 6)).astype(np.float32), "fc")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    then = helper.make_graph([helper.make_node("Gemm", ["flat", "fc"], ["t"], transB=1)], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Gemm", ["flat", "fc"], ["e"], transB=1, alpha=2.0)], "else",
                              [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Reshape", ["c", "shape"], ["flat"], name="flatten"),
             helper.make_node("If", ["flag"], ["y"], name="branch", then_branch=then, else_branch=other)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8]),
              helper.make_tensor_value_info("flag", TensorProto.BOOL, [])]
    if weight_as_input:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, list(weight_shape)))
    graph = helper.make_graph(nodes, "m", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [w, fc, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = ir_version
    return model


def test_skeleton_drops_only_large_initializers():
    model = _model()
    result = skeleton(model)
    assert {t.name for t in result.graph.initializer} == {"shape"}
    large = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in result.graph.input}
    assert large == {"x": [1, 8, 8, 8], "flag": [], "w": [16, 8, 3, 3], "fc": [10, 576]}
    assert len(model.graph.initializer) == 3  # the model itself is untouched
    assert 2 <= SKELETON_ELEMENTS < 16 * 8 * 3 * 3


@pytest.mark.parametrize("ir_version, weight_as_input", [(3, True), (8, True)])
def test_initializers_declared_as_inputs_stay(ir_version, weight_as_input):
    """IR version 3 lists initializers as inputs (the checker insists): nothing leaves those."""
    model = _model(ir_version=ir_version, weight_as_input=weight_as_input)
    kept = {t.name for t in skeleton(model).graph.initializer}
    assert "w" in kept and ("fc" in kept) == (ir_version == 3)


def test_skeleton_infers_what_the_whole_model_infers():
    model = _model()
    whole = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    inferred = shape_inference.infer_shapes(skeleton(model), strict_mode=True, data_prop=True)
    take_inferred(model, inferred)
    assert list(model.graph.value_info) == list(whole.graph.value_info)
    assert list(model.graph.output) == list(whole.graph.output)
    assert list(model.graph.node) == list(whole.graph.node)  # the branches' value_info too
    assert list(model.graph.initializer) == list(whole.graph.initializer)
    assert [vi.name for vi in model.graph.input] == ["x", "flag"]


def test_a_large_weight_of_the_wrong_rank_is_still_refused(tmp_path):
    """Inference on the skeleton sees the weight's shape: the Conv is named as before."""
    path = str(tmp_path / "bad.onnx")
    onnx.save(_model(weight_shape=(16, 8, 9)), path)
    with pytest.raises(InvalidModelError, match=r"node 'conv' \(Conv\)"):
        load_onnx(path)


def test_a_large_weight_with_short_data_is_still_refused(tmp_path):
    """The skeleton drops the data; validate.check_structure checks it first."""
    model = _model()
    weight = next(t for t in model.graph.initializer if t.name == "w")
    weight.raw_data = weight.raw_data[:-4]
    path = str(tmp_path / "short.onnx")
    onnx.save(model, path)
    with pytest.raises(InvalidModelError, match="initializer 'w' holds 4604 bytes"):
        load_onnx(path)
