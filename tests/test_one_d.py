"""1-D model families (speech-like conv stacks) converted end to end: float against onnxruntime on
the worst of 8 inputs, the TRANSPOSE count, and weights-only and full int8 files that LiteRT runs.

The models are built with onnx.helper. A rank-3 [N, C, W] input or output of a 1-D stack is NWC in
the file (as a 4-D one is NHWC); other 3-D tensors ([N, T, F] sequences) keep the ONNX order."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import litert_interpreter, run_onnxruntime
from tflq.config import ConvertConfig
from tflq.ir.quant import sqnr_db
from tflq.pipeline import convert

FLOAT_SQNR_DB = 80.0
INT8_SQNR_FLOOR_DB = 20.0  # full int8 must be usable, not only load (the measured values are higher)
SAMPLES = 8


class Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, value) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs, **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"/{out}", **attrs))
        return out

    def conv(self, x, cin, cout, k, stride=1, dilation=1, group=1, pads=None, bias=True, bn=True,
             act="Relu") -> str:
        span = dilation * (k - 1)
        pads = [span // 2, span - span // 2] if pads is None else pads
        w = self.rng.normal(0, np.sqrt(2.0 / (cin // group * k)), (cout, cin // group, k))
        inputs = [x, self.const(w.astype(np.float32))]
        if bias:
            inputs.append(self.const(self.rng.normal(0, 0.1, cout).astype(np.float32)))
        y = self.node("Conv", inputs, kernel_shape=[k], strides=[stride], dilations=[dilation],
                      pads=pads, group=group)
        if bn:
            y = self.bn(y, cout)
        return self.node(act, [y]) if act else y

    def bn(self, x, c) -> str:
        r = self.rng
        return self.node("BatchNormalization", [
            x, self.const(r.uniform(0.5, 1.5, c).astype(np.float32)),
            self.const(r.normal(0, 0.25, c).astype(np.float32)),
            self.const(r.normal(0, 0.5, c).astype(np.float32)),
            self.const(r.uniform(0.5, 2.0, c).astype(np.float32))], epsilon=1e-5)

    def conv_transpose(self, x, cin, cout, k, stride, pads, output_padding=None) -> str:
        w = self.rng.normal(0, np.sqrt(1.0 / (cin * k)), (cin, cout, k)).astype(np.float32)
        attrs = dict(kernel_shape=[k], strides=[stride], pads=pads)
        if output_padding:
            attrs["output_padding"] = output_padding
        return self.node("ConvTranspose", [x, self.const(w), self.const(
            self.rng.normal(0, 0.1, cout).astype(np.float32))], **attrs)

    def gemm(self, x, cin, cout) -> str:
        w = self.rng.normal(0, 1 / np.sqrt(cin), (cout, cin)).astype(np.float32)
        return self.node("Gemm", [x, self.const(w), self.const(np.zeros(cout, np.float32))], transB=1)

    def model(self, inputs: dict[str, tuple], outputs: list[str]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "one_d",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return onnx.shape_inference.infer_shapes(model)


def speech_classifier() -> tuple[onnx.ModelProto, dict]:
    """Mel frames [1, 40, 64] -> conv/BN/ReLU stack (strided, dilated, depthwise, grouped), max and
    average pooling, global average pooling, Flatten, Gemm."""
    b = Builder(1)
    x = b.conv("x", 40, 32, 5)
    x = b.conv(x, 32, 32, 3, stride=2)
    x = b.conv(x, 32, 32, 3, dilation=2)
    x = b.conv(x, 32, 32, 5, group=32, act="Clip")  # depthwise, Relu6-like clip without bounds
    x = b.conv(x, 32, 48, 3, group=4, dilation=3)
    x = b.node("MaxPool", [x], kernel_shape=[2], strides=[2])
    x = b.node("AveragePool", [x], kernel_shape=[3], strides=[1], pads=[1, 1], count_include_pad=0)
    x = b.conv(x, 48, 64, 1, bn=False)
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Flatten", [x], axis=1)
    y = b.gemm(x, 64, 12)
    return b.model({"x": (1, 40, 64)}, [y]), dict(ncw_inputs={"x"}, ncw_outputs=set())


def upsampler() -> tuple[onnx.ModelProto, dict]:
    """[1, 16, 24] -> conv -> ConvTranspose x2 (k4 s2 p1, BN, ReLU) -> ConvTranspose x2 (k3 s2,
    output_padding) -> residual-free 1x1 conv -> [1, 4, 96] waveform-like output (NCW)."""
    b = Builder(2)
    x = b.conv("x", 16, 24, 3)
    x = b.conv_transpose(x, 24, 16, 4, 2, [1, 1])
    x = b.node("Relu", [b.bn(x, 16)])
    x = b.conv_transpose(x, 16, 8, 3, 2, [1, 0], output_padding=[0])
    x = b.node("LeakyRelu", [x], alpha=0.1)
    y = b.conv(x, 8, 4, 1, bn=False, act="Tanh")
    return b.model({"x": (1, 16, 24)}, [y]), dict(ncw_inputs={"x"}, ncw_outputs={y})


def residual_global_max() -> tuple[onnx.ModelProto, dict]:
    """Residual 1-D blocks (ADD of two conv branches), MaxPool with padding, GlobalMaxPool,
    Squeeze, Gemm; two graph outputs (the logits and a mid-level NCW feature map)."""
    b = Builder(3)
    x = b.conv("x", 8, 16, 3)
    for _ in range(2):
        y = b.conv(x, 16, 16, 3, act=None)
        x = b.node("Relu", [b.node("Add", [x, y])])
    feature = b.node("MaxPool", [x], kernel_shape=[3], strides=[2], pads=[1, 1])
    g = b.node("GlobalMaxPool", [b.conv(feature, 16, 32, 3, stride=2)])
    g = b.node("Squeeze", [g, b.const(np.array([2], np.int64))])
    y = b.gemm(g, 32, 5)
    return b.model({"x": (1, 8, 50)}, [y, feature]), dict(ncw_inputs={"x"}, ncw_outputs={feature})


def sequence_in_out() -> tuple[onnx.ModelProto, dict]:
    """Features [1, T, F] -> the model's Transpose -> 1-D conv stack -> Transpose back -> MatMul
    per frame -> [1, T', K] (the shape a CTC head reads): both transposes cancel in NWC."""
    b = Builder(4)
    x = b.node("Transpose", ["x"], perm=[0, 2, 1])
    x = b.conv(x, 20, 32, 5, stride=2)
    x = b.conv(x, 32, 32, 3, dilation=2)
    x = b.node("Transpose", [x], perm=[0, 2, 1])
    w = b.const(b.rng.normal(0, 1 / np.sqrt(32), (32, 11)).astype(np.float32))
    y = b.node("Add", [b.node("MatMul", [x, w]), b.const(np.zeros(11, np.float32))])
    return b.model({"x": (1, 48, 20)}, [y]), dict(ncw_inputs=set(), ncw_outputs=set())


def unet_skip() -> tuple[onnx.ModelProto, dict]:
    """A 1-D U-Net level: conv, strided conv down, ConvTranspose up, Concat with the skip branch
    on channels, conv -> [1, 8, 32] (NCW)."""
    b = Builder(5)
    skip = b.conv("x", 6, 12, 3)
    down = b.conv(skip, 12, 24, 4, stride=2, pads=[1, 1])
    up = b.node("Relu", [b.bn(b.conv_transpose(down, 24, 12, 4, 2, [1, 1]), 12)])
    joined = b.node("Concat", [up, skip], axis=1)
    y = b.conv(joined, 24, 8, 3, bn=False, act="Sigmoid")
    return b.model({"x": (1, 6, 32)}, [y]), dict(ncw_inputs={"x"}, ncw_outputs={y})


FAMILIES = {"speech_classifier": speech_classifier, "upsampler": upsampler,
            "residual_global_max": residual_global_max, "sequence_in_out": sequence_in_out,
            "unet_skip": unet_skip}
# RESHAPEs between the 3-D model edges and the 4-D (height 1) ops: one per 1-D input, output and
# flattening; none between two 1-D ops.
RESHAPES = {"speech_classifier": 2, "upsampler": 2, "residual_global_max": 3, "sequence_in_out": 2,
            "unet_skip": 2}


def _run(tflite: bytes, model: onnx.ModelProto, feeds: dict, layout: dict) -> list[np.ndarray]:
    """Run the file in LiteRT: NCW inputs fed as NWC, NCW outputs read back to NCW."""
    interpreter = litert_interpreter(tflite)
    names = [vi.name for vi in model.graph.input]
    for detail, name in zip(interpreter.get_input_details(), names):
        value = feeds[name]
        if name in layout["ncw_inputs"]:
            value = value.transpose(0, 2, 1)
        if detail["dtype"] != np.float32:
            scale, zp = detail["quantization"]
            value = np.round(value / scale) + zp
        interpreter.set_tensor(detail["index"], np.ascontiguousarray(value.astype(detail["dtype"])))
    interpreter.invoke()
    results = []
    for detail, vi in zip(interpreter.get_output_details(), model.graph.output):
        value = interpreter.get_tensor(detail["index"])
        if vi.name in layout["ncw_outputs"]:
            value = value.transpose(0, 2, 1)
        results.append(value)
    return results


def _samples(model: onnx.ModelProto, count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input}
    return [{n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
            for _ in range(count)]


def worst_sqnr(path: str, model: onnx.ModelProto, tflite: bytes, layout: dict, samples) -> float:
    worst = float("inf")
    for feeds in samples:
        for e, a in zip(run_onnxruntime(path, feeds), _run(tflite, model, feeds, layout)):
            assert a.shape == e.shape
            worst = min(worst, sqnr_db(e, a))
    return worst


@pytest.mark.parametrize("family", list(FAMILIES))
def test_one_d_family(family, tmp_path):
    model, layout = FAMILIES[family]()
    path = str(tmp_path / f"{family}.onnx")
    onnx.save(model, path)
    samples = _samples(model, SAMPLES, seed=7)
    report = convert(ConvertConfig(model=path))
    assert worst_sqnr(path, model, report.tflite, layout, samples) >= FLOAT_SQNR_DB
    assert report.op_counts.get("TRANSPOSE", 0) == 0
    assert report.op_counts.get("RESHAPE", 0) <= RESHAPES[family], report.op_counts
    assert "MUL" not in report.op_counts  # every BatchNormalization folded into its conv
    weights = convert(ConvertConfig(model=path, mode="weights-only", dtype="int8",
                                    min_weight_elements=64))
    assert worst_sqnr(path, model, weights.tflite, layout, samples[:2]) >= 30.0
    full = convert(ConvertConfig(model=path, mode="full", dtype="int8",
                                 calib=_samples(model, 16, seed=8)))
    assert full.op_counts.get("TRANSPOSE", 0) == 0
    assert worst_sqnr(path, model, full.tflite, layout, samples) >= INT8_SQNR_FLOOR_DB


def test_keep_io_layout_keeps_ncw(tmp_path):
    model, layout = upsampler()
    path = str(tmp_path / "upsampler.onnx")
    onnx.save(model, path)
    samples = _samples(model, 2, seed=9)
    report = convert(ConvertConfig(model=path, keep_io_layout=True))
    assert worst_sqnr(path, model, report.tflite, dict(ncw_inputs=set(), ncw_outputs=set()),
                      samples) >= FLOAT_SQNR_DB
