"""The fused-activation table on the op specs (ops/base.py FusedActivations) against LiteRT, and every
activation after every producer kind against onnxruntime.

1. The table itself: each spec with a fused activation slot is converted (float, full int8, full
   uint8, and weights-only int8 where it has a hybrid kernel), then the written file's
   fused_activation_function is set to every TFLite value in turn. Where the table says the
   kernel variant applies the value, LiteRT's output must equal the activation of onnxruntime's
   output; where it says not, LiteRT must ignore it (output = onnxruntime's) or refuse the file.
2. What tflq emits: the op's case followed by each ONNX activation converts to a file that
   matches onnxruntime at 1e-4 in float, and whose int8 file runs in LiteRT near onnxruntime.
"""
from __future__ import annotations

import flatbuffers
import numpy as np
import pytest
from onnx import helper, numpy_helper

from tests.conftest import case_model, relative_error, run_litert, run_onnxruntime, save_model
from tests.delegation import LOWERED, WRITTEN_IN_8_BIT
from tflq import ops as registry
from tflq._generated.tflite.BuiltinOperator import BuiltinOperator
from tflq._generated.tflite.Model import ModelT
from tflq.config import ConvertConfig
from tflq.ir.quant import sqnr_db
from tflq.ops.base import ACTIVATION_FUNCTIONS, KernelVariant
from tflq.ops.common import activation_code, apply_activation
from tflq.pipeline import convert

# (a kind that is never written, CONV_3D, fuses the activation its lowered kind then applies)
SPECS = [spec for spec in registry.all_specs() if spec.fused_activation is not None
         and spec.kind not in LOWERED]
INPUT_GAIN = 8.0  # spreads the op's output beyond [-1, 1] and 6, so every activation shows
INT8_SQNR_DB = 28.0  # measured 32-56 dB
VARIANTS = [("float", KernelVariant.FLOAT), ("int8", KernelVariant.INTEGER),
            ("uint8", KernelVariant.INTEGER), ("hybrid", KernelVariant.HYBRID)]


def _case(spec):
    """The spec's first case, or for a kernel that refuses some computed inputs (DIV) the first
    whose refused input is a constant, so that the op runs integer in full-integer mode."""
    refusal = spec.integer_refusal
    if refusal is None:
        return spec.cases[0]
    return next(c for c in spec.cases if c.nodes[0].input[refusal.index] in c.consts)


def _inputs(case) -> dict[str, np.ndarray]:
    feeds = dict(case.inputs)
    first = next(iter(feeds))
    feeds[first] = (feeds[first] * INPUT_GAIN).astype(np.float32)
    return feeds


def _config(path: str, variant: str, feeds) -> ConvertConfig:
    if variant == "float":
        return ConvertConfig(model=path)
    if variant == "hybrid":
        return ConvertConfig(model=path, mode="weights-only", dtype="int8", min_weight_elements=1)
    return ConvertConfig(model=path, mode="full", dtype=variant, calib=[feeds])


