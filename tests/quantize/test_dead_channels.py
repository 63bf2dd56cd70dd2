"""Weights that read a channel the quantized graph holds at exactly 0 are zeroed (quantize/dead_channels.py):
a BatchNorm folded over a dead ReLU6 channel made bench MobileNetV2's first depthwise weight 1055 next to
weights below 2.6, and its per-tensor uint8 grid rounded every other channel away."""
from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from tests.conftest import run_onnxruntime, save_graph, worst_sqnr_db
from tflq.config import ConvertConfig
from tflq.pipeline import convert

C, DEAD = 8, 5


def _model(path, stem_bias: float):
    """conv 1x1 + ReLU6 -> depthwise 3x3 + ReLU6 -> conv 1x1: stem channel DEAD has weights 1e-3 and
    bias `stem_bias`; the depthwise weights of that channel are 1000x the others (a folded BN with
    running variance 0 makes them so)."""
    rng = np.random.default_rng(7)
    w1 = rng.normal(0, 0.5, (C, 3, 1, 1)).astype(np.float32)
    b1 = rng.normal(0.5, 0.2, C).astype(np.float32)
    w1[DEAD], b1[DEAD] = 1e-3, stem_bias
    wd = rng.normal(0, 0.5, (C, 1, 3, 3)).astype(np.float32)
    wd[DEAD] *= 2000
    bd = rng.normal(0, 0.1, C).astype(np.float32)
    w2 = rng.normal(0, 0.4, (4, C, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(v, n) for n, v in
             dict(w1=w1, b1=b1, wd=wd, bd=bd, w2=w2, lo=np.float32(0), hi=np.float32(6)).items()]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="stem"),
             helper.make_node("Clip", ["a", "lo", "hi"], ["ar"], name="stem_relu6"),
             helper.make_node("Conv", ["ar", "wd", "bd"], ["d"], group=C, pads=[1, 1, 1, 1], name="dw"),
             helper.make_node("Clip", ["d", "lo", "hi"], ["dr"], name="dw_relu6"),
             helper.make_node("Conv", ["dr", "w2"], ["y"], name="project")]
    return save_graph(path, nodes, {"x": [1, 3, 12, 12]}, "y", inits, opset=13)


def _samples(seed: int, n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.uniform(-2, 2, (1, 3, 12, 12)).astype(np.float32)} for _ in range(n)]


def test_uint8_relu6_net_with_a_dead_depthwise_channel(tmp_path):
    path = _model(tmp_path / "m.onnx", stem_bias=-2.0)
    out = tmp_path / "m.tflite"
    report = convert(ConvertConfig(model=path, output=str(out), mode="full", calib=_samples(0, 16)))
    assert any("'dw'" in note and f"[{DEAD}]" in note for note in report.notes), report.notes
    # before: 0.0 dB worst (the dead channel's 1000x weight set the grid step); now 29.2, int8
    # per-channel 29.6
    assert worst_sqnr_db(path, out.read_bytes(), _samples(1, 8)) > 26


def test_the_zeroed_channel_is_zero_on_every_input_of_the_grid(tmp_path):
    """The proof's premise, against onnxruntime: on the corners of the input grid (every value at
    either calibrated extreme) the stem's channel is exactly 0 after its ReLU6, so the float function
    on any input the quantized model can take is unchanged by zeroing the weights that read it."""
    path = _model(tmp_path / "m.onnx", stem_bias=-2.0)
    import onnx
    model = onnx.load(path)
    model.graph.output.append(helper.make_tensor_value_info("ar", onnx.TensorProto.FLOAT, None))
    rng = np.random.default_rng(3)
    for _ in range(8):
        x = np.where(rng.random((1, 3, 12, 12)) < 0.5, -2.0, 2.0).astype(np.float32)
        assert not np.any(run_onnxruntime(model, {"x": x})[1][0, DEAD])


def test_a_channel_dead_only_on_the_calibration_data_is_kept(tmp_path):
    """Bias -0.001: the channel is positive for inputs the grid holds, so nothing may be zeroed and
    the file still matches onnxruntime on inputs that open the channel."""
    path = _model(tmp_path / "m.onnx", stem_bias=-0.001)
    calib = [{"x": -np.abs(s["x"])} for s in _samples(0, 16)]  # all-negative inputs: closed there
    report = convert(ConvertConfig(model=path, output=str(tmp_path / "m.tflite"), mode="full", calib=calib))
    assert not any("set to 0" in note for note in report.notes), report.notes
