"""Dense-vision families end to end: detection, segmentation, super-resolution, generative and
re-parameterizable CNNs, exported once by tests/dense_vision_models/export.py (random weights, a
few channels; the `_ts` files from the TorchScript exporter, the others from the default one).

Per family, against onnxruntime on the worst of 4 random inputs (every output): the float file
within 80 dB; weights-only uint8, full uint8 and full int8 files load and run in LiteRT and stay
above a floor a few dB under what they gave when committed (random weights: RepVGG's summed
identity branches amplify any perturbation, so its floors are the lowest), and no more TRANSPOSEs
than the family's head needs (YOLO's [N, anchors, outputs, H, W] permutes of its heads; the
others none).

What each family brings: YOLOv5 CSP (C3) blocks, SiLU, SPPF max pools, nearest Upsample, Concat,
the sigmoid decode with its grid and anchors (Split, Mul/Add by constants, Pow); YOLOv8 C2f's
chunk, the DFL softmax + 1x1 conv, anchor points and dist2bbox; SSDlite torchvision's separable
heads, extra blocks and the reshaped, concatenated box and class outputs; UNet ConvTranspose2d
upsampling and skip Concat, its bilinear variant align_corners=True; ESPCN PixelShuffle
(DEPTH_TO_SPACE); EDSR-like PixelUnshuffle, a x4 sub-pixel head, mean shift; CycleGAN's
generator ReflectionPad2d (MIRROR_PAD), InstanceNorm2d, ConvTranspose2d with output_padding,
Tanh; HRNet-style multi-resolution exchange (strided downs, nearest and bilinear ups, the
align_corners=True concat head); torchvision's ResNet + FPN backbone (FrozenBatchNorm, the
LastLevelMaxPool level, five outputs); Keypoint R-CNN's head and predictor (ConvTranspose2d then
bilinear x2); odd convolutions (1x1 stride 2, grouped, dilated, depthwise multiplier 2, 1x5/5x1,
stride 3, even kernels, asymmetric padding); timm's MobileOne and RepVGG train-time branches;
GhostNet (ghost modules, hard-sigmoid SE) and GhostNetV2 (DFC attention); MobileOne in float16
(`model.half()`: float16 input, output and weights; the file keeps the float16 interface and
computes in float32, so against onnxruntime's float16 arithmetic its float floor is float16's);
a bicubic super-resolution head (F.interpolate bicubic, align_corners both ways, by a factor and
to a size).

The train-time conv branches of MobileOne and RepVGG merge into one conv per block before import
in float and per-channel (int8) files (tflq.frontend.conv_branches: identities too in float),
and PixelShuffle's CRD channel order folds into the conv before it (PixelUnshuffle's into the
conv after it): MobileOne full int8 26.9 -> 35.1 dB; per-tensor uint8 files keep the branches.
"""
from __future__ import annotations

import os

import pytest

from tests.test_vision_families import Family, check_family  # one runner for both vision suites

HERE = os.path.join(os.path.dirname(__file__), "dense_vision_models")


FAMILIES = {
    "yolov5": Family(3, 55.0, 33.0, 33.0),
    "yolov8_ts": Family(4, 65.0, 40.0, 40.0),
    "ssdlite": Family(0, 36.0, 30.0, 31.0),
    "unet": Family(0, 36.0, 27.0, 26.0),
    "unet_bilinear_ac_ts": Family(0, 32.0, 25.0, 25.0),
    "espcn_ts": Family(0, 33.0, 28.0, 28.0),
    "edsr": Family(0, 34.0, 26.0, 26.0),
    "cyclegan": Family(0, 27.0, 19.0, 19.0),
    "hrnet": Family(0, 38.0, 26.0, 26.0),
    "fpn_ts": Family(0, 27.0, 24.0, 25.0),
    "keypoint_head": Family(0, 33.0, 27.0, 28.0),
    "odd_convs": Family(0, 33.0, 28.0, 26.0),
    "mobileone": Family(0, 37.0, 24.0, 33.0),
    "repvgg_ts": Family(0, 26.0, 10.0, 10.0),
    "ghostnet": Family(0, 32.0, 21.0, 20.0),
    "ghostnetv2_ts": Family(0, 32.0, 23.0, 23.0),
    "mobileone_half": Family(0, 37.0, 24.0, 31.0, float_db=58.0),
    "bicubic_sr_ts": Family(0, 45.0, 29.0, 29.0),
}


def test_every_committed_file_has_a_family():
    files = sorted(f[:-5] for f in os.listdir(HERE) if f.endswith(".onnx"))
    assert files == sorted(FAMILIES)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family(name, record_property):
    check_family(os.path.join(HERE, f"{name}.onnx"), FAMILIES[name], record_property)
