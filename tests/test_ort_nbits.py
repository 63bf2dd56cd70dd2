"""onnxruntime's 4-bit weight-only models (MatMulNBitsQuantizer: com.microsoft MatMulNBits, or QDQ
with opset-21 blocked DequantizeLinear) convert without --calib to weights-only files whose
weights are int8 (per channel: TFLite has no block grid), a fraction of the float file's size.

Float models are built here with onnx.helper and quantized by onnxruntime's own quantizer (it
quantizes MatMul weights only: a Gemm stays float, so none is built); LiteRT runs the file against
onnxruntime running the quantized model (the reference for the 4-bit weights: what the file adds
is the per-channel int8 requantization and the hybrid kernels' int8 inputs) and the float model
(what 4 bits cost). Worst of 6 samples. Hand-built MatMulNBits nodes cover what the quantizer
does not write (a bias input, float or absent zero points, 2 and 8 bits) and what is refused."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import importorskip, litert_interpreter, run_litert, run_onnxruntime
from tflq.cli import main
from tflq.ir.quant import sqnr_db

# Worst-sample floors (dB), the worst measured over every case below in brackets: the file against
# the quantized model [37.6] and against the float model [16.5]; against the float model it loses
# at most this much more than the quantized model does [0.1].
FLOOR_VS_QUANTIZED = 34.0
FLOOR_VS_FLOAT = 14.0
LOSS_BEYOND_FOUR_BITS = 0.5


def _dense(rng, k: int, n: int, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(rng.normal(0, 1 / np.sqrt(k), (k, n)).astype(np.float32), name)


def _float_model(path: str, kind: str) -> tuple[str, tuple[int, ...]]:
    """matmul: x [4, 256] @ W; matmul_add: x [1, 8, 256] @ W + b (a transformer's projection);
    mlp: MatMul + Add, Relu, MatMul; odd_k: K = 200, a multiple of neither block size."""
    rng = np.random.default_rng(11)
    shape = {"matmul": (4, 256), "matmul_add": (1, 8, 256), "mlp": (1, 6, 256), "odd_k": (3, 200)}[kind]
    k = shape[-1]
    inits = [_dense(rng, k, 96, "w1")]
    last = kind in ("matmul", "odd_k")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["y" if last else "h0"], name="mm1")]
    if kind in ("matmul_add", "mlp"):
        inits.append(numpy_helper.from_array(rng.normal(0, 0.1, 96).astype(np.float32), "b1"))
        out = "y" if kind == "matmul_add" else "h1"
        nodes.append(helper.make_node("Add", ["h0", "b1"], [out], name="add1"))
    if kind == "mlp":
        inits.append(_dense(rng, 96, 40, "w2"))
        nodes += [helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
                  helper.make_node("MatMul", ["h2", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path, shape


def _quantized(float_path: str, path: str, fmt: str, block_size: int, symmetric: bool) -> str:
    importorskip("onnx_ir")  # (onnxruntime's quantizer imports it)
    quantization = importorskip("onnxruntime.quantization")
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quant_format = quantization.QuantFormat.QDQ if fmt == "qdq" else quantization.QuantFormat.QOperator
    quantizer = MatMulNBitsQuantizer(onnx.load(float_path), block_size=block_size,
                                     is_symmetric=symmetric, quant_format=quant_format)
    quantizer.process()
    quantizer.model.save_model_to_file(path, False)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert ops & {"MatMul", "MatMulNBits", "DequantizeLinear"} == (
        {"MatMulNBits"} if fmt == "nbits" else {"MatMul", "DequantizeLinear"}), ops
    return path


def _convert(model: str, tmp_path, *args: str):
    out = tmp_path / "out.tflite"
    result = CliRunner().invoke(main, ["convert", model, "-o", str(out), *args], catch_exceptions=False)
    return result, out


def _worst_sqnr(path: str, float_path: str, tflite: bytes,
                shape: tuple[int, ...]) -> tuple[float, float, float]:
    """Worst sample SQNR of the file against the quantized model and against the float model
    (both in onnxruntime), and of the quantized model against the float one."""
    rng = np.random.default_rng(21)
    worst = [float("inf")] * 3
    for scale in (0.5, 1.0, 1.0, 1.0, 2.0, 4.0):
        x = rng.normal(0, scale, shape).astype(np.float32)
        actual = run_litert(tflite, [x])[0]
        quantized, exact = run_onnxruntime(path, {"x": x})[0], run_onnxruntime(float_path, {"x": x})[0]
        for i, (a, b) in enumerate([(quantized, actual), (exact, actual), (exact, quantized)]):
            worst[i] = min(worst[i], sqnr_db(a, b))
    return worst[0], worst[1], worst[2]


def _weight_types(tflite: bytes) -> list[str]:
    """The type of each FULLY_CONNECTED op's weight tensor in the file (LiteRT's tensor details)."""
    interpreter = litert_interpreter(tflite)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    types = []
    for op in interpreter._get_ops_details():
        if op["op_name"] == "FULLY_CONNECTED":
            types.append(np.dtype(details[op["inputs"][1]]["dtype"]).name)
    return types


@pytest.mark.parametrize("kind", ["matmul", "matmul_add", "mlp", "odd_k"])
@pytest.mark.parametrize("fmt", ["nbits", "qdq"])
@pytest.mark.parametrize("block_size,symmetric", [(32, True), (32, False), (128, True), (128, False)])
def test_four_bit_models_convert_to_int8_weights(kind, fmt, block_size, symmetric, tmp_path):
    """MatMulNBits was refused ('quantized by onnxruntime'); the QDQ form wrote float32 weights
    (full mode inferred, every op float: a file 6x its ONNX). Now both are weights-only int8."""
    float_path, shape = _float_model(str(tmp_path / "float.onnx"), kind)
    path = _quantized(float_path, str(tmp_path / "q4.onnx"), fmt, block_size, symmetric)
    result, out = _convert(path, tmp_path)
    assert result.exit_code == 0, result.output
    assert "[mode weights-only, int8]" in result.output and "requantized to per-channel int8" in result.output
    tflite = out.read_bytes()
    vs_quantized, vs_float, four_bit = _worst_sqnr(path, float_path, tflite, shape)
    assert vs_quantized >= FLOOR_VS_QUANTIZED, (vs_quantized, vs_float)
    assert vs_float >= FLOOR_VS_FLOAT, (vs_quantized, vs_float)
    assert vs_float >= four_bit - LOSS_BEYOND_FOUR_BITS, (vs_float, four_bit)
    layers = 2 if kind == "mlp" else 1
    assert _weight_types(tflite) == ["int8"] * layers
    float_bytes = 4 * sum(np.prod(i.dims) for i in onnx.load(float_path).graph.initializer)
    assert len(tflite) < 0.3 * float_bytes + 4096, (len(tflite), float_bytes)


def _nbits_node_model(path: str, bits: int, zero_points: str, bias: bool, k: int = 100, n: int = 24,
                      block_size: int = 32, **extra) -> str:
    """One hand-built MatMulNBits x [3, K] -> [3, N] of random codes: zero points packed uint8,
    float (N x k_blocks) or none (2^(bits - 1)); a bias input or not."""
    rng = np.random.default_rng(bits * 7 + len(zero_points))
    blocks, blob = -(-k // block_size), block_size * bits // 8
    inits = [numpy_helper.from_array(rng.integers(0, 256, (n, blocks, blob), dtype=np.uint8), "B"),
             numpy_helper.from_array(rng.uniform(0.005, 0.02, (n, blocks)).astype(np.float32), "S")]
    inputs = ["x", "B", "S", ""]
    if zero_points == "packed":
        zp = rng.integers(0, 256, (n, -(-blocks * bits // 8)), dtype=np.uint8)
        inits.append(numpy_helper.from_array(zp, "Z"))
        inputs[3] = "Z"
    elif zero_points == "float":
        inits.append(numpy_helper.from_array(rng.uniform(0, 2 ** bits, (n, blocks)).astype(np.float32), "Z"))
        inputs[3] = "Z"
    if bias:
        inits.append(numpy_helper.from_array(rng.normal(0, 0.5, n).astype(np.float32), "bias"))
        inputs += ["", "bias"]
    attrs = dict(K=k, N=n, bits=bits, block_size=block_size, **extra)
    node = helper.make_node("MatMulNBits", inputs, ["y"], domain="com.microsoft", name="nbits", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("bits,zero_points", [(2, "none"), (2, "packed"), (2, "float"), (4, "none"),
                                              (4, "packed"), (4, "float"), (8, "none"), (8, "packed")])
@pytest.mark.parametrize("bias", [False, True])
def test_matmul_nbits_reads_what_onnxruntime_computes(bits, zero_points, bias, tmp_path):
    """The packing, zero points (packed like B, float, or the default 2^(bits - 1)) and bias of
    the contrib op, against onnxruntime running the node: the float file (--mode float) is the
    exact weight, the weights-only file its int8 requantization. (onnxruntime's CPU kernel has
    no 8-bit weights with float zero points.)"""
    path = _nbits_node_model(str(tmp_path / "nbits.onnx"), bits, zero_points, bias)
    rng = np.random.default_rng(3)
    for mode, floor in (("float", 100.0), ("weights-only", 36.0)):
        result, out = _convert(path, tmp_path, "--mode", mode)
        assert result.exit_code == 0, result.output
        worst = float("inf")
        for _ in range(4):
            x = rng.normal(size=(3, 100)).astype(np.float32)
            expected = run_onnxruntime(path, {"x": x})[0]
            worst = min(worst, sqnr_db(expected, run_litert(out.read_bytes(), [x])[0]))
        assert worst >= floor, (mode, worst)


def _assert_one_line_refusal(result, out, *words: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    for word in ("'nbits'", "MatMulNBits", *words):
        assert word in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("change,words", [
    ("g_idx", ["g_idx"]),
    ("bits3", ["3-bit"]),
    ("prepacked", ["weight_prepacked"]),
    ("B_not_constant", ["'B'", "not an initializer"]),
    ("B_shape", ["B must be uint8 [24, 4, 16]"]),
])
def test_unsupported_matmul_nbits_is_refused_naming_the_node(change, words, tmp_path):
    path = _nbits_node_model(str(tmp_path / "nbits.onnx"), 4, "packed", False,
                             **({"weight_prepacked": 1} if change == "prepacked" else {}))
    model = onnx.load(path)
    node, graph = model.graph.node[0], model.graph
    if change == "g_idx":
        graph.initializer.append(numpy_helper.from_array((np.arange(100) // 32).astype(np.int32), "G"))
        node.input.append("G")
    elif change == "bits3":
        next(a for a in node.attribute if a.name == "bits").i = 3
    elif change == "B_not_constant":
        b = next(i for i in graph.initializer if i.name == "B")
        graph.input.append(helper.make_tensor_value_info("B", TensorProto.UINT8, list(b.dims)))
        graph.initializer.remove(b)
    elif change == "B_shape":
        b = next(i for i in graph.initializer if i.name == "B")
        b.CopyFrom(numpy_helper.from_array(np.zeros((24, 4, 8), np.uint8), "B"))
    onnx.save(model, path)
    result, out = _convert(path, tmp_path)
    _assert_one_line_refusal(result, out, *words)


def test_four_bit_file_is_a_fraction_of_the_float_one(tmp_path):
    """The 2-layer MLP (256 -> 96 -> 40), blocks of 32: the sizes the README quotes."""
    float_path, _ = _float_model(str(tmp_path / "float.onnx"), "mlp")
    sizes = {}
    for fmt in ("nbits", "qdq"):
        path = _quantized(float_path, str(tmp_path / f"{fmt}.onnx"), fmt, 32, False)
        result, out = _convert(path, tmp_path)
        assert result.exit_code == 0, result.output
        sizes[fmt] = (os.path.getsize(path), len(out.read_bytes()))
    result, out = _convert(float_path, tmp_path)
    assert result.exit_code == 0, result.output
    float_file = len(out.read_bytes())
    for onnx_bytes, tflite_bytes in sizes.values():
        assert tflite_bytes < float_file / 3.5, (sizes, float_file)
        assert tflite_bytes < 2.2 * onnx_bytes, (sizes, float_file)


def test_blocked_weights_alone_infer_weights_only_int8():
    """A model whose only quantization is blocked weights (no QuantizeLinear, no 8-bit constant)
    was inferred --mode full, with nothing to quantize; its weights want per-channel int8."""
    from tflq.config import ConvertConfig, Mode
    from tflq.ir.dtypes import DType
    from tflq.ir.qdq import BlockedConstant, QdqModel
    from tflq.mode import resolve_mode

    qdq = QdqModel(0, blocked={"w": BlockedConstant("MatMulNBits", "mm", 4, 32, 4096)})
    config, note = resolve_mode(ConvertConfig(model="m.onnx"), qdq)
    assert (config.mode, config.dtype, config.only_graph_weights) == (Mode.WEIGHTS_ONLY, DType.INT8, True)
    assert "1 MatMulNBits nodes" in note and "requantized to per-channel int8" in note


def _blocked_gemm(path: str) -> str:
    """Gemm (transB=1) by a [24, 96] int4 weight in blocks of 32 along K (axis 1), with a bias:
    the QDQ form of a 4-bit Linear that onnxruntime's quantizer does not write (it quantizes
    MatMul only), hand-built."""
    rng = np.random.default_rng(17)
    n, k, size = 24, 96, 32
    inits = [helper.make_tensor("wq", TensorProto.INT4, [n, k], rng.integers(-8, 8, (n, k)).ravel().tolist()),
             numpy_helper.from_array(rng.uniform(0.01, 0.05, (n, k // size)).astype(np.float32), "ws"),
             numpy_helper.from_array(rng.normal(size=n).astype(np.float32), "b")]
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], axis=1, block_size=size, name="dq"),
             helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, name="gemm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


def test_blocked_gemm_weight_is_stored_in_int8(tmp_path):
    """The weight reaches FULLY_CONNECTED through Gemm's transposed operand: it is found by its
    reader's ONNX inputs all the same (measured 42.6 dB worst; was a float32 weight)."""
    path = _blocked_gemm(str(tmp_path / "gemm.onnx"))
    result, out = _convert(path, tmp_path)
    assert result.exit_code == 0, result.output
    assert "[mode weights-only, int8]" in result.output
    tflite = out.read_bytes()
    assert _weight_types(tflite) == ["int8"]
    rng = np.random.default_rng(4)
    worst = min(sqnr_db(run_onnxruntime(path, {"x": x})[0], run_litert(tflite, [x])[0])
                for x in (rng.normal(0, s, (2, 96)).astype(np.float32) for s in (0.5, 1.0, 3.0)))
    assert worst >= 36.0, worst


