"""Pooling, resize, transpose-conv, reduce and layer-norm importers: exactness claims and refusals."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import helper

from tests.conftest import case_model, run_litert, run_onnxruntime, save_model
from tflq.config import ConvertConfig
from tflq.errors import UnsupportedModelError
from tflq.ops.base import Case, rand
from tflq.pipeline import convert

COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                    "tf_half_pixel_for_nn", "half_pixel_symmetric")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
# (H in, H out), (W in, W out): up- and downsampling, integer and fractional ratios, a single row.
SIZE_PAIRS = (((4, 8), (5, 10)), ((4, 12), (3, 9)), ((5, 7), (5, 8)), ((6, 3), (8, 4)),
              ((7, 3), (6, 4)), ((3, 1), (4, 1)), ((5, 16), (7, 13)))
# Combinations that match TFLite for every size: asymmetric+floor is PyTorch's 'nearest'.
ALWAYS_EXACT = {("asymmetric", "floor"), ("half_pixel", "round_prefer_ceil"),
                ("pytorch_half_pixel", "round_prefer_ceil"), ("tf_half_pixel_for_nn", "floor"),
                ("align_corners", "round_prefer_ceil"), ("half_pixel_symmetric", "round_prefer_ceil")}


def _convert(case: Case, tmp_path):
    return convert(ConvertConfig(model=save_model(case_model(case), tmp_path / "m.onnx")))


def _refusal(case: Case, tmp_path) -> str:
    with pytest.raises(UnsupportedModelError) as info:
        _convert(case, tmp_path)
    return info.value.diagnostics[0].reason_code


def _nearest_case(coordinate_mode: str, nearest_mode: str, heights, widths) -> Case:
    (h_in, h_out), (w_in, w_out) = heights, widths
    node = helper.make_node("Resize", ["x", "roi", "scales", "sizes"], ["y"], mode="nearest",
                            coordinate_transformation_mode=coordinate_mode, nearest_mode=nearest_mode)
    consts = {"roi": np.zeros(0, np.float32), "scales": np.zeros(0, np.float32),
              "sizes": np.array([1, 2, h_out, w_out], np.int64)}
    x = np.arange(2 * h_in * w_in, dtype=np.float32).reshape(1, 2, h_in, w_in)
    opset = 12 if coordinate_mode == "tf_half_pixel_for_nn" else 19
    return Case("nearest", [node], {"x": x}, consts, opset=opset)


@pytest.mark.parametrize("coordinate_mode,nearest_mode",
                         list(itertools.product(COORDINATE_MODES, NEAREST_MODES)))
def test_nearest_resize_is_exact_or_refused(coordinate_mode, nearest_mode, tmp_path):
    """An accepted nearest Resize picks exactly onnxruntime's pixels; the rest are refused."""
    accepted = 0
    for index, (heights, widths) in enumerate(SIZE_PAIRS):
        case = _nearest_case(coordinate_mode, nearest_mode, heights, widths)
        path = tmp_path / str(index)
        path.mkdir()
        try:
            report = _convert(case, path)
        except UnsupportedModelError as exc:
            assert exc.diagnostics[0].reason_code == "resize_mode"
            continue
        accepted += 1
        expected = run_onnxruntime(case_model(case), case.inputs)[0]
        actual = run_litert(report.tflite, [case.inputs["x"]])[0]
        np.testing.assert_array_equal(actual, expected)
    if (coordinate_mode, nearest_mode) in ALWAYS_EXACT:
        assert accepted == len(SIZE_PAIRS)


def _resize_case(mode="linear", scales=(1, 1, 2, 2), shape=(1, 2, 4, 5), **attrs) -> Case:
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode=mode, **attrs)
    return Case("resize", [node], {"x": rand(*shape)},
                {"roi": np.zeros(0, np.float32), "scales": np.array(scales, np.float32)})


@pytest.mark.parametrize("case,reason", [
    (_resize_case("cubic", coordinate_transformation_mode="tf_crop_and_resize"), "resize_mode"),
    (_resize_case(scales=(1, 2, 2, 2)), "resize_axes"),
    (_resize_case(scales=(1, 1, 1.5, 1.5), shape=(1, 2, 5, 5)), "resize_scale"),
    (_resize_case(coordinate_transformation_mode="tf_crop_and_resize"), "resize_mode"),
], ids=["cubic_crop_and_resize", "channel_scale", "scale_not_size_ratio", "tf_crop_and_resize"])
def test_resize_refusals(case, reason, tmp_path):
    assert _refusal(case, tmp_path) == reason


def _single(op_type: str, shape, consts=None, inputs=("x",), **attrs) -> Case:
    return Case(op_type, [helper.make_node(op_type, list(inputs), ["y"], **attrs)], {"x": rand(*shape)},
                consts or {})


@pytest.mark.parametrize("case,reason", [
    (_single("MaxPool", (1, 2, 8, 8), kernel_shape=[3, 3], dilations=[2, 2]), "pool_dilation"),
    (Case("indices", [helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2])],
          {"x": rand(1, 2, 4, 4)}, outputs=("y",)), "maxpool_indices"),
    (_single("MaxPool", (1, 2, 6, 6), kernel_shape=[1, 1], strides=[2, 2], ceil_mode=1), "pool_ceil_mode"),
    (_single("ConvTranspose", (1, 2, 3, 3), {"w": rand(2, 2, 3, 3)}, ("x", "w"), strides=[2, 2],
             auto_pad="SAME_UPPER"), "convtranspose_auto_pad"),
    (_single("ConvTranspose", (1, 2, 3, 3), {"w": rand(2, 2, 3, 3)}, ("x", "w"), strides=[2, 2],
             output_shape=[6, 6]), "convtranspose_output_shape"),
    (_single("LayerNormalization", (2, 3, 4), {"s": rand(3, 4)}, ("x", "s"), axis=1), "layernorm_axis"),
], ids=["maxpool_dilation", "maxpool_indices", "ceil_mode_ambiguous", "convtranspose_auto_pad", "convtranspose_odd_output_shape", "layernorm_not_last_axis"])
def test_refusals(case, reason, tmp_path):
    assert _refusal(case, tmp_path) == reason


def test_reduce_sum_noop_with_empty_axes(tmp_path):
    case = Case("noop", [helper.make_node("ReduceSum", ["x", "a"], ["t"], noop_with_empty_axes=1),
                         helper.make_node("Relu", ["t"], ["y"])],
                {"x": rand(2, 5)}, {"a": np.zeros(0, np.int64)}, opset=13)
    report = _convert(case, tmp_path)
    assert "SUM" not in report.op_counts
    expected = run_onnxruntime(case_model(case), case.inputs)[0]
    np.testing.assert_allclose(run_litert(report.tflite, [case.inputs["x"]])[0], expected, rtol=1e-6)
