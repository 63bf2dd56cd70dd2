"""int16x8 (int16 activations, int8 weights) for every registry case of an op with a LiteRT 16x8
kernel: the written file, as read back, holds symmetric int16 activations (zero point 0), int8
symmetric weights and int64 biases; LiteRT runs it on its int16 kernels, within k int16 output
steps of onnxruntime beyond what rounding the input does (ops with int8 weights: within k int8
steps, the weights' own rounding)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.ops.test_quantized_ops import (_convert, _input_grid, _output_steps, _quantizable_cases,
                                          _rounded, _same_params)
from tests.conftest import run_litert, run_onnxruntime
from tflq.ir.dtypes import DType
from tflq.ops.base import Calibrated, FixedOutput, Refused, SameAsInput, SameAsOutput

CASES = [(spec, case) for spec, case in _quantizable_cases() if spec.quant.runs_in(DType.INT16)]
IDS = [f"{spec.kind}-{case.name}" for spec, case in CASES]

# k in int16 output steps, per rule (what the 8-bit registry test allows, see STEPS there), and for
# LiteRT's int16 LUT kernels (LOGISTIC/TANH interpolate a 513-entry table; SOFTMAX's exp table):
STEPS = {SameAsInput: 2.0, FixedOutput: 8.0, Calibrated: 3.0, SameAsOutput: 3.0}
# LiteRT's int16 EXP is a lookup table: measured up to 30 int16 steps (1/8 of an int8 step).
KIND_STEPS = {"EXP": 32.0}
# Ops with int8 constant weights: their rounding (up to 1/2 int8 weight step) dominates; measured
# in int8-sized output steps (256 int16 steps) it stays below the 8-bit test's budget.
WEIGHT_STEPS = 1.5 * 256


def _check_params(spec, info) -> None:
    ops = [op for op in info.ops if op.kind == spec.kind]
    assert ops, f"{spec.kind} not emitted: {info.op_kinds()}"
    for op in ops:
        out = info.tensors[op.outputs[0]]
        assert out.dtype == "int16", f"{spec.kind} output is {out.dtype}"
        assert all(z == 0 for z in out.zero_point), "int16 activations have zero point 0"
        for i in op.inputs:
            t = info.tensors[i] if i >= 0 else None
            if t is None or not t.scale:
                continue
            if t.dtype == "int16":
                assert all(z == 0 for z in t.zero_point)
        for rule in spec.weights:
            if rule.index >= len(op.inputs) or op.inputs[rule.index] < 0:
                continue
            w = info.tensors[op.inputs[rule.index]]
            assert w.dtype == "int8", f"weight '{w.name}' is {w.dtype}"
            assert all(z == 0 for z in w.zero_point) and w.data.min() >= -127
        if spec.bias is not None and spec.bias.index < len(op.inputs) and op.inputs[spec.bias.index] >= 0:
            b = info.tensors[op.inputs[spec.bias.index]]
            assert b.dtype == "int64", f"{spec.kind} bias is {b.dtype}; LiteRT's 16x8 kernels take int64"
            x = info.tensors[op.inputs[spec.bias.input]]
            w = info.tensors[op.inputs[spec.bias.weight]]
            np.testing.assert_allclose(b.scale, np.float32(x.scale[0]) * np.asarray(w.scale, np.float32),
                                       rtol=1e-6)
        if isinstance(spec.quant, FixedOutput):
            assert out.scale == [float(np.float32(spec.quant.scale_int16))] and out.zero_point == [0]
        if isinstance(spec.quant, SameAsInput):
            assert _same_params(out, info.tensors[op.inputs[spec.quant.index]])


def _refused_in_int16(spec, case) -> bool:
    refusal = spec.integer_refusal
    return refusal is not None and (refusal.values == Refused.NEGATIVE or
                                    case.nodes[0].input[refusal.index] not in case.consts)


@pytest.mark.parametrize("spec,case", CASES, ids=IDS)
def test_int16x8(spec, case, tmp_path):
    model, report, info = _convert(spec, case, "int16x8", tmp_path)
    if _refused_in_int16(spec, case):
        # the int16 grid is symmetric: it holds negative values (SQRT, RSQRT) and the zero point
        # (a computed divisor), on which the kernel fails the invoke; the op stays float
        assert report.float_ops and all(op.kind == spec.kind and "at invoke" in op.reason
                                        for op in report.float_ops), report.float_ops
        run_litert(report.tflite, list(case.inputs.values()))
        return
    assert report.dtype == "int16x8" and not report.float_ops, report.float_ops
    _check_params(spec, info)
    expected = run_onnxruntime(model, case.inputs)
    rounded = run_onnxruntime(model, {n: _rounded(v, _input_grid(info, n)) for n, v in case.inputs.items()})
    actual = run_litert(report.tflite, list(case.inputs.values()))
    weighted = any(info.tensors[i].dtype == "int8" for op in info.ops for i in op.inputs if i >= 0)
    limit = WEIGHT_STEPS if weighted else KIND_STEPS.get(spec.kind, STEPS[type(spec.quant)])
    for e, r, a, step in zip(expected, rounded, actual, _output_steps(info)):
        e, r = e.astype(np.float64), r.astype(np.float64)
        excess = (np.abs(a - e) - np.abs(r - e)) / step
        assert excess.max() <= limit, (f"error {np.abs(a - e).max() / step:.1f} int16 steps, "
                                       f"{excess.max():.1f} beyond the input rounding's")


def _int16_qdq_model():
    """x -> QDQ(int16) -> Conv (int8 per-channel weights, int32 bias) -> QDQ(int16) -> Relu ->
    QDQ(int16) -> HardSwish (no 16x8 kernel) -> y: onnxruntime's 16x8 QDQ layout (opset 21)."""
    from tests.quantize.qdq_graphs import QdqBuilder

    b = QdqBuilder(seed=5)
    x = b.qdq("x", 1.0 / 32767, 0, np.int16)
    w, _, w_scale, _ = b.weight((4, 3, 3, 3), axis=0)
    bias, _ = b.bias(4, np.float32(1.0 / 32767) * w_scale)
    conv = b.node("Conv", [x, w, bias], pads=[1, 1, 1, 1])
    conv = b.qdq(conv, 4.0 / 32767, 0, np.int16)
    relu = b.qdq(b.node("Relu", [conv]), 4.0 / 32767, 0, np.int16)
    y = b.node("HardSwish", [relu])
    return b.model({"x": (1, 3, 6, 6)}, [y], opset=21)


