"""Before calibration: attention masks of -inf (nn.Transformer's causal mask, torch's key padding
masks) or of fills that sum past float32 (two finfo.min masks added) become masks of a finite
fill, which the softmax weighs exactly as it weighs -inf."""
from __future__ import annotations

import numpy as np

from tflq import ops as registry
from tflq.ir.graph import Graph, Op, Tensor
from tflq.ops.base import SameAsOutput

LOWEST = float(np.finfo(np.float32).min)


def finite_mask_fills(graph: Graph) -> list[str]:
    """Replace -inf, and fills that a sum of masks takes to -inf, by a finite fill in the
    constants that only mask softmax rows; return the tensors whose values changed (renamed).

    torch.nn.Transformer.generate_square_subsequent_mask is -inf above the diagonal (a constant
    in a TorchScript export), and a key padding mask is Where(padding, -inf, 0); merged, reshaped
    and broadcast, they are added to the scores, and a tensor holding -inf stopped calibration
    ("holds Inf values"). GPT-Neo selects finfo.min for the causal mask (Where(causal, scores,
    finfo.min)) and then adds the padding mask of finfo.min: the sum is -inf in float32 too.

    A fill constant (one holding -inf or values below finfo.min / 2) qualifies when every value
    it reaches is only moved (RESHAPE, BROADCAST_TO...), written into zeros once (SCATTER_ND of
    constant indices that never repeat: Longformer's band of -inf), selected (SELECT_V2,
    CONCATENATION) or summed (ADD) on the way to a row-wise reader that ignores values far below its row's maximum
    (SOFTMAX), none of them a graph output, and (for -inf, unless a scalar a select picks, or a
    constant of that one value) each of its rows keeps a finite value. exp(x - row max) is then 0 in float32 for the finite fill as
    for -inf or finfo.min wherever the row has a finite maximum, so the float graph computes what
    onnxruntime does (a row masked whole by a run-time -inf mask, NaN there, becomes uniform). The
    fill is finfo(float32).min, transformers' own, divided by the most fills any tensor sums
    (counted along the graph: a constant that reaches a sum by two ways counts twice), so that no
    sum of them overflows; the plan quantizes a constant mask onto the range the softmax resolves
    (plan._masked_softmax_ranges). The values the fill reaches are no longer the ONNX model's, so
    those tensors take new names (the calibration engine reads a tensor of the model's name from
    onnxruntime). A fill constant that reaches something else is left as it is (calibration names
    the tensor if it meets -inf)."""
    consumers = graph.consumer_map()
    reach = {}
    for name, t in graph.tensors.items():
        if _fill_constant(t):
            reached = _masked_values(graph, name, consumers)
            if reached is not None:
                reach[name] = reached
    if not reach:
        return []
    fills = {name: 1 for name in reach}  # tensor -> the most fills it sums
    every = set().union(*reach.values())
    for op in graph.ops:
        if op.outputs and op.outputs[0] in every:
            counts = [fills[n] for n in op.inputs if n in fills]
            fills[op.outputs[0]] = sum(counts) if registry.spec(op.kind).sums_inputs else max(counts)
    fill = np.float32(LOWEST / max(fills.values()))
    changed_constants = [name for name in reach if (graph.tensors[name].data < fill).any()]
    for name in changed_constants:
        t = graph.tensors[name]
        t.data = np.where(t.data < fill, fill, t.data).astype(t.data.dtype)
    reached = list(dict.fromkeys(n for name in changed_constants for n in reach[name]))
    changed = []
    for name in reached:
        new = graph.unique_name(f"{name}/finite_mask")
        graph.rename(name, new)
        changed.append(new)
    return changed


def _masked_values(graph: Graph, constant: str, consumers) -> list[str] | None:
    """The tensors that hold mask values of fill constant `constant`, in the order found; None
    when one of them is computed with otherwise or is a graph output."""
    reached: list[str] = []
    seen = {constant}
    stack = [constant]
    while stack:
        name = stack.pop()
        readers = consumers.get(name, [])
        if name in graph.outputs or not readers:
            return None
        for op in readers:
            out = _carried(graph, op, name)
            if out is None:
                return None
            if out and out not in seen:
                seen.add(out)
                reached.append(out)
                stack.append(out)
    return reached


