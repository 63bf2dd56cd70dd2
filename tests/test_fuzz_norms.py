"""Differential fuzz of the normalizations as exporters write them: LayerNorm decomposed below
opset 17 (ReduceMean, Sub, Pow or Mul, ReduceMean, Add eps, Sqrt, Div, optional scale and bias),
RMSNorm as a Div by Sqrt or a Mul by Reciprocal(Sqrt) (T5), L2 normalization (Div by Max(ReduceL2,
eps)) and native LayerNormalization, over the last axis of rank-2..4 inputs, between MatMuls,
residual Adds and activations. Samples hold zero rows and constant rows (a zero-padded frame, a
silent one): var + eps rounds to 0 on an 8-bit grid there, and a float DIV by it gave 0/0; a
T5 RMSNorm x * Reciprocal(sqrt(...)) calibrated on a zero row gave 0 dB on every sample (its
reciprocal's grid reached 1/sqrt(eps)), now imported as x / sqrt(...).

Float: the worst sample within 1e-4 of onnxruntime. Full uint8 / int8 / int16x8 (by seed): every
output finite and the worst sample above a floor. Calibration holds zero rows too: native
LayerNormalization's 1/std (RSQRT) then reaches 1/sqrt(eps), which an 8-bit grid left ordinary
rows one step of (0.3 dB) until such a scale factor and its MUL were kept float.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.test_fuzz_graphs import FLOAT_TOLERANCE, RandomGraph, judge
from tflq.config import ConvertConfig
from tflq.pipeline import convert

SEEDS_NORM = range(60)  # 35 and 47: bias correction's zero-row noise (int16x8); 300 soaked: the 6 left
# (68, 126, 177, 211, 228, 253) are held-out samples beyond the 6 calibration samples' range
NORM_SQNR_FLOOR = {"uint8": 12.0, "int8": 12.0, "int16x8": 30.0}


class NormGraph(RandomGraph):
    """[.., rows, width] graphs of exported normalizations (see the module docstring)."""

    opset = 17  # ReduceMean's axes an attribute; LayerNormalization exists

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        lead = tuple(int(d) for d in self.rng.integers(1, 4, int(self.rng.integers(0, 3))))
        self.input_shape = lead + (int(self.rng.integers(3, 9)), int(self.rng.choice([8, 16, 24])))
        self.shapes = {"x": self.input_shape}

    def scalar(self, value: float) -> str:
        return self.const(np.array(value, np.float32))

    def mean(self, x: str) -> str:
        return self.one("ReduceMean", [x], self.shapes[x][:-1] + (1,), axes=[-1])

    def root_of_mean_square(self, x: str) -> str:
        square = self.one("Pow", [x, self.scalar(2.0)], self.shapes[x]) if self.rng.random() < 0.5 \
            else self.one("Mul", [x, x], self.shapes[x])
        eps = self.scalar(float(self.choice([1e-5, 1e-6])))
        return self.one("Sqrt", [self.one("Add", [self.mean(square), eps], self.shapes[x][:-1] + (1,))],
                        self.shapes[x][:-1] + (1,))

    def affine(self, x: str) -> str:
        width = self.shapes[x][-1]
        if self.rng.random() < 0.7:
            x = self.one("Mul", [x, self.const(self.rng.uniform(0.5, 1.5, width).astype(np.float32))], self.shapes[x])
        if self.rng.random() < 0.7:
            x = self.one("Add", [x, self.const(self.rng.normal(0, 0.2, width).astype(np.float32))], self.shapes[x])
        return x

    def layer_norm(self, x: str) -> str:
        centered = self.one("Sub", [x, self.mean(x)], self.shapes[x])
        return self.affine(self.one("Div", [centered, self.root_of_mean_square(centered)], self.shapes[x]))

    def rms_norm(self, x: str) -> str:
        root = self.root_of_mean_square(x)
        if self.rng.random() < 0.5:
            return self.affine(self.one("Div", [x, root], self.shapes[x]))
        inverse = self.one("Reciprocal", [root], self.shapes[root])
        return self.affine(self.one("Mul", [x, inverse], self.shapes[x]))

    def l2_norm(self, x: str) -> str:
        norm = self.one("ReduceL2", [x], self.shapes[x][:-1] + (1,), axes=[-1])
        bounded = self.one("Max", [norm, self.scalar(1e-12)], self.shapes[norm])
        return self.one("Div", [x, bounded], self.shapes[x])

    def native_layer_norm(self, x: str) -> str:
        width = self.shapes[x][-1]
        scale = self.const(self.rng.uniform(0.5, 1.5, width).astype(np.float32))
        bias = self.const(self.rng.normal(0, 0.2, width).astype(np.float32))
        return self.one("LayerNormalization", [x, scale, bias], self.shapes[x], axis=-1)

    def mix(self, x: str) -> str:
        width = self.shapes[x][-1]
        y = self.one("MatMul", [x, self.weights((width, width))], self.shapes[x])
        y = self.one(self.choice(["Relu", "Tanh", "Sigmoid", "Identity"]), [y], self.shapes[x])
        return self.one("Add", [x, y], self.shapes[x]) if self.rng.random() < 0.5 else y

    def build(self) -> tuple[onnx.ModelProto, list[str]]:
        x = "x"
        for _ in range(int(self.rng.integers(1, 4))):
            x = self.choice([self.layer_norm, self.layer_norm, self.rms_norm, self.l2_norm,
                             self.native_layer_norm])(x)
            if self.rng.random() < 0.6:
                x = self.mix(x)
        graph = helper.make_graph(
            self.nodes, "norms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.input_shape)],
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, self.shapes[x])], self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)]), [x]


def _samples(shape: tuple[int, ...], count: int, seed: int, constant_rows: bool) -> list[dict]:
    """Normal rows; with constant_rows, every other sample has a zero row (a row of another
    constant is ill-conditioned in float itself: its rounding noise times 1/sqrt(eps))."""
    rng = np.random.default_rng(2000 + seed)
    samples = []
    for k in range(count):
        x = rng.normal(0, 2, shape).astype(np.float32)
        if constant_rows and k % 2 == 0:
            rows = x.reshape(-1, shape[-1])
            rows[0] = 0.0
        samples.append({"x": x})
    return samples


@pytest.mark.parametrize("seed", SEEDS_NORM)
def test_norm_graph_matches_onnxruntime(seed, tmp_path):
    builder = NormGraph(11000 + seed)
    model, _ = builder.build()
    onnx.checker.check_model(model, full_check=True)
    path = str(tmp_path / f"fuzz_norm_{seed}.onnx")
    onnx.save(model, path)
    feeds = _samples(builder.input_shape, 4, seed, constant_rows=True)
    calib = _samples(builder.input_shape, 6, seed + 500, constant_rows=True)

    def run(tflite: bytes, feed: dict) -> list[np.ndarray]:
        from tests.conftest import run_litert
        return run_litert(tflite, [feed["x"]], nchw_io=False)

    report = convert(ConvertConfig(model=path, keep_io_layout=True))
    assert judge(path, report.tflite, feeds, run).error <= FLOAT_TOLERANCE, report.op_counts
    dtype = ("uint8", "int8", "int16x8")[seed % 3]
    report = convert(ConvertConfig(model=path, keep_io_layout=True, mode="full", dtype=dtype, calib=calib))
    judged = judge(path, report.tflite, feeds, run)
    assert judged.finite
    assert judged.sqnr_db >= NORM_SQNR_FLOOR[dtype], f"{dtype}: worst sample {judged.sqnr_db:.1f} dB"


@pytest.mark.parametrize("norm", ["layer_norm", "rms_norm", "native_layer_norm"])
def test_zero_rows_through_a_bias_less_layer_into_a_norm(norm, tmp_path):
    """A zero-padded frame through a bias-less MatMul (a Linear(bias=False)) and a normalization:
    the MatMul maps it to a row of zeros, exactly in float and in every quantized type, and the
    norm divides that row by sqrt(eps). int16x8 corrects biases by default, and a correction that
    differs by channel made the row ordinary noise times 1/sqrt(eps): 9.1 dB on the worst sample
    (seed 47 of test_norm_graph_matches_onnxruntime, found at 47 of 300). Such layers keep their
    bias; the others are still corrected."""
    builder = NormGraph(12000)
    builder.input_shape = (1, 6, 16)
    builder.shapes = {"x": builder.input_shape}
    hidden = builder.one("MatMul", ["x", builder.weights((16, 16))], builder.input_shape)
    y = getattr(builder, norm)(hidden)
    graph = helper.make_graph(
        builder.nodes, "zero_rows", [helper.make_tensor_value_info("x", TensorProto.FLOAT, builder.input_shape)],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, builder.shapes[y])], builder.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", builder.opset)])
    path = str(tmp_path / "zero_rows.onnx")
    onnx.save(model, path)
    samples = _samples(builder.input_shape, 8, 0, constant_rows=True)

    def run(tflite: bytes, feed: dict) -> list[np.ndarray]:
        from tests.conftest import run_litert
        return run_litert(tflite, [feed["x"]], nchw_io=False)

    report = convert(ConvertConfig(model=path, keep_io_layout=True, mode="full", dtype="int16x8",
                                   calib=samples, rounding="nearest"))
    assert report.bias_correction is not None  # (on by default in int16x8)
    worst = judge(path, report.tflite, samples, run).sqnr_db
    assert worst >= 35.0, f"worst sample {worst:.1f} dB; skipped: {report.bias_correction.skipped}"


@pytest.mark.parametrize("norm", ["layer_norm", "rms_norm_div", "rms_norm_reciprocal"])
def test_a_division_by_a_root_runs_integer_in_int8(norm, tmp_path):
    """x / sqrt(mean(x^2) + eps) (RMSNorm; T5's x * Reciprocal(sqrt(...)) too) and a LayerNorm
    decomposed below opset 17 between int8 MatMuls: the DIV kept float before (div.cc refuses a
    divisor at its zero point, which a computed divisor's grid holds); as x * rsqrt(...) every op
    runs integer (LiteRT's int8 RSQRT is the ideal rounding of 1/sqrt on every input of its
    grid), as accurate on the worst sample. uint8 (no RSQRT kernel) keeps the DIV."""
    builder = NormGraph(12100)
    builder.input_shape = (1, 6, 32)
    builder.shapes = {"x": builder.input_shape}
    x = builder.one("MatMul", ["x", builder.weights((32, 32))], builder.input_shape)
    numerator = builder.one("Sub", [x, builder.mean(x)], builder.shapes[x]) if norm == "layer_norm" else x
    root = builder.root_of_mean_square(numerator)
    if norm == "rms_norm_reciprocal":
        y = builder.one("Mul", [numerator, builder.one("Reciprocal", [root], builder.shapes[root])], builder.shapes[x])
    else:
        y = builder.one("Div", [numerator, root], builder.shapes[x])
    y = builder.one("MatMul", [y, builder.weights((32, 32))], builder.shapes[x])
    graph = helper.make_graph(
        builder.nodes, "root", [helper.make_tensor_value_info("x", TensorProto.FLOAT, builder.input_shape)],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, builder.shapes[y])], builder.inits)
    path = str(tmp_path / "root.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", builder.opset)]), path)
    calib = _samples(builder.input_shape, 16, 1, constant_rows=False)
    held = _samples(builder.input_shape, 8, 2, constant_rows=False)

    def run(tflite: bytes, feed: dict) -> list[np.ndarray]:
        from tests.conftest import run_litert
        return run_litert(tflite, [feed["x"]], nchw_io=False)

    worst = {}
    for dtype in ("int8", "uint8"):
        report = convert(ConvertConfig(model=path, keep_io_layout=True, mode="full", dtype=dtype, calib=calib))
        kinds = {op.kind for op in report.float_ops}
        assert kinds == (set() if dtype == "int8" else {"SQRT", "DIV"}), report.float_ops
        worst[dtype] = judge(path, report.tflite, held, run).sqnr_db
    assert worst["int8"] >= worst["uint8"] - 3.0 and worst["int8"] >= 20.0, worst
