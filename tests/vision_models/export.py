"""Export the tiny vision models tests/test_vision_families.py converts (run once; the .onnx files are committed).

Random weights from fixed seeds, tiny dimensions, built from transformers configs (no download),
with tests/transformer_models/export.py's recipe: weights of unit gain, random norm scales and
biases, BatchNorm running statistics that are not the identity:

    .venv-export/bin/python tests/vision_models/export.py     # the committed files, into this folder
    .venv-export/bin/python tests/vision_models/export.py --out /tmp/probe [--torchscript] [family ...]

Attention in its eager form; torch.onnx.export's default (dynamo) exporter at opset 18, or with
--torchscript the TorchScript exporter (dynamo=False) at opset 17, whose graphs differ (decomposed
LayerNorm, Shape arithmetic, other Resize and Pad spellings).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

# The shared export venv's torchvision does not match its torch ("operator torchvision::nms does not
# exist" on import), and transformers imports it for its image processors when it finds it; no model
# here needs it.
sys.modules.setdefault("torchvision", None)
import transformers as tr  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "transformer_models"))
from export import _randomize, _strip  # noqa: E402  (tests/transformer_models/export.py)


class Wrapper(torch.nn.Module):
    """Return the named output tensor(s) of a ModelOutput."""

    def __init__(self, model: torch.nn.Module, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.outputs = outputs

    def forward(self, pixel_values):
        out = self.model(pixel_values)
        values = tuple(getattr(out, name) for name in self.outputs)
        return values[0] if len(values) == 1 else values


HIDDEN = ("last_hidden_state",)


def _convnext():
    c = tr.ConvNextConfig(num_channels=3, patch_size=4, num_stages=2, hidden_sizes=[16, 32],
                          depths=[1, 1], image_size=32)
    return tr.ConvNextModel(c), 32, ("pooler_output",)


def _convnextv2():
    c = tr.ConvNextV2Config(num_channels=3, patch_size=4, num_stages=2, hidden_sizes=[16, 32],
                            depths=[1, 1], image_size=32)
    return tr.ConvNextV2Model(c), 32, ("pooler_output",)


def _efficientnet():
    # three of the seven stages; block 1's depthwise conv pads TF-style ("valid" after a ZeroPad2d)
    c = tr.EfficientNetConfig(image_size=32, width_coefficient=0.25, depth_coefficient=1.0,
                              kernel_sizes=[3, 5, 3], in_channels=[32, 16, 24],
                              out_channels=[16, 24, 40], strides=[1, 2, 2],
                              num_block_repeats=[1, 1, 1], expand_ratios=[1, 6, 6],
                              depthwise_padding=[1], hidden_dim=320, num_channels=3)
    return tr.EfficientNetModel(c), 32, HIDDEN


def _regnet():
    c = tr.RegNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                        groups_width=8, layer_type="y")
    return tr.RegNetModel(c), 32, HIDDEN


def _resnet():
    c = tr.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                        layer_type="bottleneck", downsample_in_bottleneck=True)
    return tr.ResNetModel(c), 32, HIDDEN


def _mobilenet_v1():
    c = tr.MobileNetV1Config(num_channels=3, image_size=32, depth_multiplier=0.0625, min_depth=4,
                             tf_padding=True)
    return tr.MobileNetV1Model(c, add_pooling_layer=False), 32, HIDDEN


def _mobilenet_v2():
    c = tr.MobileNetV2Config(num_channels=3, image_size=32, depth_multiplier=0.125, min_depth=4,
                             tf_padding=True, finegrained_output=False)
    return tr.MobileNetV2Model(c, add_pooling_layer=False), 32, HIDDEN


def _levit():
    c = tr.LevitConfig(image_size=64, num_channels=3, kernel_size=3, stride=2, padding=1,
                       patch_size=16, hidden_sizes=[16, 24, 32], num_attention_heads=[2, 2, 2],
                       depths=[1, 1, 1], key_dim=[8, 8, 8], drop_path_rate=0, mlp_ratio=[2, 2, 2],
                       attention_ratio=[2, 2, 2])
    return tr.LevitModel(c), 64, HIDDEN


def _deit():
    c = tr.DeiTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32,
                      num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                      attn_implementation="eager")
    return tr.DeiTModel(c, add_pooling_layer=False), 32, HIDDEN


def _beit():
    c = tr.BeitConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32,
                      num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                      use_relative_position_bias=True, use_mean_pooling=False,
                      attn_implementation="eager")
    return tr.BeitModel(c, add_pooling_layer=False), 32, HIDDEN


def _dinov2():
    # image 40 with patches of 8 against the config's 32: the position embeddings are interpolated
    c = tr.Dinov2Config(image_size=32, patch_size=8, num_channels=3, hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2,
                        attn_implementation="eager")
    return tr.Dinov2Model(c), 40, HIDDEN


def _poolformer():
    c = tr.PoolFormerConfig(num_channels=3, patch_size=7, stride=4, pool_size=3,
                            hidden_sizes=[16, 32], depths=[1, 1], num_encoder_blocks=2,
                            patch_sizes=[7, 3], strides=[4, 2], padding=[2, 1], mlp_ratio=2.0)
    return tr.PoolFormerModel(c), 32, HIDDEN


def _cvt():
    # depths 1, 2, 3: CvtStage indexes its drop-path rates by the stage number (transformers 5.24)
    c = tr.CvtConfig(num_channels=3, embed_dim=[8, 8, 16], num_heads=[1, 2, 2], depth=[1, 2, 3],
                     mlp_ratio=[2.0, 2.0, 2.0], drop_path_rate=[0.0, 0.0, 0.0])
    return tr.CvtModel(c, add_pooling_layer=False), 32, HIDDEN


def _segformer():
    c = tr.SegformerConfig(num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[4, 2],
                           hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2],
                           num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=32,
                           num_labels=4)
    return tr.SegformerForSemanticSegmentation(c), 32, ("logits",)


def _mobilevitv2():
    c = tr.MobileViTV2Config(image_size=64, num_channels=3, width_multiplier=0.125,
                             n_attn_blocks=[1, 1, 1],
                             attn_implementation="eager")
    return tr.MobileViTV2Model(c, expand_output=False), 64, HIDDEN


def _yolos():
    c = tr.YolosConfig(image_size=[32, 32], patch_size=8, num_channels=3, hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       num_detection_tokens=4, num_labels=3, attn_implementation="eager")
    return tr.YolosForObjectDetection(c), 32, ("logits", "pred_boxes")


def _dpt():
    c = tr.DPTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=16,
                     num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                     backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 8, 8, 16],
                     fusion_hidden_size=8, head_in_index=-1, readout_type="project",
                     attn_implementation="eager")
    return tr.DPTForDepthEstimation(c), 32, ("predicted_depth",)


def _detr():
    # a 4-stage ResNet backbone of 8-16 channels from its config (no timm, nothing pretrained)
    backbone = tr.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 16, 16],
                               depths=[1, 1, 1, 1], layer_type="basic", out_features=["stage4"])
    c = tr.DetrConfig(use_timm_backbone=False, backbone_config=backbone,
                      use_pretrained_backbone=False, d_model=16, encoder_layers=1, decoder_layers=1,
                      encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                      decoder_ffn_dim=32, num_queries=4, num_labels=3)
    return tr.DetrForObjectDetection(c), 64, ("logits", "pred_boxes")


FAMILIES = {"convnext": _convnext, "convnextv2": _convnextv2, "efficientnet": _efficientnet,
            "regnet": _regnet, "resnet": _resnet, "mobilenet_v1": _mobilenet_v1,
            "mobilenet_v2": _mobilenet_v2, "levit": _levit, "deit": _deit, "beit": _beit,
            "dinov2": _dinov2, "poolformer": _poolformer, "cvt": _cvt, "segformer": _segformer,
            "mobilevitv2": _mobilevitv2, "yolos": _yolos, "dpt": _dpt, "detr": _detr}
# What tests/test_vision_families.py converts (the others convert as well; probes only, to keep
# the repository small): the family and whether it is the TorchScript export.
COMMITTED = [("convnext", False), ("convnextv2", False), ("efficientnet", False), ("regnet", False),
             ("mobilenet_v1", False), ("levit", False), ("beit", False), ("dinov2", False),
             ("poolformer", False), ("poolformer", True), ("cvt", False), ("segformer", False),
             ("mobilevitv2", False), ("yolos", False), ("dpt", False), ("detr", False)]


def export(name: str, out_dir: str, torchscript: bool = False) -> str:
    torch.manual_seed(0)
    model, size, outputs = FAMILIES[name]()
    _randomize(model)
    model.eval()
    wrapper = Wrapper(model, outputs).eval()
    args = (torch.randn(1, 3, size, size),)
    names = list(outputs)
    path = os.path.join(out_dir, f"{name}{'_ts' if torchscript else ''}.onnx")
    with torch.no_grad():
        if torchscript:
            torch.onnx.export(wrapper, args, path, input_names=["pixel_values"], output_names=names,
                              opset_version=17, dynamo=False)
        else:
            torch.onnx.export(wrapper, args, path, input_names=["pixel_values"], output_names=names,
                              opset_version=18, external_data=False)
    _strip(path)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=HERE)
    parser.add_argument("--torchscript", action="store_true")
    parser.add_argument("families", nargs="*")
    ns = parser.parse_args()
    todo = [(f, ns.torchscript) for f in ns.families or FAMILIES] if ns.families or ns.out != HERE \
        else COMMITTED
    for family, torchscript in todo:
        try:
            out = export(family, ns.out, torchscript)
            print(f"{out}: {os.path.getsize(out)} bytes")
        except Exception as exc:  # a probe run reports every family
            print(f"{family}: FAILED {type(exc).__name__}: {str(exc)[:300]}")
