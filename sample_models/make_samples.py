"""Regenerate the committed sample models and their calibration and evaluation data.

Run from the repository root with the benchmark environment, which has PyTorch
(see ``bench/requirements.txt``)::

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -r bench/requirements.txt
    .venv-bench/bin/python sample_models/make_samples.py

The outputs are committed, so tests and users never need PyTorch; rerun this script only to
change them. Every seed is fixed and training runs single-threaded with deterministic
algorithms, so a rerun on the same machine and library versions rewrites byte-identical files.

Outputs, all in ``sample_models/``:

- ``digits_cnn.onnx``: a small CNN trained on scikit-learn's bundled 8x8 digits (opset 13,
  input ``input`` of shape [batch, 1, 8, 8] float32 with pixels in [0, 1], output ``logits``
  of shape [batch, 10]). BatchNormalization is deliberately left unfolded so that tflq's own
  fusion pass is exercised.
- ``digits_calib/calib_000.npy`` ...: representative data, each file a float32 batch
  [50, 1, 8, 8] drawn from the training split.
- ``digits_eval.npz``: held-out evaluation data, ``input`` [N, 1, 8, 8] float32 and
  ``labels`` [N] int64.
- ``digits_cnn.json``: the float model's top-1 accuracy on the evaluation data and the facts
  that end-to-end tests compare against.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SEED = 20240611
OPSET = 13
EVAL_SAMPLES = 360
CALIB_SAMPLES = 200
CALIB_BATCH = 50
EPOCHS = 40
TRAIN_BATCH = 64
LEARNING_RATE = 3e-3
MIN_FLOAT_ACCURACY = 0.95
# Digits pixels are integers in [0, 16]; the model sees them scaled to [0, 1].
PIXEL_MAX = 16.0
# Ops the exported graph must contain, so the sample keeps covering what it was built for.
REQUIRED_OPS = ("Conv", "BatchNormalization", "Relu", "Clip", "Flatten", "Gemm")
# A fixed zip timestamp (the earliest a zip file can hold) keeps the .npz byte-identical.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class DigitsSplit:
    """The three disjoint roles of the digits samples, already shaped [N, 1, 8, 8]."""

    train_images: np.ndarray
    train_labels: np.ndarray
    calib_images: np.ndarray
    eval_images: np.ndarray
    eval_labels: np.ndarray


class DigitsCnn(nn.Module):
    """Small CNN covering the ops tflq's sample needs: Conv, BN, ReLU, ReLU6, depthwise, FC."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu6 = nn.ReLU6()
        self.depthwise = nn.Conv2d(16, 16, kernel_size=3, padding=1, groups=16)
        self.bn3 = nn.BatchNorm2d(16)
        self.relu3 = nn.ReLU()
        self.pointwise = nn.Conv2d(16, 16, kernel_size=1)
        self.relu4 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.relu5 = nn.ReLU()
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu6(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.depthwise(x)))
        x = self.relu4(self.pointwise(x))
        x = self.relu5(self.fc1(self.flatten(x)))
        return self.fc2(x)


