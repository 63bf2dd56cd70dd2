"""Vision families end to end: tiny transformers models exported once by tests/vision_models/export.py.

Per family, against onnxruntime on the worst of 4 random inputs: the float file within 80 dB, the
weights-only uint8 (the default dtype), full uint8 and full int8 files load and invoke in LiteRT
and stay above a floor a few dB under what they gave when committed (the random weights make some
of these models amplify any perturbation: DPT's output loses 7 dB to weight noise of 0.4% of each
tensor's range, MobileViTV2's 22, the others ~30-37, so the floors differ by family), and no more
TRANSPOSEs than the attention head splits and merges need (4 per attention block where a head axis
has more than one entry; the convolutional families none).

What each family brings: ConvNeXt LayerNorm over channels and 7x7 depthwise convs, ConvNeXtV2 GRN,
EfficientNet and MobileNetV1 TF-style padding, squeeze-excitation, RegNet grouped convs, LeViT
attention biases and hardswish, BEiT relative position bias, DINOv2 interpolated position
embeddings (40x40 input against a 32x32 config), PoolFormer GroupNorm(1, C) exported as Reshape +
InstanceNormalization + Reshape (both exporters), CvT convolutional projections of the tokens
(tokens -> NCHW -> PAD -> depthwise conv), Segformer spatial-reduction attention, mix-FFN with a
depthwise conv between token layouts and its upsampling head, MobileViTV2 F.fold (Col2Im), YOLOS
two outputs, DPT its reassemble/fusion head (ConvTranspose, Resize), DETR a ResNet backbone,
sine position embeddings, encoder-decoder attention over object queries and its box head.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
import pytest

from tests.conftest import worst_sqnr_db
from tflq.config import ConvertConfig
from tflq.pipeline import convert

HERE = os.path.join(os.path.dirname(__file__), "vision_models")
SAMPLES = 4
FLOAT_SQNR = 80.0


@dataclass(frozen=True)
class Family:
    transposes: int
    weights_uint8: float  # floors (dB), worst sample
    full_uint8: float
    full_int8: float
    float_db: float = FLOAT_SQNR  # float16 models: onnxruntime computes in float16 (rounds each op)


FAMILIES = {
    "convnext": Family(0, 33.0, 15.0, 15.0),
    "convnextv2": Family(0, 33.0, 11.0, 11.0),
    "efficientnet": Family(0, 37.0, 32.0, 33.0),
    "regnet": Family(0, 45.0, 27.0, 26.0),
    "mobilenet_v1": Family(0, 35.0, 33.0, 39.0),
    "levit": Family(14, 28.0, 21.0, 23.0),
    "beit": Family(8, 36.0, 20.0, 20.0),
    "dinov2": Family(8, 36.0, 22.0, 22.0),
    "poolformer": Family(0, 34.0, 25.0, 26.0),
    "poolformer_ts": Family(0, 34.0, 25.0, 26.0),
    "cvt": Family(20, 27.0, 13.0, 14.0),
    "segformer": Family(5, 31.0, 21.0, 21.0),
    "mobilevitv2": Family(11, 16.0, 10.0, 10.0),
    "yolos": Family(8, 25.0, 10.0, 10.0),
    "dpt": Family(16, 8.0, 2.0, 2.0),
    "detr": Family(7, 24.0, 13.0, 13.0),
}


def _feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {vi.name: rng.standard_normal([d.dim_value for d in vi.type.tensor_type.shape.dim])
            .astype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))  # (float16 models)
            for vi in model.graph.input}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family(name, record_property):
    check_family(os.path.join(HERE, f"{name}.onnx"), FAMILIES[name], record_property)


def check_family(path: str, family: Family, record_property) -> None:
    """The family's file in float against FLOAT_SQNR and its TRANSPOSE count, then weights-only
    uint8, full uint8 and full int8 against its floors (worst of SAMPLES inputs, LiteRT against
    onnxruntime); also run by tests/test_dense_vision_families.py."""
    model = onnx.load(path)
    samples = [_feeds(model, seed) for seed in range(SAMPLES)]
    calib = [_feeds(model, 100 + seed) for seed in range(16)]
    report = convert(ConvertConfig(model=path))
    assert report.op_counts.get("TRANSPOSE", 0) <= family.transposes, report.op_counts
    worst = {"float": worst_sqnr_db(path, report.tflite, samples)}
    assert worst["float"] >= family.float_db, worst
    runs = {"weights_uint8": dict(mode="weights-only", min_weight_elements=256),
            "full_uint8": dict(mode="full", calib=calib),
            "full_int8": dict(mode="full", dtype="int8", calib=calib)}
    for what, options in runs.items():
        worst[what] = worst_sqnr_db(path, convert(ConvertConfig(model=path, **options)).tflite, samples)
    for what, db in worst.items():
        record_property(f"{what}_worst_db", round(db, 1))
    low = {what: round(db, 1) for what, db in worst.items() if what != "float"
           and db < getattr(family, what)}
    assert not low, f"below the floors {family}: {low}"
