"""Float models that onnxruntime optimized (its transformer optimizer, optimum's ORTOptimizer, or a
session's `optimized_model_filepath`) hold com.microsoft contrib ops that fuse a subgraph into one
node: Gelu, FastGelu, BiasGelu, QuickGelu, SkipLayerNormalization, SimplifiedLayerNormalization,
EmbedLayerNormalization, Attention, MultiHeadAttention, FusedConv, FusedGemm, FusedMatMul...
Each is replaced here by the standard ONNX nodes it computes (onnxruntime's ContribOperators.md
and CPU kernels), valid at the model's default opset, so the importer and its pattern fusers (the
Erf GELU, LayerNormalization, attention masks) take it from there in every mode.

What a rewrite cannot express (past/present state, rotary embeddings, packed Q/K/V, a mask form
other than the raw 2-D/3-D mask or the 1-D sequence lengths, an activation without a standard op)
is refused with one line naming the node, the op and the reason. com.microsoft ops not listed here
are left for the importer, which reports them as unsupported_op.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tflq.errors import Diagnostic, UnsupportedModelError

CONTRIB_DOMAIN = "com.microsoft"
DEFAULT_DOMAINS = ("", "ai.onnx")
# onnxruntime registers these in the default domain too (below the opsets ONNX added them at).
DEFAULT_DOMAIN_CONTRIBS = {"SimplifiedLayerNormalization": None, "LayerNormalization": 17}
MASK_FILTER_VALUE = -10000.0  # Attention / MultiHeadAttention's default mask_filter_value
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class _Refused(Exception):
    def __init__(self, reason: str, what: str) -> None:
        super().__init__(what)
        self.reason, self.what = reason, what


class _Emitter:
    """Adds the standard nodes and constants that replace one contrib node."""

    def __init__(self, model: onnx.ModelProto, opset: int) -> None:
        self.graph = model.graph
        self.opset = opset
        self.inits = {i.name: i for i in model.graph.initializer}
        self.used = set(self.inits) | {vi.name for vi in model.graph.input}
        for node in model.graph.node:
            self.used.update(node.output)
            self.used.update(node.input)
        self.node: onnx.NodeProto | None = None
        self.nodes: list[onnx.NodeProto] = []
        self.dims = _declared_dims(model)  # value -> its dimensions (int, or None if unknown)

        self.model = model
        self.current: Callable[[], list[onnx.NodeProto]] = lambda: list(model.graph.node)
        self.refreshed = False  # shapes inferred again for the node being rewritten

    def known(self, name: str) -> bool:
        """Whether `name` has dimensions; a value after a contrib node gets them from shape
        inference of the graph as rewritten so far (once per node)."""
        if name not in self.dims and self.constant(name) is None and not self.refreshed:
            self.refreshed = True
            self.dims.update(_declared_dims(_shape_skeleton(self.model, self.current())))
        return name in self.dims or self.constant(name) is not None

    def rank(self, name: str) -> int | None:
        if not self.known(name):
            return None
        if name in self.dims:
            return len(self.dims[name])
        return self.constant(name).ndim

    def dim(self, name: str, axis: int) -> int | None:
        self.known(name)
        dims = self.dims.get(name)
        return dims[axis] if dims and -len(dims) <= axis < len(dims) else None

    # ---- plumbing ----------------------------------------------------------------------------
    def start(self, node: onnx.NodeProto) -> None:
        self.node, self.nodes, self.refreshed = node, [], False

    def fresh(self, base: str) -> str:
        stem = f"{self.node.name or self.node.op_type}/{base}"
        name, index = stem, 1
        while name in self.used:
            index += 1
            name = f"{stem}_{index}"
        self.used.add(name)
        return name

    def const(self, value, base: str = "const", dtype=np.float32) -> str:
        name = self.fresh(base)
        init = numpy_helper.from_array(np.asarray(value, dtype), name)
        self.inits[name] = init
        self.graph.initializer.append(init)
        return name

    def constant(self, name: str) -> np.ndarray | None:
        init = self.inits.get(name)
        return None if init is None else numpy_helper.to_array(init)

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.fresh(op_type), **attrs))
        return out

    # ---- opset-dependent forms ---------------------------------------------------------------
    def reduce(self, op_type: str, x: str, axes: list[int], out: str | None = None, keepdims: int = 1) -> str:
        since = 18 if op_type != "ReduceSum" else 13  # axes became an input
        if self.opset >= since:
            return self.op(op_type, [x, self.const(axes, "axes", np.int64)], out, keepdims=keepdims)
        return self.op(op_type, [x], out, axes=axes, keepdims=keepdims)

    def reshape(self, x: str, shape: list[int], out: str | None = None) -> str:
        return self.op("Reshape", [x, self.const(shape, "shape", np.int64)], out)

    def gelu(self, x: str, out: str, tanh: bool = False) -> str:
        """Gelu at opset 20; below, the formula (erf: the grouping the Erf GELU fuser reads back)."""
        if self.opset >= 20:
            return self.op("Gelu", [x], out, **({"approximate": "tanh"} if tanh else {}))
        if tanh:  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            cube = self.op("Mul", [self.op("Mul", [x, x]), x])
            inner = self.op("Add", [x, self.op("Mul", [cube, self.const(0.044715)])])
            t = self.op("Tanh", [self.op("Mul", [inner, self.const(SQRT_2_OVER_PI)])])
            one_plus = self.op("Add", [t, self.const(1.0)])
            return self.op("Mul", [self.op("Mul", [x, one_plus]), self.const(0.5)], out)
        erf = self.op("Erf", [self.op("Div", [x, self.const(math.sqrt(2.0))])])
        one_plus = self.op("Add", [erf, self.const(1.0)])
        return self.op("Mul", [self.op("Mul", [x, one_plus]), self.const(0.5)], out)

    def layer_norm(self, x: str, gamma: str, beta: str, epsilon: float, out: str) -> str:
        """LayerNormalization over the last axis (opset 17), or its formula below."""
        if self.opset >= 17:
            return self.op("LayerNormalization", [x, gamma] + ([beta] if beta else []), out,
                           axis=-1, epsilon=epsilon)
        centered = self.op("Sub", [x, self.reduce("ReduceMean", x, [-1])])
        variance = self.reduce("ReduceMean", self.op("Mul", [centered, centered]), [-1])
        std = self.op("Sqrt", [self.op("Add", [variance, self.const(epsilon)])])
        scaled = self.op("Mul", [self.op("Div", [centered, std]), gamma], None if beta else out)
        return self.op("Add", [scaled, beta], out) if beta else scaled

    def rms_norm(self, x: str, gamma: str, epsilon: float, out: str) -> str:
        """x / sqrt(mean(x^2) + epsilon) * gamma over the last axis."""
        mean_square = self.reduce("ReduceMean", self.op("Mul", [x, x]), [-1])
        std = self.op("Sqrt", [self.op("Add", [mean_square, self.const(epsilon)])])
        return self.op("Mul", [self.op("Div", [x, std]), gamma], out)


def _declared_dims(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """The dimensions of the model's values as declared or as ONNX shape inference finds them
    (it passes over contrib ops, so values after them may be missing)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - an uninferable model: the declared shapes only
        inferred = model
    dims: dict[str, list[int | None]] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            dims[vi.name] = [int(d.dim_value) if d.HasField("dim_value") else None
                             for d in vi.type.tensor_type.shape.dim]
    return dims


