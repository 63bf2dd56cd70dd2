"""Export the tiny dense-vision models tests/test_dense_vision_families.py converts (run once; the
.onnx files are committed).

Detection, segmentation, super-resolution, generative and re-parameterizable CNN families, written
here in torch at a few channels (or built from torchvision's and timm's own blocks at tiny configs;
nothing pretrained, no download), random weights from fixed seeds with
tests/speech_models/export.py's recipe (unit gain, BatchNorm statistics that are not the identity):

    .venv-export/bin/python tests/dense_vision_models/export.py               # the committed files
    .venv-export/bin/python tests/dense_vision_models/export.py --out /tmp/probe [--torchscript] [name ...]

Each family is committed from one exporter (COMMITTED), the default (dynamo, opset 18) or the
TorchScript one (opset 17); both convert (probed with --out).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("speech_export", os.path.join(HERE, "..", "speech_models", "export.py"))
speech = importlib.util.module_from_spec(_spec)  # tests/speech_models/export.py: torchvision loader, randomize, strip_metadata
_spec.loader.exec_module(speech)

tv = speech.tv
from timm.models import byobnet, ghostnet  # noqa: E402  (after torchvision: timm imports it)


def conv_bn_act(cin, cout, k=1, s=1, act=nn.SiLU):
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), act())


class Bottleneck(nn.Module):
    def __init__(self, c, shortcut=True):
        super().__init__()
        self.cv1, self.cv2, self.add = conv_bn_act(c, c, 3), conv_bn_act(c, c, 3), shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """YOLOv8's CSP block: 1x1, split in two (chunk), n bottlenecks each appended, concat, 1x1."""

    def __init__(self, cin, cout, n=1, shortcut=True):
        super().__init__()
        self.c = cout // 2
        self.cv1 = conv_bn_act(cin, 2 * self.c)
        self.cv2 = conv_bn_act((2 + n) * self.c, cout)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class C3(nn.Module):
    """YOLOv5's CSP block: two 1x1 branches, bottlenecks on one, concat, 1x1."""

    def __init__(self, cin, cout, n=1):
        super().__init__()
        c = cout // 2
        self.cv1, self.cv2, self.cv3 = conv_bn_act(cin, c), conv_bn_act(cin, c), conv_bn_act(2 * c, cout)
        self.m = nn.Sequential(*(Bottleneck(c) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat([self.m(self.cv1(x)), self.cv2(x)], 1))


class SPPF(nn.Module):
    def __init__(self, cin, cout, k=5):
        super().__init__()
        c = cin // 2
        self.cv1, self.cv2 = conv_bn_act(cin, c), conv_bn_act(4 * c, cout)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat([x, y1, y2, self.m(y2)], 1))


class YoloV5(nn.Module):
    """YOLOv5-style: CSP backbone, SPPF, PAN neck with nearest upsampling, anchor head decoded with
    sigmoid, grid and anchors (xy*2-0.5+grid)*stride, (wh*2)**2*anchor, reshaped/permuted heads."""

    def __init__(self, nc=3, w=8, size=64):
        super().__init__()
        self.nc, self.na, self.no = nc, 3, nc + 5
        self.b0 = conv_bn_act(3, w, 3, 2)
        self.b1 = nn.Sequential(conv_bn_act(w, 2 * w, 3, 2), C3(2 * w, 2 * w))
        self.b2 = nn.Sequential(conv_bn_act(2 * w, 4 * w, 3, 2), C3(4 * w, 4 * w))     # P3 /8
        self.b3 = nn.Sequential(conv_bn_act(4 * w, 4 * w, 3, 2), C3(4 * w, 4 * w))     # P4 /16
        self.b4 = nn.Sequential(conv_bn_act(4 * w, 8 * w, 3, 2), C3(8 * w, 8 * w), SPPF(8 * w, 8 * w))  # P5 /32
        self.lat5 = conv_bn_act(8 * w, 4 * w)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n4 = C3(8 * w, 4 * w)
        self.lat4 = conv_bn_act(4 * w, 2 * w)
        self.n3 = C3(6 * w, 4 * w)
        self.d3 = conv_bn_act(4 * w, 2 * w, 3, 2)
        self.p4 = C3(4 * w, 4 * w)
        self.d4 = conv_bn_act(4 * w, 4 * w, 3, 2)
        self.p5 = C3(8 * w, 8 * w)
        self.heads = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in (4 * w, 4 * w, 8 * w))
        self.strides = (8, 16, 32)
        anchors = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                                [116, 90, 156, 198, 373, 326]], dtype=torch.float32).view(3, 3, 2)
        self.register_buffer("anchors", anchors)
        self.size = size

    def forward(self, x):
        p3 = self.b2(self.b1(self.b0(x)))
        p4 = self.b3(p3)
        p5 = self.b4(p4)
        l5 = self.lat5(p5)
        n4 = self.n4(torch.cat([self.up(l5), p4], 1))
        l4 = self.lat4(n4)
        n3 = self.n3(torch.cat([self.up(l4), p3], 1))
        o4 = self.p4(torch.cat([self.d3(n3), l4], 1))
        o5 = self.p5(torch.cat([self.d4(o4), l5], 1))
        z = []
        for i, f in enumerate((n3, o4, o5)):
            y = self.heads[i](f)
            bs, _, ny, nx = y.shape
            y = y.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
            grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2).float()
            ag = (self.anchors[i]).view(1, self.na, 1, 1, 2)
            xy, wh, conf = y.sigmoid().split((2, 2, self.nc + 1), 4)
            xy = (xy * 2 - 0.5 + grid) * self.strides[i]
            wh = (wh * 2) ** 2 * ag
            z.append(torch.cat((xy, wh, conf), 4).view(bs, -1, self.no))
        return torch.cat(z, 1)


