"""Weights-only quantization: store large constant weights in 8 bits; arithmetic stays float.

uint8 (the classic scheme): every weight is asymmetric per-tensor uint8 behind a DEQUANTIZE.
int8: symmetric weights ([-127, 127], zero point 0), per output channel where the op has a
channel axis; ops with a hybrid (float input, int8 weight) kernel read the int8 tensor
directly, so LiteRT computes in 8 bits; everything else goes through DEQUANTIZE.
"""
from __future__ import annotations

import numpy as np

from tflq import ops as registry
from tflq.config import ConvertConfig, dtype_name
from tflq.errors import InvalidConfigError, InvalidModelError
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op, Tensor
from tflq.ir.qdq import BlockedConstant, QdqModel
from tflq.ir.quant import QuantParams, asymmetric_weight_params, sqnr_db, symmetric_weight_params
from tflq.ops.base import Weight
from tflq.quantize.qdq import on_grid, symmetric_int8


def check_finite_constants(graph: Graph) -> None:
    """Refuse NaN in float constants: quantizing them would corrupt a whole tensor silently.
    An infinity is a value (nn.Transformer's causal mask is -inf above the diagonal, which the
    float file runs as onnxruntime does): such a constant is never stored in 8 bits, and full
    quantization keeps the ops touching it float, as for any value no integer grid holds."""
    for op in graph.ops:
        for name in op.inputs:
            t = graph.tensors[name] if name else None
            if t is not None and t.is_constant and t.dtype.is_float and np.isnan(t.data).any():
                bad = int(np.count_nonzero(np.isnan(t.data)))
                raise InvalidModelError(f"constant '{name}' (input of {op.kind} from node "
                                        f"'{op.origin}') contains {bad} NaN value(s)")


def _weight_rule(op: Op, index: int) -> Weight | None:
    for rule in registry.spec(op.kind).weights:
        if rule.index == index:
            return rule
    return None


def is_bias(op: Op, index: int) -> bool:
    bias = registry.spec(op.kind).bias
    return bias is not None and bias.index == index


def _weight_params(data: np.ndarray, dtype: DType, rule: Weight | None) -> QuantParams:
    if dtype == DType.UINT8:
        return asymmetric_weight_params(data, DType.UINT8)
    axis = rule.axis if rule is not None and data.ndim > 1 else None
    return symmetric_weight_params(data, axis, DType.INT8)


def constant_uses(graph: Graph, name: str, consumers: dict[str, list[Op]]) -> list[tuple[Op, int]]:
    """Every (op, input index) that reads tensor `name`."""
    return [(op, i) for op in consumers.get(name, []) for i, n in enumerate(op.inputs) if n == name]


def dequantize_for(graph: Graph, name: str, stored: str, uses: list[tuple[Op, int]], index: int) -> str:
    """A DEQUANTIZE at op position `index` turning `stored` (constant `name` kept in a narrower
    type) back into float32 for every (op, input) in `uses`; returns the float32 tensor's name."""
    t = graph.tensors[name]
    deq = graph.add_activation(f"{name}/dequantized", DType.FLOAT32, t.shape, t.layout)
    graph.add_op(Op("DEQUANTIZE", [stored], [deq], origin=name), index)
    for op, i in uses:
        op.inputs[i] = deq
    return deq


def _stored_constants(graph: Graph, config: ConvertConfig, qdq: QdqModel | None = None
                      ) -> list[tuple[str, list[tuple[Op, int]], QuantParams | None,
                                      BlockedConstant | None]]:
    """The constants weights-only mode stores in 8 bits (or leaves, already integer), with their
    uses, the grid a QDQ model stores them on (None: tflq's rules) and the blocks it stores them
    in (a grid TFLite cannot keep: tflq's rules give them theirs): every constant that no op
    reads as bias, of at least config.min_weight_elements unless the QDQ model stores it in
    integers (its integers are kept, its blocks requantized, whatever the size)."""
    consumers = graph.consumer_map()
    stored = []
    for name in list(graph.tensors):
        t = graph.tensors[name]
        if not t.is_constant or not consumers.get(name):
            continue
        if t.dtype.is_float and not np.isfinite(t.data).all():
            continue  # an infinite mask: no 8-bit grid holds it
        uses = constant_uses(graph, name, consumers)
        if any(is_bias(op, i) for op, i in uses):  # biases stay float
            continue
        given = graph_grid(graph, name, uses, qdq) if t.dtype.is_float else None
        blocked = blocked_source(graph, name, uses, qdq) if t.dtype.is_float and given is None else None
        if given is not None or blocked is not None or t.size >= config.min_weight_elements:
            stored.append((name, uses, given, blocked))
    return stored


def _single_rule(uses: list[tuple[Op, int]]) -> Weight | None:
    rules = {_weight_rule(op, i) for op, i in uses}
    return rules.pop() if len(rules) == 1 else None


def _reads_hybrid(graph: Graph, op: Op, index: int) -> bool:
    """True if `op` can read its input `index` as int8 weights directly (a hybrid kernel)."""
    rule = _weight_rule(op, index)
    return rule is not None and rule.hybrid and registry.spec(op.kind).hybrid_supported(op, graph)


def _grid(graph: Graph, name: str, uses: list[tuple[Op, int]], dtype: DType) -> QuantParams:
    return _weight_params(graph.tensors[name].data, dtype, _single_rule(uses))