SMALL_CONSTANT = 4096  # elements: initializers shape inference may read (shapes, axes)


def _shape_skeleton(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
    """`model` with `nodes`, its large initializers given as typed inputs instead (shape
    inference needs their shapes only)."""
    graph = helper.make_graph(nodes, model.graph.name, list(model.graph.input), list(model.graph.output),
                              value_info=list(model.graph.value_info))
    for init in model.graph.initializer:
        if int(np.prod(init.dims)) <= SMALL_CONSTANT:
            graph.initializer.append(init)
        else:
            graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    skeleton = helper.make_model(graph, opset_imports=list(model.opset_import))
    skeleton.ir_version = model.ir_version
    return skeleton


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _input(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if len(node.input) > index else ""


def _output(node: onnx.NodeProto, index: int) -> str:
    return node.output[index] if len(node.output) > index else ""


def _only_attrs(node: onnx.NodeProto, allowed: set[str]) -> None:
    extra = [a.name for a in node.attribute if a.name not in allowed]
    if extra:
        raise _Refused("unsupported_attribute", f"attribute(s) {', '.join(extra)} are not supported")


# ---- activations -----------------------------------------------------------------------------

def _gelu(node, e: _Emitter) -> None:
    _only_attrs(node, set())
    e.gelu(node.input[0], node.output[0])


def _bias_gelu(node, e: _Emitter) -> None:
    _only_attrs(node, set())
    e.gelu(e.op("Add", [node.input[0], node.input[1]]), node.output[0])


def _fast_gelu(node, e: _Emitter) -> None:
    _only_attrs(node, set())
    x = node.input[0]
    if _input(node, 1):
        x = e.op("Add", [x, node.input[1]])
    e.gelu(x, node.output[0], tanh=True)


def _quick_gelu(node, e: _Emitter) -> None:
    _only_attrs(node, {"alpha"})
    x, alpha = node.input[0], float(_attr(node, "alpha", 1.702))
    e.op("Mul", [x, e.op("Sigmoid", [e.op("Mul", [x, e.const(alpha)])])], node.output[0])


def _bias_add(node, e: _Emitter) -> None:
    _only_attrs(node, set())
    e.op("Add", [e.op("Add", [node.input[0], node.input[1]]), node.input[2]], node.output[0])


# ---- normalizations --------------------------------------------------------------------------

def _unused_outputs(node, e: _Emitter, indices: tuple[int, ...], what: dict[int, str]) -> None:
    """Refuse optional outputs the graph reads (mean, inverse std: training-time statistics)."""
    read = {name for n in e.graph.node for name in n.input} | {vi.name for vi in e.graph.output}
    for index in indices:
        name = _output(node, index)
        if name and name in read:
            raise _Refused("unsupported_output", f"its {what[index]} output (index {index}) is not supported")


def _skip_layer_norm(node, e: _Emitter, simplified: bool = False) -> None:
    _only_attrs(node, {"epsilon"})
    _unused_outputs(node, e, (1, 2), {1: "mean", 2: "inv_std_var"})
    epsilon = float(_attr(node, "epsilon", 1e-12))
    beta = "" if simplified else _input(node, 3)
    bias = _input(node, 3 if simplified else 4)
    total = e.op("Add", [node.input[0], node.input[1]], None if bias else (_output(node, 3) or None))
    if bias:
        total = e.op("Add", [total, bias], _output(node, 3) or None)
    if simplified:
        e.rms_norm(total, node.input[2], epsilon, node.output[0])
    else:
        e.layer_norm(total, node.input[2], beta, epsilon, node.output[0])


def _simplified_layer_norm(node, e: _Emitter) -> None:
    _only_attrs(node, {"epsilon", "axis", "stash_type"})
    _unused_outputs(node, e, (1,), {1: "inv_std_var"})
    if int(_attr(node, "axis", -1)) not in (-1,):
        _last_axis(node, e)
    e.rms_norm(node.input[0], node.input[1], float(_attr(node, "epsilon", 1e-5)), node.output[0])


def _last_axis(node, e: _Emitter) -> None:
    """Refuse an `axis` that is not the last one (the rank from the graph's declared shapes)."""
    axis = int(_attr(node, "axis", -1))
    rank = e.rank(node.input[0])
    if rank is None or axis not in (-1, rank - 1):
        raise _Refused("unsupported_attribute", f"axis={axis}: only the last axis is supported")


def _layer_norm(node, e: _Emitter) -> None:
    """com.microsoft LayerNormalization, or the default-domain one below opset 17."""
    _only_attrs(node, {"epsilon", "axis", "stash_type"})
    _unused_outputs(node, e, (1, 2), {1: "mean", 2: "inv_std_var"})
    if int(_attr(node, "axis", -1)) != -1:
        _last_axis(node, e)
    e.layer_norm(node.input[0], node.input[1], _input(node, 2), float(_attr(node, "epsilon", 1e-5)),
                 node.output[0])


def _embed_layer_norm(node, e: _Emitter) -> None:
    """word[ids] + position[0..S) (or [position_ids]) + segment[segment_ids], LayerNorm; the
    mask_index output is each batch row's count of mask ones (int32)."""
    _only_attrs(node, {"epsilon", "mask_index_type"})
    ids, segment_ids, words, positions, segments, gamma, beta, mask, position_ids = \
        (_input(node, i) for i in range(9))
    word = e.op("Gather", [words, ids])
    if position_ids:
        position = e.op("Gather", [positions, position_ids])
    else:
        length = e.op("Slice", [e.op("Shape", [ids]), e.const([1], "one", np.int64),
                                e.const([2], "two", np.int64)])
        position = e.op("Slice", [positions, e.const([0], "zero", np.int64), length,
                                  e.const([0], "axis", np.int64)])
    total = e.op("Add", [word, position], None if segment_ids else (_output(node, 2) or None))
    if segment_ids:
        if not segments:
            raise _Refused("unsupported_input", "segment_ids without a segment_embedding")
        total = e.op("Add", [total, e.op("Gather", [segments, segment_ids])], _output(node, 2) or None)
    e.layer_norm(total, gamma, beta, float(_attr(node, "epsilon", 1e-12)), node.output[0])
    mask_index = _output(node, 1)
    if mask_index:
        if not mask:
            raise _Refused("unsupported_output", "a mask_index output without a mask input")
        count = e.reduce("ReduceSum", e.op("Cast", [mask], to=TensorProto.INT32), [1], keepdims=0)
        e.op("Identity", [count], mask_index)
        e.dims[mask_index] = [e.dim(ids, 0)]


# ---- matrix products -------------------------------------------------------------------------

def _activation(node, e: _Emitter, x: str, out: str, params: list[float]) -> str:
    kind = _attr(node, "activation", "")
    if not kind:
        return e.op("Identity", [x], out)
    if kind in ("Relu", "Sigmoid", "Tanh"):
        return e.op(kind, [x], out)
    if kind == "LeakyRelu":
        return e.op(kind, [x], out, **({"alpha": params[0]} if params else {}))
    if kind == "HardSigmoid":
        return e.op(kind, [x], out, **({"alpha": params[0], "beta": params[1]} if len(params) > 1 else {}))
    if kind == "Clip" and len(params) >= 2:
        return e.op("Clip", [x, e.const(params[0], "min"), e.const(params[1], "max")], out)
    raise _Refused("unsupported_attribute", f"activation '{kind}' is not supported")


def _fused_conv(node, e: _Emitter) -> None:
    _only_attrs(node, {"activation", "activation_params", "group", "pads", "strides", "dilations",
                       "kernel_shape", "auto_pad"})
    conv_attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute
                  if a.name not in ("activation", "activation_params")}
    inputs = [node.input[0], node.input[1]] + ([node.input[2]] if _input(node, 2) else [])
    y = e.op("Conv", inputs, **conv_attrs)
    if _input(node, 3):  # Z, the sum input: added before the activation
        y = e.op("Add", [y, node.input[3]])
    _activation(node, e, y, node.output[0], [float(v) for v in _attr(node, "activation_params", [])])


def _fused_gemm(node, e: _Emitter) -> None:
    _only_attrs(node, {"activation", "activation_alpha", "activation_beta", "activation_gamma",
                       "alpha", "beta", "transA", "transB", "leaky_relu_alpha"})
    gemm_attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute
                  if a.name in ("alpha", "beta", "transA", "transB")}
    kind = _attr(node, "activation", "")
    params = [_attr(node, "activation_alpha"), _attr(node, "activation_beta")]
    if kind == "LeakyRelu" and params[0] is None:
        params[0] = _attr(node, "leaky_relu_alpha")
    if kind == "HardSigmoid" and None in params:
        params = [0.2 if params[0] is None else params[0], 0.5 if params[1] is None else params[1]]
    y = e.op("Gemm", [i for i in node.input if i], **gemm_attrs)
    _activation(node, e, y, node.output[0], [float(p) for p in params if p is not None])


