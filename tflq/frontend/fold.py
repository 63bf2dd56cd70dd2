"""Evaluate, node by node, everything that static input shapes determine, before import.

One topological sweep over the ONNX graph keeps, for every value, either its constant value or its
static shape. A node whose inputs are all known is run with onnx's reference evaluator (so Shape,
Gather, Concat, Equal, Where, Range, ConstantOfShape, Expand, ... chains fold whatever they pass
through); any other node gets its output shapes from onnx's shape inference on that one node, with
its constant inputs visible. A tensor with no elements is a constant too (its value is known).
Control flow whose condition folds is expanded in place (see control_flow.py). What stays unknown is
recorded with the node that made it unknown and why, so the importer can name it.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Union

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from tflq.errors import Diagnostic, InvalidModelError, ResourceLimitError
from tflq.frontend.skeleton import skeleton
from tflq.frontend.validate import DEFAULT_MAX_TENSOR_BYTES

log = logging.getLogger(__name__)

# The control-flow ops the sweep expands, and the tflq.frontend.control_flow function that does it.
CONTROL_FLOW = {"If": "inline_if", "Loop": "unroll_loop", "Scan": "unroll_scan"}
# Never folded even with constant inputs: they carry quantization meaning (QAT graphs), or are random.
NOT_FOLDED = {"QuantizeLinear", "DequantizeLinear", "RandomNormal", "RandomUniform",
              "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
# Running the node on zeros for its shape (the last resort) only for inputs this small.
MAX_PROBE_ELEMENTS = 1 << 20
# A Loop whose inputs are all constants is evaluated at import up to this many iterations.
MAX_FOLDED_LOOP_ITERATIONS = 10_000
# Constant inputs up to this size are shown to per-node shape inference (shapes, axes, pads, ...).
SMALL_CONSTANT = 1 << 16
# Ops whose output shape depends on the values (not only the shapes) of these inputs; None = all.
VALUE_INPUTS: dict[str, tuple[int, ...] | None] = {
    "Reshape": (1,), "Expand": (1,), "ConstantOfShape": (0,), "Range": None, "Tile": (1,),
    "Slice": (1, 2, 3, 4), "Pad": (1,), "Resize": (1, 2, 3), "Upsample": (1,), "Squeeze": (1,),
    "Unsqueeze": (1,), "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,),
    "ReduceProd": (1,), "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,),
    "ReduceLogSumExp": (1,), "ReduceSumSquare": (1,), "OneHot": (1,), "Split": (1,), "TopK": (1,),
    "NonZero": (0,), "Unique": (0,), "Compress": (1,), "NonMaxSuppression": None,
    "CenterCropPad": (1,), "Col2Im": (1, 2), "MaxUnpool": (2,), "DFT": (1,), "STFT": (2, 3),
    "MelWeightMatrix": None, "HannWindow": (0,), "HammingWindow": (0,), "BlackmanWindow": (0,),
}


def check_folded(node, inputs: list[np.ndarray], outputs: list[np.ndarray],
                 max_tensor_bytes: int) -> None:
    """A folded result must fit the limit, and NaN from finite inputs is a model error. An
    infinity is not: log(0) = -inf is IEEE's answer, and T5's relative position buckets take
    log(distance) of distance 0 into a branch a Where then drops (onnxruntime runs them)."""
    inputs_finite = all(v.dtype.kind not in "fc" or np.isfinite(v).all() for v in inputs)
    for name, value in zip(node.output, outputs):
        if value.nbytes > max_tensor_bytes:
            raise ResourceLimitError(f"node '{node.name}' ({node.op_type}): output '{name}' holds "
                                     f"{value.nbytes} bytes, above --max-tensor-bytes {max_tensor_bytes}")
        if inputs_finite and value.dtype.kind in "fc" and np.isnan(value).any():
            raise InvalidModelError(f"node '{node.name}' ({node.op_type}): computes NaN values in "
                                    f"'{name}' from finite constant inputs")


@dataclass
class FoldResult:
    """What the sweep learned that the importer must hear about."""

    folded: int = 0
    unknown: dict[str, str] = field(default_factory=dict)  # value -> why its shape is unknown
    refused: dict[str, Diagnostic] = field(default_factory=dict)  # node name -> why it cannot convert
    notes: list[str] = field(default_factory=list)


Item = Union[onnx.NodeProto, Callable[[], list]]


def _dims(vi: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    t = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    if t is None or not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if not d.HasField("dim_value") or d.dim_value < 0:
            return None
        dims.append(int(d.dim_value))
    return tuple(dims)


def _evaluate_node(node: onnx.NodeProto, values: list[np.ndarray],
                   opsets: list[onnx.OperatorSetIdProto],
                   outer: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
    """Run one node with onnx's reference evaluator (constant folding only); `outer` holds the
    enclosing-scope values a subgraph attribute reads."""
    from onnx.reference import ReferenceEvaluator

    if node.op_type == "Cast" and values and values[0].dtype.kind == "f":
        to = next((a.i for a in node.attribute if a.name == "to"), 0)
        target = helper.tensor_dtype_to_np_dtype(to) if to else None
        if target is not None and target.kind in "iu":  # out-of-range values: tflq's one rule
            from tflq.ops.cast import cast_values

            return [cast_values(values[0], target)]
    names, k = [], 0
    for n in node.input:
        names.append(f"i{k}" if n else "")
        k += 1 if n else 0
    inputs = [helper.make_tensor_value_info(f"i{k}", helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in enumerate(values)]
    renamed = helper.make_node(node.op_type, names, [f"o{k}" for k in range(len(node.output))],
                               domain=node.domain)
    renamed.attribute.extend(node.attribute)
    outputs = [helper.make_empty_tensor_value_info(f"o{k}") for k in range(len(node.output))]
    inits = [numpy_helper.from_array(v, n) for n, v in (outer or {}).items()]
    m = helper.make_model(helper.make_graph([renamed], "fold", inputs, outputs, inits),
                          opset_imports=opsets)
    feeds = {f"i{k}": v for k, v in enumerate(values)}
    return [np.asarray(v) for v in ReferenceEvaluator(m).run(None, feeds)]


def _growth(op_type: str, values: list[np.ndarray]) -> float:
    """The element count of the ops that can make a large output from small inputs (else 0)."""
    try:
        if op_type == "ConstantOfShape":
            return float(np.prod(values[0].astype(np.float64)))
        if op_type == "Expand":
            a, b = list(values[0].shape), [int(d) for d in values[1].reshape(-1)]
            rank = max(len(a), len(b))
            a, b = [1] * (rank - len(a)) + a, [1] * (rank - len(b)) + b
            return float(np.prod([max(x, y) for x, y in zip(a, b)], dtype=np.float64))
        if op_type == "Tile":
            return float(values[0].size) * float(np.prod(values[1].astype(np.float64)))
        if op_type == "Range":
            start, limit, delta = (float(v.reshape(())) for v in values[:3])
            return max(0.0, np.ceil((limit - start) / delta)) if delta else np.inf
    except (ValueError, TypeError, IndexError):
        return 0.0
    return 0.0


def constant_node_value(node: onnx.NodeProto) -> np.ndarray:
    attr = node.attribute[0]
    value = helper.get_attribute_value(attr)
    if attr.name == "value":
        return numpy_helper.to_array(value)
    if attr.name in ("value_float", "value_floats"):
        return np.array(value, dtype=np.float32)
    if attr.name in ("value_int", "value_ints"):
        return np.array(value, dtype=np.int64)
    raise ValueError(f"Constant attribute {attr.name}")


class Sweep:
    """The state of one pass over the graph: known values, static shapes, and the nodes kept."""

    def __init__(self, model: onnx.ModelProto, max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> None:
        self.model = model
        self.max_tensor_bytes = max_tensor_bytes
        self.opsets = list(model.opset_import)
        self.opset = next((int(o.version) for o in self.opsets if o.domain in ("", "ai.onnx")), 0)
        g = model.graph
        self.originals = {init.name: init for init in g.initializer}
        self.constants: dict[str, np.ndarray] = {n: numpy_helper.to_array(i)
                                                 for n, i in self.originals.items()}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, int] = {}
        self.result = FoldResult()
        self.kept: list[onnx.NodeProto] = []
        self.unrolled_nodes = 0  # nodes copied out of Loop bodies, bounded by control_flow
        self.sequences: dict[str, list[str]] = {}  # sequence values: their elements (sequences.py)
        self.names: set[str] = set(self.constants)
        for vi in list(g.input) + list(g.output):
            self.names.add(vi.name)
        for index, node in enumerate(g.node):
            if not node.name:
                node.name = f"{node.op_type}_{index}"
            self.names.update(node.output)
            self.names.add(node.name)
        for vi in g.input:
            self._record_vi(vi)
        del g.value_info[:]  # an exporter's symbolic shapes are stale once inputs are fixed
        try:
            inferred = shape_inference.infer_shapes(skeleton(model), strict_mode=False, data_prop=True)
            for vi in inferred.graph.value_info:
                self._record_vi(vi)
        except Exception as exc:  # per-node inference below still runs
            log.debug("whole-graph shape inference failed: %s", exc)

    def _record_vi(self, vi: onnx.ValueInfoProto) -> None:
        if not vi.type.HasField("tensor_type"):
            return
        if vi.type.tensor_type.elem_type:
            self.dtypes[vi.name] = vi.type.tensor_type.elem_type
        dims = _dims(vi)
        if dims is not None:
            self.shapes[vi.name] = dims

    # ---- names ---------------------------------------------------------------------------
    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def shape_of(self, name: str) -> tuple[int, ...] | None:
        if name in self.constants:
            return tuple(self.constants[name].shape)
        return self.shapes.get(name)

    def dtype_of(self, name: str) -> int | None:
        if name in self.constants:
            return helper.np_dtype_to_tensor_dtype(self.constants[name].dtype)
        return self.dtypes.get(name)

    def set_constant(self, name: str, value: np.ndarray) -> None:
        self.constants[name] = np.asarray(value)

    def refuse(self, node: onnx.NodeProto, reason: str, message: str, hint: str = "") -> None:
        self.result.refused[node.name] = Diagnostic(node.name, node.op_type, reason, message, hint)
        self.mark_unknown(node, f"node '{node.name}' ({node.op_type}) cannot be converted: {message}")

    def mark_unknown(self, node: onnx.NodeProto, why: str) -> None:
        for out in node.output:
            if out and out not in self.shapes and out not in self.constants:
                self.result.unknown.setdefault(out, why)

    # ---- the sweep -----------------------------------------------------------------------
    def run(self) -> FoldResult:
        from tflq.frontend import col2im, control_flow, sequences, spectral

        queue: deque[Item] = deque(self.model.graph.node)
        while queue:
            item = queue.popleft()
            if callable(item):
                queue.extendleft(reversed(item()))
                continue
            node = item
            if node.domain in ("", "ai.onnx") and node.op_type == "Loop":
                values = self._fold_loop(node)
                if values is not None:
                    self._set_folded(node, values)
                    continue
            if node.domain in ("", "ai.onnx") and node.op_type in CONTROL_FLOW:
                expand = getattr(control_flow, CONTROL_FLOW[node.op_type])
                queue.extendleft(reversed(expand(self, node)))
                continue
            if node.domain in ("", "ai.onnx") and node.op_type == "STFT":
                queue.extendleft(reversed(spectral.lower_stft(self, node)))
                continue
            if node.domain in ("", "ai.onnx") and node.op_type == "Col2Im":
                queue.extendleft(reversed(col2im.lower_col2im(self, node)))
                continue
            if sequences.handles(self, node):
                queue.extendleft(reversed(sequences.expand(self, node)))
                continue
            values = self._fold(node)
            if values is not None:
                self._set_folded(node, values)
                continue
            self.kept.append(node)
            self._infer(node)
            if self._all_empty(node):
                self.kept.pop()
                self._set_folded(node, [np.zeros(self.shapes[o], helper.tensor_dtype_to_np_dtype(self.dtypes[o]))
                                        if o else None for o in node.output])  # all empty
        self._write_back()
        for name in [n for n in self.result.unknown if n in self.constants or n in self.shapes]:
            del self.result.unknown[name]
        return self.result

    def _set_folded(self, node: onnx.NodeProto, values: list[np.ndarray | None]) -> None:
        """`node` is folded: its (named) outputs become these constants."""
        self.result.folded += 1
        for out, value in zip(node.output, values):
            if out:
                self.set_constant(out, value)

    def _all_empty(self, node: onnx.NodeProto) -> bool:
        outs = [o for o in node.output if o]
        return (bool(outs) and node.op_type not in NOT_FOLDED
                and node.name not in self.result.refused
                and all(o in self.shapes and o in self.dtypes and 0 in self.shapes[o] for o in outs))

    def _fold(self, node: onnx.NodeProto) -> list[np.ndarray] | None:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            return [constant_node_value(node)]
        if node.domain not in ("", "ai.onnx") or node.op_type in NOT_FOLDED:
            return None
        if node.op_type in ("Shape", "Size") and self.shape_of(node.input[0]) is not None:
            shape = np.array(self.shape_of(node.input[0]), dtype=np.int64)
            if node.op_type == "Size":
                return [np.array(np.prod(shape), dtype=np.int64)]
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            return [shape[attrs.get("start", 0):attrs.get("end", None)]]
        inputs = [n for n in node.input if n]
        if not inputs or not all(n in self.constants for n in inputs):
            return None
        return self._evaluate(node, [self.constants[n] for n in inputs])

    def _evaluate(self, node: onnx.NodeProto, values: list[np.ndarray],
                  outer: dict[str, np.ndarray] | None = None) -> list[np.ndarray] | None:
        """Fold one node within the resource limits; NaN or Inf from finite inputs is an error."""
        limit = self.max_tensor_bytes
        growth = _growth(node.op_type, values)
        known = [math.prod(self.shapes[o]) for o in node.output if o in self.shapes]
        if 8 * max([growth, *known]) > limit:  # the widest element: a safe upper bound
            raise ResourceLimitError(f"node '{node.name}' ({node.op_type}): its output would exceed "
                                     f"--max-tensor-bytes {limit}")
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outputs = _evaluate_node(node, values, self.opsets, outer)
        except MemoryError:
            raise ResourceLimitError(f"node '{node.name}' ({node.op_type}): folding it needs more "
                                     f"memory than is available") from None
        except Exception as exc:  # leave it to the importer to report
            log.debug("could not fold %s (%s): %s", node.name, node.op_type, exc)
            return None
        check_folded(node, [*values, *(outer or {}).values()], outputs, limit)
        return outputs

    def _fold_loop(self, node: onnx.NodeProto) -> list[np.ndarray] | None:
        """A Loop reading only constants is evaluated whole (up to MAX_FOLDED_LOOP_ITERATIONS)."""
        inputs = [n for n in node.input if n]
        body = next((a.g for a in node.attribute if a.name == "body"), None)
        free = sorted(set(_free_names(body))) if body is not None else []
        if not all(n in self.constants for n in inputs + free):
            return None
        trips = self.constants.get(node.input[0]) if node.input and node.input[0] else None
        if trips is not None and trips.size == 1 and int(trips.reshape(())) > MAX_FOLDED_LOOP_ITERATIONS:
            raise ResourceLimitError(
                f"node '{node.name}' (Loop): constant trip count {int(trips.reshape(()))} exceeds the "
                f"{MAX_FOLDED_LOOP_ITERATIONS} iterations tflq evaluates at import")
        return self._evaluate(node, [self.constants[n] for n in inputs],
                              {n: self.constants[n] for n in free})

    def _infer(self, node: onnx.NodeProto) -> None:
        outs = [o for o in node.output if o]
        if all(o in self.shapes and o in self.dtypes for o in outs):
            return
        for n in node.input:
            if n and self.shape_of(n) is None:
                why = self.result.unknown.get(
                    n, f"the shape of '{n}' is unknown (it has no producer tflq could follow)")
                for out in outs:
                    self.result.unknown.setdefault(out, why)
                return
        for vi in self._infer_one(node):
            if vi.name in outs:
                self._record_vi(vi)
        missing = [o for o in outs if o not in self.shapes]
        if not missing:
            return
        if not self._value_dependent(node):
            self._shape_by_running(node)
            missing = [o for o in outs if o not in self.shapes]
            if not missing:
                return
        for out in missing:
            self.result.unknown.setdefault(out, self._why_unknown(node))

    def _value_dependent(self, node: onnx.NodeProto) -> list[str]:
        """The non-constant inputs whose values decide the node's output shape."""
        if node.domain not in ("", "ai.onnx"):
            return [n for n in node.input if n and n not in self.constants]
        which = VALUE_INPUTS.get(node.op_type, ())
        indices = range(len(node.input)) if which is None else which
        return [node.input[i] for i in indices
                if i < len(node.input) and node.input[i] and node.input[i] not in self.constants]

    def _why_unknown(self, node: onnx.NodeProto) -> str:
        dependent = self._value_dependent(node)
        where = f"node '{node.name}' ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            return f"{where} is in domain '{node.domain}', whose output shapes tflq cannot infer"
        if dependent:
            names = ", ".join(f"'{n}'" for n in dependent)
            return (f"{where} has an output shape that depends on the run-time values of {names} "
                    f"(computed from the model's input data, not from its shapes)")
        return f"{where}: ONNX shape inference gives no static output shape"

    def _infer_one(self, node: onnx.NodeProto) -> list[onnx.ValueInfoProto]:
        """onnx shape inference on a one-node model whose small constant inputs are visible."""
        inputs, inits, seen = [], [], set()
        for n in node.input:
            if not n or n in seen:
                continue
            seen.add(n)
            dtype = self.dtype_of(n) or onnx.TensorProto.UNDEFINED
            inputs.append(helper.make_tensor_value_info(n, dtype, self.shape_of(n)))
            value = self.constants.get(n)
            if value is not None and value.size <= SMALL_CONSTANT:
                inits.append(numpy_helper.from_array(value, n))
        outputs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
        g = helper.make_graph([node], "infer", inputs, outputs, initializer=inits)
        m = helper.make_model(g, opset_imports=self.opsets, ir_version=self.model.ir_version)
        try:
            inferred = shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
        except Exception as exc:
            log.debug("shape inference failed on %s (%s): %s", node.name, node.op_type, exc)
            return []
        return list(inferred.graph.output) + list(inferred.graph.value_info)

    def _shape_by_running(self, node: onnx.NodeProto) -> None:
        """Last resort for an op onnx's inference does not cover: its output shape depends only on
        its inputs' shapes and constants, so running it on zeros gives that shape."""
        values = []
        for n in [n for n in node.input if n]:
            if n in self.constants:
                values.append(self.constants[n])
                continue
            dtype = self.dtype_of(n)
            if not dtype or int(np.prod(self.shape_of(n))) > MAX_PROBE_ELEMENTS:
                return
            values.append(np.zeros(self.shape_of(n), helper.tensor_dtype_to_np_dtype(dtype)))
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results = _evaluate_node(node, values, self.opsets)
        except Exception as exc:
            log.debug("could not run %s (%s) for its shape: %s", node.name, node.op_type, exc)
            return
        for out, value in zip(node.output, results):
            if out:
                self.shapes[out] = tuple(value.shape)
                self.dtypes[out] = helper.np_dtype_to_tensor_dtype(value.dtype)

    # ---- result --------------------------------------------------------------------------
    def _write_back(self) -> None:
        g = self.model.graph
        graph_inputs = {vi.name for vi in g.input}
        needed: list[str] = []
        for node in self.kept:
            needed.extend(n for n in node.input if n)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    needed.extend(_free_names(attr.g))
        needed.extend(vi.name for vi in g.output)
        needed.extend(n for n in graph_inputs if n in self.originals)
        kept = {name for name in needed if name in self.constants}
        # The model's own initializers that stay are left where they are, the others deleted
        # (re-adding them would copy each one's data: protobuf's extend copies messages), and
        # the folded values read by kept nodes follow, in order of first use.
        for index in reversed(range(len(g.initializer))):
            init = g.initializer[index]
            if init.name not in kept or self.originals.get(init.name) is not init:
                del g.initializer[index]
        present = {init.name for init in g.initializer}
        for name in dict.fromkeys(needed):
            if name in kept and name not in present:
                g.initializer.append(numpy_helper.from_array(self.constants[name], name))
        del g.node[:]
        g.node.extend(self.kept)
        produced = [o for node in self.kept for o in node.output if o]
        g.value_info.extend(helper.make_tensor_value_info(n, self.dtypes[n], self.shapes[n])
                            for n in produced if n in self.shapes and n in self.dtypes
                            and n not in self.constants)
        for vi in g.output:
            shape = self.shape_of(vi.name)
            if shape is None:
                continue
            dims = vi.type.tensor_type.shape
            dims.Clear()
            for d in shape:
                dims.dim.add().dim_value = d
            if self.dtype_of(vi.name):
                vi.type.tensor_type.elem_type = self.dtype_of(vi.name)


def _free_names(graph: onnx.GraphProto) -> list[str]:
    """Names a subgraph reads from its enclosing scopes."""
    defined = {vi.name for vi in graph.input} | {i.name for i in graph.initializer}
    free = []
    for node in graph.node:
        free.extend(n for n in node.input if n and n not in defined)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                free.extend(n for n in _free_names(attr.g) if n not in defined)
        defined.update(node.output)
    return free


def fold_model(model: onnx.ModelProto, max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> FoldResult:
    """Fold the model in place: constants become initializers, every known shape a value_info."""
    return Sweep(model, max_tensor_bytes).run()
