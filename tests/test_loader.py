"""The ONNX loader: external data, folded shape chains, dynamic dimensions, opset range, all errors at once."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import relative_error, run_litert, run_onnxruntime
from tflq.config import ConvertConfig
from tflq.errors import InvalidModelError, UnsupportedModelError
from tflq.frontend.onnx_loader import load_onnx
from tflq.pipeline import convert


def _model(nodes, inputs, inits=(), opset=17, outputs=("y",)):
    graph = helper.make_graph(nodes, "m", inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_pytorch_view_chain_is_folded(tmp_path):
    """x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape becomes one RESHAPE."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus_one"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Gemm", ["r", "w"], ["y"], transB=1)]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
             numpy_helper.from_array(np.random.default_rng(0).normal(size=(5, 48)).astype(np.float32), "w")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4, 4])], inits)
    path = str(tmp_path / "view.onnx")
    onnx.save(model, path)
    report = convert(ConvertConfig(model=path))
    assert report.op_counts == {"RESHAPE": 1, "FULLY_CONNECTED": 1}
    assert any("batch" in note for note in report.notes)
    x = np.random.default_rng(1).normal(size=(1, 3, 4, 4)).astype(np.float32)
    assert relative_error(run_onnxruntime(path, {"x": x})[0], run_litert(report.tflite, [x])[0]) <= 1e-4


def test_external_data(tmp_path):
    w = np.random.default_rng(2).normal(size=(64, 64)).astype(np.float32)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
                   [numpy_helper.from_array(w, "w")])
    path = str(tmp_path / "ext.onnx")
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").exists()
    x = np.random.default_rng(3).normal(size=(2, 64)).astype(np.float32)
    report = convert(ConvertConfig(model=path))
    assert relative_error(x @ w, run_litert(report.tflite, [x])[0]) <= 1e-4


def test_dynamic_inner_dimension_needs_input_shape(tmp_path):
    model = _model([helper.make_node("Relu", ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "length"])])
    path = str(tmp_path / "dyn.onnx")
    onnx.save(model, path)
    with pytest.raises(InvalidModelError, match="--input-shape"):
        load_onnx(path)
    graph = load_onnx(path, {"x": (1, 7)}).graph
    assert graph.tensors["x"].shape == (1, 7)


