"""tflq: convert float ONNX models to (quantized) TensorFlow Lite files, without TensorFlow."""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def convert(model: str, output: str | None = None, **options: Any):
    """Convert an ONNX model; options are ConvertConfig's fields (mode="full", dtype="int8", ...).

    Returns a ConversionReport; its `.tflite` holds the file's bytes. Raises tflq.errors.TflqError.

    Example:
        >>> import tflq
        >>> report = tflq.convert("model.onnx", "model.tflite", mode="weights-only")
        >>> print(report.to_text())
    """
    from tflq.config import ConvertConfig
    from tflq.pipeline import convert as run

    return run(ConvertConfig(model=model, output=output, **options))


def evaluate(model: str, tflite, data, labels=None, **options: Any):
    """Run the float ONNX `model` and the `tflite` file (a path or its bytes) on the same `data`
    (what `calib` takes) and measure the error per output; `layers=True` adds the per-layer
    analysis. Options are tflq.analysis.evaluate.evaluate's. Returns an EvalResult (`.to_json()`,
    `.to_text()`, `.failures`). Raises tflq.errors.TflqError.

    Example:
        >>> result = tflq.evaluate("model.onnx", "model_int8.tflite", "eval_dir/", min_sqnr=30)
        >>> print(result.to_text()); assert not result.failures
    """
    from tflq.analysis.evaluate import evaluate as run

    return run(model, tflite, data, labels, **options)


def check(tflite, target: str = "litert"):
    """Check a .tflite file (a path or its bytes, any converter's) against a deployment target's
    profile (litert, xnnpack, tflm; see tflq.targets). Returns a CheckResult: `.violations` (what
    fails on the target), `.notes` (what runs slower), `.to_json()`, `.to_text()`. Raises
    tflq.errors.TflqError for a file that is no TFLite file, or an unknown target.

    Example:
        >>> result = tflq.check("model_int8.tflite", target="tflm")
        >>> assert not result.violations, result.to_text()
    """
    from tflq.checker import check_tflite
    from tflq.targets import get_target

    return check_tflite(tflite, get_target(target))


__all__ = ["check", "convert", "evaluate", "__version__"]
