"""Resize mode 'cubic' (torch's bicubic F.interpolate) as two constant matrix products
(tflq.ops.resize_cubic) against onnxruntime: five coordinate_transformation_modes, cubic_coeff_a,
exclude_outside, up and down, scales and sizes, a batch of 2, in float, int8 and uint8; no TRANSPOSE
left in the file. (onnxruntime has no cubic Resize of a 3-D input to compare a 1-D one with.)"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import save_model, worst_sqnr_db
from tflq.config import ConvertConfig
from tflq.pipeline import convert

MODES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric"]
SIZES = [((5, 7), (10, 14)), ((8, 8), (5, 3)), ((4, 6), (9, 13)), ((6, 5), (1, 2))]


def _model(path, shape, out_hw, mode, a=-0.75, exclude=0, scales=None, conv=True):
    rng = np.random.default_rng(1)
    c = shape[1]
    inits = [numpy_helper.from_array(np.zeros(0, np.float32), "roi")]
    if scales is not None:
        inits.append(numpy_helper.from_array(np.array([1, 1, *scales], np.float32), "scales"))
        ins = ["c", "roi", "scales"]
    else:
        inits += [numpy_helper.from_array(np.zeros(0, np.float32), "scales"),
                  numpy_helper.from_array(np.array([shape[0], c, *out_hw], np.int64), "sizes")]
        ins = ["c", "roi", "scales", "sizes"]
    nodes = [helper.make_node("Resize", ins, ["r"], mode="cubic", coordinate_transformation_mode=mode,
                              cubic_coeff_a=a, exclude_outside=exclude)]
    if conv:  # a conv each side: the resize sits between NHWC ops, as in a network
        inits += [numpy_helper.from_array((rng.standard_normal((c, c, 3, 3)) * 0.3).astype(np.float32), "w1"),
                  numpy_helper.from_array((rng.standard_normal((c, c, 1, 1)) * 0.3).astype(np.float32), "w2")]
        nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1])] + nodes + \
                [helper.make_node("Conv", ["r", "w2"], ["y"])]
    else:
        nodes[0].input[0] = "x"
        nodes[0].output[0] = "y"
    graph = helper.make_graph(nodes, "cubic", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    return save_model(model, path)


def _samples(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("a,exclude", [(-0.75, 0), (-0.5, 1)])
def test_cubic_resize_matches_onnxruntime(mode, a, exclude, tmp_path):
    for i, (hw, out) in enumerate(SIZES):
        shape = (1, 3, *hw)
        path = _model(tmp_path / f"m{i}.onnx", shape, out, mode, a, exclude, conv=i % 2 == 0)
        report = convert(ConvertConfig(model=path))
        assert "TRANSPOSE" not in report.op_counts, report.op_counts
        assert worst_sqnr_db(path, report.tflite, _samples(shape, 2)) > 100, (hw, out)


def test_cubic_resize_by_scales_and_batch(tmp_path):
    path = _model(tmp_path / "m.onnx", (2, 4, 6, 5), None, "half_pixel", scales=[2.0, 3.0])
    report = convert(ConvertConfig(model=path))
    assert worst_sqnr_db(path, report.tflite, _samples((2, 4, 6, 5), 2)) > 100


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_cubic_resize_quantized(dtype, tmp_path):
    shape = (1, 4, 8, 8)
    path = _model(tmp_path / "m.onnx", shape, (16, 16), "pytorch_half_pixel")
    report = convert(ConvertConfig(model=path, mode="full", dtype=dtype, calib=_samples(shape, 16, seed=5)))
    assert worst_sqnr_db(path, report.tflite, _samples(shape, 3)) > 25
    if dtype == "int8":
        assert "BATCH_MATMUL" not in {f.kind for f in report.float_ops}

