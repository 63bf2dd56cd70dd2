"""Build seeded MobileNetV2 and ResNet-18 in PyTorch and export them as benchmark ONNX models.

The networks are written out here (torchvision does not install in this environment) and follow
the published architectures. BatchNormalization is exported unfolded so that tflq has to fold it.

ResNet-18's weights are random but seeded; every BatchNorm gets a random scale and shift plus
running statistics measured on a seeded random batch, so the statistics are far from the 0/1
defaults (BN folding is really tested) while activations keep realistic ranges for calibration.

MobileNetV2 is trained briefly instead (``train_on_digits``: sklearn's digits, which need no
download, at 32x32, then its BatchNorm statistics measured on the same images at 224x224). With
random weights it was not a fair quantization benchmark: it amplified any small perturbation of
its input ~23 dB by the logits (each inverted-residual block 1-4 dB, 17 blocks; the same with
BatchNorm scale 1 / shift 0, so not an artefact of the random affine), so rounding only its input
to 8 bits already left 17 dB output SQNR and its int8 weights alone capped int16x8 at 18-19 dB.
Trained networks do not do that: a small random perturbation shrinks through them (TF's table
has MobileNetV2 at 71.26 top-1 in int8 against 71.8 float). After the training below the same
perturbation shrinks 4 dB by the logits (input rounded to 8 bits: 35 dB). ResNet-18's random
blocks amplify it 3 dB in all (36 dB), so ResNet-18 stays as it was.

Trained by the same recipe (measured, not built here), ResNet-18 would not be a fairer benchmark
for ``--target-sqnr`` (``bench/target.py``) either: 96% of its output signal power is in the 10
trained of its 1000 logits (MobileNetV2 here: 98%), so the logits' 8-bit grid, whose step those
few set, carries 78% of its uint8 noise (MobileNetV2: 77%), and promoting the last Gemm alone
takes its worst sample from 34.9 to 44.4 dB (LiteRT, the 20 evaluation inputs); elsewhere a
grid's rounding reaches the logits 13-44 dB weaker than it is made. The random ResNet-18 spreads
its noise instead: 31 activation grids and 21 weight tensors, the largest the input's grid at
17-21%, each grid's rounding reaching the logits between 17 dB weaker and 5 dB stronger.

Each file records its recipe (``RECIPES``) in its ONNX metadata; a file in OUT_DIR whose recipe
differs (an older build) is rebuilt, one that matches is kept.

Usage, from the repository root with the benchmark environment (``bench/requirements.txt``)::

    .venv-bench/bin/python bench/models.py [OUT_DIR]    # default: bench/models/

Models that already exist in OUT_DIR with the current recipe are not rebuilt; every model is
then run in onnxruntime.
The exported files are large and ignored by git (``bench/.gitignore``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

OPSET = 13
NUM_CLASSES = 1000
IMAGE_SIZE = 224
MOBILENET_V2_SEED = 1
RESNET18_SEED = 2
# Images in the batch that sets the BatchNorm running statistics.
STATS_BATCH = 8
# MobileNetV2's brief training on sklearn's digits (8x8 images, 10 classes; the 1000-way head is
# kept, labels 0-9): SGD with momentum, cosine-decayed learning rate, images upsampled to
# TRAIN_SIZE. Then its BatchNorm statistics are measured on BN_IMAGES training images at 224.
TRAIN_SIZE = 32
TRAIN_STEPS = 150
TRAIN_BATCH = 32
TRAIN_LR = 0.05
TRAIN_HELD_OUT = 297
BN_IMAGES = 64
# torch and onnxruntime agree to float32 rounding; anything larger is an export bug.
TOLERANCE = 1e-3
# Mean and standard deviation of sklearn's digits scaled to 0..1 (pixels of all 1797 images).
DIGITS_MEAN = 0.305
DIGITS_STD = 0.376
# What each file was built from, stored under RECIPE_KEY in its metadata: change a recipe when
# the build changes, so that existing files are rebuilt.
RECIPE_KEY = "tflq_bench_recipe"
RECIPES = {
    "mobilenet_v2.onnx": f"seed {MOBILENET_V2_SEED}, digits {TRAIN_STEPS} steps at {TRAIN_SIZE}",
    "resnet18.onnx": f"seed {RESNET18_SEED}, random BatchNorm",
}
DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "models"

# MobileNetV2 body: (expansion factor, output channels, repeats, stride of the first repeat).
MOBILENET_V2_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
MOBILENET_V2_STEM_CHANNELS = 32
MOBILENET_V2_HEAD_CHANNELS = 1280
# ResNet-18 stages: (output channels, stride of the first block); two basic blocks each.
RESNET18_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))


@dataclass(frozen=True)
class ExportResult:
    """What building one model produced: its file, export time in seconds, torch/ORT gap."""

    path: Path
    export_seconds: float
    max_abs_diff: float
    detail: str = ""


class ConvBnActivation(nn.Sequential):
    """Bias-free convolution, BatchNorm, then an optional activation (the standard conv unit)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        activation: type[nn.Module] | None = nn.ReLU6,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, linear 1x1 project, identity shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBnActivation(in_channels, hidden, kernel_size=1))
        layers.append(
            ConvBnActivation(hidden, hidden, kernel_size=3, stride=stride, groups=hidden)
        )
        layers.append(ConvBnActivation(hidden, out_channels, kernel_size=1, activation=None))
        self.body = nn.Sequential(*layers)
        self.use_shortcut = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.use_shortcut else y


