"""Before calibration: a constant attention mask of -inf (nn.Transformer's causal mask) becomes one
of float32's lowest finite value, which the softmax weighs exactly as it weighs -inf."""
from __future__ import annotations

import numpy as np

from tflq import ops as registry
from tflq.ir.graph import Graph

LOWEST = float(np.finfo(np.float32).min)


def finite_mask_fills(graph: Graph) -> list[str]:
    """Replace -inf by finfo(float32).min in each constant that only masks softmax rows: read only
    by sums (ADD) whose every reader ignores values far below its row's maximum (SOFTMAX), each
    row of the constant along the softmax axis keeping a finite value. Returns the sums changed.

    torch.nn.Transformer.generate_square_subsequent_mask is -inf above the diagonal, and a sum
    holding -inf stopped calibration ("holds Inf values"). exp(x - row max) is 0 in float32 for
    both fills as long as the row has a finite maximum, which the kept position gives: the float
    graph computes what onnxruntime does. finfo.min is what transformers itself fills with, and
    the plan quantizes it onto the range the softmax resolves (plan._masked_softmax_ranges), so
    the attention runs integer. A sum's values are no longer the ONNX model's, so it takes a new
    name (the calibration engine reads a tensor of the model's name from onnxruntime)."""
    consumers = graph.consumer_map()
    outputs = set(graph.outputs)
    changed: list[str] = []
    for name, t in list(graph.tensors.items()):
        if not t.is_constant or not t.dtype.is_float or not t.data.size or t.data.ndim == 0 or \
                t.data.shape[-1] < 2 or not np.isneginf(t.data).any() or np.isnan(t.data).any() or \
                np.isposinf(t.data).any() or not np.isfinite(t.data).any(axis=-1).all():
            continue
        readers = consumers.get(name, [])
        if not readers or name in outputs or any(not _masks_softmax_rows(graph, op, name, consumers, outputs)
                                                 for op in readers):
            continue
        t.data = np.where(np.isneginf(t.data), np.float32(LOWEST), t.data).astype(t.data.dtype)
        for op in readers:
            old = op.outputs[0]
            new = graph.unique_name(f"{old}/finite_mask")
            graph.rename(old, new)
            changed.append(new)
    return changed


def _masks_softmax_rows(graph: Graph, op, name: str, consumers, outputs: set[str]) -> bool:
    """`op` adds constant `name` (its last axis the rows') to other values, for row-wise readers
    that ignore what lies far below a row's maximum."""
    if not registry.spec(op.kind).sums_inputs or op.inputs.count(name) != 1 or len(op.outputs) != 1 or \
            getattr(op.attrs, "fused_activation", "NONE") != "NONE":
        return False
    out = op.outputs[0]
    t = graph.tensors[out]
    readers = consumers.get(out, [])
    return bool(readers) and out not in outputs and t.dtype.is_float and t.rank >= 1 and \
        t.shape[-1] == graph.tensors[name].shape[-1] and \
        all(registry.spec(r.kind).negligible_below_row_max(r) is not None for r in readers)
