"""Per-output error figures of a .tflite against the float model, accumulated sample by sample."""
from __future__ import annotations

import math

import numpy as np

from tflq.ir.quant import sqnr_db


def is_classifier(shape: tuple[int, ...]) -> bool:
    """[batch, classes] (classes >= 2), possibly with unit axes after the classes ([N, C, 1, 1])."""
    return len(shape) >= 2 and shape[1] >= 2 and all(d == 1 for d in shape[2:])


def cosine(reference: np.ndarray, approx: np.ndarray) -> float:
    r = np.asarray(reference, np.float64).ravel()
    a = np.asarray(approx, np.float64).ravel()
    norms = float(np.linalg.norm(r) * np.linalg.norm(a))
    if norms == 0:
        return 1.0 if not np.any(r) and not np.any(a) else 0.0
    return float(np.dot(r, a) / norms)


class OutputAccumulator:
    """Running figures of one output: per-sample SQNR and cosine, pooled power, max |error|,
    argmax agreement and (with labels) accuracy of both models."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.classifier = is_classifier(shape)
        self.sqnr: list[float] = []
        self.cosine: list[float] = []
        self.signal = self.noise = 0.0
        self.max_abs = 0.0
        self.rows = self.agree = 0
        self.labelled = self.float_correct = self.tflite_correct = 0

    def add(self, reference: np.ndarray, approx: np.ndarray, labels: np.ndarray | None = None) -> None:
        r = np.asarray(reference, np.float64)
        a = np.asarray(approx, np.float64)
        self.sqnr.append(sqnr_db(r, a))
        self.cosine.append(cosine(r, a))
        self.signal += float(np.sum(r * r))
        self.noise += float(np.sum((r - a) ** 2))
        if r.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(r - a))))
        if self.classifier:
            top_r = r.reshape(r.shape[0], r.shape[1], -1)[:, :, 0].argmax(axis=1)
            top_a = a.reshape(a.shape[0], a.shape[1], -1)[:, :, 0].argmax(axis=1)
            self.rows += len(top_r)
            self.agree += int(np.sum(top_r == top_a))
            if labels is not None:
                self.labelled += len(labels)
                self.float_correct += int(np.sum(top_r == labels))
                self.tflite_correct += int(np.sum(top_a == labels))

    def figures(self) -> dict:
        sqnr = np.asarray(self.sqnr)
        worst = int(np.argmin(sqnr))
        pooled = math.inf if self.noise == 0 else (
            10 * math.log10(self.signal / self.noise) if self.signal > 0 else -math.inf)
        return {
            "samples": len(self.sqnr),
            # samples without any error (inf dB) would make the mean infinite: left out
            "sqnr_mean_db": float(np.mean(sqnr[np.isfinite(sqnr)])) if np.isfinite(sqnr).any()
            else float(sqnr[0]),
            "sqnr_worst_db": float(sqnr[worst]),
            "worst_sample": worst,
            "sqnr_pooled_db": pooled,
            "cosine_mean": float(np.mean(self.cosine)),
            "cosine_worst": float(np.min(self.cosine)),
            "max_abs_error": self.max_abs,
            "classifier": self.classifier,
            "top1_agreement": self.agree / self.rows if self.classifier and self.rows else None,
            "float_accuracy": self.float_correct / self.labelled if self.labelled else None,
            "tflite_accuracy": self.tflite_correct / self.labelled if self.labelled else None,
        }
