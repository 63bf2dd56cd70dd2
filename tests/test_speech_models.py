"""Speech/audio models and torchvision's CNNs as torch.onnx.export writes them, end to end.

The models are exported once by tests/speech_models/export.py (random weights, BatchNorm
statistics that are not the identity, a few channels). Per model, against onnxruntime on the worst
of SAMPLES random inputs: float within FLOAT_SQNR; weights-only uint8 and int8 and full uint8 and
int8 files load and run in LiteRT, and the quantized ones stay above a floor (the measured values,
recorded as properties, are well above it). Rank-3 [N, C, W] inputs and outputs of 1-D conv stacks
are NWC in the file, as the summary notes say. Structure where it is the point: torch's
LocalResponseNorm becomes one LOCAL_RESPONSE_NORMALIZATION (odd size, 4-D) or a 1x1 CONV_2D window
(even size, 1-D), never the 5-D AveragePool it exports.
Fully int8 CNNs also run in TFLite Micro, within a step of LiteRT.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from tests._families import feeds
from tests._families import worst_db as _worst
from tests.conftest import litert_interpreter, run_onnxruntime
from tests.test_tflite_micro import assert_micro_matches_litert
from tflq.config import ConvertConfig
from tflq.ir.dtypes import DType
from tflq.pipeline import convert

HERE = os.path.join(os.path.dirname(__file__), "speech_models")
SAMPLES = 4
CALIB = 8
FLOAT_SQNR = 80.0
WEIGHTS_SQNR_FLOOR = 25.0
FULL_SQNR_FLOOR = 14.0

MODELS = sorted(f[:-5] for f in os.listdir(HERE) if f.endswith(".onnx"))
# What each file must (not) hold: op kind -> count (TRANSPOSE: at most), None = absent.
STRUCTURE = {
    "lrn_size5": {"LOCAL_RESPONSE_NORMALIZATION": 1, "AVERAGE_POOL_2D": None, "TRANSPOSE": None},
    "lrn_size5_dynamo": {"LOCAL_RESPONSE_NORMALIZATION": 1, "AVERAGE_POOL_2D": None, "TRANSPOSE": None},
    # torch's even window reaches size // 2 channels below, LRN's one fewer: a 1x1 window conv
    "lrn_size4": {"CONV_2D": 3, "LOCAL_RESPONSE_NORMALIZATION": None, "TRANSPOSE": None},
    "lrn_1d": {"CONV_2D": 3, "AVERAGE_POOL_2D": None, "TRANSPOSE": None},
    # each block's channel shuffle runs in NCHW between TRANSPOSEs; a channels-last form (one 5-D
    # TRANSPOSE of [N, H, W, g, C/g] a block) ran 1.1-1.2x slower in LiteRT int8, so not that
    "shufflenet_v2": {"TRANSPOSE": 13},
    "shufflenet_v2_ts": {"TRANSPOSE": 13},
    # 2 attention blocks x (Q, K, V head splits and the merge); the decoder has cross-attention too
    "whisper_encoder": {"TRANSPOSE": 8, "SOFTMAX": 2},
    "whisper_decoder": {"TRANSPOSE": 16, "SOFTMAX": 4},
    "wav2vec2": {"TRANSPOSE": 8}, "hubert": {"TRANSPOSE": 8},
    "tcn": {"TRANSPOSE": None}, "conv_mel": {"TRANSPOSE": None}, "ds_cnn": {"TRANSPOSE": None},
}
# (MobileNetV3's and LRASPP's hardsigmoid, a RELU_0_TO_1 TFLM has no kernel for, runs as a RELU)
MICRO = [name for name in ("ds_cnn", "shufflenet_v2", "efficientnet", "googlenet", "squeezenet",
                         "densenet", "mobilenet_v3", "lraspp") if name in MODELS]


def _feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    return feeds(model, seed, first_id=0)


@pytest.mark.parametrize("name", MODELS)
def test_model(name, record_property):
    path = os.path.join(HERE, f"{name}.onnx")
    model = onnx.load(path)
    samples = [_feeds(model, seed) for seed in range(SAMPLES)]
    expected = [run_onnxruntime(path, feeds) for feeds in samples]
    calib = [_feeds(model, 100 + seed) for seed in range(CALIB)]
    report = convert(ConvertConfig(model=path))
    for kind, count in STRUCTURE.get(name, {}).items():
        found = report.op_counts.get(kind)
        if kind == "TRANSPOSE" and count is not None:  # at most: fewer is a better layout
            assert (found or 0) <= count, (kind, report.op_counts)
        else:
            assert found == count, (kind, report.op_counts)
    worst = _worst(path, report, samples, expected)
    record_property("float_worst_db", round(worst, 1))
    assert worst >= FLOAT_SQNR, f"float: worst sample {worst:.1f} dB"
    for label, config, floor in (
            ("weights_uint8", dict(mode="weights-only", dtype=DType.UINT8, min_weight_elements=256), WEIGHTS_SQNR_FLOOR),
            ("weights_int8", dict(mode="weights-only", dtype=DType.INT8, min_weight_elements=256), WEIGHTS_SQNR_FLOOR),
            ("full_uint8", dict(mode="full", dtype=DType.UINT8, calib=calib), FULL_SQNR_FLOOR),
            ("full_int8", dict(mode="full", dtype=DType.INT8, calib=calib), FULL_SQNR_FLOOR)):
        quantized = convert(ConvertConfig(model=path, **config))
        worst = _worst(path, quantized, samples, expected)
        record_property(f"{label}_worst_db", round(worst, 1))
        assert worst >= floor, f"{label}: worst sample {worst:.1f} dB"


@pytest.mark.parametrize("name", MICRO)
def test_int8_cnn_runs_in_micro(name):
    import tflq

    path = os.path.join(HERE, f"{name}.onnx")
    model = onnx.load(path)
    calib = [_feeds(model, 100 + seed) for seed in range(CALIB)]
    report = tflq.convert(path, mode="full", dtype="int8", io_type="int8", calib=calib, target="tflm")
    assert report.float_ops == [], report.float_ops
    assert_micro_matches_litert(report.tflite, [list(_feeds(model, seed).values()) for seed in range(SAMPLES)])


def test_hardsigmoid_runs_as_relu_in_micro(tmp_path):
    """TFLite Micro has no RELU_0_TO_1 (ONNX HardSigmoid): its 8-bit clamp to [0, 1] runs as a
    RELU on the same output grid, which gives the very integers LiteRT's RELU_0_TO_1 gives."""
    import tflq
    from onnx import TensorProto, helper, numpy_helper

    from tflq.backend.tflite_reader import read_tflite

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(0, 0.6, (8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("HardSigmoid", ["c"], ["h"], alpha=1 / 6, beta=0.5),
             helper.make_node("Conv", ["h", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "hardsigmoid", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = str(tmp_path / "hardsigmoid.onnx")
    onnx.save(model, path)
    calib = [{"x": rng.normal(0, 2, (1, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
    files = {target: tflq.convert(path, mode="full", dtype="int8", io_type="int8", calib=calib,
                                  target=target).tflite for target in ("tflm", "litert")}
    assert "RELU_0_TO_1" in read_tflite(files["litert"]).op_kinds()
    assert "RELU" in read_tflite(files["tflm"]).op_kinds() and \
        "RELU_0_TO_1" not in read_tflite(files["tflm"]).op_kinds()
    samples = [[rng.normal(0, 2, (1, 3, 8, 8)).astype(np.float32)] for _ in range(4)]
    outputs = {}
    for target, tflite in files.items():
        interpreter = litert_interpreter(tflite, reference_kernels=True)
        detail, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        scale, zero = detail["quantization"]
        outputs[target] = []
        for (x,) in samples:
            q = np.clip(np.round(x.transpose(0, 2, 3, 1) / scale) + zero, -128, 127).astype(np.int8)
            interpreter.set_tensor(detail["index"], q)
            interpreter.invoke()
            outputs[target].append(interpreter.get_tensor(out["index"]).copy())
    np.testing.assert_array_equal(np.stack(outputs["tflm"]), np.stack(outputs["litert"]))
    assert_micro_matches_litert(files["tflm"], samples)
