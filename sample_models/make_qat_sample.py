"""Train the quantization-aware digits sample with PyTorch's eager QAT flow and export it as QDQ ONNX.

Run from the repository root with the benchmark environment, which has PyTorch::

    .venv-bench/bin/python sample_models/make_qat_sample.py

It reuses ``make_samples.py``'s digits split (so the evaluation data is the committed
``digits_eval.npz``) and its determinism settings. The flow is the standard one:

1. train a float CNN (Conv + BatchNorm + ReLU blocks, a residual add, two Linear layers);
2. fold each BatchNorm into its Conv (``fuse_modules`` in eval mode);
3. ``prepare_qat`` with fake quantization: activations quint8 per tensor (PyTorch's default),
   weights qint8 symmetric per output channel; fine-tune;
4. freeze the observers and export with the TorchScript exporter (``dynamo=False``), which writes
   each fake quantization as a QuantizeLinear -> DequantizeLinear pair (opset 13).

Outputs, in ``sample_models/``:

- ``digits_qat.onnx``: the QDQ model (input ``input`` [batch, 1, 8, 8] float32 in [0, 1], output
  ``logits`` [batch, 10]);
- ``digits_qat.json``: the fake-quantized model's top-1 accuracy on the evaluation data as
  PyTorch computes it, and as onnxruntime computes it on the exported file; the end-to-end test
  requires tflq's integer model in LiteRT to be within 0.5 points of the former.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn
from torch.ao import quantization as tq

from make_samples import SEED, make_deterministic, split_digits, train

OPSET = 13
QAT_EPOCHS = 8
QAT_LEARNING_RATE = 5e-4
TRAIN_BATCH = 64
MIN_QAT_ACCURACY = 0.95
# ONNX QuantizeLinear allows the (0, 255) and (-128, 127) ranges only, so the weights use the full
# int8 range; tflq moves the rare -128 to -127 (TFLite's int8 weights are symmetric).
ACTIVATION = tq.FakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=0,
                                       quant_max=255, dtype=torch.quint8,
                                       qscheme=torch.per_tensor_affine)
WEIGHT = tq.FakeQuantize.with_args(observer=tq.MovingAveragePerChannelMinMaxObserver,
                                   quant_min=-128, quant_max=127, dtype=torch.qint8,
                                   qscheme=torch.per_channel_symmetric, ch_axis=0)


class QatDigitsCnn(nn.Module):
    """Conv/BN/ReLU blocks (stride 2, depthwise), a residual add and two Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2, self.relu2 = nn.BatchNorm2d(16), nn.ReLU()
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn3, self.relu3 = nn.BatchNorm2d(16), nn.ReLU()
        self.pointwise, self.relu4 = nn.Conv2d(16, 16, 1), nn.ReLU()
        self.skip = nn.quantized.FloatFunctional()
        self.fc1, self.relu5 = nn.Linear(16 * 4 * 4, 32), nn.ReLU()
        self.fc2 = nn.Linear(32, 10)
        self.dequant = tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(self.quant(x))))
        x = self.relu2(self.bn2(self.conv2(x)))
        y = self.relu3(self.bn3(self.depthwise(x)))
        x = self.skip.add(x, self.relu4(self.pointwise(y)))
        x = self.relu5(self.fc1(torch.flatten(x, 1)))
        return self.dequant(self.fc2(x))


FUSED = [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"], ["depthwise", "bn3", "relu3"],
         ["pointwise", "relu4"], ["fc1", "relu5"]]


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def export(model: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(path), input_names=["input"],
                          output_names=["logits"], opset_version=OPSET,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          training=torch.onnx.TrainingMode.EVAL, dynamo=False)


def build(out_dir: Path) -> dict[str, object]:
    make_deterministic(SEED)
    split = split_digits(SEED)
    model = QatDigitsCnn()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        train(model, split.train_images, split.train_labels, SEED)
        model.eval()
        float_logits = model(torch.from_numpy(split.eval_images)).detach().numpy()
        model = tq.fuse_modules(model, FUSED)
        model.train()
        model.qconfig = tq.QConfig(activation=ACTIVATION, weight=WEIGHT)
        tq.prepare_qat(model, inplace=True)
        # QAT epochs at a low learning rate: the float training already converged.
        train(model, split.train_images, split.train_labels, SEED + 1, epochs=QAT_EPOCHS,
              learning_rate=QAT_LEARNING_RATE)
        model.apply(tq.disable_observer)
        model.eval()
        with torch.no_grad():
            qat_logits = model(torch.from_numpy(split.eval_images)).numpy()
    path = out_dir / "digits_qat.onnx"
    export(model, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (ort_logits,) = session.run(["logits"], {"input": split.eval_images})
    summary: dict[str, object] = {
        "model": path.name,
        "opset": OPSET,
        "float_top1_accuracy": round(accuracy(float_logits, split.eval_labels), 6),
        "fake_quant_top1_accuracy": round(accuracy(qat_logits, split.eval_labels), 6),
        "onnxruntime_top1_accuracy": round(accuracy(ort_logits, split.eval_labels), 6),
        "eval_samples": len(split.eval_labels),
        "activations": "quint8 per tensor", "weights": "qint8 symmetric per channel",
        "qat_epochs": QAT_EPOCHS, "seed": SEED,
    }
    if summary["fake_quant_top1_accuracy"] < MIN_QAT_ACCURACY:
        raise RuntimeError(f"QAT top-1 accuracy {summary['fake_quant_top1_accuracy']} too low")
    (out_dir / "digits_qat.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    summary = build(Path(__file__).resolve().parent)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