def _batch_perm(rank: int, trans: bool) -> list[int]:
    """FusedMatMul's transBatch: the first axis moves behind the other batch axes (and, with
    trans, behind the last)."""
    middle = list(range(1, rank - 1))
    return middle + ([rank - 1, 0] if trans else [0, rank - 1])


def _fused_matmul(node, e: _Emitter) -> None:
    _only_attrs(node, {"alpha", "transA", "transB", "transBatchA", "transBatchB"})
    operands = []
    for index, letter in enumerate("AB"):
        x = node.input[index]
        trans, batch = int(_attr(node, f"trans{letter}", 0)), int(_attr(node, f"transBatch{letter}", 0))
        if trans or batch:
            rank = e.rank(x)
            if rank is None or rank < 2:
                raise _Refused("unsupported_shape", f"trans{letter}/transBatch{letter} of an input of "
                                                    f"unknown rank or rank below 2")
            if batch:
                x = e.op("Transpose", [x], perm=_batch_perm(rank, bool(trans)))
            else:
                x = e.op("Transpose", [x], perm=list(range(rank - 2)) + [rank - 1, rank - 2])
        operands.append(x)
    alpha = float(_attr(node, "alpha", 1.0))
    if alpha == 1.0:
        e.op("MatMul", operands, node.output[0])
    else:
        e.op("Mul", [e.op("MatMul", operands), e.const(alpha, "alpha")], node.output[0])