def _fill_constant(t: Tensor, below: float = LOWEST / 2) -> bool:
    """A float constant holding -inf or values at or below `below` (no NaN, no +inf); one holding
    -inf keeps a finite value in each row (last axis) unless it is a scalar."""
    if not t.is_constant or not t.dtype.is_float or not t.data.size or np.isnan(t.data).any() or \
            np.isposinf(t.data).any() or not (t.data <= below).any():
        return False
    if not np.isneginf(t.data).any():
        return True
    return _uniform(t.data) or bool(np.isfinite(t.data).any(axis=-1).all())


def _uniform(data: np.ndarray) -> bool:
    """Every value the same: a fill that masks as a scalar broadcast to its shape would."""
    return bool((data == data.ravel()[0]).all())


def _carried(graph: Graph, op: Op, name: str) -> str | None:
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
    written = spec.written_once(op, graph) == op.inputs.index(name)  # into zeros, which mask nothing
    if graph.tensors[name].data is not None and _uniform(graph.tensors[name].data) and not selected:
        return None  # a scalar fill (or one of a single value) masks whole rows unless a select picks it
    return op.outputs[0] if moved or selected or summed or written else None


# A mask fill at or below this is one the softmax weighs 0 wherever it lies, as long as the
# scores span less than 9,896 (exp of less than -103.3 is 0 in float32): HuggingFace's -1e4
# (fp16-safe), -1e9 and finfo.min.
FAR_FILL = -1e4
# A fill constant read by several ops is copied for each one up to this size (a scalar fill, a
# causal mask of 64 x 64); a larger one stays shared.
COPIED_FILL_ELEMENTS = 4096


def selected_zeros_as_constants(graph: Graph) -> int:
    """Where a select of a mask fill reads a value only where it is 0 (the spec's
    inputs_read_as_zero: (1 - mask).masked_fill((1 - mask).bool(), finfo.min), HuggingFace's
    inverted mask in Pegasus-X and LED), read a constant 0 instead; return the number of inputs
    replaced. The select gives the same values, and the mask is then made of constants, which
    the plan quantizes onto the range the softmax resolves (plan._mask_fill): with the computed
    1 - mask as an input it stayed float, and the sum and the softmax after it."""
    edits = 0
    for op in graph.ops:
        zeros = registry.spec(op.kind).inputs_read_as_zero(op, graph)
        others = [n for k, n in enumerate(op.inputs) if n and k not in zeros and graph.tensors[n].dtype.is_float]
        if not zeros or not any(_fill_constant(graph.tensors[n], FAR_FILL) for n in others):
            continue
        for k in zeros:
            t = graph.tensors[op.inputs[k]]
            op.inputs[k] = graph.add_constant(f"{op.inputs[k]}/zero", np.zeros((), t.dtype.numpy), t.dtype)
            edits += 1
    return edits


