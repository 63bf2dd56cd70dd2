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


__all__ = ["convert", "__version__"]