def test_int16_qdq_model_runs_on_16x8_kernels(tmp_path):
    from tests.conftest import save_model
    from tflq.backend.tflite_reader import read_tflite
    from tflq.config import ConvertConfig
    from tflq.pipeline import convert

    model = _int16_qdq_model()
    path = save_model(model, tmp_path / "q16.onnx")
    report = convert(ConvertConfig(model=path))  # a QDQ model: full integer with its own grids
    assert report.dtype == "int16x8", report.to_text()
    info = read_tflite(report.tflite)
    conv = next(op for op in info.ops if op.kind == "CONV_2D")
    x, w, b = (info.tensors[i] for i in conv.inputs)
    assert (x.dtype, x.scale, x.zero_point) == ("int16", [float(np.float32(1 / 32767))], [0])
    assert w.dtype == "int8" and b.dtype == "int64"
    assert [(f.kind, f.reason) for f in report.float_ops] == [("HARD_SWISH", "LiteRT has no 16x8 kernel for it")]
    sample = np.random.default_rng(0).uniform(-1, 1, (1, 3, 6, 6)).astype(np.float32)
    expected = run_onnxruntime(model, {"x": sample})[0]
    actual = run_litert(report.tflite, [sample])[0]
    step = 4.0 / 32767  # the graph's own output grid (the relu's)
    assert np.abs(actual - expected).max() <= 3 * step, np.abs(actual - expected).max() / step


def test_int16_grids_hold_values_beyond_the_calibration_range(tmp_path):
    """A held-out input 1.6 times beyond every calibration sample: the int16 grids keep room for
    it (INT16_HEADROOM), so LiteRT's output stays within a few int16 steps of onnxruntime; on a
    grid ending at the calibrated range it would be clipped by 0.6 (some 10^4 steps)."""
    from onnx import helper, numpy_helper

    from tests.conftest import save_model
    from tflq.backend.tflite_reader import read_tflite
    from tflq.config import ConvertConfig
    from tflq.pipeline import convert

    rng = np.random.default_rng(11)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 1, 1)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "held_out", [helper.make_tensor_value_info("x", 1, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", 1, [1, 4, 4, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    calib = [{"x": rng.uniform(-1, 1, (1, 3, 4, 4)).astype(np.float32)} for _ in range(8)]
    report = convert(ConvertConfig(model=save_model(model, tmp_path / "m.onnx"), mode="full",
                                   dtype="int16x8", calib=calib))
    held_out = (1.6 * np.sign(calib[0]["x"]) * np.maximum(np.abs(calib[0]["x"]), 0.5)).astype(np.float32)
    expected = run_onnxruntime(model, {"x": held_out})[0]
    actual = run_litert(report.tflite, [held_out])[0]
    step = _output_steps(read_tflite(report.tflite))[0]
    assert np.abs(actual - expected).max() <= WEIGHT_STEPS * step, np.abs(actual - expected).max() / step
    # the summary and `tflq inspect` show the int16 tensors as such
    from click.testing import CliRunner

    from tflq.cli import main

    assert report.tensor_types.get("int16", 0) >= 2 and "int16 x" in report.to_text(), report.to_text()
    out = tmp_path / "m.tflite"
    out.write_bytes(report.tflite)
    shown = CliRunner().invoke(main, ["inspect", str(out)], catch_exceptions=False).output
    assert "int16[1, 4, 4, 4] q(scale=" in shown and "zp=0)" in shown, shown