class DFL(nn.Module):
    def __init__(self, c1=8):
        super().__init__()
        self.c1 = c1
        self.register_buffer("w", torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1))

    def forward(self, x):
        b, _, a = x.shape
        return F.conv2d(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1), self.w).view(b, 4, a)


class YoloV8(nn.Module):
    """YOLOv8-style: C2f (chunk/split), SPPF, anchor-free decoupled head, DFL (softmax + conv),
    anchor points and strides made on the fly, dist2bbox, sigmoid classes."""

    def __init__(self, nc=3, w=8, reg=8):
        super().__init__()
        self.nc, self.reg = nc, reg
        self.b0 = conv_bn_act(3, w, 3, 2)
        self.b1 = nn.Sequential(conv_bn_act(w, 2 * w, 3, 2), C2f(2 * w, 2 * w))
        self.b2 = nn.Sequential(conv_bn_act(2 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w))
        self.b3 = nn.Sequential(conv_bn_act(4 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w), SPPF(4 * w, 4 * w))
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.n3 = C2f(8 * w, 4 * w, shortcut=False)
        self.d3 = conv_bn_act(4 * w, 4 * w, 3, 2)
        self.n4 = C2f(8 * w, 4 * w, shortcut=False)
        c = 4 * w
        self.box = nn.ModuleList(nn.Sequential(conv_bn_act(c, c, 3), conv_bn_act(c, c, 3),
                                               nn.Conv2d(c, 4 * reg, 1)) for _ in range(2))
        self.cls = nn.ModuleList(nn.Sequential(conv_bn_act(c, c, 3), conv_bn_act(c, c, 3),
                                               nn.Conv2d(c, nc, 1)) for _ in range(2))
        self.dfl = DFL(reg)
        self.strides = (8, 16)

    def forward(self, x):
        p3 = self.b2(self.b1(self.b0(x)))
        p4 = self.b3(p3)
        n3 = self.n3(torch.cat([self.up(p4), p3], 1))
        n4 = self.n4(torch.cat([self.d3(n3), p4], 1))
        feats = [torch.cat([self.box[i](f), self.cls[i](f)], 1) for i, f in enumerate((n3, n4))]
        anchors, strides = [], []
        for f, s in zip(feats, self.strides):
            _, _, h, w = f.shape
            sy, sx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
            anchors.append(torch.stack((sx, sy), -1).view(-1, 2))
            strides.append(torch.full((h * w, 1), s, dtype=torch.float32))
        anchors = torch.cat(anchors).transpose(0, 1).unsqueeze(0)
        strides = torch.cat(strides).transpose(0, 1)
        b = x.shape[0]
        cat = torch.cat([f.view(b, 4 * self.reg + self.nc, -1) for f in feats], 2)
        box, cls = cat.split((4 * self.reg, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1, x2y2 = anchors - lt, anchors + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)


class SSDLite(nn.Module):
    """SSDlite: a MobileNetV2 backbone from torchvision's blocks, extra layers, torchvision's
    SSDLiteHead (separable convs), boxes and class logits concatenated over levels; softmax."""

    def __init__(self, nc=4):
        super().__init__()
        from torchvision.models import mobilenetv2
        from torchvision.models.detection import ssdlite
        IR = mobilenetv2.InvertedResidual
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.s1 = nn.Sequential(IR(8, 8, 1, 1), IR(8, 12, 2, 6), IR(12, 16, 2, 6))  # /8
        self.s2 = nn.Sequential(IR(16, 24, 2, 6), IR(24, 24, 1, 6))  # /16
        norm = nn.BatchNorm2d
        self.extra = nn.ModuleList([ssdlite._extra_block(24, 32, norm), ssdlite._extra_block(32, 16, norm)])
        channels = [16, 24, 32, 16]
        self.head = ssdlite.SSDLiteHead(channels, [6, 6, 6, 6], nc, norm)

    def forward(self, x):
        f1 = self.s1(self.stem(x))
        f2 = self.s2(f1)
        f3 = self.extra[0](f2)
        f4 = self.extra[1](f3)
        out = self.head([f1, f2, f3, f4])
        return out["bbox_regression"], out["cls_logits"].softmax(-1)


class UNet(nn.Module):
    """UNet: double convs, max-pool down, ConvTranspose2d up (and bilinear up with align_corners
    True or False), skip concat, 1x1 head."""

    def __init__(self, w=8, up="transpose", cin=3, cout=2):
        super().__init__()

        def dbl(a, b):
            return nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True),
                                 nn.Conv2d(b, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True))
        self.inc, self.d1, self.d2, self.d3 = dbl(cin, w), dbl(w, 2 * w), dbl(2 * w, 4 * w), dbl(4 * w, 4 * w)
        self.mode = up
        if up == "transpose":
            self.u1 = nn.ConvTranspose2d(4 * w, 4 * w, 2, stride=2)
            self.u2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
            self.u3 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.c1, self.c2, self.c3 = dbl(8 * w, 4 * w), dbl(4 * w, 2 * w), dbl(2 * w, w)
        if up != "transpose":
            self.r2, self.r3 = nn.Conv2d(4 * w, 2 * w, 1), nn.Conv2d(2 * w, w, 1)
        self.outc = nn.Conv2d(w, cout, 1)

    def _up(self, i, x):
        if self.mode == "transpose":
            return [self.u1, self.u2, self.u3][i](x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=self.mode == "bilinear_ac")
        return [lambda t: t, self.r2, self.r3][i](x)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.d1(F.max_pool2d(x1, 2))
        x3 = self.d2(F.max_pool2d(x2, 2))
        x4 = self.d3(F.max_pool2d(x3, 2))
        y = self.c1(torch.cat([x3, self._up(0, x4)], 1))
        y = self.c2(torch.cat([x2, self._up(1, y)], 1))
        y = self.c3(torch.cat([x1, self._up(2, y)], 1))
        return self.outc(y)


