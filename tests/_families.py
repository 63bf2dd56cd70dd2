"""The runner the model-family tests share (tests/test_sequence_families.py,
tests/test_speech_models.py): inputs made from a model's graph inputs, the converted file run in
LiteRT on ONNX-layout feeds, and the worst output SQNR against onnxruntime."""
from __future__ import annotations

import re

import numpy as np
import onnx

from tests.conftest import litert_interpreter
from tflq.ir.quant import sqnr_db


def feeds(model: onnx.ModelProto, seed: int, first_id: int = 3) -> dict[str, np.ndarray]:
    """Random inputs of the model's static shapes: int64 ids in [first_id, 64), float features
    from a standard normal, and masks that keep each sample's first 2.. positions: a boolean
    key padding mask (True past the kept ones), an `attention_mask` / `mask` of 1 then 0."""
    rng = np.random.default_rng(seed)
    out = {}
    for vi in model.graph.input:
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        elem = vi.type.tensor_type.elem_type
        if elem == onnx.TensorProto.BOOL:
            out[vi.name] = np.arange(dims[-1])[None] >= rng.integers(2, dims[-1] + 1)
        elif vi.name in ("attention_mask", "mask"):
            kept = np.arange(dims[-1])[None] < rng.integers(2, dims[-1] + 1)
            out[vi.name] = kept.astype(onnx.helper.tensor_dtype_to_np_dtype(elem))
        elif elem == onnx.TensorProto.INT64:
            out[vi.name] = rng.integers(first_id, 64, dims).astype(np.int64)
        else:
            out[vi.name] = rng.standard_normal(dims).astype(np.float32)
    return out


def nwc_names(report, what: str) -> set[str]:
    """The inputs or outputs (`what`) the conversion notes say are [N, C, W] in ONNX, NWC in the file."""
    pattern = re.compile(rf"{what} '(.*)': ONNX \[N, C, W\]")
    return {m.group(1) for m in map(pattern.match, report.notes) if m}


def run(report, feeds: dict[str, np.ndarray], output_names: list[str]) -> list[np.ndarray]:
    """The file in LiteRT on ONNX-layout feeds: 4-D inputs fed NHWC, the NCW ones of 1-D conv
    stacks NWC; outputs back to the ONNX layout."""
    interpreter = litert_interpreter(report.tflite)
    nwc_in, nwc_out = nwc_names(report, "input"), nwc_names(report, "output")
    for detail, (name, value) in zip(interpreter.get_input_details(), feeds.items()):
        if value.ndim == 4:
            value = value.transpose(0, 2, 3, 1)
        elif name in nwc_in:
            value = value.transpose(0, 2, 1)
        interpreter.set_tensor(detail["index"], np.ascontiguousarray(value))
    interpreter.invoke()
    results = []
    for detail, name in zip(interpreter.get_output_details(), output_names):
        value = interpreter.get_tensor(detail["index"])
        if value.ndim == 4:
            value = value.transpose(0, 3, 1, 2)
        elif name in nwc_out:
            value = value.transpose(0, 2, 1)
        results.append(value)
    return results


def worst_db(path: str, report, samples, expected) -> float:
    """The worst SQNR of any output over `samples` (onnxruntime's outputs `expected`)."""
    names = [o.name for o in onnx.load(path).graph.output]
    return min(min(sqnr_db(e, a) for e, a in zip(want, run(report, feeds, names)))
               for feeds, want in zip(samples, expected))