# ---- attention -------------------------------------------------------------------------------

def _heads(e: _Emitter, x: str, heads: int, key: bool = False) -> str:
    """(B, S, N*H) -> (B, N, S, H), or (B, N, H, S) for the keys."""
    split = e.reshape(x, [0, 0, heads, -1])
    return e.op("Transpose", [split], perm=[0, 2, 3, 1] if key else [0, 2, 1, 3])


def _attend(node, e: _Emitter, q: str, k: str, v: str, heads: int, head_size: int,
            masks: list[str], bias: str, out: str) -> None:
    """softmax(Q K^T * scale + bias + masks) V, merged back to (B, S, N*Hv)."""
    scale = _attr(node, "scale")
    scale = float(scale) if scale else 1.0 / math.sqrt(head_size)
    scores = e.op("Mul", [e.op("MatMul", [_heads(e, q, heads), _heads(e, k, heads, key=True)]),
                          e.const(scale, "scale")])
    if bias:
        scores = e.op("Add", [scores, bias])
    if masks:  # summed apart, then added just before the softmax: the plan narrows that sum's grid
        total = masks[0]
        for mask in masks[1:]:
            total = e.op("Add", [total, mask])
        scores = e.op("Add", [scores, total])
    probs = e.op("Softmax", [scores], axis=-1)
    context = e.op("Transpose", [e.op("MatMul", [probs, _heads(e, v, heads)])], perm=[0, 2, 1, 3])
    e.reshape(context, [0, 0, -1], out)


