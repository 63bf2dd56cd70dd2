"""QDQ models tflq must refuse (with the node's name and a reason code, never a file with wrong
numbers), and the modes: full inferred, float kept as FAKE_QUANT, weights-only refused."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime, save_model
from tests.quantize.qdq_graphs import QdqBuilder, activation_params
from tflq.backend.tflite_reader import read_tflite
from tflq.cli import main
from tflq.config import ConvertConfig
from tflq.errors import InvalidConfigError, InvalidModelError, UnsupportedModelError
from tflq.pipeline import convert


def _refused(model, tmp_path) -> dict[str, str]:
    """Convert; return {node name: reason code} of the diagnostics of the error it must raise."""
    path = save_model(model, tmp_path / "bad.onnx")
    with pytest.raises(UnsupportedModelError) as info:
        convert(ConvertConfig(model=path))
    return {d.node: d.reason_code for d in info.value.diagnostics}


def _pair(b: QdqBuilder, x: str, scale: np.ndarray, zero_point: np.ndarray, **attrs) -> tuple[str, str]:
    """x -> QuantizeLinear -> DequantizeLinear with raw parameter tensors; returns (q node, output)."""
    s, z = b.const("scale", scale), b.const("zero_point", zero_point)
    q = b.node("QuantizeLinear", [x, s, z], **attrs)
    return f"/{q}", b.node("DequantizeLinear", [q, s, z], **attrs)


def _relu_model(b: QdqBuilder, y: str, opset: int = 13, shape=(1, 4, 3, 3)):
    return b.model({"x": shape}, [b.node("Relu", [y])], opset)


@pytest.mark.parametrize("zero_point,opset", [
    (helper.make_tensor("z", TensorProto.INT4, [], [0]), 21),
    (helper.make_tensor("z", TensorProto.UINT4, [], [0]), 21),
    (helper.make_tensor("z", TensorProto.FLOAT8E4M3FN, [], [0]), 19),
], ids=["int4", "uint4", "float8"])
def test_types_other_than_8_bit_and_int16_are_refused(zero_point, opset, tmp_path):
    b = QdqBuilder()
    s = b.const("scale", np.array(0.1, np.float32))
    zero_point.name = "z"
    b.inits.append(zero_point)
    q = b.node("QuantizeLinear", ["x", s, "z"])
    model = _relu_model(b, b.node("DequantizeLinear", [q, s, "z"]), opset)
    reasons = _refused(model, tmp_path)
    assert reasons[f"/{q}"] == "qdq_type"


@pytest.mark.parametrize("scale", [0.0, -0.5], ids=["zero", "negative"])
def test_bad_scales_are_refused(scale, tmp_path):
    b = QdqBuilder()
    q, y = _pair(b, "x", np.array(scale, np.float32), np.array(0, np.int8))
    assert _refused(_relu_model(b, y), tmp_path)[q] == "qdq_scale"


def test_an_infinite_weight_scale_is_refused(tmp_path):
    b = QdqBuilder()
    dq = b.node("DequantizeLinear", [b.const("w", np.ones((4, 4, 1, 1), np.int8)),
                                     b.const("s", np.array(np.inf, np.float32)), b.const("z", np.array(0, np.int8))])
    model = b.model({"x": (1, 4, 3, 3)}, [b.node("Conv", ["x", dq])])
    assert _refused(model, tmp_path)[f"/{dq}"] == "qdq_scale"


def test_an_activation_on_an_infinite_scale_stays_float(tmp_path):
    """(onnxruntime's calibration of a tensor holding -inf: tests/test_ort_infinite_mask_scale.py)"""
    b = QdqBuilder()
    _, y = _pair(b, "x", np.array(np.inf, np.float32), np.array(0, np.int8))
    path = save_model(_relu_model(b, y), tmp_path / "inf.onnx")
    report = convert(ConvertConfig(model=path))
    assert any("infinite scale kept float" in note for note in report.notes), report.notes


def test_zero_point_out_of_range_is_refused(tmp_path):
    """An int8 weight whose zero point (stored wider) lies outside int8's range."""
    b = QdqBuilder()
    dq = b.node("DequantizeLinear", [b.const("w", np.ones((4, 4, 1, 1), np.int8)),
                                     b.const("s", np.array(0.1, np.float32)),
                                     b.const("z", np.array(300, np.int32))])
    model = b.model({"x": (1, 4, 3, 3)}, [b.node("Conv", ["x", dq])])
    # An int32 zero point for int8 data breaks DequantizeLinear's type constraint: the ONNX checker
    # refuses the model (as onnxruntime does) before the QDQ rules see it.
    with pytest.raises(InvalidModelError, match=f"/{dq}.*zero_point"):
        convert(ConvertConfig(model=save_model(model, tmp_path / "bad.onnx")))


def test_per_channel_lengths_must_match(tmp_path):
    b = QdqBuilder()
    dq = b.node("DequantizeLinear", [b.const("w", np.ones((4, 3, 1, 1), np.int8)),
                                     b.const("s", np.full(3, 0.1, np.float32)),
                                     b.const("z", np.zeros(3, np.int8))], axis=0)
    model = b.model({"x": (1, 3, 3, 3)}, [b.node("Conv", ["x", dq])])
    assert _refused(model, tmp_path)[f"/{dq}"] == "qdq_channels"


def test_dequantize_without_quantize_is_refused(tmp_path):
    b = QdqBuilder()
    cast = b.node("Cast", ["x"], to=TensorProto.INT8)
    dq = b.node("DequantizeLinear", [cast, b.const("s", np.array(0.1, np.float32)),
                                     b.const("z", np.array(0, np.int8))])
    reasons = _refused(_relu_model(b, dq), tmp_path)
    assert reasons[f"/{dq}"] == "dequantize_without_quantize"


def test_dequantize_with_other_parameters_than_its_quantize_is_refused(tmp_path):
    b = QdqBuilder()
    z = b.const("z", np.array(0, np.int8))
    q = b.node("QuantizeLinear", ["x", b.const("s", np.array(0.1, np.float32)), z])
    dq = b.node("DequantizeLinear", [q, b.const("s", np.array(0.2, np.float32)), z])
    assert _refused(_relu_model(b, dq), tmp_path)[f"/{dq}"] == "qdq_mismatch"


def test_per_channel_activation_is_refused(tmp_path):
    b = QdqBuilder()
    q, y = _pair(b, "x", np.full(4, 0.1, np.float32), np.zeros(4, np.int8), axis=1)
    assert _refused(_relu_model(b, y), tmp_path)[q] == "qdq_per_channel_activation"


@pytest.mark.parametrize("reader", ["model_output", "flatten"])
def test_quantize_read_by_another_op_than_dequantize_is_refused(reader, tmp_path):
    """The integers of an activation QuantizeLinear have no float meaning outside a QDQ pair."""
    b = QdqBuilder()
    s, z = b.const("s", np.array(0.1, np.float32)), b.const("z", np.array(0, np.int8))
    q = b.node("QuantizeLinear", ["x", s, z])
    other = q if reader == "model_output" else b.node("Flatten", [q])
    model = b.model({"x": (1, 4)}, [b.node("DequantizeLinear", [q, s, z]), other], opset=14)
    model.graph.output[1].type.tensor_type.elem_type = TensorProto.INT8
    assert _refused(model, tmp_path)[f"/{q}"] == "quantize_without_dequantize"


def _small_qdq_model():
    b = QdqBuilder(seed=2)
    s_in, z_in = activation_params(-1, 1)
    w, _, _, _ = b.weight((4, 3, 3, 3))
    s_out, z_out = activation_params(0, 3)
    conv = b.node("Conv", [b.qdq("x", s_in, z_in), w], pads=[1, 1, 1, 1])
    return b.model({"x": (1, 3, 6, 6)}, [b.qdq(b.node("Relu", [conv]), s_out, z_out)]), s_out


def test_float_mode_keeps_the_quantization_as_fake_quant(tmp_path):
    """--mode float: a float file whose FAKE_QUANT ops compute what onnxruntime computes."""
    model, step = _small_qdq_model()
    path = save_model(model, tmp_path / "qdq.onnx")
    report = convert(ConvertConfig(model=path, mode="float"))
    kinds = read_tflite(report.tflite).op_kinds()
    assert kinds.count("FAKE_QUANT") == 2 and "QUANTIZE" not in kinds
    assert any("FAKE_QUANT" in n for n in report.notes)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 6, 6)).astype(np.float32)
    expected = run_onnxruntime(model, {"x": x})[0]
    assert np.max(np.abs(run_litert(report.tflite, [x])[0] - expected)) <= step * 1.0001


