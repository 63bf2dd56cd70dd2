"""Transformer families end to end: tiny models exported once by tests/transformer_models/export.py.

Per family: float within 80 dB SQNR of onnxruntime on the worst of 8 random inputs, weights-only
int8 and full int8 files load and invoke in LiteRT, and the full int8 SQNR is recorded (and must not
collapse). Masked families add a mask to the attention scores: transformers' Where(keep, 0,
finfo(float32).min) (padding for encoders, causal and padding for GPT-2, LLaMA, CLIP's text model
and T5's decoder), DeBERTa's masked_fill(finfo.min) of the scores, or the -inf of nn.Transformer's
causal mask (torch's nn.TransformerDecoder, TorchScript export: it stopped calibration with "holds
Inf values"). No integer grid holds -3.4e38 (LiteRT aborts at allocate_tensors on an int8 ADD with
a 1e36 scale) but the softmax ignores what lies 16 below its row's maximum, so the mask's
constants are quantized onto the range it resolves (plan._mask_fill, plan._masked_fill_ranges,
masks.finite_mask_fills) and the attention runs integer: no op is kept float for
its magnitude. Attention must lower to FULLY_CONNECTED / BATCH_MATMUL / SOFTMAX, with only the
TRANSPOSEs no rewrite can cancel: per attention block the Q, K and V head splits and the merge (4),
per Swin window partition and reverse one each, per MobileViT unfold and fold one each; LLaMA's
grouped-query attention one more for the repeated values, torch's packed in-projection one more,
DeBERTa's position projections two more.
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
    masked: bool = False  # an additive attention mask (token ids and attention mask inputs, or causal)
    batch_matmuls_per_block: int = 2  # scores and values (DeBERTa: and its two position terms)
    # the op kinds full int8 keeps float (each for a stated reason); every other op is integer
    int8_float: frozenset = frozenset()


TEXT_SHAPES = {"input_ids": (1, 8), "attention_mask": (1, 8)}
FAMILIES = {
    # embeddings (Gather of run-time ids), LayerNorm, GELU, the mask through Cast/And/Where
    "bert": Family("bert.onnx", transposes=4 * 2, attention_blocks=2, masked=True),
    "bert_dynamic": Family("bert_dynamic.onnx", transposes=4 * 2, attention_blocks=2, masked=True,
                           input_shapes=TEXT_SHAPES),
    "distilbert": Family("distilbert.onnx", transposes=4 * 2, attention_blocks=2, masked=True),
    "vit": Family("vit.onnx", transposes=4 * 2, attention_blocks=2),
    # stage 1: 2 windowed blocks (partition + reverse + attention); stage 2: one window, no partition
    "swin": Family("swin.onnx", transposes=2 * (1 + 1 + 4) + 2 * 4, attention_blocks=4),
    "swin_dynamic": Family("swin_dynamic.onnx", transposes=2 * (1 + 1 + 4) + 2 * 4,
                           attention_blocks=4),
    # two MobileViT blocks with unfold/fold (2 + 4 layers); the last one's 1x1 patches need none
    "mobilevit": Family("mobilevit.onnx", transposes=2 * 2 + 4 * (2 + 4), attention_blocks=9),
    # causal decoders: learned positions, GELU with Pow(x, 3) (GPT-2); RMSNorm, rotary embeddings
    # (rotate_half's Neg), SiLU-gated MLP, 4 query heads on 2 key/value heads (LLaMA)
    "gpt2": Family("gpt2.onnx", transposes=4 * 2, attention_blocks=2, masked=True),
    "llama": Family("llama.onnx", transposes=5 * 2, attention_blocks=2, masked=True),
    "clip_text": Family("clip_text.onnx", transposes=4 * 2, attention_blocks=2, masked=True),
    # encoder self-attention, decoder causal self-attention and cross-attention, relative position bias
    "t5": Family("t5.onnx", transposes=4 * 3, attention_blocks=3, masked=True),
    # content-to-position and position-to-content scores gathered by relative position; the mask
    # is a masked_fill of finfo.min on the scores, not a sum
    "deberta_v2": Family("deberta_v2.onnx", transposes=6 * 2, attention_blocks=2, masked=True,
                         batch_matmuls_per_block=4, int8_float=frozenset({"CAST"})),  # (the int64 mask to float)
    # 2 layers of causal self-attention and cross-attention on float [1, 8, 32] target and memory
    "torch_decoder": Family("torch_decoder.onnx", transposes=5 * 4, attention_blocks=4, masked=True),
}


def _feeds(model: onnx.ModelProto, family: Family, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        dims = family.input_shapes.get(vi.name) or [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
        if vi.name in ("input_ids", "decoder_input_ids"):
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
    assert ops["SOFTMAX"] == family.attention_blocks
    assert ops["BATCH_MATMUL"] == family.batch_matmuls_per_block * family.attention_blocks
    worst = _worst_sqnr(path, report.tflite, samples)
    assert worst >= FLOAT_SQNR, f"worst float sample {worst:.1f} dB"
    weights = convert(ConvertConfig(model=path, input_shapes=family.input_shapes,
                                    mode="weights-only", dtype="int8", min_weight_elements=256))
    assert np.isfinite(_worst_sqnr(path, weights.tflite, samples))
    calib = [_feeds(model, family, 100 + seed) for seed in range(16)]
    full = convert(ConvertConfig(model=path, input_shapes=family.input_shapes, mode="full",
                                 dtype="int8", calib=calib))
    if family.masked:  # the mask's finfo.min or -inf is quantized onto the range the softmax resolves
        assert not [op for op in full.float_ops if op.kind in ("ADD", "SELECT_V2", "SOFTMAX") or
                    "beyond what integer kernels represent" in op.reason], full.float_ops
    assert {op.kind for op in full.float_ops} <= family.int8_float, full.float_ops
    worst_int8 = _worst_sqnr(path, full.tflite, samples)
    record_property("float_worst_db", round(worst, 1))
    record_property("int8_worst_db", round(worst_int8, 1))
    assert worst_int8 >= INT8_SQNR_FLOOR, f"worst int8 sample {worst_int8:.1f} dB"
