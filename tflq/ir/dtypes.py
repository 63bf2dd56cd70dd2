"""DType: the one place where numpy and TFLite element types meet (the ONNX spelling is the
importer's: tflq/frontend/onnx_loader.py:dtype_from_onnx; nothing under ir/ imports onnx)."""
from __future__ import annotations

from enum import Enum

import numpy as np


class DType(Enum):
    """An element type, with its numpy and TFLite (TensorType) spellings."""

    FLOAT32 = ("float32", 0)
    FLOAT16 = ("float16", 1)
    INT32 = ("int32", 2)
    UINT8 = ("uint8", 3)
    INT64 = ("int64", 4)
    BOOL = ("bool", 6)
    INT16 = ("int16", 7)
    INT8 = ("int8", 9)
    FLOAT64 = ("float64", 10)

    def __init__(self, numpy_name: str, tflite_type: int) -> None:
        self.numpy = np.dtype(numpy_name)
        self.tflite = tflite_type

    @property
    def is_float(self) -> bool:
        return self.numpy.kind == "f"

    @property
    def is_quantized_type(self) -> bool:
        """True for the 8/16-bit integer types that carry affine quantization in TFLite."""
        return self in (DType.UINT8, DType.INT8, DType.INT16)

    @property
    def qmin(self) -> int:
        return int(np.iinfo(self.numpy).min)

    @property
    def qmax(self) -> int:
        return int(np.iinfo(self.numpy).max)

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> DType:
        dt = np.dtype(dtype)
        for member in cls:
            if member.numpy == dt:
                return member
        raise KeyError(f"no tflq dtype for numpy {dt}")

    @classmethod
    def from_tflite(cls, tflite_type: int) -> DType:
        for member in cls:
            if member.tflite == tflite_type:
                return member
        raise KeyError(f"no tflq dtype for TFLite tensor type {tflite_type}")

    @classmethod
    def parse(cls, name: str) -> DType:
        """'int8' -> DType.INT8."""
        return cls[name.upper()]
