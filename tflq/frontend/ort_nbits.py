"""Read onnxruntime's com.microsoft MatMulNBits (its 4-bit weight-only MatMul) as the standard
MatMul by the float weight it computes, marked so that weights-only mode stores it in 8 bits.

MatMulNBits(A, B, scales, zero_points?, g_idx?, bias?) with attributes K, N, bits, block_size is
A @ W (+ bias), W the (K, N) matrix whose column n is row n of B dequantized: B is uint8
(N, k_blocks, blob), k_blocks = ceil(K / block_size), each blob the block's block_size codes of
`bits` bits packed from the low bits of each byte up; code k of row n is (q - zero_point) * scale
with the block's scale (scales: N x k_blocks) and zero point (uint8, packed as B is, N x
ceil(k_blocks * bits / 8); or unpacked floats, N x k_blocks; absent: 2^(bits - 1)). The codes past
K in the last block are padding.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tflq.errors import UnsupportedModelError
from tflq.ir.qdq import BlockedConstant

OP_TYPE = "MatMulNBits"
DOMAIN = "com.microsoft"
# bit widths whose codes never straddle a byte (what the packing above means without doubt)
BITS = (2, 4, 8)
# the doc_string of a weight this rewrite made: what tflq.frontend.onnx_qdq reads back
_MARK = "tflq: dequantized from com.microsoft MatMulNBits blocks "


class _Refused(Exception):
    """One MatMulNBits node that cannot be read as a MatMul: what is wrong with it."""


def matmul_nbits_as_matmul(model: onnx.ModelProto, path: str) -> int:
    """Rewrite each main-graph MatMulNBits of constant weights as MatMul (+ Add of its bias) by a
    float initializer holding the weight it computes (exactly: (q - zero_point) * scale in its
    scales' type), marked with its blocks (blocked_constant reads the mark). Raises one
    UnsupportedModelError naming the first node tflq cannot read (g_idx, a bit width other than
    2, 4 or 8, parameters that are not initializers...). Returns how many were rewritten."""
    found = {i: n for i, n in enumerate(model.graph.node) if n.op_type == OP_TYPE and n.domain == DOMAIN}
    if not found:
        return 0
    inits = {init.name: init for init in model.graph.initializer}
    rewritten: dict[int, list[onnx.NodeProto]] = {}
    problems: list[tuple[onnx.NodeProto, str]] = []
    for i, node in found.items():
        try:
            rewritten[i] = _as_matmul(model, node, inits)
        except _Refused as exc:
            problems.append((node, str(exc)))
    if problems:
        node, what = problems[0]
        more = f" (and {len(problems) - 1} more MatMulNBits nodes)" if len(problems) > 1 else ""
        name = f"'{node.name}'" if node.name else "a MatMulNBits node"
        raise UnsupportedModelError(
            f"{path}: node {name} ({DOMAIN} {OP_TYPE}): {what}{more}; tflq reads MatMulNBits of "
            f"2-, 4- or 8-bit constant weights without g_idx", reason_code="matmul_nbits")
    packed = {name for node in found.values() for name in node.input[1:5] if name}
    nodes = []
    for i, node in enumerate(model.graph.node):
        nodes.extend(rewritten.get(i, [node]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _drop_unused_initializers(model, packed)
    return len(found)


def blocked_constant(init: onnx.TensorProto) -> BlockedConstant | None:
    """The blocks an initializer made by matmul_nbits_as_matmul came from; None for any other."""
    if not init.doc_string.startswith(_MARK):
        return None
    fields = json.loads(init.doc_string[len(_MARK):])
    return BlockedConstant(OP_TYPE, fields["node"], fields["bits"], fields["block_size"],
                           int(np.prod(init.dims)))


def _attr(node: onnx.NodeProto, name: str, default: int | None = None) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(helper.get_attribute_value(attr))
    if default is None:
        raise _Refused(f"attribute {name} is missing")
    return default


def _constant(node: onnx.NodeProto, index: int, inits: dict[str, onnx.TensorProto],
              what: str) -> np.ndarray | None:
    name = node.input[index] if index < len(node.input) else ""
    if not name:
        return None
    if name not in inits:
        raise _Refused(f"its {what} '{name}' is not an initializer")
    return numpy_helper.to_array(inits[name])


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """The codes of uint8 bytes holding 8 / bits codes each, lowest bits first, along the last axis."""
    shifts = np.arange(0, 8, bits, dtype=np.uint8)
    codes = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return codes.reshape(*packed.shape[:-1], packed.shape[-1] * len(shifts))


def dequantized_weight(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.ndarray:
    """The (K, N) float weight a MatMulNBits node computes (in its scales' type). Raises _Refused."""
    k, n, bits, size = (_attr(node, "K"), _attr(node, "N"), _attr(node, "bits", 4), _attr(node, "block_size"))
    if bits not in BITS:
        raise _Refused(f"{bits}-bit weights are not supported")
    if _attr(node, "weight_prepacked", 0):
        raise _Refused("prepacked weights (weight_prepacked: a runtime's own layout) are not supported")
    if k <= 0 or n <= 0 or size <= 0 or size * bits % 8:
        raise _Refused(f"K {k}, N {n} and block_size {size} do not describe {bits}-bit blocks")
    blocks, blob = -(-k // size), size * bits // 8
    packed = _constant(node, 1, inits, "B")
    if packed is None or packed.dtype != np.uint8 or packed.size != n * blocks * blob:
        raise _Refused(f"B must be uint8 [{n}, {blocks}, {blob}] for K {k}, N {n}, {bits}-bit "
                       f"blocks of {size}, got {_described(packed)}")
    scales = _constant(node, 2, inits, "scales")
    if scales is None or scales.dtype not in (np.float32, np.float16) or scales.size != n * blocks:
        raise _Refused(f"scales must be float32 or float16 [{n}, {blocks}], got {_described(scales)}")
    scales = scales.reshape(n, blocks)
    if not np.all(np.isfinite(scales)):
        raise _Refused("its scales hold non-finite values")
    codes = _unpack(packed.reshape(n, blocks, blob), bits).astype(np.float32)
    zero_points = _zero_points(node, inits, n, blocks, bits)
    if len(node.input) > 4 and node.input[4]:  # (with it, onnxruntime reads packed zero points
        # in another way, even when it keeps the blocks' own order)
        raise _Refused("g_idx (a deprecated input: blocks in another order, act-order) is not supported")
    weight = (codes - zero_points[:, :, None]) * scales.astype(np.float32)[:, :, None]
    return weight.reshape(n, blocks * size)[:, :k].T.astype(scales.dtype)


def _zero_points(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], n: int, blocks: int,
                 bits: int) -> np.ndarray:
    """Each block's zero point, (N, k_blocks) in float32."""
    zero_points = _constant(node, 3, inits, "zero_points")
    if zero_points is None:
        return np.full((n, blocks), 2 ** (bits - 1), np.float32)
    if zero_points.dtype == np.uint8:
        per_row = -(-blocks * bits // 8)
        if zero_points.size != n * per_row:
            raise _Refused(f"packed zero_points must be uint8 [{n}, {per_row}], got "
                           f"{_described(zero_points)}")
        return _unpack(zero_points.reshape(n, per_row), bits)[:, :blocks].astype(np.float32)
    if zero_points.dtype in (np.float32, np.float16) and zero_points.size == n * blocks:
        return zero_points.reshape(n, blocks).astype(np.float32)
    raise _Refused(f"zero_points must be packed uint8 or float [{n}, {blocks}], got "
                   f"{_described(zero_points)}")


def _described(value: np.ndarray | None) -> str:
    return "none" if value is None else f"{value.dtype} {list(value.shape)}"


def _as_matmul(model: onnx.ModelProto, node: onnx.NodeProto,
               inits: dict[str, onnx.TensorProto]) -> list[onnx.NodeProto]:
    weight = dequantized_weight(node, inits)
    bias = _constant(node, 5, inits, "bias")
    if bias is not None and bias.size != weight.shape[1]:
        raise _Refused(f"bias must hold N = {weight.shape[1]} values, got {_described(bias)}")
    name = _unique(f"{node.input[1]}/dequantized", inits)
    init = numpy_helper.from_array(weight, name)
    init.doc_string = _MARK + json.dumps({"node": node.name, "bits": _attr(node, "bits", 4),
                                          "block_size": _attr(node, "block_size")})
    inits[name] = init
    model.graph.initializer.append(init)
    if bias is None:
        return [helper.make_node("MatMul", [node.input[0], name], [node.output[0]], name=node.name)]
    product = _unique(f"{node.output[0]}/before_bias", inits)
    return [helper.make_node("MatMul", [node.input[0], name], [product], name=node.name),
            helper.make_node("Add", [product, node.input[5]], [node.output[0]],
                             name=f"{node.name}/bias" if node.name else "")]


def _unique(base: str, taken: dict[str, onnx.TensorProto]) -> str:
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def _drop_unused_initializers(model: onnx.ModelProto, names: set[str]) -> None:
    """Remove the packed weights, scales and zero points no node reads any more (nor a subgraph)."""
    used = set()
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        for node in graph.node:
            used.update(node.input)
            for attr in node.attribute:
                stack.extend([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs)
    used.update(o.name for o in model.graph.output)
    unused = names - used
    kept = [init for init in model.graph.initializer if init.name not in unused]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    inputs = [i for i in model.graph.input if i.name not in unused]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