def _sequence_positions(e: _Emitter, x: str, axis: int) -> str:
    """0, 1, ... along `axis` of x (int32)."""
    shape = e.op("Shape", [x])
    length = e.op("Cast", [e.op("Gather", [shape, e.const(axis, "axis", np.int64)], axis=0)],
                  to=TensorProto.INT32)
    return e.op("Range", [e.const(0, "start", np.int32), length, e.const(1, "delta", np.int32)])


def _padding_mask(node, e: _Emitter, mask: str, keys: str, filter_value: float) -> str:
    """An additive (B, 1, 1|S, T) mask: the raw (B, T) or (B, S, T) mask of ones and zeros, or
    the (B,) key counts of right-padded rows (keys at or past the count are masked)."""
    rank = e.rank(mask)
    if rank == 1:
        lengths = e.reshape(e.op("Cast", [mask], to=TensorProto.INT32), [-1, 1])
        keep = e.op("Cast", [e.op("Less", [_sequence_positions(e, keys, 1), lengths])], to=TensorProto.FLOAT)
        keep = e.reshape(keep, [0, 1, 1, -1])
    elif rank in (2, 3):
        keep = e.op("Cast", [mask], to=TensorProto.FLOAT)
        keep = e.reshape(keep, [0, 1, 1, -1] if rank == 2 else [0, 1, 0, -1])
    else:
        form = f"of rank {rank}" if rank is not None else "of unknown rank"
        raise _Refused("unsupported_mask", f"a mask_index {form} is not supported (only the raw "
                                           f"(batch, total_sequence) or (batch, sequence, "
                                           f"total_sequence) mask or the (batch,) sequence lengths)")
    return e.op("Mul", [e.op("Sub", [e.const(1.0, "one"), keep]), e.const(filter_value, "filter")])


def _causal_mask(e: _Emitter, queries: str, keys: str, filter_value: float) -> str:
    """filter_value above the diagonal of the (S, T) scores (key j after query i)."""
    rows = e.reshape(_sequence_positions(e, queries, 1), [-1, 1])
    later = e.op("Cast", [e.op("Greater", [_sequence_positions(e, keys, 1), rows])], to=TensorProto.FLOAT)
    return e.op("Mul", [later, e.const(filter_value, "filter")])


