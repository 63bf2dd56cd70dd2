"""Checks of user data files (calibration arrays, statistics files) before tflq trusts them.

Each function raises CalibrationError naming the file and what is wrong with it; the readers call
them right after parsing a header or loading arrays, before any array is used.
"""
from __future__ import annotations

import math
import os
import stat
import zipfile
import zlib

import numpy as np

from tflq.errors import CalibrationError

# What reading a damaged .npy or .npz raises (numpy's header parser, zipfile, zlib), each meaning
# the file is not what it claims: zipfile raises NotImplementedError for a version or compression
# method it does not know, which a flipped byte of the archive's headers gives (a --stats file:
# an internal error, found by tests/test_mutation_fuzz.py).
UNREADABLE_ARCHIVE = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError)


def describe_path(path: str) -> str | None:
    """What `path` is when it is not a regular file or a directory (None when it is one):
    a FIFO, a socket, a device, a broken symlink or a symlink loop."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if os.path.islink(path):
            return "a symlink loop" if exc.errno == 40 else "a broken symlink"
        return f"unreadable ({exc.strerror})"
    mode = st.st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def check_npy_payload(label: str, path: str, data_offset: int, shape: tuple[int, ...],
                      dtype: np.dtype) -> None:
    """A .npy header's shape must be non-negative and the file must hold exactly its data."""
    if any(d < 0 for d in shape):
        raise CalibrationError(f"{label}: the .npy header declares a negative dimension {list(shape)}")
    expected = math.prod(shape) * dtype.itemsize
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise CalibrationError(f"{label}: cannot be read ({exc.strerror})") from None
    held = size - data_offset
    if held != expected:
        raise CalibrationError(f"{label}: the .npy header declares shape {list(shape)} {dtype} "
                               f"({expected} bytes) but the file holds {held} bytes of data")


def check_statistics(path: str, names: list[str], minimum: np.ndarray, maximum: np.ndarray,
                     exponent: np.ndarray, counts: np.ndarray, samples: np.ndarray, bins: int) -> None:
    """A statistics file's arrays: one entry per tensor name, finite, min <= max, counts >= 0."""
    n = len(names)
    for what, arr, kinds, shape in (("minimum", minimum, "f", (n,)), ("maximum", maximum, "f", (n,)),
                                    ("exponent", exponent, "iu", (n,)), ("counts", counts, "iu", (n, bins)),
                                    ("samples", samples, "iu", ())):
        if arr.dtype.kind not in kinds:
            raise CalibrationError(f"{path}: statistics array '{what}' has type {arr.dtype}")
        if tuple(arr.shape) != shape:
            raise CalibrationError(f"{path}: statistics array '{what}' has shape {list(arr.shape)}, "
                                   f"expected {list(shape)} for {n} tensors")
    if len(set(names)) != n:
        raise CalibrationError(f"{path}: statistics name a tensor twice")
    if (counts < 0).any() or int(samples) < 0:
        raise CalibrationError(f"{path}: statistics hold negative counts")
    seen = counts.sum(axis=1) > 0 if n else np.zeros(0, bool)  # a tensor with no values has no range
    if np.isnan(minimum).any() or np.isnan(maximum).any() or \
            not (np.isfinite(minimum[seen]).all() and np.isfinite(maximum[seen]).all()):
        bad = names[int(np.flatnonzero(np.isnan(minimum) | np.isnan(maximum) |
                                       (seen & ~(np.isfinite(minimum) & np.isfinite(maximum))))[0])]
        raise CalibrationError(f"{path}: statistics of tensor '{bad}' are not finite")
    if (seen & (minimum > maximum)).any():
        bad = names[int(np.flatnonzero(seen & (minimum > maximum))[0])]
        raise CalibrationError(f"{path}: statistics of tensor '{bad}' have minimum > maximum")
    if exponent.size and (np.abs(exponent) > 10_000).any():
        raise CalibrationError(f"{path}: statistics hold an out-of-range histogram exponent")
