"""Explicit padding in front of pools and convolutions is an op XNNPACK runs (PAD), never
MIRROR_PAD, wherever that is exact, and a max pool is SAME-padded wherever SAME reads ONNX's
windows (on a convolution output one cell longer if need be); checked on the written file, in
XNNPACK's partitions and against onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.conftest import importorskip, run_litert, run_onnxruntime
from tflq import convert
from tflq._generated.tflite.Padding import Padding
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


def _kinds(data: bytes) -> list[str]:
    return [op.kind for op in read_tflite(data).ops]


@pytest.mark.parametrize("mode", ["float", "int8"])
@pytest.mark.parametrize("activation", ["Relu", None])
def test_resnet_stem_pool_is_same_padded_on_a_convolution_one_cell_longer(tmp_path, mode, activation):
    """The 7x7/2 Conv computes 17x17 instead of 16x16 (its PAD grows, XNNPACK folds it in), the
    3x3/2 pool is SAME on that (its top/left padding 1 is ONNX's), a STRIDED_SLICE keeps ONNX's
    8x8 windows: no PAD or MIRROR_PAD before the pool, whatever the sign of its input, one XNNPACK
    partition, onnxruntime's result."""
    importorskip("ai_edge_litert")
    from tests.delegation import xnnpack_delegation

    model = _stem(tmp_path / "stem.onnx", activation)
    rng = np.random.default_rng(5)
    samples = [{"x": rng.normal(0, 1, (1, 3, 32, 32)).astype(np.float32)} for _ in range(8)]
    options = {"mode": "full", "dtype": "int8", "calib": samples} if mode == "int8" else {}
    data = convert(model, **options).tflite
    info = read_tflite(data)
    kinds = [op.kind for op in info.ops if op.kind not in ("QUANTIZE", "DEQUANTIZE")]
    assert kinds == ["PAD", "CONV_2D", "MAX_POOL_2D", "STRIDED_SLICE"]
    conv, pool = (next(op for op in info.ops if op.kind == kind) for kind in ("CONV_2D", "MAX_POOL_2D"))
    assert info.tensors[conv.outputs[0]].shape == [1, 17, 17, 8]
    assert pool.options.padding == Padding.SAME
    assert xnnpack_delegation(data).partitions == 1
    expected = [run_onnxruntime(model, sample)[0] for sample in samples]
    worst = max(float(np.abs(run_litert(data, [s["x"]])[0] - e).max()) for s, e in zip(samples, expected))
    step = max(float(np.abs(e).max()) for e in expected) / 127  # about the int8 output grid's step
    # float: exact up to rounding; int8: within a few steps of the output grid
    assert worst < (1e-4 if mode == "float" else 4 * step)


def test_int8_same_padded_pool_takes_onnx_windows_of_what_the_convolution_wrote(tmp_path):
    """Exactly onnxruntime's MaxPool (pads 1) of the 16x16 the ONNX Conv has, read from LiteRT's
    own 17x17 convolution output: no kept window reads the extra row or column."""
    litert = importorskip("ai_edge_litert.interpreter")
    import onnxruntime

    model = _stem(tmp_path / "stem.onnx", None)
    rng = np.random.default_rng(8)
    samples = [{"x": rng.normal(0, 1, (1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
    data = convert(model, mode="full", dtype="int8", calib=samples, io_type="int8").tflite
    info = read_tflite(data)
    conv, cut = (next(op for op in info.ops if op.kind == kind) for kind in ("CONV_2D", "STRIDED_SLICE"))
    pool_only = _pool_model(tmp_path / "pool.onnx", (1, 8, 16, 16), [1, 1, 1, 1])
    session = onnxruntime.InferenceSession(pool_only, providers=["CPUExecutionProvider"])
    interpreter = litert.Interpreter(model_content=data, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    for sample in samples:
        scale, zero_point = detail["quantization"]
        x = np.clip(np.round(sample["x"].transpose(0, 2, 3, 1) / scale) + zero_point, -128, 127)
        interpreter.set_tensor(detail["index"], x.astype(np.int8))
        interpreter.invoke()
        written = interpreter.get_tensor(conv.outputs[0])[:, :16, :16, :]
        expected = session.run(None, {"x": written.transpose(0, 3, 1, 2).astype(np.float32)})[0]
        pooled = interpreter.get_tensor(cut.outputs[0])
        np.testing.assert_array_equal(pooled.transpose(0, 3, 1, 2), expected.astype(np.int8))


@pytest.mark.parametrize("group", [1, 8])
def test_convolution_without_its_own_pad_gets_one_to_compute_the_extra_cells(tmp_path, group):
    """A SAME-padded Conv (pads 1, 3x3/1) and a depthwise one: the extension pads their input
    explicitly (1 before, 2 after) and makes them VALID; the results are onnxruntime's."""
    importorskip("ai_edge_litert")
    rng = np.random.default_rng(9)
    weight = rng.normal(0, 0.3, (8, 8 // group, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], group=group),
             helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1])]
    model = _save(tmp_path / "m.onnx", nodes, (1, 8, 16, 16), [numpy_helper.from_array(weight, "w")])
    data = convert(model).tflite
    conv = "CONV_2D" if group == 1 else "DEPTHWISE_CONV_2D"
    assert _kinds(data) == ["PAD", conv, "MAX_POOL_2D", "STRIDED_SLICE"]
    info = read_tflite(data)
    assert info.tensors[info.ops[0].outputs[0]].shape == [1, 19, 19, 8]
    x = rng.normal(0, 1, (1, 8, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(run_litert(data, [x])[0], run_onnxruntime(model, {"x": x})[0], atol=1e-5)


def test_a_convolution_output_read_elsewhere_is_not_extended(tmp_path):
    """The Conv output also feeds a ReduceMax (as a residual would): it keeps its 12x12, and the
    pool's edge MIRROR_PAD becomes a PAD of one row and column at the end for SAME."""
    importorskip("ai_edge_litert")
    rng = np.random.default_rng(10)
    weight = numpy_helper.from_array(rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMax", ["c"], ["m"], axes=[2, 3], keepdims=1),
             helper.make_node("Add", ["p", "m"], ["y"])]
    model = _save(tmp_path / "m.onnx", nodes, (1, 4, 12, 12), [weight], opset=17)
    data = convert(model).tflite
    info = read_tflite(data)
    conv, pad = (next(op for op in info.ops if op.kind == kind) for kind in ("CONV_2D", "PAD"))
    assert info.tensors[conv.outputs[0]].shape == [1, 12, 12, 4]
    np.testing.assert_array_equal(info.tensors[pad.inputs[1]].data, [[0, 0], [0, 1], [0, 1], [0, 0]])
    assert "MIRROR_PAD" not in _kinds(data) and "STRIDED_SLICE" in _kinds(data)
    x = rng.normal(0, 1, (1, 4, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(run_litert(data, [x])[0], run_onnxruntime(model, {"x": x})[0], atol=1e-5)


def test_pool_pads_only_the_sides_its_windows_read(tmp_path):
    """3x3/2 with pads 1 on 10 rows: the last window ends on row 9, so the zero PAD after the
    ReLU adds the top row and left column only."""
    importorskip("ai_edge_litert")
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])]
    model = _save(tmp_path / "m.onnx", nodes, (1, 3, 10, 10))
    data = convert(model).tflite
    info = read_tflite(data)
    pad = next(op for op in info.ops if op.kind == "PAD")
    np.testing.assert_array_equal(info.tensors[pad.inputs[1]].data, [[0, 0], [1, 0], [1, 0], [0, 0]])
    x = np.random.default_rng(11).normal(0, 1, (1, 3, 10, 10)).astype(np.float32)
    np.testing.assert_allclose(run_litert(data, [x])[0], run_onnxruntime(model, {"x": x})[0], atol=1e-6)


def test_tflm_keeps_the_pad_instead_of_growing_the_convolution(tmp_path):
    """TFLite Micro pads with a copy and convolves without SIMD: one more row and column of the
    7x7 convolution costs more than the PAD there, so the file keeps it."""
    rng = np.random.default_rng(12)
    samples = [{"x": rng.normal(0, 1, (1, 3, 32, 32)).astype(np.float32)} for _ in range(2)]
    data = convert(_stem(tmp_path / "stem.onnx", "Relu"), mode="full", dtype="int8", calib=samples,
                   target="tflm").tflite
    assert _pad_kinds(data) == ["PAD", "PAD"] and "STRIDED_SLICE" not in _kinds(data)


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


@pytest.mark.parametrize("mode", ["float", "int8"])
def test_max_pool_of_possibly_negative_data_pads_the_end_for_same(tmp_path, mode):
    """A bare padded MaxPool of negative data: no MIRROR_PAD (XNNPACK does not take it) but a
    PAD of one row and column at the end, whose cells no kept window reads, a SAME pool and a
    STRIDED_SLICE; one XNNPACK partition, exactly onnxruntime's maximum (of the rounded input in
    int8)."""
    importorskip("ai_edge_litert")
    from tests.delegation import xnnpack_delegation

    model = _non_negative_pool(tmp_path / "pool.onnx")
    rng = np.random.default_rng(7)
    samples = [{"x": rng.uniform(-2, -0.5, (1, 8, 16, 16)).astype(np.float32)} for _ in range(4)]
    options = {"mode": "full", "dtype": "int8", "calib": samples} if mode == "int8" else {}
    data = convert(model, **options).tflite
    assert _pad_kinds(data) == ["PAD"] and "STRIDED_SLICE" in _kinds(data)
    assert xnnpack_delegation(data).partitions == 1
    low = min(float(s["x"].min()) for s in samples)
    step = -low / 255 if mode == "int8" else 0.0  # int8: the input grid, real 0 at the top
    for sample in samples:
        rounded = np.round(sample["x"] / step) * step if step else sample["x"]
        expected = run_onnxruntime(model, {"x": rounded.astype(np.float32)})[0]
        np.testing.assert_allclose(run_litert(data, [sample["x"]])[0], expected, atol=step / 2 + 1e-6)


@pytest.mark.parametrize("mode", ["float", "int8"])
@pytest.mark.parametrize("shape,pads,kinds,paddings", [
    # 3x3/2, pads 1 on 16: SAME on 17 (a PAD of the end row and column, which no kept window
    # reads) starts ONNX's windows, a STRIDED_SLICE drops SAME's ninth
    ((1, 8, 16, 16), [1, 1, 1, 1], ["PAD", "AVERAGE_POOL_2D", "STRIDED_SLICE"], [[0, 0], [0, 1], [0, 1], [0, 0]]),
    # pads at the top and left only, on 9: SAME on 9 itself
    ((1, 8, 9, 9), [1, 1, 0, 0], ["AVERAGE_POOL_2D", "STRIDED_SLICE"], None),
])
def test_average_pool_excluding_padding_is_same_padded(tmp_path, mode, shape, pads, kinds, paddings):
    """AveragePool with count_include_pad=0 where SAME starts ONNX's windows (on the input made
    longer at the end if need be): LiteRT's SAME divides each window's sum by its real cells,
    as ONNX does, so no divisor MUL follows and no zero PAD precedes; onnxruntime's mean, in
    int8 within half an output step of its mean of the rounded input (one rounding)."""
    importorskip("ai_edge_litert")
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=pads,
                            count_include_pad=0)
    model = _save(tmp_path / "m.onnx", [node], shape)
    rng = np.random.default_rng(13)
    samples = [{"x": rng.uniform(-1, 3, shape).astype(np.float32)} for _ in range(4)]
    options = {"mode": "full", "dtype": "int8", "calib": samples, "io_type": "int8"} if mode == "int8" else {}
    data = convert(model, **options).tflite
    assert [k for k in _kinds(data) if k not in ("QUANTIZE", "DEQUANTIZE")] == kinds
    info = read_tflite(data)
    pool = next(op for op in info.ops if op.kind == "AVERAGE_POOL_2D")
    assert pool.options.padding == Padding.SAME
    if paddings is not None:
        pad = next(op for op in info.ops if op.kind == "PAD")
        np.testing.assert_array_equal(info.tensors[pad.inputs[1]].data, paddings)
    x_grid, y_grid = info.tensors[info.inputs[0]], info.tensors[info.outputs[0]]
    for sample in samples:
        x = sample["x"]
        if mode == "int8":
            step, zero_point = float(x_grid.scale[0]), int(x_grid.zero_point[0])
            x = ((np.clip(np.round(x / step) + zero_point, -128, 127) - zero_point) * step).astype(np.float32)
        expected = run_onnxruntime(model, {"x": x})[0]
        tolerance = float(y_grid.scale[0]) / 2 + 1e-6 if mode == "int8" else 1e-6
        np.testing.assert_allclose(run_litert(data, [sample["x"]])[0], expected, rtol=0, atol=tolerance)


def _non_negative_pool(path) -> str:
    """A bare padded MaxPool of the model input (nothing proves the input non-negative)."""
    graph = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
        "pool", [helper.make_tensor_value_info("x", 1, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", 1, [1, 8, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def _pool_model(path, shape, pads) -> str:
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=pads)
    return _save(path, [node], shape)


def _save(path, nodes, shape, initializers=(), opset: int = 17) -> str:
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", 1, list(shape))],
                              [helper.make_tensor_value_info("y", 1, None)], list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return str(path)
