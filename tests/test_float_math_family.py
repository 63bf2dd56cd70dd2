"""Family suite for the float-math ops (issue 8 item 3): small models built with onnx.helper that use
them the way networks do, judged against onnxruntime on the worst of several random inputs.

Per family: float SQNR >= 80 dB on the worst of 8 inputs; the weights-only int8 and full int8 files
load and run in LiteRT (full int8 on a held-out input, its SQNR recorded in FAMILY_RESULTS and
checked against a floor that only catches a broken file); the TRANSPOSE count is pinned.
`python -m tests.test_float_math_family` prints the table (float worst SQNR, full int8 SQNR,
TRANSPOSE count, conversion time).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime
from tflq.config import ConvertConfig
from tflq.errors import UnsupportedModelError
from tflq.ir.quant import sqnr_db
from tflq.pipeline import convert

FLOAT_SQNR_FLOOR = 80.0
SAMPLES = 8
I64 = np.int64


class Builder:
    """Nodes and initializers of one model, with seeded weights."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, value) -> str:
        self.count += 1
        name = f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, *shape: int, scale: float = 1.0) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        return self.const(self.rng.normal(0, scale / np.sqrt(fan_in), shape).astype(np.float32))

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, **attrs) -> str | list[str]:
        self.count += 1
        names = [f"{op_type.lower()}_{self.count}_{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=f"{op_type}_{self.count}", **attrs))
        return names[0] if outputs == 1 else names

    def model(self, inputs: dict[str, tuple[int, ...]], outputs: dict[str, str], opset: int) -> onnx.ModelProto:
        for name, value in outputs.items():  # rename the producing node's output to the graph output
            for node in self.nodes:
                node.output[:] = [name if o == value else o for o in node.output]
                node.input[:] = [name if i == value else i for i in node.input]
        graph = helper.make_graph(
            self.nodes, "family",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
            [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None) for n in outputs], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        inferred = onnx.shape_inference.infer_shapes(model)
        for out, typed in zip(model.graph.output, inferred.graph.output):
            out.type.CopyFrom(typed.type)
        return model


def conv(b: Builder, x: str, cin: int, cout: int, k: int = 3) -> str:
    return b.op("Conv", [x, b.weight(cout, cin, k, k), b.const(np.zeros(cout, np.float32))],
                kernel_shape=[k, k], pads=[k // 2] * 4)


def normalisation_blocks() -> onnx.ModelProto:
    """Style-transfer / diffusion-UNet style blocks: Conv + InstanceNorm + ReLU, Conv + GroupNorm +
    Mish, a Softplus gate, and a residual."""
    b = Builder(1)
    x = conv(b, "x", 3, 8)
    x = b.op("InstanceNormalization", [x, b.const(b.rng.uniform(0.5, 1.5, 8).astype(np.float32)),
                                       b.const(b.rng.normal(0, 0.2, 8).astype(np.float32))], epsilon=1e-5)
    x = b.op("Relu", [x])
    y = conv(b, x, 8, 8)
    y = b.op("GroupNormalization", [y, b.const(b.rng.uniform(0.5, 1.5, 8).astype(np.float32)),
                                    b.const(b.rng.normal(0, 0.2, 8).astype(np.float32))], num_groups=4,
             epsilon=1e-5)
    y = b.op("Mish", [y])
    gate = b.op("Softplus", [conv(b, y, 8, 8, k=1)])
    y = b.op("Mul", [y, gate])
    out = b.op("Add", [x, y])
    return b.model({"x": (1, 3, 12, 12)}, {"y": out}, opset=21)


def classifier_head() -> onnx.ModelProto:
    """A CNN classifier's head: GAP, Gemm logits, the log-sum-exp normaliser of a log-softmax, the
    L2-normalised embedding, per-channel min and a product of probabilities, the ArgMax label and
    the TopK classes with their log-probabilities."""
    b = Builder(2)
    x = b.op("Relu", [conv(b, "x", 3, 16)])
    pooled = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    logits = b.op("Gemm", [pooled, b.weight(10, 16, scale=3.0), b.const(np.zeros(10, np.float32))], transB=1)
    log_softmax = b.op("Sub", [logits, b.op("ReduceLogSumExp", [logits, b.const(np.array([1], I64))])])
    norm = b.op("ReduceL2", [pooled, b.const(np.array([1], I64))])
    embedding = b.op("Div", [pooled, b.op("Max", [norm, b.const(np.array(1e-6, np.float32))])])
    spread = b.op("ReduceMin", [x, b.const(np.array([2, 3], I64))], keepdims=0)
    product = b.op("ReduceProd", [b.op("Sigmoid", [log_softmax]), b.const(np.array([1], I64))], keepdims=0)
    label = b.op("ArgMax", [logits], axis=1, keepdims=0)
    top_values, top_indices = b.op("TopK", [log_softmax, b.const(np.array([3], I64))], outputs=2)
    return b.model({"x": (1, 3, 10, 10)}, {"log_probs": log_softmax, "embedding": embedding,
                                           "channel_min": spread, "confidence": product, "label": label,
                                           "top3_log_probs": top_values, "top3_classes": top_indices},
                   opset=18)


def einsum_attention() -> onnx.ModelProto:
    """Multi-head self-attention written with Einsum, as many exports (and hand-written models) do:
    projections "bid,jd->bij", scores "bihd,bjhd->bhij", context "bhij,bjhd->bihd"."""
    b = Builder(3)
    tokens, dim, heads = 6, 16, 2

    def project(x: str) -> str:
        return b.op("Einsum", [x, b.weight(dim, dim)], equation="bid,jd->bij")

    q, k, v = (b.op("Reshape", [project("x"), b.const(np.array([1, tokens, heads, dim // heads], I64))])
               for _ in range(3))
    scores = b.op("Einsum", [q, k], equation="bihd,bjhd->bhij")
    scores = b.op("Mul", [scores, b.const(np.array(1 / np.sqrt(dim // heads), np.float32))])
    probs = b.op("Softmax", [scores], axis=-1)
    context = b.op("Einsum", [probs, v], equation="bhij,bjhd->bihd")
    merged = b.op("Reshape", [context, b.const(np.array([1, tokens, dim], I64))])
    out = b.op("Einsum", [merged, b.weight(dim, dim)], equation="bij,kj->bik")
    out = b.op("Add", ["x", out])
    return b.model({"x": (1, tokens, dim)}, {"y": out}, opset=13)


def elementwise_math() -> onnx.ModelProto:
    """Positional-encoding and activation math: Sin/Cos features, an erf gate outside the GELU
    pattern, Reciprocal, Sign, and the rounding ops quantizing a feature."""
    b = Builder(4)
    x = b.op("MatMul", ["x", b.weight(8, 12)])
    angles = b.op("Mul", [x, b.const(np.linspace(0.5, 3.0, 12).astype(np.float32))])
    features = b.op("Add", [b.op("Sin", [angles]), b.op("Cos", [angles])])
    gate = b.op("Erf", [b.op("Mul", [x, b.const(np.array(0.8, np.float32))])])
    gated = b.op("Mul", [features, gate])
    scale = b.op("Reciprocal", [b.op("Add", [b.op("Abs", [x]), b.const(np.array(1.0, np.float32))])])
    steps = b.op("Mul", [b.op("Round", [b.op("Mul", [x, b.const(np.array(4.0, np.float32))])]),
                         b.const(np.array(0.25, np.float32))])
    coarse = b.op("Add", [b.op("Floor", [x]), b.op("Ceil", [x])])
    mixed = b.op("Add", [b.op("Mul", [gated, scale]), b.op("Mul", [b.op("Sign", [x]), steps])])
    out = b.op("Add", [mixed, b.op("Mul", [coarse, b.const(np.array(0.1, np.float32))])])
    return b.model({"x": (4, 8)}, {"y": out}, opset=13)


def computed_inputs() -> onnx.ModelProto:
    """Clip/Pad/Slice/Resize whose "constant" inputs are computed: the pads through PyTorch's
    F.pad export chain (ConstantOfShape, Concat, Reshape, reversed Slice, Transpose, Cast), Slice
    bounds and Resize sizes from Shape arithmetic, a Clip min computed from a folded Cast, and a
    Clip max computed from the data at run time (ReduceMax), and Pad mode 'edge'."""
    b = Builder(5)
    x = conv(b, "x", 3, 4)
    zeros = b.op("ConstantOfShape", [b.const(np.array([4], I64))], value=numpy_helper.from_array(np.array([0], I64)))
    cat = b.op("Concat", [b.const(np.array([1, 1, 2, 0], I64)), zeros], axis=0)
    rows = b.op("Slice", [b.op("Reshape", [cat, b.const(np.array([-1, 2], I64))]), b.const(np.array([-1], I64)),
                          b.const(np.array([-(2 ** 63 - 1)], I64)), b.const(np.array([0], I64)),
                          b.const(np.array([-1], I64))])
    pads = b.op("Cast", [b.op("Reshape", [b.op("Transpose", [rows], perm=[1, 0]), b.const(np.array([-1], I64))])],
                to=TensorProto.INT64)
    x = b.op("Pad", [x, pads], mode="constant")  # (1, 4, 14, 12)
    shape = b.op("Shape", [x])
    half = b.op("Unsqueeze", [b.op("Div", [b.op("Gather", [shape, b.const(np.array(2, I64))], axis=0),
                                           b.const(np.array(2, I64))]), b.const(np.array([0], I64))])
    x = b.op("Slice", [x, b.const(np.array([0], I64)), half, b.const(np.array([2], I64))])  # (1, 4, 7, 12)
    low = b.op("Cast", [b.const(np.array(-0.5, np.float64))], to=TensorProto.FLOAT)
    high = b.op("Mul", [b.op("ReduceMax", [x], keepdims=0), b.const(np.array(0.6, np.float32))])
    x = b.op("Clip", [x, low, high])
    hw = b.op("Cast", [b.op("Mul", [b.op("Cast", [b.op("Slice", [b.op("Shape", [x]), b.const(np.array([2], I64)),
                                                                 b.const(np.array([4], I64))])],
                                         to=TensorProto.FLOAT), b.const(np.array([2.0], np.float32))])],
                to=TensorProto.INT64)
    sizes = b.op("Concat", [b.const(np.array([1, 4], I64)), hw], axis=0)
    x = b.op("Resize", [x, "", "", sizes], mode="nearest", coordinate_transformation_mode="asymmetric",
             nearest_mode="floor")
    x = b.op("Pad", [x, b.const(np.array([0, 0, 1, 2, 0, 0, 2, 1], I64))], mode="edge")
    return b.model({"x": (1, 3, 12, 10)}, {"y": conv(b, x, 4, 4)}, opset=13)


@dataclass
class Family:
    build: Callable[[], onnx.ModelProto]
    transposes: int  # TRANSPOSE ops in the float file
    int8_floor: float  # full int8 SQNR floor on a held-out input: catches a broken file, no claim


FAMILIES = {
    "normalisation_blocks": Family(normalisation_blocks, 0, 15.0),
    "classifier_head": Family(classifier_head, 0, 10.0),
    # The equations' own axis moves (q, k and v to head-major, the context back): what an export
    # with Transpose nodes has too.
    "einsum_attention": Family(einsum_attention, 4, 15.0),
    "elementwise_math": Family(elementwise_math, 0, 3.0),
    "computed_inputs": Family(computed_inputs, 0, 15.0),
}
FAMILY_RESULTS: dict[str, dict[str, float]] = {}


def _samples(model: onnx.ModelProto, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input}
    return [{n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()} for _ in range(count)]


def _sqnr(model, tflite: bytes, sample: dict[str, np.ndarray], exact_indices: bool = True) -> float:
    """The worst output's SQNR; integer outputs (class indices) must match exactly when
    `exact_indices` (float files), and are left out otherwise (8-bit logits may reorder near-ties)."""
    expected = run_onnxruntime(model, sample)
    actual = run_litert(tflite, list(sample.values()))
    assert [e.shape for e in expected] == [a.shape for a in actual]
    worst = float("inf")
    for e, a in zip(expected, actual):
        if e.dtype.kind in "iu":
            assert a.dtype == e.dtype and (not exact_indices or np.array_equal(e, a)), (e, a)
            continue
        worst = min(worst, sqnr_db(e, a))
    return worst


def measure(name: str, tmp_dir) -> dict[str, float]:
    """Convert one family every way and measure it (the test's assertions and the printed table)."""
    family = FAMILIES[name]
    model = family.build()
    path = str(tmp_dir / f"{name}.onnx")
    onnx.save(model, path)
    start = time.perf_counter()
    report = convert(ConvertConfig(model=path))
    seconds = time.perf_counter() - start
    samples = _samples(model, SAMPLES, seed=7)
    worst = min(_sqnr(model, report.tflite, s) for s in samples)
    weights = convert(ConvertConfig(model=path, mode="weights-only", dtype="int8", min_weight_elements=16))
    weights_sqnr = _sqnr(model, weights.tflite, samples[0], exact_indices=False)
    calib, held_out = _samples(model, 16, seed=11), _samples(model, 1, seed=13)[0]
    full = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=calib))
    return {"float_worst_db": worst, "weights_only_db": weights_sqnr,
            "full_int8_db": _sqnr(model, full.tflite, held_out, exact_indices=False),
            "transposes": report.op_counts.get("TRANSPOSE", 0), "seconds": seconds,
            "float_ops_in_full": len(full.float_ops)}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family(name, tmp_path):
    result = measure(name, tmp_path)
    FAMILY_RESULTS[name] = result
    assert result["float_worst_db"] >= FLOAT_SQNR_FLOOR, result
    assert result["transposes"] == FAMILIES[name].transposes, result
    assert result["weights_only_db"] >= 25.0, result  # random weights: a loading-and-sanity floor
    assert result["full_int8_db"] >= FAMILIES[name].int8_floor, result


@pytest.mark.parametrize("equation,shapes,reason", [
    ("ii->i", [(3, 3)], "einsum_equation"),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)], "einsum_operands"),
    ("bii,bij->bj", [(2, 3, 3), (2, 3, 4)], "einsum_equation"),
])
def test_unsupported_einsum_is_named(equation, shapes, reason, tmp_path):
    names = [f"x{k}" for k in range(len(shapes))]
    node = helper.make_node("Einsum", names, ["y"], equation=equation, name="the_einsum")
    graph = helper.make_graph([node], "e", [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s))
                                            for n, s in zip(names, shapes)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = str(tmp_path / "e.onnx")
    onnx.save(model, path)
    with pytest.raises(UnsupportedModelError) as info:
        convert(ConvertConfig(model=path))
    diagnostic = info.value.diagnostics[0]
    assert diagnostic.node == "the_einsum" and diagnostic.reason_code == reason
    assert equation in diagnostic.message


@pytest.mark.parametrize("op_type,index", [("Pad", 1), ("Slice", 2), ("Resize", 3)])
def test_shape_input_computed_at_run_time_is_named(op_type, index, tmp_path):
    """Pads, Slice bounds and Resize sizes computed from the data give a data-dependent shape:
    refused naming the node and the input, not "could not be inferred"."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    n = helper.make_tensor_value_info("n", TensorProto.INT64, [len_ := {"Pad": 8, "Slice": 1, "Resize": 4}[op_type]])
    inputs = {"Pad": ["x", "n"], "Slice": ["x", "zero", "n"], "Resize": ["x", "", "", "n"]}[op_type]
    node = helper.make_node(op_type, inputs, ["y"], name="the_node")
    zero = numpy_helper.from_array(np.zeros(len_, I64), "zero")
    graph = helper.make_graph([node], "r", [x, n], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = str(tmp_path / "r.onnx")
    onnx.save(model, path)
    with pytest.raises(UnsupportedModelError) as info:
        convert(ConvertConfig(model=path))
    reasons = {(d.node, d.reason_code) for d in info.value.diagnostics}
    assert ("the_node", "data_dependent_shape") in reasons, info.value.diagnostics
    assert f"input {index}" in next(d.message for d in info.value.diagnostics if d.node == "the_node")


if __name__ == "__main__":
    import pathlib
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        print("| family | float worst-sample SQNR (dB) | weights-only int8 SQNR | full int8 SQNR | "
              "TRANSPOSE | float conversion (s) |")
        print("|---|---|---|---|---|---|")
        for family_name in FAMILIES:
            r = measure(family_name, pathlib.Path(directory))
            print(f"| {family_name} | {r['float_worst_db']:.1f} | {r['weights_only_db']:.1f} | "
                  f"{r['full_int8_db']:.1f} | {r['transposes']} | {r['seconds']:.2f} |")
