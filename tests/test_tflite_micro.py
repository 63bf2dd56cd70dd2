"""Full-integer files run in TensorFlow Lite Micro (the `tflite-micro` package) and give the same
outputs as LiteRT's reference kernels, within one quantization step.

LiteRT's default path (XNNPACK) rounds differently, so the comparison is with its builtin reference op
resolver. Three int8 kernels can't be compared that way: that resolver has no ELU, only version 1 of
DEPTH_TO_SPACE (int8 is version 2), and its reference int8 SUM gives wrong results. For those, the
comparison is with LiteRT's builtin optimized kernels (no XNNPACK).
TFLM has no int8 kernel for EXP, LOG, SQRT, GELU, RELU_0_TO_1 or RELU_N1_TO_1, so those ops are not here
(with --target tflm an 8-bit RELU_0_TO_1 whose grid ends at 1 or below is written as a RELU:
tests/test_speech_models.py runs MobileNetV3 and LRASPP so).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tflq
from tests.conftest import importorskip
from tflq.backend.tflite_reader import read_tflite

HERE = os.path.dirname(__file__)
SAMPLE = os.path.join(HERE, "..", "sample_models", "digits_cnn.onnx")
SAMPLE_CALIB = os.path.join(HERE, "..", "sample_models", "digits_calib")
SAMPLE_EVAL = os.path.join(HERE, "..", "sample_models", "digits_eval.npz")
IO_TYPES = ("int8", "float", "uint8")
REFERENCE = "BUILTIN_REF"
OPTIMIZED = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
N = helper.make_node


# ---- running a file in both interpreters --------------------------------------------------------
def _file_inputs(tflite: bytes, samples: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """Float samples in ONNX layout, as the file takes them: NHWC, quantized when the input is."""
    info = read_tflite(tflite)
    feeds = []
    for sample in samples:
        feed = []
        for index, value in zip(info.inputs, sample):
            t = info.tensors[index]
            if value.ndim == 4 and list(value.shape) != list(t.shape):
                value = value.transpose(0, 2, 3, 1)
            dtype = np.dtype(t.dtype.lower())
            if dtype.kind in "iu" and t.scale:  # (not ids and masks)
                limits = np.iinfo(dtype)
                value = np.clip(np.round(value / t.scale[0]) + t.zero_point[0], limits.min, limits.max)
            feed.append(np.ascontiguousarray(value.astype(dtype)))
        feeds.append(feed)
    return feeds


def _run_micro(tflite: bytes, feeds: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    runtime = importorskip("tflite_micro").runtime
    interpreter = runtime.Interpreter.from_bytes(tflite)
    count = len(read_tflite(tflite).outputs)
    results = []
    for feed in feeds:
        for index, value in enumerate(feed):
            interpreter.set_input(value, index)
        interpreter.invoke()
        results.append([np.array(interpreter.get_output(i)) for i in range(count)])
    return results


def _run_litert(tflite: bytes, feeds: list[list[np.ndarray]], resolver: str) -> list[list[np.ndarray]]:
    litert = importorskip("ai_edge_litert.interpreter")
    interpreter = litert.Interpreter(model_content=tflite, num_threads=1,
                                     experimental_op_resolver_type=getattr(litert.OpResolverType, resolver))
    interpreter.allocate_tensors()
    results = []
    for feed in feeds:
        for detail, value in zip(interpreter.get_input_details(), feed):
            interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        results.append([interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()])
    return results


def _output_steps(tflite: bytes) -> list[float]:
    """One quantization step per output: 1 for an 8-bit output, the dequantized scale for a float one."""
    info = read_tflite(tflite)
    producers = {out: op for op in info.ops for out in op.outputs}
    steps = []
    for index in info.outputs:
        t = info.tensors[index]
        if t.scale:
            steps.append(1.0)
        else:
            op = producers[index]
            assert op.kind == "DEQUANTIZE", f"float output '{t.name}' is not dequantized: {op.kind}"
            steps.append(float(info.tensors[op.inputs[0]].scale[0]))
    return steps


def assert_micro_matches_litert(tflite: bytes, samples: list[list[np.ndarray]],
                                resolver: str = REFERENCE) -> float:
    """Run every sample in TFLM and LiteRT; returns the largest difference, in quantization steps."""
    feeds = _file_inputs(tflite, samples)
    micro, litert = _run_micro(tflite, feeds), _run_litert(tflite, feeds, resolver)
    worst = 0.0
    for expected_outputs, actual_outputs in zip(litert, micro):
        for step, expected, actual in zip(_output_steps(tflite), expected_outputs, actual_outputs):
            assert actual.dtype == expected.dtype and actual.shape == expected.shape
            diff = np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))) / step
            worst = max(worst, float(diff))
    assert worst <= 1.0 + 1e-5, f"TFLM differs from LiteRT ({resolver}) by {worst} quantization steps"
    return worst


def _convert(path: str, calib, io_type: str) -> bytes:
    # --target tflm where its profile takes the I/O type (not uint8): LiteRT's profile writes
    # XNNPACK's forms, e.g. an average pool as a depthwise convolution
    target = "litert" if io_type == "uint8" else "tflm"
    report = tflq.convert(path, mode="full", dtype="int8", io_type=io_type, calib=calib, target=target)
    assert report.float_ops == [], report.float_ops
    return report.tflite


# ---- the sample model ---------------------------------------------------------------------------
@pytest.mark.parametrize("io_type", IO_TYPES)
def test_sample_model_runs_in_micro(io_type):
    images = np.load(SAMPLE_EVAL)["input"]
    tflite = _convert(SAMPLE, SAMPLE_CALIB, io_type)
    assert_micro_matches_litert(tflite, [[images[i:i + 1]] for i in range(0, 240, 15)])


# ---- a small CNN of the common quantizable ops --------------------------------------------------
def _small_cnn() -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    inits = []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weights(name: str, *shape: int, scale: float = 0.3) -> str:
        return const(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    nodes = [
        N("Clip", ["x", const("zero", np.float32(0)), const("six", np.float32(6))], ["x6"]),  # RELU6
        N("Conv", ["x6", weights("w1", 8, 3, 3, 3), weights("b1", 8, scale=0.1)], ["c1"], pads=[1, 1, 1, 1]),
        N("Clip", ["c1", "zero", "six"], ["r1"]),                                       # fused RELU6
        N("Conv", ["r1", weights("wd", 8, 1, 3, 3), weights("bd", 8, scale=0.1)], ["d1"],
          group=8, pads=[1, 1, 1, 1]),                                                    # DEPTHWISE_CONV_2D
        N("Relu", ["d1"], ["d1r"]),
        N("Pad", ["d1r", const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], ["p1"]),
        N("MaxPool", ["p1"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),              # 8x9x9
        N("AveragePool", ["r1"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),          # 8x8x8
        N("Conv", ["mp", weights("w2", 8, 8, 2, 2)], ["c2"]),                            # no bias
        N("Add", ["c2", "ap"], ["s1"]),
        N("Sigmoid", ["s1"], ["sg"]),
        N("Mul", ["s1", "sg"], ["m1"]),
        N("Tanh", ["m1"], ["th"]),
        N("Concat", ["m1", "th"], ["cat"], axis=1),
        N("ReduceMean", ["cat"], ["mean"], axes=[2, 3], keepdims=1),
        N("Flatten", ["mean"], ["flat"]),
        N("Relu", ["flat"], ["flat_relu"]),                                              # standalone RELU
        N("Gemm", ["flat_relu", weights("wf", 10, 16), weights("bf", 10, scale=0.1)], ["fc"], transB=1),
        N("Softmax", ["fc"], ["prob"], axis=1),
    ]
    graph = helper.make_graph(nodes, "small_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("cat", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


SMALL_CNN_KINDS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL", "AVERAGE_POOL_2D",
                   "MAX_POOL_2D", "MEAN", "CONCATENATION", "RESHAPE", "SOFTMAX", "LOGISTIC", "TANH",
                   "RELU", "RELU6", "PAD"}


@pytest.mark.parametrize("io_type", IO_TYPES)
def test_small_cnn_runs_in_micro(io_type, tmp_path):
    path = str(tmp_path / "small_cnn.onnx")
    onnx.save(_small_cnn(), path)
    rng = np.random.default_rng(1)
    calib = rng.uniform(-2, 4, (32, 1, 3, 16, 16)).astype(np.float32)
    tflite = _convert(path, [{"x": c} for c in calib], io_type)
    kinds = SMALL_CNN_KINDS - ({"AVERAGE_POOL_2D"} if io_type == "uint8" else set())
    assert kinds <= set(read_tflite(tflite).op_kinds())
    samples = [[rng.uniform(-3, 5, (1, 3, 16, 16)).astype(np.float32)] for _ in range(8)]
    assert_micro_matches_litert(tflite, samples)


# ---- one model per remaining op TFLM has an int8 kernel for -------------------------------------
@dataclass
class OpModel:
    """A one- or few-node model; inputs map a name to (shape, low, high) of its calibration values."""

    name: str
    nodes: list
    kinds: tuple[str, ...]
    inputs: dict[str, tuple[tuple[int, ...], float, float]] = field(
        default_factory=lambda: {"x": ((1, 4, 8, 8), -3.0, 3.0)})
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    resolver: str = REFERENCE

    def model(self) -> onnx.ModelProto:
        inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)
                  for n, (shape, _, _) in self.inputs.items()]
        outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in self.nodes[-1].output]
        inits = [numpy_helper.from_array(v, n) for n, v in self.consts.items()]
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model

    def samples(self, rng, count: int, widen: float = 1.0) -> list[list[np.ndarray]]:
        return [[rng.uniform(lo * widen, hi * widen, shape).astype(np.float32)
                 for shape, lo, hi in self.inputs.values()] for _ in range(count)]


_R = np.random.default_rng(3)
_XY = {"x": ((1, 4, 8, 8), -3.0, 3.0), "y": ((1, 4, 8, 8), -2.0, 2.0)}
OP_MODELS = [
    OpModel("sub", [N("Sub", ["x", "y"], ["o"])], ("SUB",), _XY),
    OpModel("maximum", [N("Max", ["x", "y"], ["o"])], ("MAXIMUM",), _XY),
    OpModel("minimum", [N("Min", ["x", "y"], ["o"])], ("MINIMUM",), _XY),
    # a constant divisor: a computed one keeps the DIV float (its grid holds the zero point,
    # which LiteRT's integer DIV refuses at invoke)
    OpModel("div", [N("Div", ["x", "y"], ["o"])], ("DIV",),
            consts={"y": _R.uniform(0.5, 2.0, (4, 1, 1)).astype(np.float32)}),
    OpModel("batch_matmul", [N("MatMul", ["x", "y"], ["o"])], ("BATCH_MATMUL",), _XY),
    OpModel("leaky_relu", [N("LeakyRelu", ["x"], ["o"], alpha=0.1)], ("LEAKY_RELU",)),
    OpModel("hard_swish", [N("HardSwish", ["x"], ["o"])], ("HARD_SWISH",)),
    OpModel("abs", [N("Abs", ["x"], ["o"])], ("ABS",)),
    OpModel("prelu", [N("PRelu", ["x", "slope"], ["o"])], ("PRELU",),
            consts={"slope": (_R.standard_normal((4, 1, 1)) * 0.5).astype(np.float32)}),
    OpModel("relu6", [N("Clip", ["x", "lo", "hi"], ["o"])], ("RELU6",),
            consts={"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}),
    OpModel("batch_norm", [N("BatchNormalization", ["x", "g", "b", "mu", "var"], ["o"])], ("MUL", "ADD"),
            consts={"g": _R.uniform(0.5, 2, 4).astype(np.float32), "b": _R.standard_normal(4).astype(np.float32),
                    "mu": _R.standard_normal(4).astype(np.float32), "var": _R.uniform(0.5, 2, 4).astype(np.float32)}),
    OpModel("layer_norm", [N("LayerNormalization", ["x", "g", "b"], ["o"], axis=-1)], ("MEAN", "RSQRT"),
            consts={"g": _R.uniform(0.5, 2, 8).astype(np.float32), "b": _R.standard_normal(8).astype(np.float32)}),
    OpModel("log_softmax", [N("LogSoftmax", ["x"], ["o"], axis=-1)], ("LOG_SOFTMAX",)),
    OpModel("resize_nearest", [N("Resize", ["x", "", "scales"], ["o"], mode="nearest")],
            ("RESIZE_NEAREST_NEIGHBOR",), consts={"scales": np.array([1, 1, 2, 2], np.float32)}),
    OpModel("resize_bilinear", [N("Resize", ["x", "", "scales"], ["o"], mode="linear")],
            ("RESIZE_BILINEAR",), consts={"scales": np.array([1, 1, 2, 2], np.float32)}),
    OpModel("transpose", [N("Transpose", ["x"], ["o"], perm=[0, 1, 3, 2])], ("TRANSPOSE",)),
    OpModel("slice", [N("Slice", ["x", "starts", "ends", "axes"], ["o"])], ("STRIDED_SLICE",),
            consts={"starts": np.array([1, 1], np.int64), "ends": np.array([3, 7], np.int64),
                    "axes": np.array([1, 2], np.int64)}),
    OpModel("split", [N("Split", ["x"], ["o1", "o2"], axis=1)], ("SPLIT",)),
    OpModel("space_to_depth", [N("SpaceToDepth", ["x"], ["o"], blocksize=2)], ("SPACE_TO_DEPTH",)),
    OpModel("gather", [N("Gather", ["x", "indices"], ["o"], axis=1)], ("GATHER",),
            consts={"indices": np.array([2, 0], np.int64)}),
    OpModel("reduce_max", [N("ReduceMax", ["x"], ["o"], axes=[1], keepdims=1)], ("REDUCE_MAX",)),
    OpModel("global_max_pool", [N("GlobalMaxPool", ["x"], ["o"])], ("REDUCE_MAX",)),
    OpModel("global_average_pool", [N("GlobalAveragePool", ["x"], ["o"])], ("MEAN",)),
    OpModel("conv_transpose", [N("ConvTranspose", ["x", "w"], ["o"], strides=[2, 2])], ("TRANSPOSE_CONV",),
            consts={"w": (_R.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)}),
    # Not in (or too old in) LiteRT's reference resolver, or wrong there: compared with its optimized kernels.
    OpModel("depth_to_space", [N("DepthToSpace", ["x"], ["o"], blocksize=2)], ("DEPTH_TO_SPACE",),
            resolver=OPTIMIZED),
    OpModel("elu", [N("Elu", ["x"], ["o"])], ("ELU",), resolver=OPTIMIZED),
    OpModel("reduce_sum", [N("ReduceSum", ["x", "axes"], ["o"], keepdims=1)], ("SUM",),
            consts={"axes": np.array([2, 3], np.int64)}, resolver=OPTIMIZED),
]


@pytest.mark.parametrize("case", OP_MODELS, ids=lambda c: c.name)
def test_op_runs_in_micro(case, tmp_path):
    path = str(tmp_path / f"{case.name}.onnx")
    onnx.save(case.model(), path)
    rng = np.random.default_rng(5)
    calib = [dict(zip(case.inputs, sample)) for sample in case.samples(rng, 16)]
    tflite = _convert(path, calib, "int8")
    assert set(case.kinds) <= set(read_tflite(tflite).op_kinds())
    assert_micro_matches_litert(tflite, case.samples(rng, 6, widen=1.2), case.resolver)
