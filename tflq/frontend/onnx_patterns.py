"""Multi-node ONNX idioms rewritten to the one op they spell, before import (exporters' decompositions)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def consumer_map(g: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Each value name -> the nodes of `g` that read it, in node order."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def splice_nodes(g: onnx.GraphProto, replaced: dict[int, list[onnx.NodeProto]], dead: set[int]) -> int:
    """A pattern rewrite's edit of `g`, in node order: each node whose id is a key of `replaced`
    gives way to its new nodes, those in `dead` go. Returns how many nodes were replaced."""
    if not replaced:
        return 0
    kept = []
    for node in g.node:
        if id(node) in replaced:
            kept.extend(replaced[id(node)])
        elif id(node) not in dead:
            kept.append(node)
    del g.node[:]
    g.node.extend(kept)
    return len(replaced)


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
    consumers = consumer_map(g)

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


def static_shapes(g: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def group_norm_from_instance_norm(model: onnx.ModelProto) -> int:
    """Reshape [N, C, ...] -> [N, G, -1], InstanceNormalization, Reshape back -> GroupNormalization.

    How torch exports nn.GroupNorm at opsets 17 and 18 (PoolFormer's GroupNorm(1, C), diffusion
    U-Nets): the InstanceNormalization's scale and bias (one per group, ones and zeros from torch)
    spread over each group's channels, and a per-channel Mul and Add by constants after it (the
    GroupNorm's affine) fold into them. Imported as such, the statistics are a MEAN over the
    spatial axes and an average over each group's channels, which work in NHWC; the [N, G, -1]
    view itself would need the ONNX (NCHW) order, so a TRANSPOSE on each side.
    The node written is opset 21's GroupNormalization (per-channel scale and bias), which the
    importer reads at any opset.
    """
    g = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    shapes = static_shapes(g)
    consumers = consumer_map(g)
    producers = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}

    def only_user(name: str, op_type: str) -> onnx.NodeProto | None:
        users = consumers.get(name, [])
        ok = len(users) == 1 and users[0].op_type == op_type and name not in outputs
        return users[0] if ok else None

    def per_channel(node: onnx.NodeProto, x: str, channels: int, rank: int) -> np.ndarray | None:
        """The constant operand of a Mul/Add of x that is one value per channel (else None)."""
        other = _other(node, x)
        value = constants.get(other) if other else None
        if value is None or value.dtype != np.float32 or value.ndim > rank:
            return None
        full = value.reshape((1,) * (rank - value.ndim) + value.shape)
        if any(d != 1 for i, d in enumerate(full.shape) if i != 1) or full.shape[1] not in (1, channels):
            return None
        return np.broadcast_to(full.reshape(-1), (channels,)).astype(np.float32)

    replaced: dict[int, list[onnx.NodeProto]] = {}
    dead: set[int] = set()
    for norm in g.node:
        if norm.op_type != "InstanceNormalization" or len(norm.input) < 3:
            continue
        first = producers.get(norm.input[0])
        x = first.input[0] if first is not None and first.op_type == "Reshape" else None
        x_shape, grouped = shapes.get(x or ""), shapes.get(norm.input[0])
        scale, bias = constants.get(norm.input[1]), constants.get(norm.input[2])
        back = only_user(norm.output[0], "Reshape")
        if (x_shape is None or grouped is None or scale is None or bias is None or back is None
                or len(x_shape) < 3 or len(grouped) != 3 or len(consumers.get(first.output[0], [])) != 1
                or shapes.get(back.output[0]) != x_shape):
            continue
        n, channels, groups = x_shape[0], x_shape[1], grouped[1]
        if (grouped[0] != n or groups < 1 or channels % groups
                or grouped[2] * groups != int(np.prod(x_shape[1:])) or scale.size != groups):
            continue
        gain = np.repeat(scale.astype(np.float32).reshape(-1), channels // groups)
        shift = np.repeat(bias.astype(np.float32).reshape(-1), channels // groups)
        last, rank = back, len(x_shape)
        mul = only_user(last.output[0], "Mul")
        factor = per_channel(mul, last.output[0], channels, rank) if mul is not None else None
        if factor is not None:
            gain, shift, last = gain * factor, shift * factor, mul
            dead.add(id(mul))
        add = only_user(last.output[0], "Add")
        offset = per_channel(add, last.output[0], channels, rank) if add is not None else None
        if offset is not None and shapes.get(add.output[0]) == x_shape:
            shift, last = shift + offset, add
            dead.add(id(add))
        base = norm.name or norm.output[0]
        gain_name, shift_name = f"{base}/group_scale", f"{base}/group_bias"
        g.initializer.extend([numpy_helper.from_array(gain, gain_name),
                              numpy_helper.from_array(shift, shift_name)])
        epsilon = next((a.f for a in norm.attribute if a.name == "epsilon"), 1e-5)
        replaced[id(norm)] = [helper.make_node("GroupNormalization", [x, gain_name, shift_name],
                                               [last.output[0]], name=base, num_groups=groups,
                                               epsilon=epsilon)]
        dead.update((id(first), id(back)))
    return splice_nodes(g, replaced, dead)


def _ints(constants: dict[str, np.ndarray], node: onnx.NodeProto, index: int, attr: str) -> list[int] | None:
    """An int list given as input `index` (a constant) or, in older opsets, as attribute `attr`."""
    if index < len(node.input) and node.input[index]:
        value = constants.get(node.input[index])
        return None if value is None else [int(v) for v in value.ravel()]
    for a in node.attribute:
        if a.name == attr:
            return [int(v) for v in a.ints]
    return None


def channel_windows(model: onnx.ModelProto) -> int:
    """torch's LocalResponseNorm: its mean of x^2 over a window of channels exported as
    Reshape/Unsqueeze to [N, 1, C, ...], a zero Pad of the channel axis, an AveragePool of kernel
    [size, 1, ...] (3-D for a 4-D input) and a Squeeze (and Reshape) back. Followed by
    Mul(alpha), Add(k), Pow(beta) and Div(x, .) of a 4-D x whose window is ONNX's (floor((size-1)/2)
    channels below, ceil above: odd sizes), the whole becomes one LRN; any other window (torch
    reaches size // 2 below, so an even size differs, or a 1-D input) becomes a 1x1 Conv whose
    banded [C, C] filter averages it."""
    g = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    shapes = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    consumers = consumer_map(g)
    outputs = {o.name for o in g.output}

    def only_user(name: str, *op_types: str) -> onnx.NodeProto | None:
        users = consumers.get(name, [])
        while len(users) == 1 and users[0].op_type == "Identity" and name not in outputs:
            name = users[0].output[0]
            users = consumers.get(name, [])
        if name in outputs or len(users) != 1 or users[0].op_type not in op_types:
            return None
        return users[0]

    def attr(node: onnx.NodeProto, name: str, default):
        return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)

    replaced: dict[int, list[onnx.NodeProto]] = {}
    dead: set[int] = set()
    for square in g.node:
        if square.op_type != "Mul" or len(square.input) != 2 or square.input[0] != square.input[1]:
            continue
        x = square.input[0]
        shape = shapes.get(x)
        if shape is None or len(shape) not in (3, 4):
            continue
        n, c, spatial = shape[0], shape[1], int(np.prod(shape[2:]))
        # (x*x may have other readers too: in the LRN form it stays for them)
        split = next((u for u in consumers.get(square.output[0], []) if u.op_type in ("Reshape", "Unsqueeze")
                      and u.input[0] == square.output[0]), None)
        pad = split and only_user(split.output[0], "Pad")
        pool = pad and only_user(pad.output[0], "AveragePool")
        squeeze = pool and only_user(pool.output[0], "Squeeze")
        if squeeze is None:
            continue
        split_shape = shapes.get(split.output[0])
        if (split_shape is None or len(split_shape) < 4 or split_shape[:3] != (n, 1, c)
                or int(np.prod(split_shape[3:])) != spatial):
            continue
        rank = len(split_shape)
        pads = _ints(constants, pad, 1, "pads")
        fill = constants.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
        if (pads is None or len(pads) != 2 * rank or attr(pad, "mode", b"constant") != b"constant"
                or fill is None or np.any(fill != 0)
                or any(p for axis, p in enumerate(pads) if axis % rank != 2)):
            continue
        below, above = pads[2], pads[2 + rank]
        kernel = list(attr(pool, "kernel_shape", []))
        size = kernel[0] if kernel else 0
        if (len(kernel) != rank - 2 or any(k != 1 for k in kernel[1:]) or below + above != size - 1
                or below < 0 or above < 0 or any(s != 1 for s in attr(pool, "strides", [1]))
                or any(p != 0 for p in attr(pool, "pads", [0])) or attr(pool, "auto_pad", b"NOTSET") != b"NOTSET"
                or any(d != 1 for d in attr(pool, "dilations", [1]))):
            continue
        if _ints(constants, squeeze, 1, "axes") not in ([1], [-rank + 1]):
            continue
        last = squeeze
        back = only_user(squeeze.output[0], "Reshape")
        if back is not None and shapes.get(back.output[0]) == shape:
            last = back
        elif shapes.get(squeeze.output[0]) != shape:
            continue
        chain = [split, pad, pool, squeeze] + ([back] if last is back else [])
        # Identity nodes the chain passes through go too; their outputs had one reader.
        between = [u for node in chain[:-1] for u in g.node if u.op_type == "Identity"
                   and any(u is w for w in consumers.get(node.output[0], []))]
        mul = only_user(last.output[0], "Mul")
        alpha = _scalar(constants, _other(mul, last.output[0]) or "") if mul else None
        add = mul and only_user(mul.output[0], "Add")
        bias = _scalar(constants, _other(add, mul.output[0]) or "") if add else None
        pow_ = add and only_user(add.output[0], "Pow")
        beta = _scalar(constants, pow_.input[1]) if pow_ and pow_.input[0] == add.output[0] else None
        div = pow_ and only_user(pow_.output[0], "Div")
        base = square.name or square.output[0]
        if (len(shape) == 4 and below == (size - 1) // 2 and None not in (alpha, bias, beta)
                and div is not None and div.input == [x, pow_.output[0]]):
            lrn = helper.make_node("LRN", [x], list(div.output), name=f"{base}/lrn", size=size,
                                   alpha=alpha, beta=beta, bias=bias)
            # x*x stays where something else reads it too (or it is a graph output)
            kept = len(consumers[square.output[0]]) > 1 or square.output[0] in outputs
            replaced[id(square)] = [square, lrn] if kept else [lrn]
            dead.update(id(node) for node in chain + between + [mul, add, pow_, div])
            continue
        band = np.zeros((c, c), np.float32)
        for out in range(c):
            band[out, max(0, out - below):min(c, out - below + size)] = 1.0 / size
        weights = f"{base}/window"
        g.initializer.append(numpy_helper.from_array(band.reshape((c, c) + (1,) * (len(shape) - 2)), weights))
        conv = helper.make_node("Conv", [square.output[0], weights], list(last.output),
                                name=f"{base}/window_mean", kernel_shape=[1] * (len(shape) - 2))
        replaced[id(split)] = [conv]
        dead.update(id(node) for node in chain[1:] + between)
    if not replaced:
        return 0
    nodes = [m for node in g.node if id(node) not in dead for m in replaced.get(id(node), [node])]
    del g.node[:]
    g.node.extend(nodes)
    return len(replaced)


def _permuted_split(indices: np.ndarray, size: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(split, perm) when indices == arange(size).reshape(split).transpose(perm), else None."""
    import itertools

    if indices.ndim < 2 or indices.ndim > 4 or indices.size != size:
        return None
    flat = np.where(indices < 0, indices + size, indices)
    for perm in itertools.permutations(range(indices.ndim)):
        if perm == tuple(range(indices.ndim)):
            continue
        inverse = np.argsort(perm)
        split = tuple(int(indices.shape[i]) for i in inverse)
        if np.array_equal(np.arange(size).reshape(split).transpose(perm), flat):
            return split, tuple(int(p) for p in perm)
    return None


def gather_permutation_as_transpose(model: onnx.ModelProto) -> int:
    """Gather along an axis by constant indices [a, b, ...] that read the whole axis as a
    transposed split (MobileViTV2's unfold: rows [[0, 2, 4, 6], [1, 3, 5, 7]], h = 2 * i + k)
    -> Reshape splitting the axis, Transpose into the indices' order.

    A GATHER in the file moves one axis by a table; as a reshape and a transpose it joins the runs
    of reshapes and transposes around it (the unfold's own Transpose, the layout's), which
    collapse into one TRANSPOSE.
    """
    g = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    shapes = static_shapes(g)
    elem = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input)}
    nodes, count = [], 0
    for node in g.node:
        indices = constants.get(node.input[1]) if node.op_type == "Gather" and len(node.input) == 2 else None
        shape = shapes.get(node.input[0]) if indices is not None else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        plan = None
        if shape is not None and indices.dtype.kind in "iu" and -len(shape) <= axis < len(shape):
            axis %= len(shape)
            plan = _permuted_split(indices.astype(np.int64), shape[axis])
        if plan is None:
            nodes.append(node)
            continue
        split, perm = plan
        base = node.name or node.output[0]
        target, view = f"{base}/split_shape", f"{base}/split"
        g.initializer.append(numpy_helper.from_array(
            np.array(shape[:axis] + split + shape[axis + 1:], np.int64), target))
        full = list(range(axis)) + [axis + p for p in perm] + \
            list(range(axis + len(split), len(shape) + len(split) - 1))
        g.value_info.append(helper.make_tensor_value_info(
            view, elem.get(node.input[0], onnx.TensorProto.FLOAT), list(shape[:axis] + split + shape[axis + 1:])))
        nodes.append(helper.make_node("Reshape", [node.input[0], target], [view], name=f"{base}/split"))
        nodes.append(helper.make_node("Transpose", [view], list(node.output), perm=full, name=base))
        count += 1
    if count:
        del g.node[:]
        g.node.extend(nodes)
    return count
