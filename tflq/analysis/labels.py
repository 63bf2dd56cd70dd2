"""Class labels for `tflq eval --labels`: one integer class per evaluation row, from .npy, .npz
(the array `labels`, or its only array) or text (one integer per line, or comma/space separated)."""
from __future__ import annotations

import os

import numpy as np

from tflq.analysis.runtimes import EvaluationError
from tflq.datacheck import UNREADABLE_ARCHIVE


def load_labels(path: str) -> np.ndarray:
    """The labels in `path` as a 1-D int64 array; EvaluationError naming the file otherwise."""
    if not os.path.isfile(path):
        raise EvaluationError(f"{path}: labels file not found")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                key = "labels" if "labels" in keys else keys[0] if len(keys) == 1 else None
                if key is None:
                    raise EvaluationError(f"{path}: holds {', '.join(keys) or 'no arrays'}; the "
                                          f"labels must be the array 'labels' or the only one")
                values = archive[key]
        else:
            with open(path, encoding="utf-8") as f:
                words = f.read().replace(",", " ").split()
            try:
                values = np.array([int(w) for w in words], np.int64)
            except ValueError:
                bad = next(w for w in words if not w.lstrip("-").isdigit())
                raise EvaluationError(f"{path}: '{bad[:40]}' is not an integer class label") from None
    except EvaluationError:
        raise
    except (*UNREADABLE_ARCHIVE, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{path}: cannot read labels ({exc})") from None
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise EvaluationError(f"{path}: labels must be one class per row (shape [N]), got shape "
                              f"{list(values.shape)}")
    if values.dtype.kind == "f" and np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        values = values.astype(np.int64)
    if values.dtype.kind not in "iu":
        raise EvaluationError(f"{path}: labels must be integer class ids, got {values.dtype}")
    if values.size and values.min() < 0:
        raise EvaluationError(f"{path}: label {int(values.min())} is negative")
    return values.astype(np.int64)