def _check_one_d_mask(node, e: _Emitter, mask: str, x: str) -> None:
    if e.rank(mask) != 1:
        return
    length, batch = e.dim(mask, 0), e.dim(x, 0)
    if length is not None and batch is not None and length != batch:
        raise _Refused("unsupported_mask", f"a 1-D mask_index of {length} values for batch {batch} "
                                           f"(left-padding start/end positions) is not supported; "
                                           f"only (batch,) sequence lengths")


def _attention(node, e: _Emitter) -> None:
    _only_attrs(node, {"num_heads", "scale", "mask_filter_value", "unidirectional", "qkv_hidden_sizes",
                       "do_rotary", "past_present_share_buffer", "rotary_embedding_dim"})
    if _input(node, 4) or _output(node, 1):
        raise _Refused("unsupported_past_state", "past/present key-value state is not supported")
    if int(_attr(node, "do_rotary", 0)):
        raise _Refused("unsupported_attribute", "do_rotary=1 (rotary embeddings) is not supported")
    if int(_attr(node, "past_present_share_buffer", 0)) or _input(node, 6):
        raise _Refused("unsupported_past_state", "a shared past/present buffer is not supported")
    heads = int(_attr(node, "num_heads"))
    weights = e.constant(node.input[1])
    if weights is None or weights.ndim != 2:
        raise _Refused("unsupported_input", "weights that are not a 2-D initializer are not supported")
    sizes = list(_attr(node, "qkv_hidden_sizes", []) or [weights.shape[1] // 3] * 3)
    if len(sizes) != 3 or sum(sizes) != weights.shape[1] or any(s % heads for s in sizes):
        raise _Refused("unsupported_attribute", f"qkv_hidden_sizes {sizes} do not split the weights' "
                                                f"{weights.shape[1]} columns into multiples of {heads} heads")
    bias = e.constant(node.input[2]) if _input(node, 2) else np.zeros(weights.shape[1], np.float32)
    if bias is None:
        raise _Refused("unsupported_input", "a bias that is not an initializer is not supported")
    x = node.input[0]
    bounds = np.cumsum([0] + sizes)
    projected = []
    for part, (lo, hi) in zip("qkv", zip(bounds[:-1], bounds[1:])):
        y = e.op("MatMul", [x, e.const(weights[:, lo:hi], f"{part}_weight")])
        projected.append(e.op("Add", [y, e.const(bias[lo:hi], f"{part}_bias")]))
    filter_value = float(_attr(node, "mask_filter_value", MASK_FILTER_VALUE))
    additive = []
    if _input(node, 3):
        _check_one_d_mask(node, e, node.input[3], x)
        additive.append(_padding_mask(node, e, node.input[3], x, filter_value))
    if int(_attr(node, "unidirectional", 0)):
        additive.append(_causal_mask(e, x, x, filter_value))
    _attend(node, e, *projected, heads, sizes[0] // heads, additive, _input(node, 5), node.output[0])


def _multi_head_attention(node, e: _Emitter) -> None:
    _only_attrs(node, {"num_heads", "scale", "mask_filter_value", "unidirectional"})
    if any(_input(node, i) for i in (6, 7, 8, 9)) or any(_output(node, i) for i in (1, 2, 3)):
        raise _Refused("unsupported_past_state", "past/present key-value state (or the qk output) is "
                                                 "not supported")
    q, k, v = node.input[0], _input(node, 1), _input(node, 2)
    ranks = [e.rank(name) for name in (q, k, v)]
    if not k or not v or ranks != [3, 3, 3]:
        raise _Refused("unsupported_input", "only separate 3-D query, key and value are supported "
                                            "(not packed QKV/KV or key/value already split into heads)")
    heads = int(_attr(node, "num_heads"))
    if _input(node, 3):
        bias = e.constant(node.input[3])
        if bias is None or bias.ndim != 1:
            raise _Refused("unsupported_input", "a bias that is not a 1-D initializer is not supported")
        width = _width(e, q, k)
        if width is None:
            raise _Refused("unsupported_shape", "the query and key widths are not known")
        q = e.op("Add", [q, e.const(bias[:width], "q_bias")])
        k = e.op("Add", [k, e.const(bias[width:2 * width], "k_bias")])
        v = e.op("Add", [v, e.const(bias[2 * width:], "v_bias")])
    head_size = e.dim(node.input[0], -1)
    if head_size is None:
        raise _Refused("unsupported_shape", "the query width is not known")
    filter_value = float(_attr(node, "mask_filter_value", MASK_FILTER_VALUE))
    additive = []
    if _input(node, 4):
        _check_one_d_mask(node, e, node.input[4], node.input[0])
        additive.append(_padding_mask(node, e, node.input[4], node.input[1], filter_value))
    if int(_attr(node, "unidirectional", 0)):
        if e.dim(node.input[0], 1) != e.dim(node.input[1], 1) or e.dim(node.input[0], 1) is None:
            raise _Refused("unsupported_attribute", "unidirectional=1 with query and key lengths that "
                                                    "differ or are not known is not supported")
        additive.append(_causal_mask(e, node.input[0], node.input[1], filter_value))
    _attend(node, e, q, k, v, heads, head_size // heads, additive, _input(node, 5), node.output[0])


def _width(e: _Emitter, q: str, k: str) -> int | None:
    qw, kw = e.dim(q, -1), e.dim(k, -1)
    return qw if qw is not None and (kw is None or kw == qw) else None


REWRITES: dict[str, Callable[[onnx.NodeProto, _Emitter], None]] = {
    "Gelu": _gelu,
    "BiasGelu": _bias_gelu,
    "FastGelu": _fast_gelu,
    "QuickGelu": _quick_gelu,
    "BiasAdd": _bias_add,
    "SkipLayerNormalization": _skip_layer_norm,
    "SkipSimplifiedLayerNormalization": lambda node, e: _skip_layer_norm(node, e, simplified=True),
    "SimplifiedLayerNormalization": _simplified_layer_norm,
    "LayerNormalization": _layer_norm,
    "EmbedLayerNormalization": _embed_layer_norm,
    "FusedConv": _fused_conv,
    "FusedGemm": _fused_gemm,
    "FusedMatMul": _fused_matmul,
    "Attention": _attention,
    "MultiHeadAttention": _multi_head_attention,
}


def _rewritten(node: onnx.NodeProto, opset: int) -> bool:
    if node.domain == CONTRIB_DOMAIN:
        return node.op_type in REWRITES
    if node.domain in DEFAULT_DOMAINS and node.op_type in DEFAULT_DOMAIN_CONTRIBS:
        since = DEFAULT_DOMAIN_CONTRIBS[node.op_type]
        return since is None or opset < since
    return False


def standard_ops_from_fused(model: onnx.ModelProto, opset: int, path: str = "") -> Counter:
    """Replace each fused contrib op of the main graph by standard ONNX nodes valid at `opset`;
    returns how many of each kind. A supported op with a form the rewrite cannot express raises
    one UnsupportedModelError naming the node."""
    e = _Emitter(model, opset)
    done: Counter = Counter()
    nodes: list[onnx.NodeProto] = []
    source = list(model.graph.node)
    for index, node in enumerate(source):
        e.current = lambda: nodes + e.nodes + source[index + 1:]
        if not _rewritten(node, opset):
            nodes.append(node)
            continue
        if not node.name:
            node.name = f"{node.op_type}_{index}"
        e.start(node)
        try:
            REWRITES[node.op_type](node, e)
        except _Refused as refused:
            domain = f"{node.domain} " if node.domain else ""
            d = Diagnostic(node.name, f"{domain}{node.op_type}", refused.reason,
                           f"onnxruntime fused op: {refused.what}")
            raise UnsupportedModelError(f"{path + ': ' if path else ''}{d}", reason_code=refused.reason) from None
        nodes.extend(e.nodes)
        done[node.op_type] += 1
    if done:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        _drop_unused_contrib_opset(model)
    return done


def _drop_unused_contrib_opset(model: onnx.ModelProto) -> None:
    """No contrib node left anywhere: the com.microsoft opset import goes too."""
    def any_contrib(graph: onnx.GraphProto) -> bool:
        for node in graph.node:
            if node.domain == CONTRIB_DOMAIN:
                return True
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH and any_contrib(a.g):
                    return True
                if a.type == onnx.AttributeProto.GRAPHS and any(any_contrib(g) for g in a.graphs):
                    return True
        return False

    if not any_contrib(model.graph):
        kept = [o for o in model.opset_import if o.domain != CONTRIB_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)
