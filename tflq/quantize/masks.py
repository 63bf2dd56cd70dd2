"""Before calibration: attention masks of -inf (nn.Transformer's causal mask, torch's key padding
masks) become masks of a finite fill, which the softmax weighs exactly as it weighs -inf."""
from __future__ import annotations

import numpy as np

from tflq import ops as registry
from tflq.ir.graph import Graph, Op, Tensor
from tflq.ops.base import SameAsOutput

LOWEST = float(np.finfo(np.float32).min)


def finite_mask_fills(graph: Graph) -> list[str]:
    """Replace -inf by a finite fill in the constants that only mask softmax rows; return the
    tensors whose values changed (renamed).

    torch.nn.Transformer.generate_square_subsequent_mask is -inf above the diagonal (a constant
    in a TorchScript export), and a key padding mask is Where(padding, -inf, 0); merged, reshaped
    and broadcast, they are added to the scores, and a tensor holding -inf stopped calibration
    ("holds Inf values"). Each -inf constant qualifies when every value it reaches is only moved
    (RESHAPE, BROADCAST_TO...), selected (SELECT_V2, CONCATENATION) or summed (ADD) on the way to
    a row-wise reader that ignores values far below its row's maximum (SOFTMAX), none of them a
    graph output, and (unless a scalar a select picks) each of its rows keeps a finite value.
    exp(x - row max) is then 0 in float32 for the finite fill as for -inf wherever the row has a
    finite maximum, so the float graph computes what onnxruntime does (a row masked whole by a
    run-time mask, NaN there, becomes uniform). The fill is finfo(float32).min, transformers' own,
    divided by the number of such constants so that no sum of them overflows back to -inf; the
    plan quantizes a constant mask onto the range the softmax resolves (plan._masked_softmax_ranges).
    The values the fill reaches are no longer the ONNX model's, so those tensors take new names
    (the calibration engine reads a tensor of the model's name from onnxruntime). If any -inf
    constant reaches something else, nothing changes, and calibration names the tensor."""
    consumers = graph.consumer_map()
    constants = [name for name, t in graph.tensors.items() if _minus_infinite(t)]
    if not constants:
        return []
    reached: list[str] = []
    seen = set(constants)
    stack = list(constants)
    while stack:
        name = stack.pop()
        readers = consumers.get(name, [])
        if name in graph.outputs or not readers:
            return []
        for op in readers:
            out = _carried(graph, op, name, consumers)
            if out is None:
                return []
            if out and out not in seen:
                seen.add(out)
                reached.append(out)
                stack.append(out)
    fill = np.float32(LOWEST / len(constants))
    for name in constants:
        t = graph.tensors[name]
        t.data = np.where(np.isneginf(t.data), fill, t.data).astype(t.data.dtype)
    changed = []
    for name in reached:
        new = graph.unique_name(f"{name}/finite_mask")
        graph.rename(name, new)
        changed.append(new)
    return changed


def _minus_infinite(t: Tensor) -> bool:
    """A float constant holding -inf (no NaN, no +inf), each row (last axis) keeping a finite
    value unless it is a scalar."""
    if not t.is_constant or not t.dtype.is_float or not t.data.size or not np.isneginf(t.data).any() or \
            np.isnan(t.data).any() or np.isposinf(t.data).any():
        return False
    return t.data.ndim == 0 or t.data.size == 1 or bool(np.isfinite(t.data).any(axis=-1).all())


def _carried(graph: Graph, op: Op, name: str, consumers) -> str | None:
    """What `op` makes of a mask value in its input `name`: the output that holds mask values
    ("" when it ignores them: a masked softmax), None when it computes with them otherwise."""
    spec = registry.spec(op.kind)
    if spec.negligible_below_row_max(op) is not None:
        return ""
    if len(op.outputs) != 1 or not graph.tensors[op.outputs[0]].dtype.is_float or \
            getattr(op.attrs, "fused_activation", "NONE") != "NONE":
        return None
    rule = spec.quant
    data = [i for i, n in enumerate(op.inputs) if n and graph.tensors[n].dtype.is_float]
    moved = rule.value_preserving and getattr(rule, "index", None) == op.inputs.index(name)
    selected = isinstance(rule, SameAsOutput) and op.inputs.index(name) in data
    summed = spec.sums_inputs and op.inputs.count(name) == 1
    if graph.tensors[name].data is not None and graph.tensors[name].data.size == 1 and not selected:
        return None  # a scalar -inf masks whole rows unless a select picks it
    return op.outputs[0] if moved or selected or summed else None
