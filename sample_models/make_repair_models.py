"""Regenerate the trained digits models that the accuracy-repair tests (issue 13) use.

Run from the repository root with the benchmark environment, which has PyTorch
(see ``bench/requirements.txt``)::

    .venv-bench/bin/python sample_models/make_repair_models.py

Both models are trained on the training split of ``make_samples.py`` (scikit-learn's 8x8
digits, same seed), so the committed ``digits_eval.npz`` is held out for them as well and
``digits_calib/`` is representative data. Outputs, in ``sample_models/``:

- ``digits_mobilenet.onnx``: a MobileNet-style network (depthwise-separable blocks with ReLU,
  one ReLU6), exported with the BatchNorms folded into the convolutions, as exporters do. The
  folded depthwise weights spread over channels (trained depthwise layers do; the file's facts
  say by how much), which is what per-tensor quantization and cross-layer equalization are about.
- ``digits_mobilenet_bn.onnx``: the same trained network exported with its BatchNorms unfolded
  (analytic bias correction reads their statistics; the folded file's float outputs agree to 1e-5).
- ``digits_mnv3.onnx``: a MobileNetV3-style network: HardSwish, squeeze-excitation gates
  (global average pool, 1x1 convs, ReLU, HardSigmoid, Mul), a residual block; BatchNorms unfolded.
- ``digits_repair_models.json``: float top-1 on the held-out set and the weight-range spread.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_samples import SEED, make_deterministic, split_digits, top1_accuracy, train  # noqa: E402

OPSET = 14  # HardSwish is an ONNX op from opset 14
EPOCHS = 80
MIN_FLOAT_ACCURACY = 0.95


def _conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1, kernel: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout)]


class DigitsMobileNet(nn.Module):
    """Depthwise-separable blocks (MobileNet v1 style) on 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [*_conv_bn(1, 16), nn.ReLU()]
        for cin, cout, stride, act in ((16, 32, 1, nn.ReLU), (32, 64, 2, nn.ReLU6),
                                       (64, 64, 1, nn.ReLU), (64, 96, 2, nn.ReLU)):
            layers += [*_conv_bn(cin, cin, stride, groups=cin), act(),
                       *_conv_bn(cin, cout, kernel=1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = nn.functional.hardsigmoid(self.expand(torch.relu(self.reduce(self.pool(x)))))
        return x * gate


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, stride: int, se: bool) -> None:
        super().__init__()
        self.expand = nn.Sequential(*_conv_bn(cin, hidden, kernel=1), nn.Hardswish())
        self.depthwise = nn.Sequential(*_conv_bn(hidden, hidden, stride, groups=hidden), nn.Hardswish())
        self.se = SqueezeExcite(hidden, max(8, hidden // 4)) if se else nn.Identity()
        self.project = nn.Sequential(*_conv_bn(hidden, cout, kernel=1))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class DigitsMobileNetV3(nn.Module):
    """MobileNetV3-style: HardSwish, squeeze-excitation, a residual, a HardSwish head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(1, 16), nn.Hardswish())
        self.blocks = nn.Sequential(InvertedResidual(16, 32, 16, 1, se=True),
                                    InvertedResidual(16, 48, 24, 2, se=True),
                                    InvertedResidual(24, 72, 24, 1, se=True),
                                    InvertedResidual(24, 96, 40, 2, se=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Linear(40, 64), nn.Hardswish(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def export(model: nn.Module, path: Path, fold_batchnorm: bool) -> None:
    """TorchScript exporter, batch dynamic; constant folding merges BatchNorm into the convs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(path), input_names=["input"],
                          output_names=["logits"], opset_version=OPSET,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=fold_batchnorm,
                          training=torch.onnx.TrainingMode.EVAL, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def depthwise_spread(path: Path) -> list[float]:
    """Per depthwise conv of the file: largest / smallest per-channel weight range."""
    model = onnx.load(str(path))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    spreads = []
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and group > 1 and node.input[1] in weights:
            bound = np.abs(weights[node.input[1]]).reshape(group, -1).max(axis=1)
            spreads.append(round(float(bound.max() / max(bound.min(), 1e-12)), 1))
    return spreads


def build(out_dir: Path) -> dict[str, object]:
    split = split_digits(SEED)
    facts: dict[str, object] = {}
    # A high learning rate is what spreads the depthwise channels (some die, some grow), as
    # long ImageNet training does to MobileNets; at 3e-3 the spread stays about 3x.
    for name, cls, fold, rate in (("digits_mobilenet", DigitsMobileNet, True, 3e-2),
                                  ("digits_mnv3", DigitsMobileNetV3, False, 3e-3)):
        make_deterministic(SEED)
        model = cls()
        train(model, split.train_images, split.train_labels, SEED, epochs=EPOCHS,
              learning_rate=rate)
        path = out_dir / f"{name}.onnx"
        export(model, path, fold)
        if fold:
            export(model, out_dir / f"{name}_bn.onnx", False)
        accuracy = top1_accuracy(path, split.eval_images, split.eval_labels)
        if accuracy < MIN_FLOAT_ACCURACY:
            raise RuntimeError(f"{name}: float top-1 {accuracy:.4f} < {MIN_FLOAT_ACCURACY}")
        facts[name] = {"float_top1_accuracy": round(accuracy, 6),
                       "op_types": list(dict.fromkeys(n.op_type for n in onnx.load(str(path)).graph.node)),
                       "depthwise_range_spread": depthwise_spread(path),
                       "train_samples": len(split.train_labels), "epochs": EPOCHS,
                       "learning_rate": rate, "seed": SEED}
    (out_dir / "digits_repair_models.json").write_text(json.dumps(facts, indent=2) + "\n")
    return facts


if __name__ == "__main__":
    print(json.dumps(build(Path(__file__).resolve().parent), indent=2))
