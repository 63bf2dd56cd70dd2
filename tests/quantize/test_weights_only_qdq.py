"""QDQ models that quantize only their weights (DequantizeLinear of integer initializers, no
activation grid: weight-compressed exports) convert to weights-only files that store the graph's
own integers: the mode is inferred, the file holds the very integers and scales the ONNX file
holds (read back through LiteRT), and its outputs match onnxruntime running the QDQ model.

Before, such a model was taken for a full-integer one: every activation lacked a grid, so every
op stayed float and the weights were written dequantized, in float32 (a file 4x the ONNX one)."""
from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import litert_constants, run_litert, run_onnxruntime, save_model
from tests.quantize.qdq_graphs import QdqBuilder
from tflq.cli import main
from tflq.ir.quant import sqnr_db

SAMPLES = 6


def _conv_mlp(dtype=np.int8, conv_axis: int | None = 0, depthwise: bool = False, batchnorm: bool = False):
    """Conv (weights per channel or per tensor) [+ BatchNormalization] + Relu + Flatten + MatMul
    (per tensor) + Add. Returns the model and {ONNX weight name: (integers, scales, zero points,
    output-channel axis in ONNX)}."""
    b = QdqBuilder(seed=5)
    channels = 6
    shape = (channels, 1, 3, 3) if depthwise else (channels, 3, 3, 3)
    x = "x"
    if depthwise:
        x = b.node("Conv", [x, b.const("lift", b.rng.uniform(-1, 1, (channels, 3, 1, 1)).astype(np.float32))])
    conv_w, cq, cs, cz = b.weight(shape, axis=conv_axis, dtype=dtype)
    conv = b.node("Conv", [x, conv_w, b.const("b", b.rng.uniform(-0.2, 0.2, channels).astype(np.float32))],
                  pads=[1, 1, 1, 1], group=channels if depthwise else 1)
    if batchnorm:
        conv = b.node("BatchNormalization", [
            conv, b.const("gamma", b.rng.uniform(0.5, 2, channels).astype(np.float32)),
            b.const("beta", b.rng.uniform(-0.3, 0.3, channels).astype(np.float32)),
            b.const("mean", b.rng.uniform(-0.3, 0.3, channels).astype(np.float32)),
            b.const("var", b.rng.uniform(0.5, 1.5, channels).astype(np.float32))])
    flat = b.node("Flatten", [b.node("Relu", [conv])])
    fc_w, fq, fs, fz = b.weight((channels * 8 * 8, 10), axis=None, dtype=dtype)
    y = b.node("Add", [b.node("MatMul", [flat, fc_w]),
                       b.const("fb", b.rng.uniform(-0.1, 0.1, 10).astype(np.float32))])
    model = b.model({"x": (1, 3, 8, 8)}, [y])
    return model, {"conv": (cq, cs, cz, 0), "fc": (fq, fs, fz, 1)}


def _feeds(shape=(1, 3, 8, 8)):
    rng = np.random.default_rng(11)
    return [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(SAMPLES)]


def _convert(path: str, tmp_path, *args: str):
    out = tmp_path / "out.tflite"
    result = CliRunner().invoke(main, ["convert", path, "-o", str(out), *args])
    return result, out


def _worst_db(model, tflite: bytes, feeds, name: str = "x") -> float:
    return min(sqnr_db(run_onnxruntime(model, {name: x})[0], run_litert(tflite, [x])[0]) for x in feeds)


def _per_channel_multisets(values: np.ndarray, axis: int) -> list[list[int]]:
    moved = np.moveaxis(values.astype(np.int64), axis, 0).reshape(values.shape[axis], -1)
    return [sorted(row.tolist()) for row in moved]


def _holds(stored: dict, integers: np.ndarray, scales, zero_points, onnx_axis: int,
           file_axis: int = 0) -> bool:
    """The file's tensor holds the graph's integers (each output channel's, in whatever order the
    layout change put them) on the graph's scales, shifted by the zero point to symmetric int8."""
    shift = 128 if integers.dtype == np.uint8 and stored["values"].dtype == np.int8 else 0
    graph = _per_channel_multisets(integers.astype(np.int64) - shift, onnx_axis)
    ours = _per_channel_multisets(stored["values"], file_axis)
    if graph != ours:
        return False
    scales = np.broadcast_to(np.asarray(scales, np.float32), (len(graph),))
    file_scales = np.broadcast_to(np.asarray(stored["scales"], np.float32), (len(graph),))
    return bool(np.array_equal(scales, file_scales))