class ESPCN(nn.Module):
    """Super-resolution: conv tanh stack, sub-pixel conv (PixelShuffle x3)."""

    def __init__(self, r=3, c=1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, 16, 5, padding=2), nn.Tanh(), nn.Conv2d(16, 8, 3, padding=1),
                                  nn.Tanh(), nn.Conv2d(8, c * r * r, 3, padding=1))
        self.ps = nn.PixelShuffle(r)

    def forward(self, x):
        return self.ps(self.body(x))


class BicubicSR(nn.Module):
    """VDSR/SRCNN-style super-resolution: the image upsampled bicubically (F.interpolate, both
    align_corners settings, x2 and to a size) plus a conv residual."""

    def __init__(self, c=3, w=8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, c, 3, padding=1))

    def forward(self, x):
        up = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
        side = F.interpolate(x, size=(24, 20), mode="bicubic", align_corners=True)
        return up + self.body(up), side


class EDSRish(nn.Module):
    """EDSR-like: residual blocks with a residual scale, x2 PixelShuffle twice (x4), mean shift by
    constants; plus a PixelUnshuffle input stem (as in RRDB x1/x2 models)."""

    def __init__(self, c=8):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1))
        self.unshuffle = nn.PixelUnshuffle(2)
        self.head = nn.Conv2d(12, c, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                                                  nn.Conv2d(c, c, 3, padding=1)) for _ in range(2))
        self.up = nn.Sequential(nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2),
                                nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2),
                                nn.LeakyReLU(0.2), nn.Conv2d(c, 3, 3, padding=1))

    def forward(self, x):
        x = (x - self.mean) * 255.0
        y = self.head(self.unshuffle(x))
        for b in self.blocks:
            y = y + 0.1 * b(y)
        return self.up(y) / 255.0 + self.mean


