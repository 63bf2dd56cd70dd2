"""Export the tiny 5-D models tests/test_volumetric.py converts (run once; the .onnx files are committed).

Random weights from fixed seeds (unit-gain weights, random norm scales, BatchNorm statistics that
are not the identity: tests/transformer_models/export.py's recipe), tiny widths:
- video: an R(2+1)D / R3D / X3D-style clip classifier on [1, 3, 8, 32, 32]: a (3, 7, 7) stem
  with BatchNorm3d and ReLU, a spatial-only max pool, a (2+1)-D residual block, a strided 3x3x3
  block with a 1x1x1 projection shortcut, a depthwise 3x3x3 conv, global average pool, Linear;
- unet: a 3-D U-Net on [1, 1, 16, 16, 16]: Conv3d + BatchNorm3d / InstanceNorm3d + ReLU, MaxPool3d,
  a ConvTranspose3d(2, 2) and a trilinear Upsample on the way up, skip concatenations.

    .venv-export/bin/python tests/volume_models/export.py     # the committed files, into this folder
    .venv-export/bin/python tests/volume_models/export.py --out /tmp/probe [--torchscript]

torch.onnx.export's default (dynamo) exporter at opset 18, or with --torchscript the TorchScript
exporter (dynamo=False) at opset 17; both are committed (<name>.onnx, <name>_ts.onnx).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
from tests._export import strip_metadata  # noqa: E402


def _bn_relu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm3d(channels), nn.ReLU()]


class Video(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 8, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
                                  *_bn_relu(8), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
        self.spatial = nn.Sequential(nn.Conv3d(8, 8, (1, 3, 3), padding=(0, 1, 1), bias=False), *_bn_relu(8))
        self.temporal = nn.Sequential(nn.Conv3d(8, 8, (3, 1, 1), padding=(1, 0, 0), bias=False),
                                      nn.BatchNorm3d(8))
        self.down = nn.Sequential(nn.Conv3d(8, 16, 3, 2, 1, bias=False), *_bn_relu(16),
                                  nn.Conv3d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm3d(16))
        self.shortcut = nn.Sequential(nn.Conv3d(8, 16, 1, 2, bias=False), nn.BatchNorm3d(16))
        self.depthwise = nn.Sequential(nn.Conv3d(16, 16, 3, 1, 1, groups=16, bias=False), *_bn_relu(16))
        self.head = nn.Linear(16, 10)

    def forward(self, clip):
        x = self.stem(clip)
        x = torch.relu(self.temporal(self.spatial(x)) + x)
        x = torch.relu(self.down(x) + self.shortcut(x))
        x = self.depthwise(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool3d(x, 1), 1))


class UNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), *_bn_relu(4), nn.Conv3d(4, 4, 3, padding=1),
                                  nn.InstanceNorm3d(4, affine=True), nn.ReLU())
        self.enc2 = nn.Sequential(nn.MaxPool3d(2), nn.Conv3d(4, 8, 3, padding=1), *_bn_relu(8))
        self.bottom = nn.Sequential(nn.MaxPool3d(2), nn.Conv3d(8, 16, 3, padding=1), *_bn_relu(16))
        self.up2 = nn.ConvTranspose3d(16, 8, 2, 2)
        self.dec2 = nn.Sequential(nn.Conv3d(16, 8, 3, padding=1), nn.ReLU())
        self.up1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
                                 nn.Conv3d(8, 4, 1))
        self.dec1 = nn.Sequential(nn.Conv3d(8, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))

    def forward(self, volume):
        e1 = self.enc1(volume)
        e2 = self.enc2(e1)
        d2 = self.dec2(torch.cat([self.up2(self.bottom(e2)), e2], 1))
        return self.dec1(torch.cat([self.up1(d2), e1], 1))


FAMILIES = {"video": (Video, (1, 3, 8, 32, 32), "clip"), "unet": (UNet, (1, 1, 16, 16, 16), "volume")}


def _randomize(model: nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, 1.0 / p[0].numel() ** 0.5)
            elif name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)


def export(name: str, out_dir: str, torchscript: bool = False) -> str:
    torch.manual_seed(0)
    cls, shape, input_name = FAMILIES[name]
    model = cls()
    _randomize(model)
    model.eval()
    path = os.path.join(out_dir, f"{name}{'_ts' if torchscript else ''}.onnx")
    args = (torch.randn(*shape),)
    if torchscript:
        torch.onnx.export(model, args, path, input_names=[input_name], output_names=["output"],
                          opset_version=17, dynamo=False)
    else:
        torch.onnx.export(model, args, path, input_names=[input_name], output_names=["output"],
                          dynamo=True, external_data=False)
    strip_metadata(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=HERE)
    parser.add_argument("--torchscript", action="store_true")
    parser.add_argument("families", nargs="*")
    ns = parser.parse_args()
    os.makedirs(ns.out, exist_ok=True)
    todo = [(f, ns.torchscript) for f in ns.families or FAMILIES] if ns.families or ns.out != HERE \
        else [(f, ts) for f in FAMILIES for ts in (False, True)]
    for family, torchscript in todo:
        path = export(family, ns.out, torchscript)
        print(path, os.path.getsize(path))


if __name__ == "__main__":
    main()