@pytest.mark.parametrize("conv_axis", [0, None], ids=["per_channel", "per_tensor"])
def test_int8_weights_are_the_graph_integers_in_a_file_a_quarter_the_float_size(conv_axis, tmp_path):
    model, weights = _conv_mlp(conv_axis=conv_axis)
    path = save_model(model, tmp_path / "wo.onnx")
    result, out = _convert(path, tmp_path)
    assert result.exit_code == 0, result.output
    assert "mode weights-only, int8" in result.output and "--mode weights-only inferred" in result.output
    assert "the graph's, SQNR inf dB" in result.output
    tflite = out.read_bytes()
    stored = litert_constants(tflite)
    conv = next(s for s in stored if s["values"].ndim == 4)
    fc = next(s for s in stored if s["values"].ndim == 2)
    assert _holds(conv, *weights["conv"]) and _holds(fc, *weights["fc"])
    assert all(s["values"].dtype == np.int8 and not np.any(s["zero_points"]) for s in (conv, fc))
    # 8-bit weights: the file is about the ONNX file's size (float32 weights made it 3.6x)
    assert len(tflite) < 1.3 * os.path.getsize(path), (len(tflite), os.path.getsize(path))
    # int8: the hybrid kernels read the weights as they are and quantize the input per sample
    assert _worst_db(model, tflite, _feeds()) >= 30.0


def test_uint8_weights_keep_their_grid_and_compute_what_onnxruntime_computes(tmp_path):
    """Asymmetric per-tensor uint8 weights: the classic scheme; a DEQUANTIZE with the graph's own
    grid (any zero point) gives back the same float values, so the file computes what the graph
    does to float rounding."""
    model, weights = _conv_mlp(dtype=np.uint8)
    path = save_model(model, tmp_path / "wo.onnx")
    result, out = _convert(path, tmp_path)
    assert result.exit_code == 0, result.output
    assert "mode weights-only, uint8" in result.output
    tflite = out.read_bytes()
    stored = litert_constants(tflite)
    assert len(stored) == 2
    for s in stored:
        name = "conv" if s["values"].ndim == 4 else "fc"
        integers, scale, zero_point, axis = weights[name]
        if s["values"].dtype == np.int8:  # (zero point 128: symmetric int8, the same values)
            assert int(zero_point) == 128 and not np.any(s["zero_points"])
        else:
            assert list(s["zero_points"]) == [int(zero_point)]
        assert _holds(s, integers, scale, zero_point, axis)
    assert _worst_db(model, tflite, _feeds()) >= 90.0


@pytest.mark.parametrize("conv_axis", [0, None], ids=["per_channel", "per_tensor"])
def test_depthwise_weights_are_dequantized_from_the_graph_integers(conv_axis, tmp_path):
    """Depthwise convs read their int8 weights through a DEQUANTIZE (LiteRT's hybrid depthwise
    kernel is slower than XNNPACK's float one), on the graph's per-channel or per-tensor grid."""
    model, weights = _conv_mlp(conv_axis=conv_axis, depthwise=True)
    path = save_model(model, tmp_path / "wo.onnx")
    result, out = _convert(path, tmp_path)
    assert result.exit_code == 0, result.output
    tflite = out.read_bytes()
    depthwise = [s for s in litert_constants(tflite) if s["values"].ndim == 4 and s["values"].shape[0] == 1]
    assert len(depthwise) == 1
    integers, scales, zero_points, _ = weights["conv"]
    assert _holds(depthwise[0], integers, scales, zero_points, 0, file_axis=3)  # (1, H, W, C)
    assert len(depthwise[0]["scales"]) == (integers.shape[0] if conv_axis is not None else 1)
    assert _worst_db(model, tflite, _feeds()) >= 30.0


def test_a_batchnorm_folded_into_per_channel_weights_keeps_their_integers(tmp_path):
    """The folded BatchNorm scales each output channel: the same integers on scaled scales."""
    model, weights = _conv_mlp(batchnorm=True)
    path = save_model(model, tmp_path / "wo.onnx")
    result, out = _convert(path, tmp_path)
    assert result.exit_code == 0, result.output
    tflite = out.read_bytes()
    conv = next(s for s in litert_constants(tflite) if s["values"].ndim == 4)
    integers = weights["conv"][0]
    assert _per_channel_multisets(integers, 0) == _per_channel_multisets(conv["values"], 0)
    assert _worst_db(model, tflite, _feeds()) >= 30.0