class ResnetGenerator(nn.Module):
    """CycleGAN / pix2pix generator: ReflectionPad2d, 7x7 conv, InstanceNorm2d, stride-2 downs,
    reflection-padded residual blocks, ConvTranspose2d(stride 2, padding 1, output_padding 1), Tanh."""

    def __init__(self, ngf=8, blocks=2, affine=False):
        super().__init__()
        norm = lambda c: nn.InstanceNorm2d(c, affine=affine)  # noqa: E731
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), norm(ngf), nn.ReLU(True)]
        for i in range(2):
            m = 2 ** i
            layers += [nn.Conv2d(ngf * m, ngf * m * 2, 3, 2, 1), norm(ngf * m * 2), nn.ReLU(True)]
        c = ngf * 4
        self.down = nn.Sequential(*layers)
        self.res = nn.ModuleList(nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), norm(c), nn.ReLU(True),
                                               nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), norm(c))
                                 for _ in range(blocks))
        ups = []
        for i in range(2):
            m = 2 ** (2 - i)
            ups += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, 2, 1, output_padding=1), norm(ngf * m // 2),
                    nn.ReLU(True)]
        ups += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.up = nn.Sequential(*ups)

    def forward(self, x):
        y = self.down(x)
        for r in self.res:
            y = y + r(y)
        return self.up(y)


class HRNetFusion(nn.Module):
    """HRNet-style multi-resolution: parallel branches at /4, /8, /16, exchange units (strided 3x3
    downs, 1x1 + nearest/bilinear up), summed, then all upsampled and concatenated (HRNetV2 head)."""

    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_act(3, c, 3, 2, nn.ReLU), conv_bn_act(c, c, 3, 2, nn.ReLU))
        self.t1 = conv_bn_act(c, 2 * c, 3, 2, nn.ReLU)
        self.t2 = conv_bn_act(2 * c, 4 * c, 3, 2, nn.ReLU)
        cs = [c, 2 * c, 4 * c]
        self.branches = nn.ModuleList(nn.Sequential(*[tv.models.resnet.BasicBlock(k, k) for _ in range(1)])
                                      for k in cs)
        self.fuse = nn.ModuleDict()
        for i in range(3):
            for j in range(3):
                if i == j:
                    continue
                if j > i:  # up
                    self.fuse[f"{j}{i}"] = nn.Sequential(nn.Conv2d(cs[j], cs[i], 1, bias=False), nn.BatchNorm2d(cs[i]))
                else:
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        cout = cs[i] if last else cs[j]
                        steps += [nn.Conv2d(cs[j], cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout)]
                        if not last:
                            steps.append(nn.ReLU())
                    self.fuse[f"{j}{i}"] = nn.Sequential(*steps)
        self.head = nn.Conv2d(sum(cs), 4, 1)

    def forward(self, x):
        x0 = self.stem(x)
        x1 = self.t1(x0)
        x2 = self.t2(x1)
        xs = [b(t) for b, t in zip(self.branches, (x0, x1, x2))]
        ys = []
        for i in range(3):
            y = xs[i]
            for j in range(3):
                if j == i:
                    continue
                t = self.fuse[f"{j}{i}"](xs[j])
                if j > i:
                    t = F.interpolate(t, scale_factor=2 ** (j - i), mode="nearest" if i == 0 else "bilinear",
                                      align_corners=False if i else None)
                y = y + t
            ys.append(F.relu(y))
        h, w = ys[0].shape[-2:]
        up = [ys[0]] + [F.interpolate(y, size=(h, w), mode="bilinear", align_corners=True) for y in ys[1:]]
        return self.head(torch.cat(up, 1))


