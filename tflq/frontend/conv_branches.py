"""Train-time multi-branch blocks (RepVGG, MobileOne, ACNet, DBB-style sums) merged into one Conv
before import.

Such a block sums, over the same input x, convolutions of several kernel sizes (kxk, 1x1, 1xk,
kx1), each with its BatchNorm (folded by torch's exporter, or a BatchNormalization after the Conv
in TorchScript exports), an identity branch (a BatchNormalization of x, or x itself) and bias
constants. Convolution is linear in its kernel, so convs of one input with the same strides,
dilations and groups that read the same window alignment are one conv: each kernel placed in the
merged window where its taps read the same input cells (a 1x1 with no padding at the centre of a
3x3 with padding 1), the identity as a one-hot kernel of its per-channel scale, the biases
summed. Exact in float (up to summation order); quantized, the sum is never rounded branch by
branch and the file has one conv where it had several.

What merges depends on the weight grid (the pipeline chooses, merge_policy): one merged kernel
holds all branches' taps on one weight grid, and the identity's scale (~1 at the centre tap) is an
outlier beside trained 3x3 taps. Measured on timm's mobileone_s0 and repvgg_a0 at random init
(64x64, worst of 3 against onnxruntime), unmerged / all merged / convs merged, identity apart:
  int8 (per-channel weights): MobileOne 24.9 / 31.3 / 30.6 dB, RepVGG 24.8 / 21.1 / 28.5
  uint8 (per-tensor weights): MobileOne 22.8 / 26.1 / 22.5 dB, RepVGG 24.6 / 16.8 / 17.9
so float and float16 files merge everything (exact, fewest ops), per-channel modes merge the convs
and keep the identity an ADD, and per-tensor (uint8) modes merge nothing.
Branches that do not fit stay as they are, summed with the merged conv.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tflq.frontend.onnx_patterns import consumer_map, splice_nodes


@dataclass
class _Term:
    """One summand: a kernel over x (weights [Cout, Cin/g, *k], bias [Cout]) or a plain value."""
    value: str
    x: str | None = None
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    starts: tuple[int, ...] = ()     # input offset of the first tap per spatial axis (-pad_begin)
    ends: tuple[int, ...] = ()       # pad_end per spatial axis
    strides: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    group: int = 1
    identity: bool = False           # a per-channel scale of x (weight [C]); fits any stride-1 group
    nodes: tuple = ()                # the nodes it replaces
    constant: np.ndarray | None = None  # a per-channel constant summand ([C])


def merge_policy(float_file: bool, per_channel_weights: bool) -> str | None:
    """'all', 'convs' or None (nothing merged): see the module doc."""
    if float_file:
        return "all"
    return "convs" if per_channel_weights else None


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def merge_parallel_convs(model: onnx.ModelProto, identities: bool = True) -> int:
    """Merge each sum's convolutions of one input (see the module doc), with `identities` its
    identity branches too; returns how many merged convs were written."""
    g = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    shapes = {}
    types = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        t = vi.type.tensor_type
        types[vi.name] = t.elem_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[vi.name] = tuple(int(d.dim_value) for d in t.shape.dim)
    consumers = consumer_map(g)
    producers = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}

    def single_use(name: str) -> bool:
        return len(consumers.get(name, [])) == 1 and name not in outputs

    def bn_affine(node) -> tuple[np.ndarray, np.ndarray] | None:
        if node.op_type != "BatchNormalization" or len(node.output) != 1 or _attr(node, "training_mode", 0):
            return None
        params = [constants.get(n) for n in node.input[1:5]]
        if any(p is None for p in params):
            return None
        gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
        k = gamma / np.sqrt(var + _attr(node, "epsilon", 1e-5))
        return k, beta - mean * k

    def conv_term(value: str, conv, extra=()) -> _Term | None:
        if conv.op_type != "Conv" or _attr(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            return None
        w = constants.get(conv.input[1])
        b = constants.get(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
        if w is None or w.ndim < 3 or w.dtype.kind != "f" or (len(conv.input) > 2 and conv.input[2] and b is None):
            return None
        rank = w.ndim - 2
        pads = list(_attr(conv, "pads", [0] * 2 * rank))
        strides = tuple(_attr(conv, "strides", [1] * rank))
        dilations = tuple(_attr(conv, "dilations", [1] * rank))
        w = w.astype(np.float64)
        b = np.zeros(w.shape[0]) if b is None else b.astype(np.float64).reshape(-1)
        return _Term(value, conv.input[0], w, b, tuple(-p for p in pads[:rank]), tuple(pads[rank:]),
                     strides, dilations, int(_attr(conv, "group", 1)), nodes=(conv,) + tuple(extra))

    def term(value: str) -> _Term:
        if value in constants:
            return _Term(value, constant=constants[value])
        node = producers.get(value)
        if node is None or not single_use(value):
            return _Term(value, identity=True, x=value) if value in shapes else _Term(value)
        if node.op_type == "Conv":
            return conv_term(value, node) or _Term(value)
        affine = bn_affine(node)
        if affine is not None:
            inner = producers.get(node.input[0])
            if inner is not None and inner.op_type == "Conv" and single_use(node.input[0]):
                t = conv_term(value, inner, (node,))
                if t is not None:  # Conv -> BatchNormalization (TorchScript exports)
                    k, shift = affine
                    t.weight = t.weight * k.reshape((-1,) + (1,) * (t.weight.ndim - 1))
                    t.bias = t.bias * k + shift
                    return t
            k, shift = affine
            return _Term(value, x=node.input[0], weight=k, bias=shift, identity=True, nodes=(node,))
        return _Term(value)

    written = 0
    replaced: dict[int, list] = {}
    dead: set[int] = set()
    for root in g.node:
        if root.op_type != "Add" or id(root) in dead:
            continue
        out = root.output[0]
        users = consumers.get(out, [])
        if len(users) == 1 and users[0].op_type == "Add" and out not in outputs:
            continue  # an inner Add of a larger sum: the sum's last Add collects it
        shape = shapes.get(out)
        if shape is None or len(shape) < 3:
            continue
        adds, leaves, stack = [root], [], list(root.input)
        while stack:
            v = stack.pop()
            p = producers.get(v)
            if p is not None and p.op_type == "Add" and single_use(v) and shapes.get(v) == shape:
                adds.append(p)
                stack.extend(p.input)
            else:
                leaves.append(v)
        terms = [term(v) for v in leaves]
        merged = _merge(terms if identities else [t for t in terms if not t.identity], shape, shapes)
        if merged is None:
            continue
        kernel, bias, used, x, attrs = merged
        base = root.name or out
        wname, bname = f"{base}/merged_weight", f"{base}/merged_bias"
        dtype = next(constants[t.nodes[0].input[1]].dtype for t in used if t.weight is not None and not t.identity)
        g.initializer.extend([numpy_helper.from_array(kernel.astype(dtype), wname),
                              numpy_helper.from_array(bias.astype(dtype), bname)])
        rest = [t.value for t in terms if not any(t is u for u in used)]
        conv_out = out if not rest else f"{base}/merged_conv"
        nodes = [helper.make_node("Conv", [x, wname, bname], [conv_out], name=f"{base}/merged", **attrs)]
        if rest:
            g.value_info.append(helper.make_tensor_value_info(conv_out, types.get(out, onnx.TensorProto.FLOAT), shape))
            acc = conv_out
            for i, r in enumerate(rest):
                target = out if i == len(rest) - 1 else f"{base}/merged_sum_{i}"
                if target != out:
                    g.value_info.append(helper.make_tensor_value_info(target, types.get(out, onnx.TensorProto.FLOAT), shape))
                nodes.append(helper.make_node("Add", [acc, r], [target], name=f"{base}/merged_add_{i}"))
                acc = target
        replaced[id(root)] = nodes
        dead.update(id(a) for a in adds)
        dead.update(id(n) for t in used for n in t.nodes)
        written += 1
    if not written:
        return 0
    dead_nodes = [n for n in g.node if id(n) in dead]
    splice_nodes(g, replaced, dead)
    read = {n for node in g.node for n in node.input} | outputs
    gone = {n for node in dead_nodes for n in node.input if n not in read}
    kept_inits = [i for i in g.initializer if i.name not in gone]
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    return written


def _merge(terms: list[_Term], shape: tuple[int, ...], shapes: dict):
    """The merged kernel, bias and attributes of the largest set of terms that are one conv of
    one input, or None when fewer than two summands merge."""
    convs = [t for t in terms if t.weight is not None and not t.identity]
    best = None
    for x in dict.fromkeys(t.x for t in convs):
        for key in dict.fromkeys((t.strides, t.dilations, t.group, t.weight.shape[:2], t.weight.ndim)
                                 for t in convs if t.x == x):
            group = [t for t in convs if t.x == x and shapes.get(t.value) == tuple(shape) and (
                t.strides, t.dilations, t.group, t.weight.shape[:2], t.weight.ndim) == key]
            if not group:
                continue
            strides, dilations, groups, (cout, cin_g), ndim = key
            rank = ndim - 2
            x_shape = shapes.get(x)
            identities = [t for t in terms if t.identity and t.x == x]
            if x_shape is None or len(x_shape) != ndim:
                continue
            if not (all(s == 1 for s in strides) and tuple(x_shape) == tuple(shape)
                    and cout == x_shape[1] and cin_g * groups == cout):
                identities = []
            else:
                identities = [t for t in identities if t.weight is None or t.weight.size == cout]
            if len(group) + len(identities) < 2:
                continue
            # the merged window: from the earliest first tap to the latest last tap, per axis
            members = [(t, t.starts, tuple(s + d * (k - 1) for s, d, k in zip(t.starts, dilations, t.weight.shape[2:])),
                        t.ends) for t in group]
            members += [(t, (0,) * rank, (0,) * rank, (0,) * rank) for t in identities]
            lo = [min(m[1][a] for m in members) for a in range(rank)]
            hi = [max(m[2][a] for m in members) for a in range(rank)]
            if any((m[1][a] - lo[a]) % dilations[a] for m in members for a in range(rank)):
                continue
            size = [(hi[a] - lo[a]) // dilations[a] + 1 for a in range(rank)]
            # end padding: the input extent each member's last tap may reach stays the same
            in_extent = x_shape[2:]
            pad_end = []
            for a in range(rank):
                need = {m[3][a] + (hi[a] - m[2][a]) for m in members if m[0] in group}
                pad_end.append(max(need) if need else 0)
            out_size = [(in_extent[a] - lo[a] + pad_end[a] - dilations[a] * (size[a] - 1) - 1) // strides[a] + 1
                        for a in range(rank)]
            if tuple(out_size) != tuple(shape[2:]) or any(v > 0 for v in lo) or any(p < 0 for p in pad_end):
                continue
            kernel = np.zeros((cout, cin_g, *size))
            bias = np.zeros(cout)
            for t, starts, _, _ in members:
                at = tuple((starts[a] - lo[a]) // dilations[a] for a in range(rank))
                if t.identity:
                    scale = np.ones(cout) if t.weight is None else t.weight
                    c = np.arange(cout)
                    kernel[(c, c % cin_g) + at] += scale
                    if t.bias is not None:
                        bias += t.bias
                else:
                    region = (slice(None), slice(None)) + tuple(slice(at[a], at[a] + t.weight.shape[2 + a])
                                                                  for a in range(rank))
                    kernel[region] += t.weight
                    bias += t.bias
            if best is None or len(members) > len(best[2]):
                attrs = dict(group=groups, strides=list(strides), dilations=list(dilations),
                             kernel_shape=size, pads=[-v for v in lo] + pad_end)
                best = (kernel, bias, [m[0] for m in members], x, attrs)
    if best is None:
        return None
    kernel, bias, used, x, attrs = best
    for t in terms:  # per-channel (or scalar) constants join the bias
        if t.constant is not None and t.constant.dtype.kind == "f":
            c = t.constant
            full = c.reshape((1,) * (len(shape) - c.ndim) + c.shape)
            if full.ndim == len(shape) and all(d == 1 for i, d in enumerate(full.shape) if i != 1) \
                    and full.shape[1] in (1, kernel.shape[0]):
                bias = bias + np.broadcast_to(full.reshape(-1).astype(np.float64), bias.shape)
                used.append(t)
    return kernel, bias, used, x, attrs