def _with_activation(tflite: bytes, kind: str, activation: str) -> bytes:
    """The file with `activation` as the fused_activation_function of its one `kind` op."""
    model = ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    code = getattr(BuiltinOperator, kind)
    codes = {i for i, c in enumerate(model.operatorCodes)
             if max(c.builtinCode, c.deprecatedBuiltinCode) == code}
    ops = [op for op in model.subgraphs[0].operators if op.opcodeIndex in codes]
    assert len(ops) == 1, f"{kind}: {len(ops)} ops in the file"
    ops[0].builtinOptions.fusedActivationFunction = activation_code(activation)
    builder = flatbuffers.Builder(len(tflite) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _op_output_scale(tflite: bytes, kind: str) -> float:
    model = ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    code = getattr(BuiltinOperator, kind)
    graph = model.subgraphs[0]
    for op in graph.operators:
        c = model.operatorCodes[op.opcodeIndex]
        if max(c.builtinCode, c.deprecatedBuiltinCode) == code:
            quant = graph.tensors[op.outputs[0]].quantization
            return float(quant.scale[0]) if quant is not None and quant.scale is not None else 0.0
    raise AssertionError(f"no {kind} in the file")


TABLE_CASES = [(spec.kind, variant) for spec in SPECS for variant, _ in VARIANTS
               if variant != "hybrid" or any(w.hybrid for w in spec.weights)]


@pytest.mark.parametrize("kind,variant", TABLE_CASES, ids=[f"{k}-{v}" for k, v in TABLE_CASES])
def test_table_says_what_litert_applies(kind, variant, tmp_path):
    spec = registry.spec(kind)
    case = _case(spec)
    feeds = _inputs(case)
    model = case_model(case)
    path = save_model(model, tmp_path / "m.onnx")
    plain = run_onnxruntime(model, feeds)[0].astype(np.float64)
    report = convert(_config(path, variant, feeds))
    if variant in ("int8", "uint8"):  # the op written for XNNPACK must apply what the table says
        kind = WRITTEN_IN_8_BIT.get(kind, kind)
    assert report.op_counts.get(kind) == 1, report.op_counts
    step = _op_output_scale(report.tflite, kind)
    kernel = dict(VARIANTS)[variant]
    assert (step > 0) == (kernel == KernelVariant.INTEGER), "the op did not run as the variant"
    # int8 arithmetic: a couple of output steps; hybrid: the input is quantized per sample.
    tol = {"float": 1e-4, "hybrid": 2e-2}.get(variant, 0.0) * np.max(np.abs(plain)) + 2.5 * step
    applied = spec.fused_activation.applied(kernel)
    for activation in ACTIVATION_FUNCTIONS:
        tflite = _with_activation(report.tflite, kind, activation)
        wanted = apply_activation(plain, activation)
        try:
            actual = run_litert(tflite, list(feeds.values()))[0].astype(np.float64)
        except (RuntimeError, ValueError):
            actual = None
        if activation in applied:
            assert actual is not None, f"{activation}: LiteRT refused what the table says it applies"
            error = np.max(np.abs(actual - wanted))
            assert error <= tol, f"{activation} declared applied, off by {error:.3g} (tol {tol:.3g})"
        else:
            assert np.max(np.abs(wanted - plain)) > 4 * tol, "the data cannot tell the difference"
            if actual is not None:
                error = np.max(np.abs(actual - plain))
                assert error <= tol, f"{activation} declared not applied, but LiteRT changed it"


ONNX_ACTIVATIONS = {
    "Relu": lambda x, y: [helper.make_node("Relu", [x], [y])],
    "Relu6": lambda x, y: [helper.make_node("Clip", [x, "act_lo0", "act_hi6"], [y])],
    "ReluN1To1": lambda x, y: [helper.make_node("Clip", [x, "act_lo1", "act_hi1"], [y])],
    "Tanh": lambda x, y: [helper.make_node("Tanh", [x], [y])],
    "Sigmoid": lambda x, y: [helper.make_node("Sigmoid", [x], [y])],
}
ACT_CONSTS = {"act_lo0": np.array(0, np.float32), "act_hi6": np.array(6, np.float32),
              "act_lo1": np.array(-1, np.float32), "act_hi1": np.array(1, np.float32)}
CLAMPING = ("Relu", "Relu6", "ReluN1To1")
CLAMPING_KINDS = {"RELU", "RELU6", "RELU_N1_TO_1"}
PAIRS = [(spec.kind, act) for spec in SPECS for act in ONNX_ACTIVATIONS]


def _with_onnx_activation(case, activation: str):
    model = case_model(case)
    graph = model.graph
    out = graph.output[0].name
    graph.node[-1].output[list(graph.node[-1].output).index(out)] = "pre_activation"
    graph.node.extend(ONNX_ACTIVATIONS[activation]("pre_activation", out))
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in ACT_CONSTS.items())
    return model


@pytest.mark.parametrize("kind,activation", PAIRS, ids=[f"{k}-{a}" for k, a in PAIRS])
def test_activation_after_op_matches_onnxruntime(kind, activation, tmp_path):
    case = _case(registry.spec(kind))
    feeds = _inputs(case)
    model = _with_onnx_activation(case, activation)
    path = save_model(model, tmp_path / "m.onnx")
    expected = run_onnxruntime(model, feeds)[0]
    report = convert(ConvertConfig(model=path))
    assert relative_error(expected, run_litert(report.tflite, list(feeds.values()))[0]) <= 1e-4
    if activation in CLAMPING:
        assert not CLAMPING_KINDS & set(report.op_counts), f"not fused: {report.op_counts}"
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=[feeds]))
    actual = run_litert(report.tflite, list(feeds.values()))[0]
    assert sqnr_db(expected, actual) >= INT8_SQNR_DB