class FPNBackbone(nn.Module):
    """torchvision's Faster R-CNN backbone + FPN (BackboneWithFPN over a tiny ResNet), LastLevelMaxPool."""

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet
        from torchvision.models.detection.backbone_utils import BackboneWithFPN
        from torchvision.ops import misc
        r = resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], norm_layer=misc.FrozenBatchNorm2d)
        # shrink widths: rebuild layers at 8/16/16/32
        r.inplanes = 8
        r.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        r.bn1 = misc.FrozenBatchNorm2d(8)
        r.layer1 = r._make_layer(resnet.BasicBlock, 8, 1)
        r.layer2 = r._make_layer(resnet.BasicBlock, 16, 1, stride=2)
        r.layer3 = r._make_layer(resnet.BasicBlock, 16, 1, stride=2)
        r.layer4 = r._make_layer(resnet.BasicBlock, 32, 1, stride=2)
        self.body = BackboneWithFPN(r, {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
                                    [8, 16, 16, 32], 16)
        for m in self.modules():
            if isinstance(m, misc.FrozenBatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return tuple(self.body(x).values())


class KeypointHead(nn.Module):
    """torchvision's KeypointRCNNHeads (8 convs -> here 2) + KeypointRCNNPredictor
    (ConvTranspose2d stride 2 then bilinear x2 interpolate) on RoI features."""

    def __init__(self):
        super().__init__()
        from torchvision.models.detection import keypoint_rcnn as k
        self.heads = k.KeypointRCNNHeads(8, (16, 16))
        self.pred = k.KeypointRCNNPredictor(16, 5)

    def forward(self, x):
        return self.pred(self.heads(x))


class MaskHead(nn.Module):
    def __init__(self):
        super().__init__()
        from torchvision.models.detection import mask_rcnn as m
        self.heads = m.MaskRCNNHeads(8, (16, 16), 1)
        self.pred = m.MaskRCNNPredictor(16, 8, 3)

    def forward(self, x):
        return self.pred(self.heads(x))


class OddConvs(nn.Module):
    """1x1 stride 2, grouped (groups 2 and 4, not depthwise), dilated 3x3 (rate 2, 3), depthwise with
    channel multiplier 2, odd strides (3), asymmetric kernels (1x5, 5x1), asymmetric padding, even kernels."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1, stride=2)
        self.b = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.c = nn.Conv2d(8, 16, 3, padding=3, dilation=3, groups=4)
        self.d = nn.Conv2d(16, 32, 3, padding=1, groups=16)  # multiplier 2
        self.e = nn.Conv2d(32, 16, (1, 5), padding=(0, 2))
        self.f = nn.Conv2d(16, 16, (5, 1), padding=(2, 0), stride=(1, 1))
        self.g = nn.Conv2d(16, 16, 3, stride=3, padding=1)
        self.h = nn.Conv2d(16, 8, 2, stride=1)
        self.i = nn.Conv2d(8, 8, 3, stride=(2, 1), padding=(1, 0), dilation=(1, 2))

    def forward(self, x):
        y = F.relu(self.a(x))
        y = F.relu(self.b(y))
        y = F.relu(self.c(y))
        y = F.relu(self.d(y))
        y = self.f(self.e(y))
        y = self.g(F.pad(y, (0, 1, 1, 0)))
        return self.i(self.h(y))




# ---- timm's re-parameterizable and ghost CNNs at tiny configs -----------------------------------
def _byob(blocks, stem_type: str) -> nn.Module:
    cfg = byobnet.ByoModelCfg(blocks=blocks, stem_type=stem_type, stem_pool="", stem_chs=8,
                              downsample="conv1x1", num_features=0)
    return byobnet.ByobNet(cfg, num_classes=10)


def mobileone():
    """MobileOne's train-time blocks: depthwise 3x3 and pointwise stages, each a sum of k conv+BN
    branches, a 1x1 (scale) branch and a BN-only identity branch, before the ReLU."""
    B = byobnet.ByoBlockCfg

    def stage(c):
        return (B("one", d=1, c=c, s=2, gs=1, block_kwargs=dict(num_conv_branches=2)),
                B("one", d=1, c=c + 8, s=1, gs=0, block_kwargs=dict(kernel_size=1, num_conv_branches=2)))
    return _byob((stage(8), stage(16)), "one")


def repvgg():
    """RepVGG's train-time blocks: 3x3 conv+BN + 1x1 conv+BN + BN identity, summed, ReLU."""
    B = byobnet.ByoBlockCfg
    return _byob((B("rep", d=2, c=8, s=2), B("rep", d=2, c=16, s=2)), "rep")


class Features(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_features(x)


def ghostnet_tiny(version: str):
    """GhostNet's ghost modules (a primary conv, a cheap depthwise conv, concat and slice) with SE
    (hard sigmoid); V2 adds the DFC attention branch (avg pool, 1x5 and 5x1 depthwise convs,
    sigmoid, nearest upsampling)."""
    cfgs = [[[3, 16, 16, 0, 1]], [[3, 48, 24, 0, 2]], [[5, 72, 40, 0.25, 2]], [[3, 120, 40, 0, 1]]]
    return Features(ghostnet.GhostNet(cfgs, num_classes=10, width=0.5, version=version))


MODELS = {
    "yolov5": lambda: (YoloV5(w=4), (1, 3, 64, 64)),
    "yolov8": lambda: (YoloV8(w=4), (1, 3, 64, 64)),
    "ssdlite": lambda: (SSDLite(), (1, 3, 64, 64)),
    "unet": lambda: (UNet(w=4), (1, 3, 32, 32)),
    "unet_bilinear": lambda: (UNet(w=4, up="bilinear"), (1, 3, 32, 32)),
    "unet_bilinear_ac": lambda: (UNet(w=4, up="bilinear_ac"), (1, 3, 32, 32)),
    "espcn": lambda: (ESPCN(), (1, 1, 16, 16)),
    "edsr": lambda: (EDSRish(), (1, 3, 16, 16)),
    "cyclegan": lambda: (ResnetGenerator(), (1, 3, 32, 32)),
    "hrnet": lambda: (HRNetFusion(), (1, 3, 64, 64)),
    "fpn": lambda: (FPNBackbone(), (1, 3, 64, 64)),
    "keypoint_head": lambda: (KeypointHead(), (2, 8, 14, 14)),
    "mask_head": lambda: (MaskHead(), (2, 8, 14, 14)),
    "odd_convs": lambda: (OddConvs(), (1, 3, 32, 32)),
    "mobileone": lambda: (mobileone(), (1, 3, 32, 32)),
    "repvgg": lambda: (repvgg(), (1, 3, 32, 32)),
    "mobileone_half": lambda: (mobileone(), (1, 3, 32, 32)),  # .half() after randomize (export)
    "bicubic_sr": lambda: (BicubicSR(), (1, 3, 12, 10)),
    "ghostnet": lambda: (ghostnet_tiny("v1"), (1, 3, 32, 32)),
    "ghostnetv2": lambda: (ghostnet_tiny("v2"), (1, 3, 32, 32)),
}
# What the test converts: (name, TorchScript exporter?)
COMMITTED = [("yolov5", False), ("yolov8", True), ("ssdlite", False), ("unet", False),
             ("unet_bilinear_ac", True), ("espcn", True), ("edsr", False), ("cyclegan", False),
             ("hrnet", False), ("fpn", True), ("keypoint_head", False), ("odd_convs", False),
             ("mobileone", False), ("repvgg", True), ("ghostnet", False), ("ghostnetv2", True),
             ("mobileone_half", False), ("bicubic_sr", True)]


def export(name: str, out_dir: str, torchscript: bool = False) -> str:
    torch.manual_seed(0)
    model, shape = MODELS[name]()
    speech.randomize(model)
    model.eval()
    x = torch.randn(*shape)
    if name.endswith("_half"):  # torch's model.half(): float16 input, weights and output
        model, x = model.half(), x.half()
    path = os.path.join(out_dir, f"{name}{'_ts' if torchscript else ''}.onnx")
    with torch.no_grad():
        out = model(x)
        names = [f"y{i}" for i in range(len(out))] if isinstance(out, tuple) else ["y"]
        if torchscript:
            torch.onnx.export(model, (x,), path, input_names=["x"], output_names=names,
                              opset_version=17, dynamo=False)
        else:
            torch.onnx.export(model, (x,), path, input_names=["x"], output_names=names,
                              opset_version=18, external_data=False)
    speech.strip_metadata(path)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=HERE)
    parser.add_argument("--torchscript", action="store_true")
    parser.add_argument("names", nargs="*")
    ns = parser.parse_args()
    todo = [(n, ns.torchscript) for n in ns.names or MODELS] if ns.names or ns.out != HERE else COMMITTED
    for name, torchscript in todo:
        try:
            out = export(name, ns.out, torchscript)
            print(f"{out}: {os.path.getsize(out)} bytes")
        except Exception as exc:  # a probe run reports every model
            print(f"{name}: FAILED {type(exc).__name__}: {str(exc)[:300]}")