def test_full_mode_with_calibration_quantizes_a_matmul_nbits_model(tmp_path):
    """--mode full --calib on a MatMulNBits model: the activations get calibrated grids, the
    weights tflq's int8 grid (a note names their blocks); every FULLY_CONNECTED runs in int8.
    Worst sample against onnxruntime on the 4-bit model."""
    float_path, shape = _float_model(str(tmp_path / "float.onnx"), "mlp")
    path = _quantized(float_path, str(tmp_path / "q4.onnx"), "nbits", 32, False)
    rng = np.random.default_rng(8)
    calib = tmp_path / "calib.npz"
    scales = np.repeat([0.5, 1.0, 2.0, 4.0], 4).reshape(16, *[1] * len(shape))  # (as _worst_sqnr's)
    np.savez(calib, x=(rng.normal(size=(16, *shape)) * scales).astype(np.float32))
    result, out = _convert(path, tmp_path, "--mode", "full", "--calib", str(calib), "--dtype", "int8")
    assert result.exit_code == 0, result.output
    assert "4-bit blocks of 32" in result.output, result.output
    interpreter = litert_interpreter(out.read_bytes())
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    fully_connected = [op for op in interpreter._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]
    assert len(fully_connected) == 2
    assert all(np.dtype(details[op["inputs"][0]]["dtype"]) == np.int8 for op in fully_connected)
    vs_quantized, _, _ = _worst_sqnr(path, float_path, out.read_bytes(), shape)
    # (measured 21.3 dB: the 0.5-scale samples use an eighth of the calibrated grids)
    assert vs_quantized >= 18.0, vs_quantized
