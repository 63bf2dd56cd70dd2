"""Full-integer quantization of every op case, generated from the registry.

For each case of each spec with a quantized kernel, and each 8-bit type:
- the type the spec declares: the op runs in 8 bits, LiteRT's output is within k output steps of
  onnxruntime's float output (beyond what rounding the input does), and the spec's rule
  (same-as-input, fixed output, int8 concat, weight and bias schemes) holds in the written file as read back by the reader;
- the type it does not declare (and FloatOnly specs): the op stays float between DEQUANTIZE and
  QUANTIZE (8-bit model I/O makes the boundaries visible in a one-op model) and the model runs.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.conftest import case_model, run_litert, run_onnxruntime, save_model
from tests.delegation import WRITTEN_IN_8_BIT
from tflq import ops as registry
from tflq.backend.tflite_reader import ModelInfo, OpInfo, TensorInfo, read_tflite
from tflq.config import ConvertConfig
from tflq.ir.dtypes import DType
from tflq.targets import island_dtype
from tflq.ops.base import (Calibrated, Case, FixedOutput, FloatOnly, OpSpec, Refused, SameAsInput,
                           SameAsOutput, rand)
from tflq.pipeline import convert

DTYPES = ("int8", "uint8")

# Allowed |LiteRT - float| in output quantization steps, on top of what rounding the model's
# input to its 8-bit grid does to the float result (measured: onnxruntime on the rounded input;
# a steep op such as LOG near 0 or SOFTMAX of wide inputs turns 1/2 input step into several
# output steps, and no kernel can undo that). What remains is the op's own error:
# - SameAsInput: data movement on the input's grid; pooling and bilinear resize round once
#   (1/2 step), and lowerings that rescale afterwards (ceil-mode average pooling's divisor MUL)
#   add one more rounding on a grid up to twice as coarse: 2.
# - FixedOutput: LiteRT's LUT kernels are exact to 1 step, plus the output's own 1/2: 2.
# - Calibrated / SameAsOutput: the output's rounding, the fixed-point multiplier's rounding and
#   the constant operands' rounding (weights, a multiplier), each up to about 1 step: 3.
STEPS = {SameAsInput: 2.0, FixedOutput: 2.0, Calibrated: 3.0, SameAsOutput: 3.0}


def _perturbed(inputs: dict[str, np.ndarray], count: int = 3) -> list[dict[str, np.ndarray]]:
    """The case's inputs plus copies with each float element scaled by a factor in [0.9, 1.1]
    (signs and zeros kept, so log/sqrt domains and integer operands stay valid)."""
    rng = np.random.default_rng(2024)
    samples = [dict(inputs)]
    for _ in range(count):
        samples.append({n: (v * rng.uniform(0.9, 1.1, v.shape)).astype(v.dtype) if v.dtype.kind == "f"
                        else v for n, v in inputs.items()})
    return samples


def _quantizable_cases(float_parts: bool = False):
    """The cases of specs with a quantized kernel; with `float_parts`, also those whose lowering
    keeps some ops float by design (Case.float_parts), which the all-integer suites leave out."""
    for spec in registry.all_specs():
        for case in spec.cases:
            if not isinstance(spec.quant, FloatOnly) and case.quantize and "mode" not in case.options \
                    and (float_parts or not case.float_parts):
                yield spec, case


CASES = [(spec, case, dtype) for spec, case in _quantizable_cases(float_parts=True) for dtype in DTYPES]
IDS = [f"{spec.kind}-{case.name}-{dtype}" for spec, case, dtype in CASES]


def _convert(spec: OpSpec, case, dtype: str, tmp_path, **options):
    model = case_model(case)
    path = save_model(model, tmp_path / "m.onnx")
    calib = _perturbed(case.calib_inputs or case.inputs)
    report = convert(ConvertConfig(model=path, mode="full", dtype=dtype, calib=calib,
                                   **{**case.options, **options}))
    return model, report, read_tflite(report.tflite)


def _producer(info: ModelInfo, tensor: int) -> OpInfo | None:
    return next((op for op in info.ops if tensor in op.outputs), None)


PLAIN_TYPES = ("bool", "int32", "int64")  # never quantized (ids, masks, comparison results)


def _output_steps(info: ModelInfo) -> list[float | None]:
    """Output quantization step of each model output (float outputs: the DEQUANTIZE's input)."""
    steps = []
    for index in info.outputs:
        t = info.tensors[index]
        if t.dtype in PLAIN_TYPES:
            steps.append(None)  # an integer/boolean result: compared exactly
            continue
        if not t.scale:
            producer = _producer(info, index)
            assert producer is not None and producer.kind == "DEQUANTIZE", \
                f"float output '{t.name}' is not produced by DEQUANTIZE"
            t = info.tensors[producer.inputs[0]]
        assert len(t.scale) == 1, f"output '{t.name}' should be per-tensor"
        steps.append(t.scale[0])
    return steps


def _same_params(a: TensorInfo, b: TensorInfo) -> bool:
    return a.dtype == b.dtype and a.scale == b.scale and a.zero_point == b.zero_point


def _check_weights_and_bias(spec: OpSpec, op: OpInfo, info: ModelInfo, dtype: str) -> None:
    for rule in spec.weights:
        w = info.tensors[op.inputs[rule.index]]
        assert w.data is not None, f"weight '{w.name}' is not a constant"
        assert w.dtype == dtype, f"weight '{w.name}' is {w.dtype}, expected {dtype}"
        if dtype == "uint8":
            assert len(w.scale) == 1, "uint8 weights are per-tensor"
            continue
        assert all(z == 0 for z in w.zero_point), "int8 weights are symmetric (zero point 0)"
        assert w.data.min() >= -127, "int8 weights use the narrow range [-127, 127]"
        if rule.per_channel_full and rule.axis is not None and len(w.shape) > 1:
            assert w.quantized_dimension == rule.axis
            assert len(w.scale) == w.shape[rule.axis], "one scale per output channel"
        else:
            assert len(w.scale) == 1, f"{spec.kind} weights are per-tensor"
    if spec.bias is not None and spec.bias.index < len(op.inputs) and op.inputs[spec.bias.index] >= 0:
        b = info.tensors[op.inputs[spec.bias.index]]
        x = info.tensors[op.inputs[spec.bias.input]]
        w = info.tensors[op.inputs[spec.bias.weight]]
        assert b.dtype == "int32"
        assert all(z == 0 for z in b.zero_point)
        expected = np.float32(x.scale[0]) * np.asarray(w.scale, np.float32)
        assert len(b.scale) == len(w.scale)
        np.testing.assert_allclose(b.scale, expected, rtol=1e-6)


def _check_rule(spec: OpSpec, op: OpInfo, info: ModelInfo, dtype: str) -> None:
    """The spec's declared quantization rule, checked on one op of the written file."""
    rule = spec.quant
    out = info.tensors[op.outputs[0]]
    eight_bit = [info.tensors[i] for i in op.inputs if i >= 0 and info.tensors[i].dtype == dtype]
    if isinstance(rule, SameAsInput):
        source = info.tensors[op.inputs[rule.index]]
        for o in (o for o in op.outputs if info.tensors[o].dtype not in PLAIN_TYPES):
            assert _same_params(info.tensors[o], source), \
                f"{spec.kind} output params {info.tensors[o].scale}/{info.tensors[o].zero_point} " \
                f"!= input's {source.scale}/{source.zero_point}"
        for t in eight_bit:  # MAXIMUM's second operand, PADV2's pad value: the same grid
            assert _same_params(t, source), f"operand '{t.name}' is not on the output's grid"
    elif isinstance(rule, FixedOutput):
        zero_point = rule.zero_point_int8 + (128 if dtype == "uint8" else 0)
        assert out.scale == [float(np.float32(rule.scale))] and out.zero_point == [zero_point]
    elif isinstance(rule, SameAsOutput) and dtype == "int8":
        for t in eight_bit:
            assert _same_params(t, out), f"int8 {spec.kind} input '{t.name}' not on the output grid"
    _check_weights_and_bias(spec, op, info, dtype)


@pytest.mark.parametrize("spec,case,dtype", CASES, ids=IDS)
def test_full_quantization(spec, case, dtype, tmp_path):
    island = island_dtype("litert", spec.kind, DType.parse(dtype))  # (an int8 op of a uint8 model)
    if island is None and not spec.quant.runs_in(DType.parse(dtype)) or _refused_input_is_computed(spec, case):
        _check_kept_float(spec, case, dtype, tmp_path)
        return
    model, report, info = _convert(spec, case, dtype, tmp_path)
    dtype = island.name.lower() if island is not None else dtype
    written = WRITTEN_IN_8_BIT.get(spec.kind, spec.kind)  # where the op's form allows
    # (not one on plain integers alone: the bookkeeping a lowering adds, ScatterND's count of the
    # written positions)
    ops = [op for op in info.ops if op.kind in (spec.kind, written) and
           any(info.tensors[t].dtype not in PLAIN_TYPES for t in op.inputs + op.outputs if t >= 0)]
    assert ops, f"{spec.kind} not emitted: {info.op_kinds()}"
    for op in ops:
        out = info.tensors[op.outputs[0]]  # an index result (ARG_MAX): its data input is 8-bit
        runs = out if out.dtype not in PLAIN_TYPES else info.tensors[op.inputs[0]]
        assert runs.dtype == dtype, f"{spec.kind} was not quantized"
        if op.kind == spec.kind:
            _check_rule(spec, op, info, dtype)
        else:  # (its weights are no operand on the output's grid)
            assert _same_params(out, info.tensors[op.inputs[0]]), f"{op.kind} for {spec.kind}"
    _check_accuracy(model, case, report.tflite, info, case.quant_steps or STEPS[type(spec.quant)])


def _input_grid(info: ModelInfo, name: str) -> TensorInfo | None:
    """The 8-bit tensor a model input is first put on (itself, or its QUANTIZE's output)."""
    index = next(t.index for t in info.tensors if t.name == name)
    if info.tensors[index].scale:
        return info.tensors[index]
    for op in info.ops:
        if op.kind == "QUANTIZE" and op.inputs[0] == index:
            return info.tensors[op.outputs[0]]
    return None


def _rounded(value: np.ndarray, grid: TensorInfo | None) -> np.ndarray:
    """`value` rounded to the grid's steps, without clamping (clamping a case's own input would
    be a calibration bug, which the test must see)."""
    if grid is None or value.dtype.kind != "f":
        return value
    step, zero_point = np.float64(grid.scale[0]), grid.zero_point[0]
    return ((np.round(value / step + zero_point) - zero_point) * step).astype(value.dtype)


def _check_accuracy(model, case, tflite: bytes, info: ModelInfo, steps: float) -> None:
    expected = run_onnxruntime(model, case.inputs)
    rounded = run_onnxruntime(model, {n: _rounded(v, _input_grid(info, n))
                                      for n, v in case.inputs.items()})
    actual = run_litert(tflite, list(case.inputs.values()))
    for e, r, a, step in zip(expected, rounded, actual, _output_steps(info)):
        assert e.shape == a.shape
        if step is None:  # exact, on the inputs as the file's grid rounds them
            assert np.array_equal(a, r), f"{a} != {r}"
            continue
        e, r = e.astype(np.float64), r.astype(np.float64)
        excess = (np.abs(a - e) - np.abs(r - e)) / step
        assert excess.max() <= steps, \
            f"error {np.abs(a - e).max() / step:.2f} output steps, {excess.max():.2f} beyond the " \
            f"input rounding's {np.abs(r - e).max() / step:.2f}"


def _refused_input_is_computed(spec, case) -> bool:
    """A kernel that fails the invoke on some values of an input (DIV's divisor at its zero
    point) runs integer only on a constant input: a computed one may take any value of its grid."""
    refusal = spec.integer_refusal
    inputs = case.nodes[0].input  # (an importer's own operand, Softsign's 1 + |x|, is computed)
    return refusal is not None and refusal.values == Refused.ZERO_POINT and \
        (refusal.index >= len(inputs) or inputs[refusal.index] not in case.consts)


def _check_kept_float(spec, case, dtype, tmp_path) -> None:
    """An op without a kernel for `dtype` stays float; with 8-bit model I/O it sits between
    DEQUANTIZE and QUANTIZE, and the model runs."""
    model, report, info = _convert(spec, case, dtype, tmp_path, io_type=dtype)
    ops = [op for op in info.ops if op.kind == spec.kind]
    if not ops:  # the importer lowered this case to other ops (POW x^2 -> MUL): all 8-bit
        assert isinstance(spec.quant, FloatOnly) and not report.float_ops, info.op_kinds()
        _check_accuracy(model, case, report.tflite, info, STEPS[Calibrated])
        return
    for op in ops:
        out = info.tensors[op.outputs[0]]
        assert out.dtype in ("float32",) + PLAIN_TYPES or not out.scale  # (a Cast to uint8)
    for index in info.inputs + info.outputs:
        assert info.tensors[index].dtype in (dtype,) + PLAIN_TYPES, "8-bit I/O asked for"
    kinds = info.op_kinds()
    if any(info.tensors[i].dtype == dtype for i in info.inputs):
        assert "DEQUANTIZE" in kinds
    if any(info.tensors[i].dtype == dtype for i in info.outputs):
        assert "QUANTIZE" in kinds
    _check_accuracy(model, case, report.tflite, info, 2.0)  # QUANTIZE rounds once, then float


FLOAT_ONLY = [(spec, case) for spec in registry.all_specs() if isinstance(spec.quant, FloatOnly)
              for case in spec.cases if "mode" not in case.options and case.quantize]


@pytest.mark.parametrize("spec,case", FLOAT_ONLY, ids=[f"{s.kind}-{c.name}" for s, c in FLOAT_ONLY])
@pytest.mark.parametrize("dtype", DTYPES)
def test_float_only_ops_are_wrapped(spec, case, dtype, tmp_path):
    _check_kept_float(spec, case, dtype, tmp_path)


@pytest.mark.parametrize("dtype", DTYPES)
def test_float_island_between_quantized_ops(dtype, tmp_path):
    """SIGN has no 8-bit kernel: inside a quantized graph it gets exactly one DEQUANTIZE before it
    and one QUANTIZE after it (a float Neg, once the example, imports as a MUL by -1 now)."""
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sign", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["c"]), helper.make_node("Add", ["c", "x"], ["y"])]
    case = Case("relu_sign_relu_add", nodes, {"x": rand(1, 3, 5, 5)})
    model, report, info = _convert(registry.spec("SIGN"), case, dtype, tmp_path)
    assert info.op_kinds() == ["QUANTIZE", "RELU", "DEQUANTIZE", "SIGN", "QUANTIZE", "RELU", "ADD",
                               "DEQUANTIZE"]
    sign = next(op for op in info.ops if op.kind == "SIGN")
    assert info.tensors[sign.inputs[0]].dtype == info.tensors[sign.outputs[0]].dtype == "float32"
    assert [f.kind for f in report.float_ops] == ["SIGN"]
    _check_accuracy(model, case, report.tflite, info, STEPS[Calibrated])