class MobileNetV2(nn.Module):
    """MobileNetV2 at width 1.0 for 224x224 RGB input and 1000 classes."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            ConvBnActivation(3, MOBILENET_V2_STEM_CHANNELS, kernel_size=3, stride=2)
        ]
        channels = MOBILENET_V2_STEM_CHANNELS
        for expansion, out_channels, repeats, first_stride in MOBILENET_V2_BLOCKS:
            for index in range(repeats):
                stride = first_stride if index == 0 else 1
                layers.append(InvertedResidual(channels, out_channels, stride, expansion))
                channels = out_channels
        layers.append(ConvBnActivation(channels, MOBILENET_V2_HEAD_CHANNELS, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(MOBILENET_V2_HEAD_CHANNELS, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.classifier(self.dropout(x))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, shortcut (1x1 conv+BN when the shape changes), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv_bn1 = ConvBnActivation(
            in_channels, out_channels, kernel_size=3, stride=stride, activation=nn.ReLU
        )
        self.conv_bn2 = ConvBnActivation(
            out_channels, out_channels, kernel_size=3, activation=None
        )
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = ConvBnActivation(
                in_channels, out_channels, kernel_size=1, stride=stride, activation=None
            )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv_bn2(self.conv_bn1(x)) + self.downsample(x))


class ResNet18(nn.Module):
    """ResNet-18 for 224x224 RGB input and 1000 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBnActivation(3, 64, kernel_size=7, stride=2, activation=nn.ReLU)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages: list[nn.Module] = []
        channels = 64
        for out_channels, stride in RESNET18_STAGES:
            stages.append(
                nn.Sequential(
                    BasicBlock(channels, out_channels, stride),
                    BasicBlock(out_channels, out_channels, 1),
                )
            )
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.maxpool(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def randomize_batch_norm(model: nn.Module, generator: torch.Generator) -> str:
    """Give every BatchNorm a random affine and running statistics measured on random images.

    The measured statistics are per-channel and far from mean 0 / variance 1, which is what
    makes folding observable, yet they keep each layer's output roughly normalised, so deep
    random networks neither explode nor collapse and calibration sees realistic ranges.
    """
    with torch.no_grad():
        for bn in (module for module in model.modules() if isinstance(module, nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5, generator=generator)
            bn.bias.normal_(0.0, 0.25, generator=generator)
    images = torch.randn(STATS_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    measure_batch_norm(model, [images])
    return "random weights, random BatchNorm affine"


def digits_images(size: int, images: torch.Tensor) -> torch.Tensor:
    """sklearn digits (N, 8, 8) in 0..16 as normalised 3-channel ``size`` x ``size`` images."""
    x = nn.functional.interpolate(
        images[:, None] / 16.0, size=(size, size), mode="bilinear", align_corners=False
    )
    return ((x - DIGITS_MEAN) / DIGITS_STD).expand(-1, 3, -1, -1).contiguous()


def measure_batch_norm(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """Set every BatchNorm's running statistics to their exact average over ``batches``."""
    batch_norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    for bn in batch_norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    model.eval()
    for bn in batch_norms:
        bn.momentum = 0.1


def train_on_digits(model: nn.Module, generator: torch.Generator) -> str:
    """Train ``model`` briefly on sklearn's digits, then measure its BatchNorms at 224x224.

    Brief (TRAIN_STEPS steps, a few minutes on two cores): what the benchmark needs is weights
    with a trained network's structure, not a good digit classifier at 224. Returns a line with
    the held-out accuracy at TRAIN_SIZE (BatchNorm measured there).
    """
    from sklearn.datasets import load_digits  # bench/requirements.txt; ships its data

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(images), generator=generator)
    held_out, train = order[:TRAIN_HELD_OUT], order[TRAIN_HELD_OUT:]
    optimizer = torch.optim.SGD(
        model.parameters(), lr=TRAIN_LR, momentum=0.9, nesterov=True, weight_decay=4e-5
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=TRAIN_STEPS)
    model.train()
    for _ in range(TRAIN_STEPS):
        batch = train[torch.randint(len(train), (TRAIN_BATCH,), generator=generator)]
        loss = nn.functional.cross_entropy(
            model(digits_images(TRAIN_SIZE, images[batch])), labels[batch]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    chunks = [train[start : start + 16] for start in range(0, BN_IMAGES, 16)]
    measure_batch_norm(model, [digits_images(TRAIN_SIZE, images[c]) for c in chunks])
    with torch.no_grad():
        predicted = model(digits_images(TRAIN_SIZE, images[held_out])).argmax(1)
    accuracy = float((predicted == labels[held_out]).float().mean())
    measure_batch_norm(model, [digits_images(IMAGE_SIZE, images[c]) for c in chunks])
    return (
        f"trained {TRAIN_STEPS} steps on digits at {TRAIN_SIZE}x{TRAIN_SIZE}: "
        f"held-out top-1 {accuracy:.3f} there"
    )


def export_onnx(
    model: nn.Module, path: Path, generator: torch.Generator, recipe: str = ""
) -> ExportResult:
    """Export ``model`` (eval mode) with BN unfolded and check onnxruntime reproduces torch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose: it needs no onnxscript and keeps BN.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            model,
            (example[:1],),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            opset_version=OPSET,
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            do_constant_folding=False,
            training=torch.onnx.TrainingMode.EVAL,
            dynamo=False,
        )
    export_seconds = time.perf_counter() - start
    if recipe:
        exported = onnx.load(str(path))
        onnx.helper.set_model_props(exported, {RECIPE_KEY: recipe})
        onnx.save(exported, str(path))
    with torch.no_grad():
        expected = model(example).numpy()
    (actual,) = run_onnxruntime(path, example.numpy())
    max_abs_diff = float(np.max(np.abs(actual - expected)))
    if max_abs_diff > TOLERANCE * max(1.0, float(np.max(np.abs(expected)))):
        raise RuntimeError(f"{path.name}: onnxruntime differs from torch by {max_abs_diff}")
    return ExportResult(path=path, export_seconds=export_seconds, max_abs_diff=max_abs_diff)


def run_onnxruntime(path: Path, images: np.ndarray) -> list[np.ndarray]:
    """Run the exported model on an NCHW float32 batch and return its outputs."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": images})


def build_seeded(
    factory: Callable[[], nn.Module],
    seed: int,
    path: Path,
    prepare: Callable[[nn.Module, torch.Generator], str],
) -> ExportResult:
    """Construct a network with seeded weights, ``prepare`` it (its BatchNorms, maybe training),
    and export it to ``path``."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = factory()
    detail = prepare(model, generator)
    result = export_onnx(model, path, generator, RECIPES[path.name])
    return dataclasses.replace(result, detail=detail)


def build_mobilenet_v2(path: Path) -> ExportResult:
    """Export a seeded MobileNetV2 (width 1.0, 224x224x3, 1000 classes) to ``path``."""
    return build_seeded(MobileNetV2, MOBILENET_V2_SEED, Path(path), train_on_digits)


def build_resnet18(path: Path) -> ExportResult:
    """Export a seeded ResNet-18 (224x224x3, 1000 classes) to ``path``."""
    return build_seeded(ResNet18, RESNET18_SEED, Path(path), randomize_batch_norm)


def recipe_of(path: Path) -> str | None:
    """The recipe recorded in an exported file's metadata (None for files built before them)."""
    props = onnx.load(str(path), load_external_data=False).metadata_props
    return next((p.value for p in props if p.key == RECIPE_KEY), None)


def describe(path: Path) -> str:
    """One line about an exported file: size, node count, opset and op types in first-use order."""
    model = onnx.load(str(path))
    op_types = list(dict.fromkeys(node.op_type for node in model.graph.node))
    opsets = ",".join(str(entry.version) for entry in model.opset_import)
    size_mb = path.stat().st_size / 1e6
    return (
        f"{path.name}: {size_mb:.1f} MB, {len(model.graph.node)} nodes, opset {opsets}, "
        f"ops {' '.join(op_types)}"
    )


BUILDERS: dict[str, Callable[[Path], ExportResult]] = {
    "mobilenet_v2.onnx": build_mobilenet_v2,
    "resnet18.onnx": build_resnet18,
}


def main() -> None:
    """Build the missing benchmark models in OUT_DIR, then smoke-test every one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for name, build in BUILDERS.items():
        path = args.out_dir / name
        if path.exists() and recipe_of(path) == RECIPES[name]:
            print(f"{name}: exists, skipped")
        else:
            start = time.perf_counter()
            result = build(path)
            print(
                f"{name}: built in {time.perf_counter() - start:.1f} s "
                f"(export {result.export_seconds:.1f} s), "
                f"max |torch - onnxruntime| = {result.max_abs_diff:.2e}; {result.detail}"
            )
        images = rng.standard_normal((2, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
        (logits,) = run_onnxruntime(path, images)
        print(f"{name}: onnxruntime output shape {list(logits.shape)}")
        print(describe(path))


if __name__ == "__main__":
    main()