def subtracted_masks_added(graph: Graph) -> int:
    """Rewrite scores - fill x gate, read only by a softmax, as scores + (-fill) x gate; return
    the number of masks rewritten.

    Funnel subtracts its padding mask: scores - 1e6 * (1 - attention_mask). The plan narrows an
    added mask (a gate x fill MUL with a negative fill, plan._mask_fill) onto the range the
    softmax resolves; subtracted, the mask stayed a [0, 1e6] operand and the scores' sum a grid
    of ~4000 per step, every score on one step (5 dB in int8). Negating a float is exact and
    a - b is a + (-b) in IEEE arithmetic, so the float graph computes the very same values. A
    MUL qualifies when its constant is a scalar of magnitude FAR_FILL or more and every reader
    is such a subtraction (of the MUL's output, from another operand), itself read only by ops
    that ignore values far below their row's maximum; a constant the MUL shares is copied."""
    consumers = graph.consumer_map()
    edits = 0
    for mul in list(graph.ops):
        if mul.kind != "MUL" or len(mul.inputs) != 2 or mul.attrs.fused_activation != "NONE":
            continue
        fills = [n for n in mul.inputs if graph.is_constant(n)]
        out = mul.outputs[0]
        if len(fills) != 1 or mul.inputs[0] == mul.inputs[1] or out in graph.outputs:
            continue
        fill = graph.tensors[fills[0]]
        if not fill.dtype.is_float or fill.data.size != 1 or not float(fill.data.ravel()[0]) >= -FAR_FILL:
            continue
        readers = consumers.get(out, [])
        if not readers or not all(_masking_subtraction(graph, r, out, consumers) for r in readers):
            continue
        negated = graph.add_constant(f"{fills[0]}/negated", np.negative(fill.data), fill.dtype)
        mul.inputs = [negated if n == fills[0] else n for n in mul.inputs]
        for sub in readers:
            graph.insert_before(sub, Op("ADD", [sub.inputs[0], out], list(sub.outputs), sub.attrs, sub.origin))
            graph.remove_op(sub)
        edits += 1
    return edits


def _masking_subtraction(graph: Graph, op: Op, mask: str, consumers) -> bool:
    """`op` is scores - mask, its result read only by row-wise readers that ignore values far
    below the row's maximum (SOFTMAX)."""
    if op.kind != "SUB" or op.inputs[1] != mask or op.inputs[0] == mask or \
            op.attrs.fused_activation != "NONE" or op.outputs[0] in graph.outputs:
        return False
    readers = consumers.get(op.outputs[0], [])
    return bool(readers) and all(registry.spec(r.kind).negligible_below_row_max(r) is not None for r in readers)


def mask_fills_apart(graph: Graph) -> int:
    """Give each attention mask its own fill constants, made of constants the plan can quantize
    onto the range the softmax resolves (plan._mask_fill); return the number of edits.

    - A masked fill of the scores that a mask is then added to, Where(causal, scores, fill) +
      mask (GPT-Neo, GPT-J, CodeGen: the causal mask selected, the padding mask added), is the
      scores plus one mask, scores + (Where(causal, 0, fill) + mask): the same sum where the
      causal mask keeps a position, and where it does not a value at the fill (FAR_FILL or
      below) plus at most a score, which the softmax weighs 0 either way. Both masks of finfo.min
      and the scores then no longer shared one sum no grid could hold (the softmax stayed float).
    - A mask made of constants (Where(keep, 0, fill), moved or summed with others) that several
      ops read (the padding mask of every layer, reshaped and broadcast in each: torch's
      nn.TransformerEncoder) is made again for each reader, back to its constants, so that each
      layer's mask is read only on its way to its sum.
    - A constant several such masks read (transformers' finfo.min scalar and the 0 of Where(keep,
      0, finfo.min), in the sliding-window and the global masks of ModernBERT, or in GPT-Neo's
      three) is copied for each, so that each mask's constants are its own to quantize onto its
      grid (up to COPIED_FILL_ELEMENTS)."""
    edits = 0
    fills, masked = _fills_and_masks(graph)
    consumers = graph.consumer_map()
    for op in list(graph.ops):
        if registry.spec(op.kind).sums_inputs and len(op.inputs) == 2 and \
                getattr(op.attrs, "fused_activation", "NONE") == "NONE" and \
                _select_then_mask(graph, op, fills, masked, consumers):
            edits += 1
    fills, masked = _fills_and_masks(graph)
    made = set()  # masks made of constants only (a computed boolean may choose between them)
    for op in graph.ops:
        if len(op.outputs) == 1 and op.outputs[0] in masked and \
                all(graph.is_constant(n) or n in made for n in op.inputs if n and graph.tensors[n].dtype.is_float):
            made.add(op.outputs[0])
    consumers = graph.consumer_map()
    for op in reversed(list(graph.ops)):  # readers first: a copy's inputs are then copied too
        out = op.outputs[0] if len(op.outputs) == 1 else None
        if out not in made or out in graph.outputs:
            continue
        for reader in consumers.get(out, [])[1:]:
            t = graph.tensors[out]
            copy = graph.add_activation(f"{out}/copy", t.dtype, t.shape, t.layout)
            clone = Op(op.kind, list(op.inputs), [copy], op.attrs, op.origin)
            graph.insert_after(op, clone)
            for n in dict.fromkeys(clone.inputs):
                if n:
                    consumers.setdefault(n, []).append(clone)
            reader.inputs = [copy if n == out else n for n in reader.inputs]
            edits += 1
    fills, masked = _fills_and_masks(graph)
    consumers = graph.consumer_map()
    makers = {id(op): op for op in graph.ops if len(op.outputs) == 1 and
              op.outputs[0] in masked and any(graph.is_constant(n) for n in op.inputs if n)}
    for op in makers.values():
        for name in dict.fromkeys(op.inputs):
            t = graph.tensors[name] if name else None
            if t is None or not t.is_constant or not t.dtype.is_float or \
                    t.data.size > COPIED_FILL_ELEMENTS or consumers[name][0] is op:
                continue
            copy = graph.add_constant(f"{name}/copy", t.data.copy(), t.dtype)
            op.inputs = [copy if n == name else n for n in op.inputs]
            edits += 1
    return edits