def test_weights_only_mode_is_refused(tmp_path):
    model, _ = _small_qdq_model()
    path = save_model(model, tmp_path / "qdq.onnx")
    with pytest.raises(InvalidConfigError, match="already quantized"):
        convert(ConvertConfig(model=path, mode="weights-only"))


def test_cli_infers_full_mode_and_says_so(tmp_path):
    model, _ = _small_qdq_model()
    path = save_model(model, tmp_path / "qdq.onnx")
    out = tmp_path / "out.tflite"
    result = CliRunner().invoke(main, ["convert", path, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "mode full, int8" in result.output and "--mode full inferred" in result.output
    info = read_tflite(out.read_bytes())
    assert {"CONV_2D", "QUANTIZE", "DEQUANTIZE"} <= set(info.op_kinds())
    refused = CliRunner().invoke(main, ["convert", path, "-o", str(out), "--mode", "weights-only"])
    assert refused.exit_code == 1 and "already quantized" in refused.output


def test_transposed_quantized_weights_are_folded_at_import(tmp_path):
    """tf2onnx writes HWIO int8 weights as DequantizeLinear -> Transpose -> Conv; the transpose of
    a constant is evaluated at import, so the Conv still sees constant weights."""
    rng = np.random.default_rng(3)
    w_hwio = rng.integers(-127, 128, (3, 3, 2, 4)).astype(np.int8)
    w_scale = rng.uniform(0.002, 0.01, 4).astype(np.float32)
    inits = [numpy_helper.from_array(w_hwio, "wq"), numpy_helper.from_array(w_scale, "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wz"),
             numpy_helper.from_array(np.array(0.02, np.float32), "s_in"),
             numpy_helper.from_array(np.array(0, np.int8), "z_in"),
             numpy_helper.from_array(np.array(0.01, np.float32), "s_out"),
             numpy_helper.from_array(np.array(0, np.int8), "z_out")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s_in", "z_in"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s_in", "z_in"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w_hwio"], axis=3),
             helper.make_node("Transpose", ["w_hwio"], ["w"], perm=[3, 2, 0, 1]),
             helper.make_node("Conv", ["xd", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "s_out", "z_out"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s_out", "z_out"], ["y"])]
    graph = helper.make_graph(nodes, "tf2onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = str(tmp_path / "transposed.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    report = convert(ConvertConfig(model=path, output=str(tmp_path / "t.tflite")))
    assert report.op_counts.get("CONV_2D") == 1 and "TRANSPOSE" not in report.op_counts
    x = rng.uniform(-1, 1, (1, 2, 6, 6)).astype(np.float32)
    expected = run_onnxruntime(path, {"x": x})[0]
    assert np.max(np.abs(run_litert(report.tflite, [x])[0] - expected)) <= 2 * 0.01 + 1e-6
