"""ONNX STFT lowered during the folding sweep to a Conv1d whose filters are the windowed DFT basis.

torch.stft (and so torchaudio's Spectrogram and MelSpectrogram front ends) exports as STFT (opset
17). TFLite has no STFT op (its RFFT2D is not a builtin LiteRT kernel set everywhere, and no int8
kernel has it), but a short-time DFT of constant frame step, frame length and window is a strided
convolution: filter 2k is window * cos(2 pi k n / N), filter 2k+1 is -window * sin(2 pi k n / N),
so the spectrum is a Conv (a CONV_2D of height 1 in the file, integer in full int8) followed by a
Reshape and Transpose into STFT's [batch, frames, bins, 2]. A complex signal ([batch, length, 2])
has two input channels. Parameters that depend on the data are refused with the node's name.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper

if TYPE_CHECKING:
    from tflq.frontend.fold import Item, Sweep

HINT = "tflq lowers STFT to a convolution, which needs a constant frame step, window and frame length"


def _refuse(sweep: Sweep, node: onnx.NodeProto, reason: str, message: str) -> list[Item]:
    sweep.refuse(node, reason, message, HINT)
    sweep.kept.append(node)
    return []


def _input(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if index < len(node.input) else ""


def lower_stft(sweep: Sweep, node: onnx.NodeProto) -> list[Item]:
    signal, step_name, window_name, length_name = (_input(node, k) for k in range(4))
    onesided = int(next((a.i for a in node.attribute if a.name == "onesided"), 1))
    values = {}
    for what, name in (("frame step", step_name), ("window", window_name), ("frame length", length_name)):
        if name and name not in sweep.constants:
            return _refuse(sweep, node, "data_dependent_stft", f"its {what} '{name}' depends on the input data")
        values[what] = sweep.constants.get(name) if name else None
    shape = sweep.shape_of(signal)
    if shape is None or len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 2)):
        return _refuse(sweep, node, "bad_stft", f"its signal has shape {shape}; STFT takes "
                                                f"[batch, length] or [batch, length, 1 or 2]")
    channels = shape[2] if len(shape) == 3 else 1
    if values["frame step"] is None:
        return _refuse(sweep, node, "bad_stft", "it has no frame step")
    step = int(np.asarray(values["frame step"]).reshape(-1)[0])
    window = values["window"]
    if values["frame length"] is not None:
        n = int(np.asarray(values["frame length"]).reshape(-1)[0])
    elif window is not None:
        n = int(window.size)
    else:
        return _refuse(sweep, node, "bad_stft", "it has neither a window nor a frame length")
    window = np.ones(n) if window is None else np.asarray(window, np.float64).reshape(-1)
    if window.size != n or step <= 0 or not 0 < n <= shape[1]:
        return _refuse(sweep, node, "bad_stft", f"frame length {n}, window of {window.size} and step "
                                                f"{step} do not frame a signal of {shape[1]}")
    if onesided and channels == 2:
        return _refuse(sweep, node, "bad_stft", "onesided=1 is defined for a real signal only")
    bins = n // 2 + 1 if onesided else n
    angle = 2 * np.pi * np.outer(np.arange(bins), np.arange(n)) / n
    cos, sin = np.cos(angle) * window, np.sin(angle) * window
    weights = np.zeros((bins, 2, channels, n))
    weights[:, 0, 0], weights[:, 1, 0] = cos, -sin  # real part of the signal
    if channels == 2:  # (a + ib)(cos - i sin) = a cos + b sin + i (b cos - a sin)
        weights[:, 0, 1], weights[:, 1, 1] = sin, cos
    base = node.name
    w_name = sweep.unique(f"{base}/dft_filters")
    sweep.set_constant(w_name, weights.reshape(2 * bins, channels, n).astype(np.float32))
    items: list[Item] = []
    ncw = sweep.unique(f"{base}/signal_ncw")
    if len(shape) == 2:
        axes = sweep.unique(f"{base}/axes")
        sweep.set_constant(axes, np.array([1], np.int64))
        items.append(helper.make_node("Unsqueeze", [signal, axes], [ncw], name=sweep.unique(f"{base}/unsqueeze")))
    else:
        items.append(helper.make_node("Transpose", [signal], [ncw], perm=[0, 2, 1],
                                      name=sweep.unique(f"{base}/to_ncw")))
    spectrum = sweep.unique(f"{base}/spectrum")
    items.append(helper.make_node("Conv", [ncw, w_name], [spectrum], kernel_shape=[n], strides=[step],
                                  name=sweep.unique(f"{base}/dft")))
    frames = (shape[1] - n) // step + 1
    target = sweep.unique(f"{base}/shape")
    sweep.set_constant(target, np.array([shape[0], bins, 2, frames], np.int64))
    split = sweep.unique(f"{base}/bins_parts_frames")
    items.append(helper.make_node("Reshape", [spectrum, target], [split], name=sweep.unique(f"{base}/reshape")))
    items.append(helper.make_node("Transpose", [split], [node.output[0]], perm=[0, 3, 1, 2], name=base))
    sweep.result.folded += 1
    return items