def _fills_and_masks(graph: Graph) -> tuple[dict[str, list[str]], set[str]]:
    """The fill constants (FAR_FILL or below) that only mask softmax rows, each with the tensors
    its values reach; and all those tensors."""
    consumers = graph.consumer_map()
    fills = {name: reached for name, t in graph.tensors.items() if _fill_constant(t, FAR_FILL)
             for reached in [_masked_values(graph, name, consumers)] if reached is not None}
    return fills, set().union(*fills.values()) if fills else set()


def _select_then_mask(graph: Graph, op: Op, fills: dict[str, list[str]], masked: set[str],
                      consumers) -> bool:
    """Rewrite sum `op` = Where(c, scores, fill) + mask as scores + (Where(c, 0, fill) + mask)
    (see mask_fills_apart); False when it is not that."""
    for k in (0, 1):
        selected, mask = op.inputs[k], op.inputs[1 - k]
        select = graph.producer(selected)
        if select is None or mask not in masked or selected in graph.outputs or \
                len(consumers.get(selected, [])) != 1 or len(select.outputs) != 1 or \
                not isinstance(registry.spec(select.kind).quant, SameAsOutput):
            continue
        values = [i for i, n in enumerate(select.inputs) if n and graph.tensors[n].dtype.is_float]
        choosers = [n for n in select.inputs if n and not graph.tensors[n].dtype.is_float]
        fill = [i for i in values if select.inputs[i] in fills]
        scores = [i for i in values if not graph.is_constant(select.inputs[i])]
        if len(values) != 2 or len(choosers) != 1 or len(fill) != 1 or len(scores) != 1:
            continue
        out = graph.tensors[selected]
        zero = graph.add_constant(f"{selected}/kept", np.zeros((), out.dtype.numpy), out.dtype)
        inputs = list(select.inputs)
        score = inputs[scores[0]]
        inputs[scores[0]] = zero
        shape = np.broadcast_shapes(*(graph.tensors[n].shape for n in inputs if n))
        first = graph.add_activation(f"{selected}/mask", out.dtype, shape, out.layout)
        both_shape = np.broadcast_shapes(shape, graph.tensors[mask].shape)
        both = graph.add_activation(f"{op.outputs[0]}/masks", out.dtype, both_shape, out.layout)
        graph.insert_before(op, Op(select.kind, inputs, [first], select.attrs, select.origin))
        graph.insert_before(op, Op(op.kind, [first, mask], [both], op.attrs, op.origin))
        op.inputs = [score, both]
        graph.remove_op(select)
        return True
    return False