def _embedding_model():
    """Gather from a table quantized per row (DequantizeLinear axis 0), then MatMul."""
    b = QdqBuilder(seed=7)
    table, tq, ts, tz = b.weight((50, 16), axis=0)
    rows = b.node("Gather", [table, "ids"], axis=0)
    proj, pq, ps, pz = b.weight((16, 8), axis=1)
    model = b.model({}, [b.node("MatMul", [rows, proj])])
    from onnx import TensorProto, helper
    model.graph.input.append(helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5]))
    return model, (tq, ts, tz), (pq, ps, pz)


def test_a_gather_table_quantized_per_row_is_dequantized_from_its_integers(tmp_path):
    model, (tq, ts, tz), (pq, ps, pz) = _embedding_model()
    path = save_model(model, tmp_path / "wo.onnx")
    result, out = _convert(path, tmp_path, "--min-weight-elements", "1000000")  # (graph's kept anyway)
    assert result.exit_code == 0, result.output
    tflite = out.read_bytes()
    stored = {s["values"].shape: s for s in litert_constants(tflite)}
    assert _holds(stored[(50, 16)], tq, ts, tz, 0)
    assert _holds(stored[(8, 16)], pq, ps, pz, 1)
    ids = np.random.default_rng(2).integers(0, 50, (SAMPLES, 1, 5))
    worst = min(sqnr_db(run_onnxruntime(model, {"ids": i})[0], run_litert(tflite, [i.astype(np.int64)])[0])
                for i in ids)
    assert worst >= 30.0


def _partly_quantized():
    """A Conv whose weights the graph quantizes, and a MatMul whose weights it keeps float."""
    b = QdqBuilder(seed=9)
    conv_w, cq, _, _ = b.weight((8, 3, 3, 3))
    conv = b.node("Conv", ["x", conv_w], pads=[1, 1, 1, 1])
    fc = b.const("fc", b.rng.uniform(-0.5, 0.5, (8 * 8 * 8, 10)).astype(np.float32))
    return b.model({"x": (1, 3, 8, 8)}, [b.node("MatMul", [b.node("Flatten", [conv]), fc])]), cq


def test_weights_the_graph_keeps_float_stay_float_unless_weights_only_is_asked(tmp_path):
    model, cq = _partly_quantized()
    path = save_model(model, tmp_path / "wo.onnx")
    result, out = _convert(path, tmp_path)
    assert result.exit_code == 0, result.output
    stored = litert_constants(out.read_bytes())
    assert [s["values"].shape for s in stored] == [(8, 3, 3, 3)]
    assert _per_channel_multisets(cq, 0) == _per_channel_multisets(stored[0]["values"], 0)
    asked, out = _convert(path, tmp_path, "--mode", "weights-only", "--dtype", "int8")
    assert asked.exit_code == 0, asked.output
    stored = litert_constants(out.read_bytes())
    assert sorted(s["values"].shape for s in stored) == [(8, 3, 3, 3), (10, 512)]
    conv = next(s for s in stored if s["values"].ndim == 4)
    assert _per_channel_multisets(cq, 0) == _per_channel_multisets(conv["values"], 0)
    assert _worst_db(model, out.read_bytes(), _feeds()) >= 30.0


def test_full_mode_needs_calibration_data_for_a_weights_only_qdq_model(tmp_path):
    model, _ = _conv_mlp()
    path = save_model(model, tmp_path / "wo.onnx")
    result, out = _convert(path, tmp_path, "--mode", "full")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "quantizes only its weights" in lines[0] and "--calib" in lines[0]
    assert "Traceback" not in result.output and not out.exists()
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, x in enumerate(_feeds()):
        np.save(calib / f"{i}.npy", x)
    result, out = _convert(path, tmp_path, "--mode", "full", "--calib", str(calib))
    assert result.exit_code == 0, result.output
    assert "left float: 0" in result.output
    assert _worst_db(model, out.read_bytes(), _feeds()) >= 20.0
