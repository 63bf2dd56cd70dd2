"""Decoding calibration images (.png, .jpg, .jpeg; needs Pillow: `pip install tflq[images]`) into one
row of a 4-D input: converted to RGB (channel order R, G, B) or grayscale for a 1-channel input,
resized to (H, W) with bilinear filtering (no crop, aspect ratio not kept), and normalized as
    x = (pixel * scale - mean[c]) / std[c]       (pixel in 0..255; scale default 1, mean 0, std 1)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tflq.errors import CalibrationError


class InputSpec(Protocol):
    """What decoding needs of a model input (sources.InputSpec has it)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class ImageNormalization:
    """x = (pixel * scale - mean[c]) / std[c]; mean and std hold 1 or C values."""

    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def is_identity(self) -> bool:
        return self.scale is None and self.mean is None and self.std is None

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """pixels: float32 [H, W, C] in 0..255."""
        if self.scale is not None:
            pixels = pixels * np.float32(self.scale)
        if self.mean is not None:
            pixels = pixels - np.asarray(self.mean, np.float32)
        if self.std is not None:
            pixels = pixels / np.asarray(self.std, np.float32)
        return pixels


def normalization(mean, std, scale) -> ImageNormalization:
    def values(name: str, given) -> tuple[float, ...] | None:
        if given is None:
            return None
        try:
            arr = np.atleast_1d(np.asarray(given, dtype=np.float64))
        except (TypeError, ValueError):
            arr = np.zeros((0,))
        if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
            raise CalibrationError(f"--{name} must be one number or one per channel, got {given!r}")
        return tuple(float(v) for v in arr)

    scale_values = values("scale", scale)
    if scale_values is not None and (len(scale_values) != 1 or scale_values[0] <= 0):
        raise CalibrationError(f"--scale must be one number > 0, got {scale!r}")
    result = ImageNormalization(scale_values[0] if scale_values else None, values("mean", mean),
                                values("std", std))
    if result.std is not None and any(v <= 0 for v in result.std):
        raise CalibrationError(f"--std values must be > 0, got {list(result.std)}")
    return result


def pillow():
    try:
        from PIL import Image
    except ImportError:
        raise CalibrationError("reading images needs Pillow: pip install tflq[images]") from None
    return Image


@dataclass(frozen=True)
class ImageGeometry:
    height: int
    width: int
    channels: int
    channels_last: bool


def image_geometry(spec: InputSpec, label: str) -> ImageGeometry:
    shape = spec.shape
    if len(shape) != 4:
        raise CalibrationError(f"{label}: images can only feed a 4-D input; input '{spec.name}' has "
                               f"shape {list(shape)}")
    channels_last = shape[3] in (1, 3) and shape[1] not in (1, 3)
    if channels_last:
        height, width, channels = shape[1], shape[2], shape[3]
    else:
        channels, height, width = shape[1], shape[2], shape[3]
    if channels not in (1, 3):
        raise CalibrationError(f"{label}: images need an input with 1 or 3 channels; input '{spec.name}' "
                               f"has shape {list(shape)}")
    if spec.dtype.kind != "f" and spec.dtype != np.uint8:
        raise CalibrationError(f"{label}: images cannot feed input '{spec.name}' of type {spec.dtype}")
    return ImageGeometry(height, width, channels, channels_last)


def decode_image(path: str, spec: InputSpec, geometry: ImageGeometry,
                  norm: ImageNormalization) -> np.ndarray:
    image_module = pillow()
    try:
        with image_module.open(path) as image:
            image = image.convert("RGB" if geometry.channels == 3 else "L")
            image = image.resize((geometry.width, geometry.height), image_module.Resampling.BILINEAR)
            pixels = np.asarray(image)
    except (OSError, ValueError, image_module.DecompressionBombError) as exc:
        raise CalibrationError(f"{path}: not a readable image ({exc})") from None
    pixels = pixels.reshape(geometry.height, geometry.width, geometry.channels)
    if spec.dtype.kind == "f":
        pixels = norm.apply(pixels.astype(np.float32))
    if not geometry.channels_last:
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels, dtype=spec.dtype)[None]
