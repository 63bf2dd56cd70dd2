"""fuzz: AttentionGraph, masked multi-head attention as exporters write it: Q, K, V projections split
into 1-4 heads, scores scaled by a Mul or a Div (or not at all, T5), an optional relative position
bias, and a mask: none, a constant causal one of -inf (nn.Transformer's), finfo.min (the dynamo
exporter's), -1e9 or -1e4 added to the scores, transformers' Where(keep, 0, fill) over an int64
attention_mask input (padding, or padding and causal through And) or (1 - mask) x fill added, the
scores' masked_fill (DeBERTa), torch's causal -inf plus Where(padding, -inf, 0) (merge_masks), or
the inverted mask (1 - mask).masked_fill((1 - mask).bool(), fill) added (Pegasus-X, LED; seeds 28-31,
which leave the first 28 seeds' graphs as they were). Converted in float (against onnxruntime to 1e-4), full int8, and
uint8 or int16x8 by turns (worst held-out sample against onnxruntime's float output); in 8 bits
the mask, its sum or select and the softmax must run integer. Samples keep the first position (a
row of masks only is NaN in onnxruntime). 32 seeds, each mask form with each fill in turn."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import relative_error, run_litert, run_onnxruntime, save_model
from tflq.config import ConvertConfig
from tflq.ir.quant import sqnr_db
from tflq.pipeline import convert

SEEDS = range(32)
FLOAT_TOLERANCE = 1e-4
# Gross errors: the worst seeds give 11.6 and 11.9 dB in 8 bits (few positions, calibration
# clipping); before, a Where(keep, 0, -1e9) mask stretched the sum's grid to the fill (5.3-9.0 dB),
# a masked_fill of -1e9 or -1e4 the select's (-0.6, 0.7 dB), and a -inf causal one stopped calibration
FLOORS = {"uint8": 10.0, "int8": 10.0, "int16x8": 32.0}
# Seeds whose 8-bit loss is the scores' own precision (tflq eval --layers), and their floor.
PRECISION_LIMITED = {19: 8.0}  # unscaled scores: their BATCH_MATMUL alone 10.0 dB, the masked select 30.4
MASKS = ("none", "causal", "padding_where", "padding_gate", "causal_padding_where", "masked_fill",
         "torch_causal_padding")
FILLS = (-np.inf, float(np.finfo(np.float32).min), -1e9, -1e4)


class AttentionGraph:
    """One attention block over x [1, T, D] (and an int64 attention_mask [1, T] for padding masks)."""

    def __init__(self, seed: int) -> None:
        rng = self.rng = np.random.default_rng(seed)
        self.t = int(rng.integers(4, 13))
        self.heads = int(rng.choice([1, 2, 4]))
        self.dh = int(rng.choice([4, 8]))
        self.d = self.heads * self.dh
        self.mask = MASKS[seed % len(MASKS)] if seed < 28 else "inverted_fill"
        fills = FILLS if self.mask == "causal" else FILLS[1:]  # (-inf in a Where: torch writes a constant)
        self.fill = float(fills[(seed // len(MASKS) if seed < 28 else seed) % len(fills)])
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, value, dtype=np.float32) -> str:
        self.count += 1
        name = f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        self.count += 1
        out = f"{op.lower()}{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def heads_of(self, x: str, transpose_keys: bool = False) -> str:
        w = self.const(self.rng.standard_normal((self.d, self.d)) / np.sqrt(self.d))
        split = self.node("Reshape", [self.node("MatMul", [x, w]),
                                      self.const([1, self.t, self.heads, self.dh], np.int64)])
        return self.node("Transpose", [split], perm=[0, 2, 3, 1] if transpose_keys else [0, 2, 1, 3])

    def additive_mask(self) -> str | None:
        t, fill = self.t, self.fill
        causal = np.tril(np.ones((t, t), bool))
        if self.mask == "none":
            return None
        if self.mask == "causal":
            return self.const(np.where(causal, 0.0, fill).reshape((1, 1, t, t)[-int(self.rng.integers(2, 5)):]))
        axes = self.const([1, 2], np.int64)
        if self.mask == "padding_gate":
            gate = self.node("Sub", [self.const(1.0), self.node("Cast", ["attention_mask"], to=TensorProto.FLOAT)])
            return self.node("Mul", [self.node("Unsqueeze", [gate, axes]), self.const(fill)])
        if self.mask == "inverted_fill":  # (1 - mask).masked_fill((1 - mask).bool(), fill)
            inverted = self.node("Sub", [self.const(1.0), self.node("Cast", ["attention_mask"], to=TensorProto.FLOAT)])
            filled = self.node("Where", [self.node("Cast", [inverted], to=TensorProto.BOOL), self.const(fill), inverted])
            return self.node("Unsqueeze", [filled, axes])
        keep = self.node("Unsqueeze", [self.node("Cast", ["attention_mask"], to=TensorProto.BOOL), axes])
        if self.mask == "torch_causal_padding":  # merge_masks: causal + Where(padding, -inf, 0)
            padding = self.node("Equal", ["attention_mask", self.const(0, np.int64)])
            fills = self.node("Where", [padding, self.const(-np.inf), self.const(np.zeros((1, t)))])
            merged = self.node("Add", [self.const(np.where(causal, 0.0, -np.inf)),
                                       self.node("Unsqueeze", [fills, self.const([1], np.int64)])])
            return self.node("Unsqueeze", [merged, self.const([1], np.int64)])
        if self.mask == "causal_padding_where":
            keep = self.node("And", [keep, self.const(causal.reshape(1, 1, t, t), np.bool_)])
        return self.node("Where", [keep, self.const(0.0), self.const(fill)])

    def build(self) -> onnx.ModelProto:
        rng = self.rng
        q, k, v = self.heads_of("x"), self.heads_of("x", transpose_keys=True), self.heads_of("x")
        s = self.node("MatMul", [q, k])
        how = str(rng.choice(["mul", "div", "none"]))
        if how == "mul":
            s = self.node("Mul", [s, self.const(1 / np.sqrt(self.dh))])
        elif how == "div":
            s = self.node("Div", [s, self.const(np.sqrt(self.dh))])
        if rng.random() < 0.3:  # a relative position bias (T5)
            s = self.node("Add", [s, self.const(rng.normal(0, 1, (1, self.heads, self.t, self.t)))])
        if self.mask == "masked_fill":  # scores.masked_fill(~keep, fill), DeBERTa's
            axes = self.const([1, 2], np.int64)
            masked = self.node("Unsqueeze", [self.node("Equal", ["attention_mask", self.const(0, np.int64)]), axes])
            s = self.node("Where", [masked, self.const(self.fill), s])
        mask = self.additive_mask() if self.mask != "masked_fill" else None
        if mask is not None:
            s = self.node("Add", [s, mask] if rng.random() < 0.5 else [mask, s])
        p = self.node("Softmax", [s], axis=-1)
        o = self.node("Reshape", [self.node("Transpose", [self.node("MatMul", [p, v])], perm=[0, 2, 1, 3]),
                                  self.const([1, self.t, self.d], np.int64)])
        w = self.const(rng.standard_normal((self.d, self.d)) / np.sqrt(self.d))
        y = self.node("MatMul", [o, w])
        self.nodes[-1].output[0] = "y"
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, self.t, self.d])]
        if self.mask not in ("none", "causal"):
            inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, self.t]))
        graph = helper.make_graph(self.nodes, "attention", inputs,
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, self.t, self.d])],
                                  self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model

    def samples(self, model: onnx.ModelProto, seed: int, count: int) -> list[dict[str, np.ndarray]]:
        rng = np.random.default_rng(seed)
        names = [vi.name for vi in model.graph.input]
        out = []
        for _ in range(count):
            sample = {"x": rng.standard_normal((1, self.t, self.d)).astype(np.float32)}
            if "attention_mask" in names:
                am = np.zeros((1, self.t), np.int64)
                am[:, :int(rng.integers(1, self.t + 1))] = 1
                sample["attention_mask"] = am
            out.append(sample)
        return out


@pytest.mark.parametrize("seed", SEEDS)
def test_masked_attention_graph(seed, tmp_path):
    graph = AttentionGraph(seed)
    model = graph.build()
    path = save_model(model, tmp_path / "attention.onnx")
    held = graph.samples(model, 1000 + seed, 6)
    expected = [run_onnxruntime(path, s)[0] for s in held]
    what = f"seed {seed}: {graph.mask} mask, fill {graph.fill:g}, {graph.heads} heads, T={graph.t}"
    report = convert(ConvertConfig(model=path))
    worst = max(relative_error(e, run_litert(report.tflite, list(s.values()))[0]) for e, s in zip(expected, held))
    assert worst <= FLOAT_TOLERANCE, f"{what}: float relative error {worst:.2g}"
    calib = graph.samples(model, seed, 16)
    for dtype in ("int8", "uint8" if seed % 2 else "int16x8"):
        floor = min(FLOORS[dtype], PRECISION_LIMITED.get(seed, FLOORS[dtype]))
        report = convert(ConvertConfig(model=path, mode="full", dtype=dtype, calib=calib))
        if dtype != "int16x8":
            kept = [op for op in report.float_ops if op.kind in ("ADD", "SELECT_V2", "MUL", "SOFTMAX")]
            assert not kept, f"{what}, {dtype}: {[(op.kind, op.reason) for op in kept]}"
        worst = min(sqnr_db(e, run_litert(report.tflite, list(s.values()))[0]) for e, s in zip(expected, held))
        assert worst >= floor, f"{what}, {dtype}: worst {worst:.1f} dB"
