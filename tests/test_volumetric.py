"""The video / volumetric family: 5-D [N, C, D, H, W] models end to end, against onnxruntime on the
worst of several inputs.

tests/volume_models/export.py exports the committed models from torch with both exporters: a clip
classifier (R(2+1)D / R3D / X3D-style: Conv3d + BatchNorm3d + ReLU, a spatial max pool, (2+1)-D
and strided residual blocks, a depthwise 3x3x3 conv, global pool, Linear) and a 3-D U-Net
(BatchNorm3d and InstanceNorm3d, MaxPool3d, ConvTranspose3d(2, 2), trilinear Upsample, skip
concatenations). A 5-D input or output of such a model is NDHWC in the file (as a 4-D one is NHWC)
and the layout changes leave no TRANSPOSE behind; 3-D convolutions are CONV_2D over depth-stacked
channels (tflq/ops/conv3d.py), 3-D pools and resizes two 2-D ones (tflq/ops/volume.py). The
single-op cases live with the ops (their registry cases, in float, uint8 and int8).
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import litert_interpreter, run_onnxruntime
from tflq.backend.tflite_reader import read_tflite
from tflq.config import ConvertConfig
from tflq.errors import UnsupportedModelError
from tflq.ir.quant import sqnr_db
from tflq.pipeline import convert

HERE = os.path.join(os.path.dirname(__file__), "volume_models")
SAMPLES = 4
FLOAT_SQNR_DB = 100.0  # measured 124-131 dB
# Full int8, worst of 4 held-out samples (measured over three such sets: video 27.1-29.8 dB on its
# 10 logits, unet 30.3-30.9 dB, both exporters)
INT8_SQNR_DB = {"video": 24.0, "unet": 27.0}
# The U-Net's ConvTranspose3d(2, 2) interleaves its depth taps: one TRANSPOSE of data, not layout
DATA_TRANSPOSES = {"video": 0, "unet": 1}
MODELS = [(family, suffix) for family in ("video", "unet") for suffix in ("", "_ts")]


def _samples(path: str, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    model = onnx.load(path)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    return [{model.graph.input[0].name: rng.standard_normal(shape).astype(np.float32)}
            for _ in range(count)]


def _run(tflite: bytes, value: np.ndarray, channels_last: bool = True) -> np.ndarray:
    """LiteRT on an ONNX-order 5-D input; the output back in ONNX order."""
    interpreter = litert_interpreter(tflite)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    if channels_last:
        value = value.transpose(0, 2, 3, 4, 1)
    if inp["dtype"] != np.float32:
        scale, zero_point = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        value = np.clip(np.round(value / scale) + zero_point, info.min, info.max)
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(value, dtype=inp["dtype"]))
    interpreter.invoke()
    result = interpreter.get_tensor(out["index"])
    if out["dtype"] != np.float32:
        scale, zero_point = out["quantization"]
        result = (result.astype(np.float32) - zero_point) * scale
    return result.transpose(0, 4, 1, 2, 3) if channels_last and result.ndim == 5 else result


def _worst_sqnr(path: str, tflite: bytes, feeds, channels_last: bool = True) -> float:
    return min(sqnr_db(run_onnxruntime(path, feed)[0], _run(tflite, next(iter(feed.values())),
                                                            channels_last)) for feed in feeds)


@pytest.mark.parametrize("family,suffix", MODELS, ids=[f + s for f, s in MODELS])
def test_float_matches_onnxruntime(family, suffix):
    path = os.path.join(HERE, f"{family}{suffix}.onnx")
    report = convert(ConvertConfig(model=path))
    kinds = read_tflite(report.tflite).op_kinds()
    assert kinds.count("TRANSPOSE") == DATA_TRANSPOSES[family], kinds
    # the summary counts the TRANSPOSEs tflq wrote, not the ones the layout change inserted and
    # the cleanup then cancelled against the model's own (the U-Net has 8)
    assert report.transposes_inserted == DATA_TRANSPOSES[family]
    assert "CONV_3D" not in kinds and "CONV_2D" in kinds
    # BatchNorm3d folded into the convolutions (the U-Net's MULs and ADDs are its InstanceNorm)
    assert "MUL" not in kinds if family == "video" else kinds.count("MUL") == 3
    assert any("is NDHWC" in note for note in report.notes), report.notes
    assert _worst_sqnr(path, report.tflite, _samples(path, SAMPLES, 1)) >= FLOAT_SQNR_DB


@pytest.mark.parametrize("family,suffix", MODELS, ids=[f + s for f, s in MODELS])
def test_full_int8_is_integer_and_close(family, suffix):
    path = os.path.join(HERE, f"{family}{suffix}.onnx")
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8",
                                   calib=_samples(path, 8, 2)))
    assert not report.float_ops, [f.kind for f in report.float_ops]
    info = read_tflite(report.tflite)
    assert info.op_kinds().count("TRANSPOSE") == DATA_TRANSPOSES[family]
    assert info.op_kinds().count("DEQUANTIZE") == 1  # the float output only
    assert _worst_sqnr(path, report.tflite, _samples(path, SAMPLES, 3)) >= INT8_SQNR_DB[family]


def test_keep_io_layout_reads_and_writes_ncdhw():
    path = os.path.join(HERE, "unet.onnx")
    report = convert(ConvertConfig(model=path, keep_io_layout=True))
    info = read_tflite(report.tflite)
    assert [info.tensors[i].shape for i in info.inputs + info.outputs] == \
        [[1, 1, 16, 16, 16], [1, 2, 16, 16, 16]]
    # NCDHW in and out: the TRANSPOSEs that costs are the ones counted
    assert report.transposes_inserted == info.op_kinds().count("TRANSPOSE") == 2
    assert _worst_sqnr(path, report.tflite, _samples(path, 2, 4), channels_last=False) >= FLOAT_SQNR_DB


def test_weights_only_video():
    path = os.path.join(HERE, "video.onnx")
    report = convert(ConvertConfig(model=path, mode="weights-only", dtype="int8"))
    assert _worst_sqnr(path, report.tflite, _samples(path, 2, 5)) >= 40.0  # measured 46 dB


def _conv_transpose_model(**attrs) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((2, 3, 3, 2, 2), np.float32), "w")
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          [1, 2, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_overlapping_depth_conv_transpose_is_refused_naming_the_node(tmp_path):
    """Depth windows that overlap (kernel depth 3, stride 2) would need sums of transposed
    convolutions: refused with the node's name rather than converted wrongly."""
    path = str(tmp_path / "m.onnx")
    onnx.save(_conv_transpose_model(strides=[2, 2, 2]), path)
    with pytest.raises(UnsupportedModelError) as err:
        convert(ConvertConfig(model=path))
    (diagnostic,) = err.value.diagnostics
    assert diagnostic.node == "up" and diagnostic.reason_code == "convtranspose_3d"


def test_refusal_inside_a_two_stage_pool_names_the_users_node(tmp_path):
    """A 3-D pool is imported as 2-D pools over (H, W) and over D; what such a stage refuses (here a
    dilated window) is reported against the model's own node, not the stage tflq made of it."""
    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool3d", kernel_shape=[2, 2, 2],
                            dilations=[1, 2, 2])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          [1, 2, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = str(tmp_path / "m.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(UnsupportedModelError) as err:
        convert(ConvertConfig(model=path))
    (diagnostic,) = err.value.diagnostics
    assert (diagnostic.node, diagnostic.op_type, diagnostic.reason_code) == \
        ("pool3d", "MaxPool", "pool_dilation")
    assert "/hw" not in str(err.value)
