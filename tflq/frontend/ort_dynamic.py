"""Read onnxruntime's dynamic quantization (`quantize_dynamic`) back as the float ops it stands for.

onnxruntime writes each quantized Conv/MatMul as

    DynamicQuantizeLinear(x) -> (xq, x_scale, x_zp)
    ConvInteger|MatMulInteger(xq, Wq, x_zp, W_zp) -> int32
    Cast(to=float) -> Mul(., Mul(x_scale, W_scale)) [-> the original bias Add, untouched]

which computes (xq - x_zp) x_scale (*) (Wq - W_zp) W_scale: the float op on x and on the weight
DequantizeLinear(Wq, W_scale, W_zp). The activation's grid is chosen per run from the run's own
extremes and has no static equivalent, so it is dropped; the weight's integers and scales are
kept as a DequantizeLinear (per-channel along the output channel where onnxruntime wrote one scale
per channel: axis 0 of a Conv weight, axis 1 of a MatMul's (K, N) one). The result is a graph
whose only QDQ nodes are weight DequantizeLinears.

Also read back: com.microsoft DynamicQuantizeLSTM (the LSTM of its dequantized weights), and an
integer embedding table that Gather/Transpose/Reshape move before a DequantizeLinear or a
MatMulInteger reads it (dequantized first: moving integers and dequantizing commute).

Only a pattern whose every wire is as above is rewritten; anything else (a DynamicQuantizeLinear
read by another op, a zero point input that is not the DynamicQuantizeLinear's, a weight that is
not an 8-bit initializer, a Cast to another type...) is left as it is, for
tflq.frontend.ort_quantized.refuse_onnxruntime_quantized to refuse naming it.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tflq.ops.qdq import block_size

_INTEGER_OPS = {"ConvInteger": "Conv", "MatMulInteger": "MatMul"}
_WEIGHT_TYPES = (TensorProto.INT8, TensorProto.UINT8)
# Ops that move integers without computing on them: a per-tensor dequantization commutes with them.
_DATA_MOVEMENT = frozenset({"Gather", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})


@dataclass
class _Pattern:
    integer: onnx.NodeProto  # ConvInteger / MatMulInteger / com.microsoft MatMulIntegerToFloat
    quantize: onnx.NodeProto | None  # the activation's DynamicQuantizeLinear (None: a static grid)
    cast: onnx.NodeProto | None
    rescale: onnx.NodeProto  # Mul(cast, scale product) (MatMulIntegerToFloat: itself)
    product: onnx.NodeProto | None  # Mul(x_scale, W_scale)
    weight_scale: str
    activation_scale: str  # (an initializer for a static grid)
    activation_zp: str
    weight_zp: str
    bias: str = ""  # (MatMulIntegerToFloat's)


def _default_domain(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


def _weight_axis(kind: str, weight: np.ndarray, scale: np.ndarray) -> int | None:
    """The DequantizeLinear axis of a per-channel weight scale, -1 for a per-tensor one, None when
    the scale fits no output channel."""
    if scale.size == 1:
        return -1
    axis = 0 if kind == "ConvInteger" else weight.ndim - 1
    if scale.ndim == 1 and weight.ndim >= 2 and weight.shape[axis] == scale.size:
        return axis
    return None


def _readable_weight(kind: str, weight: str, scale: str, zero_point: str,
                     inits: dict[str, onnx.TensorProto]) -> bool:
    """An 8-bit initializer weight on float initializer scales that are finite and > 0, one or one
    per output channel, with a zero point of its type and one or that many values (or none)."""
    if weight not in inits or inits[weight].data_type not in _WEIGHT_TYPES:
        return False
    if scale not in inits or inits[scale].data_type != TensorProto.FLOAT:
        return False
    if zero_point and (zero_point not in inits or inits[zero_point].data_type != inits[weight].data_type):
        return False
    values, scales = numpy_helper.to_array(inits[weight]), numpy_helper.to_array(inits[scale])
    if _weight_axis(kind, values, scales) is None or not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        return False
    return not zero_point or numpy_helper.to_array(inits[zero_point]).size in (1, scales.size)


def _scalar_init(name: str, inits: dict[str, onnx.TensorProto], data_types) -> bool:
    init = inits.get(name)
    return init is not None and init.data_type in data_types and int(np.prod(init.dims)) == 1


def _moved_initializer(value: str, producers: dict[str, onnx.NodeProto],
                       consumers: dict[str, list[onnx.NodeProto]], inits: dict[str, onnx.TensorProto],
                       outputs: set[str]) -> list[onnx.NodeProto] | None:
    """The data-movement nodes (last first) that compute `value` from an integer initializer, each
    intermediate read by the next one only; None when `value` is not computed that way."""
    chain: list[onnx.NodeProto] = []
    while value not in inits:
        node = producers.get(value)
        if node is None or node.op_type not in _DATA_MOVEMENT or not _default_domain(node) \
                or node.output[0] != value or (chain and (value in outputs or consumers.get(value) != [chain[-1]])):
            return None
        chain.append(node)
        value = node.input[0]
    return chain if chain and inits[value].data_type in _WEIGHT_TYPES else None


def _match(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto],
           consumers: dict[str, list[onnx.NodeProto]], inits: dict[str, onnx.TensorProto],
           outputs: set[str]) -> _Pattern | None:
    if len(node.input) < 2:
        return None
    activation_zp = node.input[2] if len(node.input) > 2 else ""
    quantize = producers.get(node.input[0])
    if quantize is not None and quantize.op_type == "DynamicQuantizeLinear":
        if not _default_domain(quantize) or len(quantize.output) != 3 \
                or quantize.output[0] != node.input[0] or activation_zp != quantize.output[2]:
            return None  # (uint8 activations always have their zero point)
    else:  # a static grid: onnxruntime's Gather of a quantized table (scale and zero point constants)
        quantize = None
        if not _scalar_init(activation_zp, inits, _WEIGHT_TYPES) \
                or _moved_initializer(node.input[0], producers, consumers, inits, outputs) is None:
            return None
    weight_zp = node.input[3] if len(node.input) > 3 else ""
    uses = consumers.get(node.output[0], [])
    if len(uses) != 1 or uses[0].op_type != "Cast" or node.output[0] in outputs:
        return None
    cast = uses[0]
    to = next((helper.get_attribute_value(a) for a in cast.attribute if a.name == "to"), None)
    uses = consumers.get(cast.output[0], [])
    if to != TensorProto.FLOAT or len(uses) != 1 or uses[0].op_type != "Mul" or cast.output[0] in outputs:
        return None
    rescale = uses[0]
    if list(rescale.input).count(cast.output[0]) != 1:
        return None
    product = producers.get(next(i for i in rescale.input if i != cast.output[0]))
    if product is None or product.op_type != "Mul" or len(product.input) != 2 or product.output[0] in outputs:
        return None
    if quantize is not None:
        if quantize.output[1] not in product.input:
            return None
        activation_scale = quantize.output[1]
        scale_name = next((i for i in product.input if i != activation_scale), "")
    else:  # (onnxruntime multiplies the activation's scale by the weight's, in that order)
        activation_scale, scale_name = product.input
        if not _scalar_init(activation_scale, inits, (TensorProto.FLOAT,)) \
                or not np.all(numpy_helper.to_array(inits[activation_scale]) > 0):
            return None
    if not _readable_weight(node.op_type, node.input[1], scale_name, weight_zp, inits) \
            or consumers.get(product.output[0], []) != [rescale]:
        return None
    if not all(_default_domain(n) for n in (node, cast, rescale, product)):
        return None
    return _Pattern(node, quantize, cast, rescale, product, scale_name, activation_scale, activation_zp, weight_zp)


def _match_to_float(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto],
                    consumers: dict[str, list[onnx.NodeProto]], inits: dict[str, onnx.TensorProto],
                    outputs: set[str]) -> _Pattern | None:
    """com.microsoft MatMulIntegerToFloat(A, B, a_scale, b_scale, a_zp, b_zp, bias), onnxruntime's
    fusion of MatMulInteger + Cast + Mul (+ Add) in the graphs it optimizes: (A - a_zp) a_scale @
    (B - b_zp) b_scale + bias, A from a DynamicQuantizeLinear (or a moved quantized table), B a
    constant."""
    a, b, a_scale, b_scale, a_zp, b_zp, bias = (list(node.input) + [""] * 7)[:7]
    quantize = producers.get(a)
    if quantize is not None and quantize.op_type == "DynamicQuantizeLinear":
        if not _default_domain(quantize) or len(quantize.output) != 3 or quantize.output[0] != a \
                or a_scale != quantize.output[1] or a_zp != quantize.output[2]:
            return None
    else:
        quantize = None
        if not _scalar_init(a_zp, inits, _WEIGHT_TYPES) or not _scalar_init(a_scale, inits, (TensorProto.FLOAT,)) \
                or not np.all(numpy_helper.to_array(inits[a_scale]) > 0) \
                or _moved_initializer(a, producers, consumers, inits, outputs) is None:
            return None
    if not _readable_weight(node.op_type, b, b_scale, b_zp, inits):
        return None
    return _Pattern(node, quantize, None, node, None, b_scale, a_scale, a_zp, b_zp, bias)


def _float_matmuls(graph: onnx.GraphProto) -> list[str]:
    """Each com.microsoft DynamicQuantizeMatMul(A, B, b_scale, b_zp, bias) of a constant 8-bit B
    (onnxruntime's fusion of DynamicQuantizeLinear + MatMulInteger + Cast + Mul (+ Add)) becomes
    MatMul(A, DequantizeLinear(B)) (+ Add(bias)). Returns the op types rewritten."""
    inits = {init.name: init for init in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output if out}
    front: list[onnx.NodeProto] = []
    replaced: dict[int, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type != "DynamicQuantizeMatMul" or node.domain != "com.microsoft":
            continue
        a, b, b_scale, b_zp, bias = (list(node.input) + [""] * 5)[:5]
        if not _readable_weight(node.op_type, b, b_scale, b_zp, inits):
            continue
        dequantized = _fresh(f"{b}_dequantized", producers, inits)
        front.append(_weight_dequantize(graph, inits, producers, node.op_type, (b, b_scale, b_zp), dequantized))
        replaced[id(node)] = _matmul_and_bias(node, a, dequantized, bias, producers, inits)
    if replaced:
        kept = front + [m for n in graph.node for m in replaced.get(id(n), [n])]
        del graph.node[:]
        graph.node.extend(kept)
    return ["DynamicQuantizeMatMul"] * len(replaced)


def _matmul_and_bias(node: onnx.NodeProto, a: str, b: str, bias: str, producers: dict, inits: dict
                     ) -> list[onnx.NodeProto]:
    """MatMul(a, b) [+ Add(bias)] writing `node`'s output, under its name."""
    output = node.output[0]
    product = _fresh(f"{output}_matmul", producers, inits) if bias else output
    nodes = [helper.make_node("MatMul", [a, b], [product], name=node.name or f"{output}_MatMul")]
    if bias:
        nodes.append(helper.make_node("Add", [product, bias], [output], name=f"{node.name or output}_bias"))
    return nodes


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Readers of each value, including nodes of subgraphs that read it by name."""
    found: dict[str, list[onnx.NodeProto]] = defaultdict(list)

    def visit(g: onnx.GraphProto, owner: onnx.NodeProto | None) -> None:
        for n in g.node:
            for name in n.input:
                if name:
                    found[name].append(owner or n)
            for attr in n.attribute:
                subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
                for sub in subs:
                    visit(sub, owner or n)
    visit(graph, None)
    return found


def float_ops_from_dynamic(model: onnx.ModelProto) -> Counter:
    """Rewrite each provable ConvInteger/MatMulInteger pattern of the main graph to Conv/MatMul of
    the float activation and a weight DequantizeLinear, and each DynamicQuantizeLSTM to an LSTM of
    dequantized weights, in place. Returns how many of each onnxruntime op were rewritten."""
    rewritten = Counter(_float_lstms(model.graph) + _float_matmuls(model.graph))
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output if out}
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    patterns = [p for n in graph.node if n.op_type in _INTEGER_OPS and _default_domain(n)
                for p in [_match(n, producers, consumers, inits, outputs)] if p is not None]
    patterns += [p for n in graph.node if n.op_type == "MatMulIntegerToFloat" and n.domain == "com.microsoft"
                 for p in [_match_to_float(n, producers, consumers, inits, outputs)] if p is not None]
    # A DynamicQuantizeLinear goes only when every reader of its outputs is in a rewritten pattern.
    by_quantize: dict[str, list[_Pattern]] = defaultdict(list)
    accepted: list[_Pattern] = [p for p in patterns if p.quantize is None]
    for p in patterns:
        if p.quantize is not None:
            by_quantize[p.quantize.output[0]].append(p)
    removed: set[int] = set()
    for group in by_quantize.values():
        quantize = group[0].quantize
        mine = {id(p.integer) for p in group} | {id(p.product) for p in group if p.product is not None}
        readers = [r for out in quantize.output for r in consumers.get(out, [])]
        if any(out in outputs for out in quantize.output) or any(id(r) not in mine for r in readers):
            continue
        accepted.extend(group)
        removed.add(id(quantize))
    if not accepted:
        return rewritten
    front: list[onnx.NodeProto] = []  # weight DequantizeLinears (they read initializers only)
    after: dict[int, list[onnx.NodeProto]] = defaultdict(list)  # static activation ones
    replacement: dict[int, list[onnx.NodeProto]] = {}
    dequantized: dict[tuple[str, str, str], str] = {}
    for p in accepted:
        node = p.integer
        weight, zero_point = node.input[1], p.weight_zp
        key = (weight, p.weight_scale, zero_point)
        if key not in dequantized:
            dequantized[key] = _fresh(f"{weight}_dequantized", producers, inits)
            front.append(_weight_dequantize(graph, inits, producers, node.op_type, key, dequantized[key]))
        if p.quantize is not None:
            activation = p.quantize.input[0]
        else:
            key = (node.input[0], p.activation_scale, p.activation_zp)
            if key not in dequantized:
                dequantized[key] = _fresh(f"{node.input[0]}_dequantized", producers, inits)
                after[id(producers[node.input[0]])].append(helper.make_node(
                    "DequantizeLinear", list(key), [dequantized[key]], name=f"{node.input[0]}_DequantizeLinear"))
            activation = dequantized[key]
        weight_value = dequantized[(weight, p.weight_scale, zero_point)]
        if node.op_type == "MatMulIntegerToFloat":
            replacement[id(p.rescale)] = _matmul_and_bias(node, activation, weight_value, p.bias, producers, inits)
            continue
        float_op = helper.make_node(_INTEGER_OPS[node.op_type], [activation, weight_value], [p.rescale.output[0]],
                                    name=node.name or f"{p.rescale.output[0]}_{_INTEGER_OPS[node.op_type]}")
        float_op.attribute.extend(node.attribute)
        replacement[id(p.rescale)] = [float_op]
        removed.update({id(node), id(p.cast), id(p.product)})
    kept: list[onnx.NodeProto] = list(front)
    for n in graph.node:
        if id(n) in replacement:
            kept.extend(replacement[id(n)])
        elif id(n) not in removed:
            kept.append(n)
        kept.extend(after.get(id(n), []))
    gone = {out for n in graph.node if id(n) in removed for out in n.output}
    del graph.node[:]
    graph.node.extend(kept)
    _drop_value_info(graph, gone)
    _drop_unused_initializers(graph)
    rewritten.update(p.integer.op_type for p in accepted)
    return rewritten


def _float_lstms(graph: onnx.GraphProto) -> list[str]:
    """Each com.microsoft DynamicQuantizeLSTM whose weights are 8-bit initializers on constant
    scales becomes the LSTM it quantizes: the same inputs and attributes, W and R the float
    weights onnxruntime's integers stand for, in LSTM's layout. Returns the op types rewritten."""
    inits = {init.name: init for init in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output if out}
    front: list[onnx.NodeProto] = []
    replaced: dict[int, onnx.NodeProto] = {}
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLSTM" or node.domain != "com.microsoft":
            continue
        inputs = list(node.input) + [""] * (12 - len(node.input))
        weights = []
        for q, scale, zero_point in ((inputs[1], inputs[8], inputs[9]), (inputs[2], inputs[10], inputs[11])):
            nodes = _lstm_weight(graph, inits, producers, q, scale, zero_point)
            if nodes is None:
                break
            front.extend(nodes)
            weights.append(nodes[-1].output[0])
        else:
            lstm_inputs = [inputs[0], *weights, *inputs[3:8]]
            while lstm_inputs and not lstm_inputs[-1]:
                lstm_inputs.pop()
            lstm = helper.make_node("LSTM", lstm_inputs, list(node.output), name=node.name)
            lstm.attribute.extend(node.attribute)
            replaced[id(node)] = lstm
    if replaced:
        kept = front + [replaced.get(id(n), n) for n in graph.node]
        del graph.node[:]
        graph.node.extend(kept)
        _drop_unused_initializers(graph)
    return ["DynamicQuantizeLSTM"] * len(replaced)


def _lstm_weight(graph: onnx.GraphProto, inits: dict, producers: dict, q: str, scale: str,
                 zero_point: str) -> list[onnx.NodeProto] | None:
    """Nodes computing an LSTM weight (directions, 4 x hidden, inputs) from DynamicQuantizeLSTM's
    (directions, inputs, 4 x hidden) integers and their scales (one per direction, or per direction
    and gate column): DequantizeLinear per direction along the gate columns, then the transpose.
    None when the operands are not constants of that form."""
    if q not in inits or inits[q].data_type not in _WEIGHT_TYPES or len(inits[q].dims) != 3:
        return None
    if scale not in inits or inits[scale].data_type != TensorProto.FLOAT:
        return None
    if zero_point and (zero_point not in inits or inits[zero_point].data_type != inits[q].data_type):
        return None
    values, scales = numpy_helper.to_array(inits[q]), numpy_helper.to_array(inits[scale])
    directions, _, columns = values.shape
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0) \
            or scales.size not in (directions, directions * columns):
        return None
    zps = numpy_helper.to_array(inits[zero_point]) if zero_point else np.zeros(scales.shape, values.dtype)
    if zps.size != scales.size:
        return None
    scales, zps = scales.reshape(directions, -1), zps.reshape(directions, -1)
    nodes, parts = [], []
    for d in range(directions):  # (one DequantizeLinear per direction: its axis is the gate columns)
        per_column = scales.shape[1] > 1
        names = [_add_init(graph, inits, producers, f"{q}_d{d}", values[d:d + 1]) if directions > 1 else q,
                 _add_init(graph, inits, producers, f"{scale}_d{d}", scales[d] if per_column else scales[d, 0]),
                 _add_init(graph, inits, producers, f"{zero_point or q}_zero_point_d{d}",
                           zps[d] if per_column else zps[d, 0])]
        parts.append(_fresh(f"{q}_d{d}_dequantized", producers, inits))
        nodes.append(helper.make_node("DequantizeLinear", names, [parts[-1]], name=f"{q}_d{d}_DequantizeLinear",
                                      **({"axis": 2} if per_column else {})))
    joined = parts[0]
    if directions > 1:
        joined = _fresh(f"{q}_dequantized", producers, inits)
        nodes.append(helper.make_node("Concat", parts, [joined], axis=0, name=f"{q}_Concat"))
    nodes.append(helper.make_node("Transpose", [joined], [_fresh(f"{q}_lstm_layout", producers, inits)],
                                  perm=[0, 2, 1], name=f"{q}_Transpose"))
    return nodes


def _weight_dequantize(graph: onnx.GraphProto, inits: dict, producers: dict, kind: str,
                       key: tuple[str, str, str], output: str) -> onnx.NodeProto:
    """DequantizeLinear(W, W_scale[, W_zp]) as onnxruntime's integer op reads the weight: one scale,
    or one per output channel (a zero point of another shape broadcast to the scale's)."""
    weight, scale_name, zero_point = key
    values = numpy_helper.to_array(inits[weight])
    scales = numpy_helper.to_array(inits[scale_name])
    axis = _weight_axis(kind, values, scales)
    zp_name = zero_point
    if scales.size == 1 and scales.ndim:  # a one-element vector: DequantizeLinear's scalar
        scale_name = _add_init(graph, inits, producers, f"{scale_name}_scalar", scales.reshape(()))
    if zero_point:
        zps = numpy_helper.to_array(inits[zero_point])
        if zps.shape != scales.reshape(() if scales.size == 1 else (-1,)).shape:
            zp_name = _add_init(graph, inits, producers, f"{zero_point}_per_channel",
                                np.broadcast_to(zps.reshape(-1), (scales.size,)).copy()
                                if scales.size > 1 else zps.reshape(()))
    inputs = [weight, scale_name] + ([zp_name] if zp_name else [])
    attrs = {"axis": axis} if axis >= 0 else {}
    return helper.make_node("DequantizeLinear", inputs, [output], name=f"{weight}_DequantizeLinear", **attrs)


def dequantize_before_data_movement(model: onnx.ModelProto) -> int:
    """An integer initializer Q that only data-movement ops (Gather, Transpose, Reshape...) read,
    and those only each other and DequantizeLinear nodes of one scale and zero point, is
    dequantized once, before them: DequantizeLinear(Q) -> the same moves, in float; each of those
    DequantizeLinear nodes becomes an Identity. The same values (moving integers and dequantizing
    them commute), and a weight DequantizeLinear tflq reads as such. onnxruntime's dynamic
    quantization gathers a quantized embedding table so. Returns how many tables moved."""
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output if out}
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    front: list[onnx.NodeProto] = []
    identities: dict[int, onnx.NodeProto] = {}
    for name, init in inits.items():
        if init.data_type not in _WEIGHT_TYPES or name in outputs:
            continue
        region = _moved_region(name, consumers, inits, outputs)
        if region is None:
            continue
        moves, leaves = region
        scale, zero_point = (leaves[0].input[1:] + [""])[:2] if len(leaves[0].input) > 1 else ("", "")
        output = _fresh(f"{name}_dequantized", producers, inits)
        front.append(helper.make_node("DequantizeLinear", [name, scale] + ([zero_point] if zero_point else []),
                                      [output], name=f"{name}_DequantizeLinear"))
        for node in moves:
            if node.input[0] == name:
                node.input[0] = output
        for leaf in leaves:
            identities[id(leaf)] = helper.make_node("Identity", [output if leaf.input[0] == name else leaf.input[0]],
                                                    list(leaf.output), name=leaf.name)
        _drop_value_info(graph, {n.output[0] for n in moves})
    if not front:
        return 0
    kept = front + [identities.get(id(n), n) for n in graph.node]
    del graph.node[:]
    graph.node.extend(kept)
    return len(front)


def _moved_region(name: str, consumers: dict[str, list[onnx.NodeProto]], inits: dict[str, onnx.TensorProto],
                  outputs: set[str]) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]] | None:
    """The data-movement nodes that carry the integers of initializer `name` and the
    DequantizeLinear nodes that end them, when nothing else reads them, at least one node moves
    them, and every DequantizeLinear has the same scalar scale and zero point; else None."""
    moves: list[onnx.NodeProto] = []
    leaves: list[onnx.NodeProto] = []
    values = [name]
    for value in values:  # (grows as moves are found)
        if value != name and value in outputs:
            return None
        for node in consumers.get(value, []):
            if not _default_domain(node) or node.input[0] != value or value in list(node.input)[1:]:
                return None
            if node.op_type in _DATA_MOVEMENT and len(node.output) == 1:
                if node not in moves:
                    moves.append(node)
                    values.append(node.output[0])
            elif node.op_type == "DequantizeLinear" and len(node.input) > 1:
                leaves.append(node)
            else:
                return None
    if not moves or not leaves:
        return None
    params = {tuple(leaf.input[1:3]) for leaf in leaves}
    if len(params) != 1:
        return None
    scale, zero_point = (list(params.pop()) + [""])[:2]
    if any(block_size(leaf) for leaf in leaves) or not _scalar_init(scale, inits, (TensorProto.FLOAT,)):
        return None
    if zero_point and not _scalar_init(zero_point, inits, (inits[name].data_type,)):
        return None
    return moves, leaves


def _fresh(base: str, producers: dict, inits: dict) -> str:
    name, i = base, 1
    while name in producers or name in inits:
        name, i = f"{base}_{i}", i + 1
    producers[name] = None
    return name


def _add_init(graph: onnx.GraphProto, inits: dict, producers: dict, base: str, value: np.ndarray) -> str:
    name = _fresh(base, producers, inits)
    inits[name] = numpy_helper.from_array(value, name)
    graph.initializer.append(inits[name])
    return name


def _drop_value_info(graph: onnx.GraphProto, names: set[str]) -> None:
    kept = [v for v in graph.value_info if v.name not in names]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Initializers only the removed nodes read (the scale product's weight scale stays: the
    DequantizeLinear reads it)."""
    used = set(_consumers(graph)) | {o.name for o in graph.output} | {i.name for i in graph.input}
    kept = [i for i in graph.initializer if i.name in used]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)
