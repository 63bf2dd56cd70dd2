"""Multi-node ONNX idioms rewritten to the one op they spell, before import (exporters' decompositions)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _scalar(constants: dict[str, np.ndarray], name: str) -> float | None:
    value = constants.get(name)
    return float(value.reshape(())) if value is not None and value.size == 1 else None


def _other(node: onnx.NodeProto, name: str) -> str | None:
    """The input of a binary node that is not `name` (None if `name` is not an input)."""
    if len(node.input) != 2 or name not in node.input:
        return None
    return node.input[1] if node.input[0] == name else node.input[0]


def fuse_erf_gelu(model: onnx.ModelProto) -> int:
    """x * 0.5 * (1 + erf(x / sqrt(2))), as PyTorch exports nn.GELU below opset 20, -> Gelu.

    Three groupings: (x * (1 + erf)) * 0.5, (x * 0.5) * (1 + erf) (TorchScript exporter), and
    x * (0.5 * (1 + erf)) (torch.export-based exporter)."""
    g = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def only_user(name: str, op_type: str) -> onnx.NodeProto | None:
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    replaced: dict[int, onnx.NodeProto] = {}
    dead: set[int] = set()
    for div in g.node:
        if div.op_type != "Div" or len(div.input) != 2:
            continue
        x = div.input[0]
        if not np.isclose(_scalar(constants, div.input[1]) or 0.0, np.sqrt(2.0), rtol=1e-4):
            continue
        erf = only_user(div.output[0], "Erf")
        add = erf and only_user(erf.output[0], "Add")
        if add is None or _scalar(constants, _other(add, erf.output[0]) or "") != 1.0:
            continue
        mul = only_user(add.output[0], "Mul")
        if mul is None:
            continue
        half = None
        if _scalar(constants, _other(mul, add.output[0]) or "") == 0.5:  # x * (0.5 * (1 + erf))
            half, last = mul, only_user(mul.output[0], "Mul")
            if last is None or _other(last, mul.output[0]) != x:
                continue
            mul = last
        elif _other(mul, add.output[0]) == x:  # (x * (1 + erf)) * 0.5
            half = only_user(mul.output[0], "Mul")
            if half is None or _scalar(constants, _other(half, mul.output[0]) or "") != 0.5:
                continue
            last = half
        else:  # (x * 0.5) * (1 + erf)
            pre = next((n for n in g.node if n.output and n.output[0] == _other(mul, add.output[0])), None)
            if (pre is None or pre.op_type != "Mul" or _other(pre, x) is None
                    or _scalar(constants, _other(pre, x)) != 0.5 or len(consumers[pre.output[0]]) != 1):
                continue
            half, last = pre, mul
        gelu = helper.make_node("Gelu", [x], [last.output[0]], name=f"{div.name or x}/gelu")
        replaced[id(div)] = gelu
        dead.update(id(n) for n in (erf, add, mul, half))
    if not replaced:
        return 0
    nodes = [replaced.get(id(n), n) for n in g.node if id(n) not in dead]
    del g.node[:]
    g.node.extend(nodes)
    return len(replaced)


def gather_nd_as_gather(model: onnx.ModelProto) -> int:
    """GatherND with constant indices (and batch_dims 0) -> Reshape to [prod(lead), *rest] + Gather.

    torch.export writes a padding mask lookup `mask[batch_idx, kv_idx]` with index grids that fold
    to constants; a flat Gather along axis 0 picks the same elements.
    """
    g = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    shapes = {}
    for vi in list(g.value_info) + list(g.input):
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    elem = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input)}
    nodes, count = [], 0
    for node in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        indices = constants.get(node.input[1]) if node.op_type == "GatherND" else None
        data_shape = shapes.get(node.input[0]) if indices is not None else None
        if (indices is None or data_shape is None or attrs.get("batch_dims", 0) != 0
                or indices.ndim < 1 or indices.shape[-1] > len(data_shape)):
            nodes.append(node)
            continue
        k = int(indices.shape[-1])
        lead, rest = data_shape[:k], data_shape[k:]
        grid = indices.reshape(-1, k).astype(np.int64) % np.array(lead, np.int64)
        flat = np.ravel_multi_index(tuple(grid.T), lead).reshape(indices.shape[:-1]) if k else \
            np.zeros(indices.shape[:-1], np.int64)
        base = node.name or node.output[0]
        flat_shape, flat_data, flat_index = (f"{base}/flat_shape", f"{base}/flat", f"{base}/flat_indices")
        g.initializer.extend([numpy_helper.from_array(np.array([int(np.prod(lead))] + list(rest), np.int64),
                                                      flat_shape),
                              numpy_helper.from_array(np.asarray(flat, np.int64), flat_index)])
        g.value_info.append(helper.make_tensor_value_info(
            flat_data, elem.get(node.input[0], onnx.TensorProto.FLOAT), [int(np.prod(lead))] + list(rest)))
        nodes.append(helper.make_node("Reshape", [node.input[0], flat_shape], [flat_data],
                                      name=f"{base}/flatten"))
        nodes.append(helper.make_node("Gather", [flat_data, flat_index], list(node.output), axis=0,
                                      name=base))
        count += 1
    if count:
        del g.node[:]
        g.node.extend(nodes)
    return count
