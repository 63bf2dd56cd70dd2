"""Models that arrive already quantized in the forms onnxruntime's tools write them, built at test
time: QDQ in the com.microsoft domain, 16-bit activations, 4-bit and block-wise weights. Each either
converts (LiteRT within a couple of output steps of onnxruntime running the same QDQ model, worst
sample) or is refused with one line naming the node (exit 1, no traceback, no file)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import importorskip, run_litert, run_onnxruntime
from tflq.backend.tflite_reader import read_tflite
from tflq.cli import main
from tflq.ir.quant import sqnr_db


def _float_model(path: str, opset: int = 17) -> str:
    """Conv, Relu, depthwise Conv, Add, Sigmoid, GlobalAveragePool, Gemm: the ops onnxruntime's
    QDQ quantizer handles in a small CNN."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=4),
             helper.make_node("Add", ["c2", "r1"], ["a"]),
             helper.make_node("Sigmoid", ["a"], ["s"]),
             helper.make_node("Mul", ["a", "s"], ["m"]),
             helper.make_node("GlobalAveragePool", ["m"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1)]
    inits = [numpy_helper.from_array(rng.normal(0, 0.4, (4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(0, 0.4, (4, 1, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b2"),
             numpy_helper.from_array(rng.normal(0, 0.5, (5, 4)).astype(np.float32), "w3"),
             numpy_helper.from_array(rng.normal(0, 0.1, 5).astype(np.float32), "b3")]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9 if opset >= 19 else 8
    onnx.save(model, path)
    return path


def _feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(count)]


class _Samples:
    """onnxruntime's CalibrationDataReader over seeded samples."""

    def __init__(self) -> None:
        self.samples = iter(_feeds(8, 4))

    def get_next(self):
        return next(self.samples, None)

    def rewind(self):
        pass


def _quantize_static(tmp_path, name: str, opset: int = 17, **options) -> str:
    q = importorskip("onnxruntime.quantization")
    src = _float_model(str(tmp_path / "float.onnx"), opset)
    out = str(tmp_path / f"{name}.onnx")
    q.quantize_static(src, out, _Samples(), quant_format=q.QuantFormat.QDQ, **options)
    return out


def _convert(model: str, tmp_path, *args: str):
    out = tmp_path / "out.tflite"
    result = CliRunner().invoke(main, ["convert", model, "-o", str(out), *args], catch_exceptions=False)
    return result, out


def _output_step(path: str) -> float:
    """The scale of the DequantizeLinear that writes the model's output."""
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    last = next(n for n in model.graph.node if n.output[0] == model.graph.output[0].name)
    assert last.op_type == "DequantizeLinear", last.op_type
    return float(inits[last.input[1]])


def _worst_steps(path: str, tflite: bytes) -> float:
    """The largest difference, in output steps, between LiteRT and onnxruntime on the same QDQ
    model over a few samples."""
    step = _output_step(path)
    return max(float(np.max(np.abs(run_onnxruntime(path, feed)[0] - run_litert(tflite, [feed["x"]])[0])))
               for feed in _feeds(6, 11)) / step


def _assert_one_line_refusal(result, out, *words: str) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()
    return lines[0]


@pytest.mark.parametrize("activation", ["QUInt8", "QInt8"])
def test_contrib_domain_qdq_converts_like_the_standard_ops(activation, tmp_path):
    """extra_options UseQDQContribOps writes com.microsoft QuantizeLinear/DequantizeLinear, the same
    operators as the standard ones: they were refused as an 'onnxruntime-quantized' model."""
    q = importorskip("onnxruntime.quantization")
    path = _quantize_static(tmp_path, "contrib", activation_type=getattr(q.QuantType, activation),
                            extra_options={"UseQDQContribOps": True})
    assert {n.domain for n in onnx.load(path).graph.node if "Quantize" in n.op_type} == {"com.microsoft"}
    result, out = _convert(path, tmp_path)
    assert result.exit_code == 0, result.output
    assert _worst_steps(path, out.read_bytes()) <= 2


@pytest.mark.parametrize("opset,weight,per_channel", [(17, "QInt4", False), (17, "QUInt4", True),
                                                     (21, "QInt4", True), (21, "QUInt4", False)])
def test_four_bit_weights_convert_on_the_eight_bit_grid(opset, weight, per_channel, tmp_path):
    """4-bit weights (com.microsoft DequantizeLinear below opset 21, standard at 21) are points of
    the 8-bit grid with the same scale and zero point: read as such, not refused."""
    q = importorskip("onnxruntime.quantization")
    path = _quantize_static(tmp_path, "int4", opset, weight_type=getattr(q.QuantType, weight),
                            per_channel=per_channel)
    four_bit = {TensorProto.INT4, TensorProto.UINT4}
    assert any(i.data_type in four_bit for i in onnx.load(path).graph.initializer)
    result, out = _convert(path, tmp_path)
    assert result.exit_code == 0, result.output
    assert _worst_steps(path, out.read_bytes()) <= 2


def test_contrib_domain_qdq_of_a_type_the_opset_lacks_is_refused_in_one_line(tmp_path):
    """com.microsoft int16 QDQ converts at opset 21 (onnxruntime moves the model there); at opset
    17, where the standard ops have no int16, it is refused naming the node and the type."""
    q = importorskip("onnxruntime.quantization")
    path = _quantize_static(tmp_path, "int16", activation_type=q.QuantType.QInt16,
                            extra_options={"UseQDQContribOps": True, "ActivationSymmetric": True})
    result, out = _convert(path, tmp_path)
    assert result.exit_code == 0, result.output
    assert _worst_steps(path, out.read_bytes()) <= 2
    out.unlink()
    model = onnx.load(path)
    next(o for o in model.opset_import if o.domain == "").version = 17
    onnx.save(model, path)
    result, out = _convert(path, tmp_path)
    _assert_one_line_refusal(result, out, "Linear'", "int16", "com.microsoft", "opset 21")


def _blocked_matmul(path: str, dtype: int, axis: int, activations: bool) -> str:
    """MatMul by a [40, 8] weight stored as 4-bit blocks of 16 along `axis` (opset 21), with or
    without QDQ around the activations (LLM weight-only quantization has none)."""
    rng = np.random.default_rng(5)
    k, n, size = 40, 8, 16
    signed = dtype == TensorProto.INT4
    q = rng.integers(-8, 8, (k, n)) if signed else rng.integers(0, 16, (k, n))
    blocks = [-(-k // size), n] if axis == 0 else [k, -(-n // size)]
    zero_point = rng.integers(-2, 3, blocks) if signed else rng.integers(6, 10, blocks)
    inits = [helper.make_tensor("wq", dtype, [k, n], q.ravel().tolist()),
             numpy_helper.from_array(rng.uniform(0.01, 0.05, blocks).astype(np.float32), "ws"),
             helper.make_tensor("wz", dtype, blocks, zero_point.ravel().tolist())]
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=axis, block_size=size)]
    x, out = "x", "y"
    if activations:
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                  numpy_helper.from_array(np.array(3, np.int8), "z"),
                  numpy_helper.from_array(np.array(0.05, np.float32), "s2"),
                  numpy_helper.from_array(np.array(-2, np.int8), "z2")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
                  helper.make_node("QuantizeLinear", ["m", "s2", "z2"], ["mq"]),
                  helper.make_node("DequantizeLinear", ["mq", "s2", "z2"], ["y"])]
        x, out = "xd", "m"
    nodes.insert(1, helper.make_node("MatMul", [x, "w"], [out]))
    nodes.sort(key=lambda node: ["w", "xq", "xd", "m", out, "mq", "y"].index(node.output[0]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("dtype", [TensorProto.INT4, TensorProto.UINT4])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("activations", [False, True])
def test_blocked_weights_are_the_float_constant_the_graph_computes(dtype, axis, activations, tmp_path):
    """A blocked DequantizeLinear of a constant (block_size, opset 21) was refused; it computes a
    float weight exactly, which --mode float keeps (onnxruntime's numbers). Without activation QDQ
    the model is weights-only: the weight is stored in int8 on a per-channel grid of tflq's (the
    hybrid kernel's; tests/test_ort_nbits.py measures onnxruntime's own 4-bit models); with it,
    TFLite's int8 kernel takes the weight on such a grid."""
    path = _blocked_matmul(str(tmp_path / "blocked.onnx"), dtype, axis, activations)
    for mode in ([], ["--mode", "float"]):
        result, out = _convert(path, tmp_path, *mode)
        assert result.exit_code == 0, result.output
        rng = np.random.default_rng(9)
        worst, sqnr = 0.0, float("inf")
        for _ in range(4):
            x = rng.normal(size=(2, 40)).astype(np.float32)
            expected, actual = run_onnxruntime(path, {"x": x})[0], run_litert(out.read_bytes(), [x])[0]
            worst = max(worst, float(np.max(np.abs(expected - actual))))
            sqnr = min(sqnr, sqnr_db(expected, actual))
        if mode:
            assert worst <= 1e-5 * max(1.0, float(np.abs(expected).max()))
        elif activations:
            assert worst <= 2 * 0.05 + 1e-6  # two output steps
        else:
            assert "[mode weights-only, int8]" in result.output, result.output
            weight = next(t for t in read_tflite(out.read_bytes()).tensors if t.buffer_bytes)
            assert weight.dtype == "int8" and len(weight.scale) == 8, weight
            assert sqnr >= 30.0, sqnr


@pytest.mark.parametrize("activation", ["QUInt16", "QInt16"])
def test_asymmetric_16_bit_activations_convert(activation, tmp_path):
    """onnxruntime's 16-bit activations are asymmetric by default, which LiteRT's 16x8 kernels
    cannot take: each grid moves to the symmetric int16 one covering its range (one summary line),
    at most a bit coarser. They were refused, each QuantizeLinear named."""
    q = importorskip("onnxruntime.quantization")
    path = _quantize_static(tmp_path, "a16", activation_type=getattr(q.QuantType, activation))
    result, out = _convert(path, tmp_path)
    assert result.exit_code == 0, result.output
    assert sum("asymmetric 16-bit activation grids" in line for line in result.output.splitlines()) == 1
    # Against the float model: the file as close as onnxruntime running the QDQ model (measured
    # 42.3 / 20.8 dB both on the calibration / held-out samples; in steps of the graph's 16-bit
    # output grid they differ by up to 31 on the calibration samples, 77 held out, which clip).
    reference = str(tmp_path / "float.onnx")
    for feeds in (_feeds(8, 4), _feeds(6, 11)):
        file_db = min(sqnr_db(run_onnxruntime(reference, f)[0], run_litert(out.read_bytes(), [f["x"]])[0])
                      for f in feeds)
        qdq_db = min(sqnr_db(run_onnxruntime(reference, f)[0], run_onnxruntime(path, f)[0]) for f in feeds)
        assert file_db >= qdq_db - 0.5, (file_db, qdq_db)
    info = read_tflite(out.read_bytes())
    assert all(list(t.zero_point) == [0] for t in info.tensors if t.dtype == "int16")


@pytest.mark.parametrize("activation,per_channel", [("QInt16", True), ("QUInt16", True),
                                                    ("QUInt16", False)])
def test_symmetric_16_bit_activations_convert(activation, per_channel, tmp_path):
    """Symmetric uint16 (zero point 32768) is the int16 grid with zero point 0 shifted by 32768:
    the same real values and the same rounding, so it converts to 16x8 exactly. It was refused
    ('uint16 quantization is not supported')."""
    q = importorskip("onnxruntime.quantization")
    path = _quantize_static(tmp_path, "a16", activation_type=getattr(q.QuantType, activation),
                            per_channel=per_channel, extra_options={"ActivationSymmetric": True})
    result, out = _convert(path, tmp_path)
    assert result.exit_code == 0, result.output
    assert _worst_steps(path, out.read_bytes()) <= 2.01  # (float32 rounding of the output)
    info = read_tflite(out.read_bytes())
    conv = next(op for op in info.ops if op.kind == "CONV_2D")
    activation_in = info.tensors[conv.inputs[0]]
    assert activation_in.dtype == "int16" and list(activation_in.zero_point) == [0]


def _uint16_graph(path: str, operand_zero_point: bool) -> str:
    """x -> QDQ (uint16, zero point 32768) -> Mul by a uint16 DequantizeLinear constant (with or
    without a zero point: 0 then, opset 21) -> QDQ: the hand-written form of a 16-bit QDQ graph."""
    inits = [numpy_helper.from_array(np.array(0.001, np.float32), "s"),
             numpy_helper.from_array(np.array(32768, np.uint16), "z"),
             numpy_helper.from_array(np.array([[40000, 30000], [32768, 65535]], np.uint16), "cq"),
             numpy_helper.from_array(np.array(0.0001, np.float32), "cs"),
             numpy_helper.from_array(np.array(0.004, np.float32), "s2")]
    operand = ["cq", "cs"]
    if operand_zero_point:
        inits.append(numpy_helper.from_array(np.array(30000, np.uint16), "cz"))
        operand.append("cz")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", operand, ["c"]),
             helper.make_node("Mul", ["xd", "c"], ["m"]),
             helper.make_node("QuantizeLinear", ["m", "s2", "z"], ["mq"]),
             helper.make_node("DequantizeLinear", ["mq", "s2", "z"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("operand_zero_point", [True, False])
def test_uint16_constants_and_activations_keep_their_values(operand_zero_point, tmp_path):
    """A uint16 constant's integers and zero point move to int16 together (an absent zero point is
    uint16's 0, not int16's): LiteRT within two output steps of onnxruntime, saturating inputs too."""
    path = _uint16_graph(str(tmp_path / "u16.onnx"), operand_zero_point)
    result, out = _convert(path, tmp_path)
    assert result.exit_code == 0, result.output
    rng = np.random.default_rng(12)
    worst = 0.0
    for scale in (1.0, 20.0, 60.0):  # the last beyond the input grid's +-32.8
        x = rng.normal(0, scale, (1, 3, 2, 2)).astype(np.float32)
        expected, actual = run_onnxruntime(path, {"x": x})[0], run_litert(out.read_bytes(), [x])[0]
        worst = max(worst, float(np.max(np.abs(expected - actual))) / 0.004)
    assert worst <= 2, worst


_ORT_OPTIONS = {
    "uint8_activations_int8_per_channel": dict(activation_type="QUInt8", weight_type="QInt8", per_channel=True),
    "int8_per_tensor": dict(activation_type="QInt8", weight_type="QInt8"),
    "symmetric": dict(activation_type="QInt8", weight_type="QInt8", per_channel=True,
                      extra_options={"ActivationSymmetric": True, "WeightSymmetric": True}),
    "asymmetric_weights": dict(activation_type="QInt8", weight_type="QInt8", per_channel=True,
                               extra_options={"WeightSymmetric": False}),
    "reduce_range": dict(activation_type="QUInt8", weight_type="QUInt8", per_channel=True, reduce_range=True),
    "qdq_pair_on_weights": dict(activation_type="QUInt8", weight_type="QInt8", per_channel=True,
                                extra_options={"AddQDQPairToWeight": True}),
    "dedicated_pairs": dict(activation_type="QUInt8", weight_type="QInt8",
                            extra_options={"DedicatedQDQPair": True}),
    "keep_removable_activations": dict(activation_type="QInt8", weight_type="QInt8",
                                       extra_options={"QDQKeepRemovableActivations": True}),
    "conv_and_gemm_only": dict(activation_type="QUInt8", weight_type="QInt8", per_channel=True,
                               op_types_to_quantize=["Conv", "Gemm"]),
    "first_conv_excluded": dict(activation_type="QInt8", weight_type="QInt8", per_channel=True,
                                nodes_to_exclude=["conv1"]),
}


@pytest.mark.parametrize("name", sorted(_ORT_OPTIONS))
def test_quantize_static_options_users_pick_convert_within_two_steps(name, tmp_path):
    """The quantize_static options of onnxruntime's documentation, each on the small CNN: every
    one converts, and LiteRT stays within two output steps of onnxruntime running the QDQ model
    (worst sample); ops the options leave float stay float, the rest run in integers."""
    q = importorskip("onnxruntime.quantization")
    options = dict(_ORT_OPTIONS[name])
    for key in ("activation_type", "weight_type"):
        options[key] = getattr(q.QuantType, options[key])
    path = _quantize_static(tmp_path, name, **options)
    result, out = _convert(path, tmp_path)
    assert result.exit_code == 0, result.output
    assert _worst_steps(path, out.read_bytes()) <= 2.01
    kinds = [op.kind for op in read_tflite(out.read_bytes()).ops]
    assert "CONV_2D" in kinds and "FULLY_CONNECTED" in kinds
    conv = next(op for op in read_tflite(out.read_bytes()).ops if op.kind == "CONV_2D")
    first_input = read_tflite(out.read_bytes()).tensors[conv.inputs[0]]
    assert (first_input.dtype == "float32") == (name == "first_conv_excluded"), first_input.dtype
