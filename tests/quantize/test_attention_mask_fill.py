"""Attention with a padding mask computed as (1 - attention_mask) x fill, the HuggingFace form,
for fills of -1e4, -1e9 and finfo(float32).min, in full int8 and int16x8, against onnxruntime's
float output on the worst of 16 held-out samples (masks keeping 1 to 16 of 16 positions).

The fill is quantized onto the range past which the softmax ignores a position
(plan._mask_fill): before, a -1e9 fill left the scores + mask grid ~4 per int8 step (6.4 dB),
LiteRT's int16 SUB made 1 - 1 one step below 0 (times 1e9: 0.4 dB in int16x8; times
finfo.min, kept float, 0.2 dB).

Funnel subtracts its mask instead, scores - 1e6 x (1 - attention_mask): the same mask of a
positive fill, subtracted, is added negated (masks.subtracted_masks_added); before, it stayed a
[0, 1e6] operand of the SUB and the softmax read scores a step or two of ~4000 (0.1 dB here in
int8 and int16x8, 5 dB in Funnel)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime, save_model
from tflq import convert
from tflq.backend.tflite_reader import read_tflite
from tflq.ir.quant import sqnr_db

T, D = 16, 32
FLOORS = {"int8": 18.0, "int16x8": 28.0}  # measured worst: int8 20.7-24.3, int16x8 33.0-35.6


def _attention(fill: float, subtract: bool = False):
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array((rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32), n)
               for n in ("wq", "wk", "wv", "wo")]
    consts = [numpy_helper.from_array(np.array(v, np.float32), n)
              for n, v in (("scale", 1 / np.sqrt(D)), ("one", 1.0), ("fill", fill))]
    N = helper.make_node
    nodes = [N("MatMul", ["x", "wq"], ["q"]), N("MatMul", ["x", "wk"], ["k"]),
             N("MatMul", ["x", "wv"], ["v"]), N("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             N("MatMul", ["q", "kt"], ["s0"]), N("Mul", ["s0", "scale"], ["s"]),
             N("Sub", ["one", "am"], ["inv"]), N("Mul", ["inv", "fill"], ["mask"]),
             N("Sub" if subtract else "Add", ["s", "mask"], ["sm"]), N("Softmax", ["sm"], ["p"], axis=-1),
             N("MatMul", ["p", "v"], ["o"]), N("MatMul", ["o", "wo"], ["y"])]
    graph = helper.make_graph(
        nodes, "attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, T, D]),
                             helper.make_tensor_value_info("am", TensorProto.FLOAT, [1, 1, T])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, T, D])], weights + consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _samples(seed: int, count: int, fewest: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        am = np.ones((1, 1, T), np.float32)
        am[..., int(rng.integers(fewest, T + 1)):] = 0
        samples.append({"x": (rng.standard_normal((1, T, D)) * 2).astype(np.float32), "am": am})
    return samples


@pytest.mark.parametrize("dtype", sorted(FLOORS))
@pytest.mark.parametrize("fill", [-1e4, -1e9, float(np.finfo(np.float32).min)], ids=["1e4", "1e9", "finfo_min"])
def test_masked_attention_is_integer_and_accurate(fill, dtype, tmp_path):
    model = _attention(fill)
    path = save_model(model, tmp_path / "attention.onnx")
    report = convert(path, mode="full", dtype=dtype, calib=_samples(1, 16, fewest=4))
    assert report.float_ops == [], report.to_text()
    assert "SOFTMAX" in [op.kind for op in read_tflite(report.tflite).ops]
    worst = min(sqnr_db(run_onnxruntime(model, s)[0], run_litert(report.tflite, [s["x"], s["am"]])[0])
                for s in _samples(99, 16, fewest=1))
    assert worst >= FLOORS[dtype], f"{dtype} fill {fill:g}: worst {worst:.1f} dB"


@pytest.mark.parametrize("dtype", sorted(FLOORS))
def test_subtracted_mask_is_integer_and_accurate(dtype, tmp_path):
    """scores - 1e6 x (1 - attention_mask), Funnel's form, as accurate as the added mask."""
    fill = 1e6
    model = _attention(fill, subtract=True)
    path = save_model(model, tmp_path / "attention.onnx")
    report = convert(path, mode="full", dtype=dtype, calib=_samples(1, 16, fewest=4))
    assert report.float_ops == [], report.to_text()
    worst = min(sqnr_db(run_onnxruntime(model, s)[0], run_litert(report.tflite, [s["x"], s["am"]])[0])
                for s in _samples(99, 16, fewest=1))
    assert worst >= FLOORS[dtype], f"{dtype} fill {fill:g}: worst {worst:.1f} dB"
