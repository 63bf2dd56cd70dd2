"""Explicit padding in front of pools and convolutions is an op XNNPACK runs (PAD), never
MIRROR_PAD, wherever that is exact; checked on the written file and against onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.conftest import importorskip, run_litert, run_onnxruntime
from tflq import convert
from tflq.backend.tflite_reader import read_tflite


def _stem(path, activation: str | None) -> str:
    """ResNet's stem: 7x7/2 Conv (pads 3), an activation, 3x3/2 MaxPool (pads 1)."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], pads=[3, 3, 3, 3])]
    pooled = "c"
    if activation:
        nodes.append(helper.make_node(activation, ["c"], ["a"]))
        pooled = "a"
    nodes.append(helper.make_node("MaxPool", [pooled], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                  pads=[1, 1, 1, 1]))
    graph = helper.make_graph(nodes, "stem", [helper.make_tensor_value_info("x", 1, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", 1, [1, 8, 8, 8])],
                              [numpy_helper.from_array(rng.normal(0, 0.2, (8, 3, 7, 7)).astype(np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def _pad_kinds(data: bytes) -> list[str]:
    return [op.kind for op in read_tflite(data).ops if "PAD" in op.kind]


@pytest.mark.parametrize("mode", ["float", "int8"])
def test_resnet_stem_pads_with_pad_only_and_matches_onnxruntime(tmp_path, mode):
    importorskip("ai_edge_litert")
    model = _stem(tmp_path / "stem.onnx", "Relu")
    rng = np.random.default_rng(5)
    samples = [{"x": rng.normal(0, 1, (1, 3, 32, 32)).astype(np.float32)} for _ in range(8)]
    options = {"mode": "full", "dtype": "int8", "calib": samples} if mode == "int8" else {}
    data = convert(model, **options).tflite
    assert _pad_kinds(data) == ["PAD", "PAD"]  # the conv's and the pool's
    expected = [run_onnxruntime(model, sample)[0] for sample in samples]
    worst = max(float(np.abs(run_litert(data, [s["x"]])[0] - e).max()) for s, e in zip(samples, expected))
    step = max(float(e.max()) for e in expected) / 255  # the int8 output grid's step (y >= 0)
    # float: exact up to rounding; int8: within a few steps of the output grid
    assert worst < (1e-4 if mode == "float" else 4 * step)


def test_max_pool_of_a_possibly_negative_tensor_keeps_edge_replication(tmp_path):
    data = convert(_stem(tmp_path / "stem.onnx", None)).tflite
    assert _pad_kinds(data) == ["PAD", "MIRROR_PAD"]


@pytest.mark.parametrize("activation", ["Sigmoid", "Abs"])
def test_max_pool_of_a_never_negative_activation_pads_with_zeros(tmp_path, activation):
    """A sigmoid or abs is never negative: PAD, one XNNPACK partition, onnxruntime's result."""
    importorskip("ai_edge_litert")
    from tests.delegation import xnnpack_delegation

    model = _stem(tmp_path / "stem.onnx", activation)
    data = convert(model).tflite
    assert _pad_kinds(data) == ["PAD", "PAD"]
    assert xnnpack_delegation(data).partitions == 1
    x = np.random.default_rng(6).normal(0, 1, (1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(run_litert(data, [x])[0], run_onnxruntime(model, {"x": x})[0], atol=1e-5)


def test_int8_max_pool_pads_with_the_grid_minimum_where_the_input_grid_starts_at_zero(tmp_path):
    """Nothing proves the pool's input non-negative, but calibration data >= 0 gives it a grid
    whose zero point is -128: the edge MIRROR_PAD becomes a PAD filling with that minimum,
    XNNPACK takes the whole file, and the pool is exact on the grid (onnxruntime's maximum of
    the rounded input)."""
    importorskip("ai_edge_litert")
    from tests.delegation import xnnpack_delegation

    model = _non_negative_pool(tmp_path / "pool.onnx")
    rng = np.random.default_rng(6)
    samples = [{"x": rng.uniform(0, 1, (1, 8, 16, 16)).astype(np.float32)} for _ in range(8)]
    data = convert(model, mode="full", dtype="int8", calib=samples).tflite
    assert _pad_kinds(data) == ["PAD"]
    assert xnnpack_delegation(data).partitions == 1
    step = max(float(s["x"].max()) for s in samples) / 255
    for sample in samples:
        rounded = np.round(sample["x"] / step) * step  # the input grid: zero point -128, real 0 at it
        expected = run_onnxruntime(model, {"x": rounded.astype(np.float32)})[0]
        np.testing.assert_allclose(run_litert(data, [sample["x"]])[0], expected, atol=step / 2)


def test_int8_max_pool_of_negative_data_keeps_edge_replication(tmp_path):
    rng = np.random.default_rng(7)
    samples = [{"x": rng.uniform(-1, 1, (1, 8, 16, 16)).astype(np.float32)} for _ in range(4)]
    data = convert(_non_negative_pool(tmp_path / "pool.onnx"), mode="full", dtype="int8",
                   calib=samples).tflite
    assert _pad_kinds(data) == ["MIRROR_PAD"]


def _non_negative_pool(path) -> str:
    """A bare padded MaxPool of the model input (nothing proves the input non-negative)."""
    graph = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
        "pool", [helper.make_tensor_value_info("x", 1, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", 1, [1, 8, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)