def test_minus_one_dimension_is_dynamic(tmp_path):
    """paddle2onnx (rapidocr's PP-OCR classifier) writes dynamic dimensions as dim_value -1."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [x])
    for vi in (model.graph.input[0], model.graph.output[0]):
        vi.type.tensor_type.shape.Clear()
        vi.type.tensor_type.shape.dim.add().dim_value = -1
        vi.type.tensor_type.shape.dim.add().dim_value = -1
    path = str(tmp_path / "minus_one.onnx")
    onnx.save(model, path)
    assert load_onnx(path, {"x": (1, 7)}).graph.tensors["y"].shape == (1, 7)
    with pytest.raises(InvalidModelError, match="--input-shape"):
        load_onnx(path, {"x": (1, 7, 1)})


def test_old_opset_is_upgraded(tmp_path):
    """Opset 9 (the ONNX model zoo's classics: Upsample, Slice with attributes) was refused; it is
    upgraded with onnx.version_converter, said in a note, and converts like onnxruntime runs it."""
    from tests.conftest import run_litert, run_onnxruntime
    from tflq.config import ConvertConfig
    from tflq.pipeline import convert

    nodes = [helper.make_node("Upsample", ["x", "s"], ["u"], name="up", mode="nearest"),
             helper.make_node("Slice", ["u"], ["y"], name="cut", starts=[1], ends=[7], axes=[3])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4])],
                   [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")], opset=9)
    path = str(tmp_path / "old.onnx")
    onnx.save(model, path)
    loaded = load_onnx(path)
    assert any("opset 9 to 13" in note for note in loaded.notes)
    assert {op.origin for op in loaded.graph.ops} == {"up", "cut"}  # the converter drops the names
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4)).astype(np.float32)
    expected, = run_onnxruntime(path, {"x": x})
    actual, = run_litert(convert(ConvertConfig(model=path, keep_io_layout=True)).tflite, [x], nchw_io=False)
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("opset", [22, 23, 25])
def test_newer_opset_is_converted_down(opset, tmp_path):
    """Opsets above 21 (onnx 1.17+ exporters) were refused outright; where every op's newer
    version only widens its types, onnx.version_converter takes the model to 21, a note says so,
    and it converts like onnxruntime runs the original."""
    from tests.conftest import run_litert, run_onnxruntime
    from tflq.config import ConvertConfig
    from tflq.pipeline import convert

    rng = np.random.default_rng(opset)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "shape"], ["f"], name="flat"),
             helper.make_node("Softmax", ["f"], ["y"], name="softmax")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                   [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
                    numpy_helper.from_array(np.array([1, -1], np.int64), "shape")], opset=opset)
    path = str(tmp_path / "new.onnx")
    onnx.save(model, path)
    loaded = load_onnx(path)
    assert any(f"opset {opset} to 21" in note for note in loaded.notes), loaded.notes
    assert {op.origin for op in loaded.graph.ops} >= {"conv", "softmax"}
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    expected, = run_onnxruntime(path, {"x": x})
    actual, = run_litert(convert(ConvertConfig(model=path, keep_io_layout=True)).tflite, [x], nchw_io=False)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)


def test_newer_opset_with_an_op_new_since_is_refused_naming_it(tmp_path):
    """RMSNormalization exists from opset 23 only: the converter cannot take it down, and the
    one line says which op stopped it."""
    nodes = [helper.make_node("RMSNormalization", ["x", "scale"], ["y"], axis=-1)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                   [numpy_helper.from_array(np.ones(8, np.float32), "scale")], opset=23)
    path = str(tmp_path / "rms.onnx")
    onnx.save(model, path)
    with pytest.raises(UnsupportedModelError, match="opset 23 is not supported.*RMSNormalization"):
        load_onnx(path)


def test_every_unsupported_node_is_reported(tmp_path):
    nodes = [helper.make_node("Bernoulli", ["x"], ["a"], name="h"),
             helper.make_node("Pad", ["a", "p", "v"], ["b"], name="pad"),  # two pad values
             helper.make_node("Det", ["b"], ["y"], name="d")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3]),
                           helper.make_tensor_value_info("v", TensorProto.FLOAT, [2])],
                   [numpy_helper.from_array(np.zeros(8, np.int64), "p")])
    path = str(tmp_path / "bad.onnx")
    onnx.save(model, path)
    with pytest.raises(UnsupportedModelError) as info:
        load_onnx(path)
    codes = {(d.node, d.reason_code) for d in info.value.diagnostics}
    assert codes == {("h", "unsupported_op"), ("pad", "pad_value"), ("d", "unsupported_op")}


def test_identical_constants_are_stored_once(tmp_path):
    w = np.random.default_rng(4).normal(size=(32, 32)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("MatMul", ["a", "w2"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                   [numpy_helper.from_array(w, "w1"), numpy_helper.from_array(w.copy(), "w2")])
    path = str(tmp_path / "dup.onnx")
    onnx.save(model, path)
    report = convert(ConvertConfig(model=path))
    assert len(report.tflite) < 1.5 * w.nbytes


@pytest.mark.parametrize("half_first", [False, True])
def test_erf_gelu_pattern_becomes_gelu(tmp_path, half_first):
    if half_first:
        nodes = [helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                 helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["x", "half"], ["h"]),
                 helper.make_node("Mul", ["h", "a"], ["y"])]
    else:
        nodes = [helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                 helper.make_node("Add", ["one", "e"], ["a"]), helper.make_node("Mul", ["x", "a"], ["m"]),
                 helper.make_node("Mul", ["m", "half"], ["y"])]
    inits = [numpy_helper.from_array(np.array(v, np.float32), n)
             for n, v in (("sqrt2", 1.4142135), ("one", 1.0), ("half", 0.5))]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])], inits, opset=17)
    path = str(tmp_path / "gelu.onnx")
    onnx.save(model, path)
    report = convert(ConvertConfig(model=path))
    assert report.op_counts == {"GELU": 1}
    x = np.random.default_rng(5).normal(size=(2, 16)).astype(np.float32) * 3
    assert relative_error(run_onnxruntime(path, {"x": x})[0], run_litert(report.tflite, [x])[0]) <= 1e-4


def test_bfloat16_weights_compute_in_float32(tmp_path):
    """bfloat16 constants (numpy's ml_dtypes type, of kind "V") compute in float32 as float16 ones
    do; they were an internal error. Checked against the product computed by hand in float32."""
    rng = np.random.default_rng(4)
    w32, b32 = rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    w = helper.make_tensor("w", TensorProto.BFLOAT16, [8, 4], w32.ravel().tolist())
    b = helper.make_tensor("b", TensorProto.BFLOAT16, [4], b32.tolist())
    nodes = [helper.make_node("Cast", ["x"], ["xb"], to=TensorProto.BFLOAT16),
             helper.make_node("MatMul", ["xb", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w, b])
    path = str(tmp_path / "bf16.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)
    weights = numpy_helper.to_array(w).astype(np.float32)  # the values bfloat16 holds
    bias = numpy_helper.to_array(b).astype(np.float32)
    assert not np.array_equal(weights, w32)  # (rounded: the test sees bfloat16's values)
    x = rng.normal(size=(2, 8)).astype(np.float32)
    expected = np.maximum(x @ weights + bias, 0)
    got = run_litert(convert(ConvertConfig(model=path)).tflite, [x])[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_folding_keeps_the_models_initializers_in_place(tmp_path):
    """fold_model leaves the initializers that kept nodes read as the model's own messages
    (re-adding them copied every weight: protobuf's extend copies), drops those only folded
    nodes read, and adds the folded values kept nodes read."""
    from tflq.frontend.fold import fold_model

    rng = np.random.default_rng(6)
    w = rng.normal(size=(6, 6)).astype(np.float32)
    nodes = [helper.make_node("Add", ["two", "three"], ["five"]),  # folded: its inputs go
             helper.make_node("Mul", ["x", "five"], ["m"]),
             helper.make_node("MatMul", ["m", "w"], ["y"])]
    inits = [numpy_helper.from_array(np.float32(2), "two"), numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.float32(3), "three")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])], inits)
    weight = model.graph.initializer[1]
    fold_model(model)
    assert [t.name for t in model.graph.initializer] == ["w", "five"]
    assert model.graph.initializer[0] is weight  # the same message, not a copy
    assert float(numpy_helper.to_array(model.graph.initializer[1])) == 5.0
    path = str(tmp_path / "fold.onnx")
    onnx.save(_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])], inits), path)
    x = rng.normal(size=(1, 6)).astype(np.float32)
    got = run_litert(convert(ConvertConfig(model=path)).tflite, [x])[0]
    np.testing.assert_allclose(got, (x * 5) @ w, rtol=1e-5, atol=1e-6)


def test_imported_constants_are_the_graphs_own(tmp_path):
    """Each constant of the imported graph is its own writable array (not a view of the ONNX
    model's bytes, which the loader lets go, nor shared between tensors): a pass that edits
    one in place changes that tensor only. A float16 weight computes in float32."""
    rng = np.random.default_rng(7)
    c = rng.normal(size=(4, 4)).astype(np.float32)
    h = rng.normal(size=(4, 4)).astype(np.float16)
    nodes = [helper.make_node("Add", ["x", "c"], ["a"]), helper.make_node("Mul", ["a", "c"], ["b"]),
             helper.make_node("Cast", ["h"], ["h32"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["b", "h32"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                   [numpy_helper.from_array(c, "c"), numpy_helper.from_array(h, "h")])
    path = str(tmp_path / "shared.onnx")
    onnx.save(model, path)
    graph = load_onnx(path).graph
    constants = [t for t in graph.tensors.values() if t.is_constant]
    assert constants and all(t.data.flags.writeable and t.data.flags.owndata for t in constants)
    assert len({id(t.data) for t in constants}) == len(constants)
    shared = graph.tensors["c"]
    assert len(graph.consumers("c")) == 2  # one tensor for both readers
    np.testing.assert_array_equal(shared.data, c)
    x = rng.normal(size=(4, 4)).astype(np.float32)
    got = run_litert(convert(ConvertConfig(model=path)).tflite, [x])[0]
    np.testing.assert_allclose(got, ((x + c) * c) @ h.astype(np.float32), rtol=1e-4, atol=1e-4)