def graph_grid(graph: Graph, name: str, uses: list[tuple[Op, int]], qdq: QdqModel | None
               ) -> QuantParams | None:
    """The grid a QDQ model stores constant `name` on (a DequantizeLinear of integers), in the
    IR's layout, when every value of the constant lies on it; else None. The DequantizeLinear
    outputs its readers' ONNX nodes take are tried first, then any of the same size (one the
    importer folded through a Transpose or a Reshape before it reached the reader)."""
    if qdq is None or not qdq.constants:
        return None
    data = graph.tensors[name].data
    rule = _single_rule(uses)
    axis = rule.axis if rule is not None and data.ndim > 1 else None
    near = [n for op, _ in uses for n in qdq.node_inputs.get(op.origin, ()) if n in qdq.constants]
    others = [n for n in qdq.constants if n not in near]
    for n in dict.fromkeys(near + others):
        stored = qdq.constants[n]
        if stored.params.dtype == DType.INT32 or stored.values.size != data.size:
            continue
        along = axis
        if along is None and stored.params.is_per_channel and stored.values.shape == data.shape:
            along = stored.params.axis  # (no channel rule: a Gather table, as the graph has it)
        found = on_grid(data, stored, along)
        if found is not None:
            return found
    return None


def blocked_source(graph: Graph, name: str, uses: list[tuple[Op, int]], qdq: QdqModel | None
                   ) -> BlockedConstant | None:
    """The blocks a QDQ model stores constant `name` in (a block_size DequantizeLinear, a
    MatMulNBits), found among its readers' ONNX inputs by its size; else None."""
    if qdq is None or not qdq.blocked:
        return None
    size = graph.tensors[name].size
    for op, _ in uses:
        for n in qdq.node_inputs.get(op.origin, ()):
            blocked = qdq.blocked.get(n)
            if blocked is not None and blocked.size == size:
                return blocked
    return None


def _as_graph_stores(data: np.ndarray, grid: QuantParams) -> tuple[QuantParams, bool]:
    """How to store weights the graph gives `grid`, with the same values, and whether that is
    symmetric int8: so where the integers fit [-127, 127] around the zero point (the int8 hybrid
    kernels read them as they are); else the graph's own grid (uint8 per channel moved to int8,
    zero point - 128: DEQUANTIZE has no per-channel uint8)."""
    symmetric = symmetric_int8(data, grid)
    if symmetric is not None:
        return symmetric, True
    if grid.is_per_channel and grid.dtype == DType.UINT8:
        return grid.with_dtype_shift(DType.INT8), False
    return grid, False


def stored_grids(graph: Graph, config: ConvertConfig, qdq: QdqModel | None = None
                 ) -> dict[str, QuantParams]:
    """The grid quantize_weights will give each float constant it stores (by name) by its own
    rules: what bias correction corrects the biases for, before the weights are quantized. (The
    constants a QDQ model stores on its own grid lose nothing: there is nothing to correct.)"""
    return {name: _grid(graph, name, uses, config.dtype)
            for name, uses, given, blocked in _stored_constants(graph, config, qdq)
            if graph.tensors[name].dtype.is_float and given is None and
            (blocked is not None or not config.only_graph_weights)}


def quantize_weights(graph: Graph, config: ConvertConfig, qdq: QdqModel | None = None) -> list[dict]:
    """Rewrite the graph in place; return one summary record per quantized tensor. A QDQ model's
    weights keep the graph's integers (`qdq`), its blocked ones get tflq's grid; with
    config.only_graph_weights, the constants it keeps float stay float."""
    if config.dtype not in (DType.UINT8, DType.INT8):
        raise InvalidConfigError(f"--mode weights-only stores 8-bit weights (--dtype uint8 or "
                                 f"int8); --dtype {dtype_name(config.dtype)} is for --mode full")
    check_finite_constants(graph)
    records: list[dict] = []
    insert_at = 0
    for name, uses, given, blocked in _stored_constants(graph, config, qdq):
        t = graph.tensors[name]
        if not t.dtype.is_float:
            if any(_weight_rule(op, i) for op, i in uses):
                records.append({"name": name, "elements": t.size, "params": "left alone (already "
                                f"{t.dtype.name.lower()})", "sqnr_db": float("inf"), "hybrid": False})
            continue
        if given is not None:
            params, symmetric = _as_graph_stores(t.data, given)
        elif config.only_graph_weights and blocked is None:
            continue
        else:
            params = _grid(graph, name, uses, config.dtype)
            symmetric = params.dtype == DType.INT8
        q_data = params.quantize(t.data)
        hybrid = config.dtype == DType.INT8 and symmetric and all(_reads_hybrid(graph, op, i) for op, i in uses)
        q_name = graph.unique_name(f"{name}/quantized")
        graph.add_tensor(Tensor(q_name, params.dtype, t.shape, q_data, params, t.layout))
        if hybrid:
            for op, i in uses:
                op.inputs[i] = q_name
                changes = registry.spec(op.kind).hybrid_attrs(op)
                if changes:
                    op.replace_attrs(**changes)
        else:
            dequantize_for(graph, name, q_name, uses, insert_at)
            insert_at += 1
        origin = ", the graph's" if given is not None else ""
        if blocked is not None:
            origin = f", requantized from the graph's {blocked.describe()} (TFLite has no block grid)"
        records.append({"name": name, "elements": t.size, "params": params.describe() + origin,
                        "sqnr_db": sqnr_db(t.data, params.dequantize(q_data)), "hybrid": hybrid})
    graph.remove_unused()
    return records


UINT8_SPEED_NOTE = ("uint8 weights run at LiteRT's builtin-kernel speed (XNNPACK cannot unpack uint8 "
                    "DEQUANTIZE); --dtype int8 gives the same size and runs faster")
