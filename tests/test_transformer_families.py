"""Transformer families end to end: tiny models exported once by tests/transformer_models/export.py.

Per family: float within 80 dB SQNR of onnxruntime on the worst of 8 random inputs, weights-only
int8 and full int8 files load and invoke in LiteRT, and the full int8 SQNR is recorded (and must not
collapse). Text families add a Where(mask, 0, finfo(float32).min) mask to the scores: no integer
grid holds -3.4e38 (LiteRT aborts at allocate_tensors on an int8 ADD with a 1e36 scale), so the
quantize plan itself keeps the mask's ADD and its SOFTMAX float, and says so. Attention must lower to
FULLY_CONNECTED / BATCH_MATMUL / SOFTMAX, with only the TRANSPOSEs no rewrite can cancel: per
attention block the Q, K and V head splits and the merge (4), per Swin window partition and reverse
one each, per MobileViT unfold and fold one each.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest

from tests.conftest import run_litert, run_onnxruntime
from tflq.config import ConvertConfig
from tflq.ir.quant import sqnr_db
from tflq.pipeline import convert

HERE = os.path.join(os.path.dirname(__file__), "transformer_models")
SAMPLES = 8
FLOAT_SQNR = 80.0
INT8_SQNR_FLOOR = 12.0


@dataclass(frozen=True)
class Family:
    file: str
    transposes: int  # the TRANSPOSEs no rewrite can cancel (see the module docstring)
    attention_blocks: int
    input_shapes: dict = field(default_factory=dict)
    text: bool = False  # int64 token ids and attention mask inputs


TEXT_SHAPES = {"input_ids": (1, 8), "attention_mask": (1, 8)}
FAMILIES = {
    # embeddings (Gather of run-time ids), LayerNorm, GELU, the mask through Cast/And/Where
    "bert": Family("bert.onnx", transposes=4 * 2, attention_blocks=2, text=True),
    "bert_dynamic": Family("bert_dynamic.onnx", transposes=4 * 2, attention_blocks=2, text=True,
                           input_shapes=TEXT_SHAPES),
    "distilbert": Family("distilbert.onnx", transposes=4 * 2, attention_blocks=2, text=True),
    "vit": Family("vit.onnx", transposes=4 * 2, attention_blocks=2),
    # stage 1: 2 windowed blocks (partition + reverse + attention); stage 2: one window, no partition
    "swin": Family("swin.onnx", transposes=2 * (1 + 1 + 4) + 2 * 4, attention_blocks=4),
    "swin_dynamic": Family("swin_dynamic.onnx", transposes=2 * (1 + 1 + 4) + 2 * 4,
                           attention_blocks=4),
    # two MobileViT blocks with unfold/fold (2 + 4 layers); the last one's 1x1 patches need none
    "mobilevit": Family("mobilevit.onnx", transposes=2 * 2 + 4 * (2 + 4), attention_blocks=9),
}


def _feeds(model: onnx.ModelProto, family: Family, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        dims = family.input_shapes.get(vi.name) or [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
        if vi.name == "input_ids":
            feeds[vi.name] = rng.integers(0, 64, dims).astype(np.int64)
        elif vi.name == "attention_mask":
            mask = np.ones(dims, np.int64)
            mask[:, int(rng.integers(2, dims[1] + 1)):] = 0
            feeds[vi.name] = mask
        else:
            feeds[vi.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def _worst_sqnr(path: str, tflite: bytes, samples: list[dict]) -> float:
    return min(sqnr_db(run_onnxruntime(path, f)[0], run_litert(tflite, list(f.values()))[0])
               for f in samples)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family(name, record_property):
    family = FAMILIES[name]
    path = os.path.join(HERE, family.file)
    model = onnx.load(path)
    samples = [_feeds(model, family, seed) for seed in range(SAMPLES)]
    report = convert(ConvertConfig(model=path, input_shapes=family.input_shapes))
    ops = report.op_counts
    assert ops.get("TRANSPOSE", 0) <= family.transposes, ops
    assert ops["SOFTMAX"] == family.attention_blocks and ops["BATCH_MATMUL"] == 2 * family.attention_blocks
    worst = _worst_sqnr(path, report.tflite, samples)
    assert worst >= FLOAT_SQNR, f"worst float sample {worst:.1f} dB"
    weights = convert(ConvertConfig(model=path, input_shapes=family.input_shapes,
                                    mode="weights-only", dtype="int8", min_weight_elements=256))
    assert np.isfinite(_worst_sqnr(path, weights.tflite, samples))
    calib = [_feeds(model, family, 100 + seed) for seed in range(16)]
    full = convert(ConvertConfig(model=path, input_shapes=family.input_shapes, mode="full",
                                 dtype="int8", calib=calib))
    if family.text:  # the finfo.min mask and what it reaches stay float, for a stated reason
        kept = {op.kind for op in full.float_ops if "beyond what integer kernels represent" in op.reason}
        assert {"ADD", "SOFTMAX"} <= kept, full.float_ops
    worst_int8 = _worst_sqnr(path, full.tflite, samples)
    record_property("float_worst_db", round(worst, 1))
    record_property("int8_worst_db", round(worst_int8, 1))
    assert worst_int8 >= INT8_SQNR_FLOOR, f"worst int8 sample {worst_int8:.1f} dB"