def make_deterministic(seed: int) -> None:
    """Pin every source of randomness and nondeterminism PyTorch has on CPU."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def split_digits(seed: int) -> DigitsSplit:
    """Split the 1797 digits into train, held-out eval, and a calibration draw from train."""
    digits = load_digits()
    images = (digits.images / PIXEL_MAX).astype(np.float32)[:, np.newaxis, :, :]
    labels = digits.target.astype(np.int64)
    train_images, eval_images, train_labels, eval_labels = train_test_split(
        images, labels, test_size=EVAL_SAMPLES, random_state=seed, stratify=labels
    )
    rng = np.random.default_rng(seed)
    calib_index = rng.choice(len(train_images), size=CALIB_SAMPLES, replace=False)
    return DigitsSplit(
        train_images=train_images,
        train_labels=train_labels,
        calib_images=train_images[calib_index],
        eval_images=eval_images,
        eval_labels=eval_labels,
    )


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, seed: int,
          epochs: int = EPOCHS, learning_rate: float = LEARNING_RATE) -> None:
    """Fit the model with Adam and cross-entropy; the shuffle order comes from ``seed``."""
    inputs = torch.from_numpy(images)
    targets = torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), TRAIN_BATCH):
            batch = order[start : start + TRAIN_BATCH]
            optimizer.zero_grad()
            loss = loss_fn(model(inputs[batch]), targets[batch])
            loss.backward()
            optimizer.step()
    model.eval()


def export_onnx(model: DigitsCnn, path: Path) -> None:
    """Export with the TorchScript exporter, batch dynamic, and BatchNormalization unfolded.

    ``do_constant_folding=False`` is what keeps BatchNormalization: with folding on, the
    exporter merges it into the preceding Conv. The TorchScript exporter is chosen on purpose
    (it needs no onnxscript and emits plain Flatten/Gemm), so its deprecation notice is muted.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, 8, 8),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            opset_version=OPSET,
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            do_constant_folding=False,
            training=torch.onnx.TrainingMode.EVAL,
            dynamo=False,
        )


def check_onnx(path: Path) -> list[str]:
    """Validate the exported file and return its op types in first-use order."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    op_types = list(dict.fromkeys(node.op_type for node in model.graph.node))
    missing = [op for op in REQUIRED_OPS if op not in op_types]
    if missing:
        raise RuntimeError(f"{path.name}: exporter dropped or folded {missing}; got {op_types}")
    return op_types


def top1_accuracy(path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Score the eval set as one onnxruntime batch, which also exercises the dynamic batch."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": images})
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a compressed .npz like ``np.savez_compressed``, minus its wall-clock timestamps."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def save_calibration(directory: Path, images: np.ndarray) -> list[str]:
    """Write the calibration images as fixed-size batches and return the file names."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("calib_*.npy"):
        stale.unlink()
    names = []
    for index, start in enumerate(range(0, len(images), CALIB_BATCH)):
        name = f"calib_{index:03d}.npy"
        np.save(directory / name, images[start : start + CALIB_BATCH])
        names.append(name)
    return names


def build_digits_cnn(out_dir: Path) -> dict[str, object]:
    """Train, export and check the digits CNN, write its data files, and return its summary."""
    make_deterministic(SEED)
    split = split_digits(SEED)
    model = DigitsCnn()
    train(model, split.train_images, split.train_labels, SEED)

    model_path = out_dir / "digits_cnn.onnx"
    export_onnx(model, model_path)
    op_types = check_onnx(model_path)
    accuracy = top1_accuracy(model_path, split.eval_images, split.eval_labels)
    if accuracy < MIN_FLOAT_ACCURACY:
        raise RuntimeError(f"float top-1 accuracy {accuracy:.4f} < {MIN_FLOAT_ACCURACY}")

    calib_files = save_calibration(out_dir / "digits_calib", split.calib_images)
    eval_arrays = {"input": split.eval_images, "labels": split.eval_labels}
    save_npz(out_dir / "digits_eval.npz", eval_arrays)
    summary: dict[str, object] = {
        "model": model_path.name,
        "opset": OPSET,
        "input": {"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"},
        "output": {"name": "logits", "shape": ["batch", 10], "dtype": "float32"},
        "op_types": op_types,
        "float_top1_accuracy": round(accuracy, 6),
        "eval_samples": len(split.eval_labels),
        "calib_samples": len(split.calib_images),
        "calib_files": [f"digits_calib/{name}" for name in calib_files],
        "train_samples": len(split.train_labels),
        "seed": SEED,
    }
    (out_dir / "digits_cnn.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    """Regenerate every sample into the directory that holds this script."""
    out_dir = Path(__file__).resolve().parent
    summary = build_digits_cnn(out_dir)
    print(f"{summary['model']}: ops {', '.join(summary['op_types'])}")
    print(
        f"{summary['model']}: float top-1 accuracy {summary['float_top1_accuracy']:.4f} "
        f"on {summary['eval_samples']} held-out samples"
    )


if __name__ == "__main__":
    main()
