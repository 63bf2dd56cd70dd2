"""Validation right after loading: graph structure, tensor data, the ONNX checker, strict shape
inference, and the per-op checks each OpSpec declares (`onnx_checks`). Every problem is an
InvalidModelError naming the node, tensor or file; nothing invalid reaches folding or import."""
from __future__ import annotations

import math
import re
from typing import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tflq import ops as registry
from tflq.errors import Diagnostic, InvalidModelError, ResourceLimitError

DEFAULT_MAX_TENSOR_BYTES = 2 * 1024 ** 3
INT32_MAX = 2 ** 31 - 1
# The protobuf limit: a larger model is checked from its file instead of from memory.
_PROTOBUF_LIMIT = 2 * 1024 ** 3 - 1

# Which repeated field holds a tensor's values when raw_data is not used, and values per element.
_FIELD_OF = {
    TensorProto.FLOAT: ("float_data", 1), TensorProto.COMPLEX64: ("float_data", 2),
    TensorProto.DOUBLE: ("double_data", 1), TensorProto.COMPLEX128: ("double_data", 2),
    TensorProto.INT64: ("int64_data", 1),
    TensorProto.UINT32: ("uint64_data", 1), TensorProto.UINT64: ("uint64_data", 1),
}
_PACKED_4BIT = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n)}


def element_bytes(data_type: int) -> float:
    """Bytes per element of an ONNX tensor type (0.5 for the packed 4-bit types)."""
    if data_type in _PACKED_4BIT:
        return 0.5
    return np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).itemsize


def tensor_problem(t: TensorProto, max_bytes: int) -> str | None:
    """What is wrong with a tensor's declaration and data, or None."""
    if t.data_type == TensorProto.STRING:
        return "is a string tensor (tflq converts numeric tensors only)"
    if t.data_type == TensorProto.UNDEFINED or t.data_type not in TensorProto.DataType.values():
        return f"has an unknown data type {t.data_type}"
    if t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL and t.external_data:
        return "has external data that was not loaded"
    if any(d < 0 for d in t.dims):
        return f"has a negative dimension {list(t.dims)}"
    count = math.prod(int(d) for d in t.dims)
    try:
        size = element_bytes(t.data_type)
    except (KeyError, TypeError, ValueError):
        return f"has an unsupported data type {TensorProto.DataType.Name(t.data_type)}"
    nbytes = math.ceil(count * size)
    if nbytes > max_bytes:
        return f"declares {nbytes} bytes (shape {list(t.dims)}), above the limit of {max_bytes}"
    if t.HasField("raw_data"):
        if len(t.raw_data) != nbytes:
            return (f"holds {len(t.raw_data)} bytes of raw_data, its shape {list(t.dims)} and type "
                    f"{TensorProto.DataType.Name(t.data_type).lower()} need {nbytes}")
        return None
    field, per = _FIELD_OF.get(t.data_type, ("int32_data", 1))
    if t.data_type in _PACKED_4BIT:
        expected = math.ceil(count / 2)
    else:
        expected = count * per
    held = len(getattr(t, field))
    others = [f for f in ("float_data", "double_data", "int64_data", "uint64_data", "int32_data",
                          "string_data") if f != field and len(getattr(t, f))]
    if others:
        return f"stores its values in {others[0]}, which its type does not use"
    if held != expected:
        return f"holds {held} values, its shape {list(t.dims)} needs {expected}"
    return None


def _graph_tensors(graph: onnx.GraphProto) -> Iterable[tuple[TensorProto, str]]:
    for init in graph.initializer:
        yield init, f"initializer '{init.name}'"
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                yield a.t, f"node '{node.name}' ({node.op_type}) attribute {a.name}"


def check_structure(model: onnx.ModelProto, path: str, max_tensor_bytes: int) -> None:
    """Names, producers, order, attributes and tensor data of the main graph."""
    g = model.graph
    problems: list[Diagnostic] = []
    for index, node in enumerate(g.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"
    if not g.output:
        raise InvalidModelError(f"{path}: the graph has no outputs")
    for tensor, where in _graph_tensors(g):
        problem = tensor_problem(tensor, max_tensor_bytes)
        if problem is not None:
            error = ResourceLimitError if "above the limit" in problem else InvalidModelError
            raise error(f"{path}: {where} {problem}")
    defined = {vi.name for vi in g.input} | {init.name for init in g.initializer}
    produced_by: dict[str, str] = {}
    later = {out: node for node in g.node for out in node.output if out}
    for node in g.node:
        where = (node.name, node.op_type)
        names = [a.name for a in node.attribute]
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(Diagnostic(*where, "duplicate_attribute", f"attribute '{name}' appears twice"))
        for name in node.input:
            if not name or name in defined:
                continue
            if name in node.output:
                problems.append(Diagnostic(*where, "graph_cycle", f"reads its own output '{name}'"))
            elif name in later:
                problems.append(Diagnostic(*where, "graph_cycle",
                                           f"reads '{name}' before node '{later[name].name}' computes it "
                                           f"(a cycle, or nodes out of order)"))
            else:
                problems.append(Diagnostic(*where, "dangling_input",
                                           f"reads '{name}', which nothing defines"))
        for name in node.output:
            if not name:
                continue
            if name in produced_by:
                problems.append(Diagnostic(*where, "duplicate_producer",
                                           f"output '{name}' is also computed by node '{produced_by[name]}'"))
            elif name in defined:
                problems.append(Diagnostic(*where, "duplicate_producer",
                                           f"output '{name}' is also a graph input or initializer"))
            produced_by[name] = node.name
            defined.add(name)
        if len(problems) >= 20:
            break
    for vi in g.output:
        if vi.name not in defined:
            problems.append(Diagnostic(vi.name, "", "unproduced_output",
                                       "is a graph output that no node computes"))
    _raise(path, problems)


def check_value_shapes(model: onnx.ModelProto, path: str, max_tensor_bytes: int) -> None:
    """Every value whose shape is known (inputs, inferred intermediates, outputs) fits TFLite's int32
    dimensions and the byte limit: checked before any kernel allocates it. Python ints: no overflow."""
    g = model.graph
    _check_shapes(list(g.input) + list(g.value_info) + list(g.output), path, max_tensor_bytes)


def _check_shapes(values, path: str, max_tensor_bytes: int) -> None:
    for vi in values:
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = [int(d.dim_value) for d in vi.type.tensor_type.shape.dim if d.HasField("dim_value")]
        if any(d < 0 or d > INT32_MAX for d in dims):
            raise ResourceLimitError(f"{path}: tensor '{vi.name}' has shape {dims}, a dimension outside "
                                     f"TFLite's int32 range")
        try:
            size = element_bytes(vi.type.tensor_type.elem_type)
        except (KeyError, TypeError, ValueError):
            size = 8
        nbytes = math.ceil(math.prod(dims) * size)
        if nbytes > max_tensor_bytes:
            raise ResourceLimitError(f"{path}: tensor '{vi.name}' of shape {dims} needs {nbytes} bytes, "
                                     f"above --max-tensor-bytes {max_tensor_bytes}")


def check_input_sizes(model: onnx.ModelProto, path: str, max_tensor_bytes: int) -> None:
    """The graph inputs, once their shapes are fixed, fit the limits: before shape inference,
    which would otherwise propagate values computed from their dimensions."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in initializers]
    _check_shapes(inputs, path, max_tensor_bytes)


def check_generators(model: onnx.ModelProto, path: str, max_tensor_bytes: int) -> None:
    """Range, Tile, Expand and ConstantOfShape of constant inputs are refused before shape
    inference when their output would pass the byte limit: ONNX's data propagation computes such
    a node's values to infer what follows it (Range(0, 10^12), or Tile([1.0], [2^40]), then a
    Cast: allocated without bound, until the OOM killer)."""
    from tflq.frontend.fold import _growth

    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and len(node.attribute) == 1 \
                and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    for node in model.graph.node:
        if node.op_type not in GENERATORS or not node.input or any(n not in constants for n in node.input if n):
            continue
        tensors = [constants[n] for n in node.input if n]
        if any(math.prod(t.dims) > GENERATOR_INPUT_ELEMENTS for t in tensors):
            continue  # the skeleton hides large constants from shape inference
        try:
            values = [numpy_helper.to_array(t) for t in tensors]
            count = _growth(node.op_type, values)
            size = element_bytes(tensors[0].data_type) if node.op_type != "ConstantOfShape" else 8
        except (ValueError, TypeError, KeyError, OverflowError):
            continue
        if math.isfinite(count) and count * size > max_tensor_bytes:
            raise ResourceLimitError(f"{path}: node '{node.name}' ({node.op_type}): an output of {int(count)} "
                                     f"values needs {int(count * size)} bytes, above --max-tensor-bytes "
                                     f"{max_tensor_bytes}")


# Ops whose output, from small constant inputs, can be as large as their values say.
GENERATORS = ("Range", "Tile", "Expand", "ConstantOfShape")
GENERATOR_INPUT_ELEMENTS = 1024  # (skeleton.SKELETON_ELEMENTS)


def run_onnx_checker(model: onnx.ModelProto, path: str) -> None:
    """onnx.checker (full_check, i.e. with strict shape inference) on the shape-inferred model.

    Graph outputs whose shape could not be inferred are left out of the checked copy: the checker
    insists on output shapes, onnxruntime does not, and tflq reports them later if they matter.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    keep = [vi for vi in copy.graph.output if vi.type.tensor_type.HasField("shape")]
    del copy.graph.output[:]
    copy.graph.output.extend(keep)
    try:
        if copy.ByteSize() > _PROTOBUF_LIMIT:
            onnx.checker.check_model(path, full_check=True)
        else:
            onnx.checker.check_model(copy, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as exc:
        raise InvalidModelError(f"{path}: invalid ONNX model: {first_line(exc)}") from None


_ONNX_NODE = re.compile(r"\(op_type:([^,]*), node name: ([^)]*)\):?")


def first_line(exc: BaseException) -> str:
    """The informative part of an onnx error message, on one line, naming nodes as tflq does."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:3]) if lines else type(exc).__name__
    text = _ONNX_NODE.sub(lambda m: f"node '{m.group(2)}' ({m.group(1)}):", text)
    return text if len(text) <= 400 else text[:400] + "..."


class ModelFacts:
    """Shapes, element types and constant values of a model's values, for the per-op checks."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self._init = {init.name: init for init in g.initializer}
        self._constant_nodes = {node.output[0]: node for node in g.node
                                if node.op_type == "Constant" and node.output and node.attribute}
        self._info = {vi.name: vi for vi in list(g.value_info) + list(g.input) + list(g.output)}
        self._arrays: dict[str, np.ndarray | None] = {}

    def shape(self, name: str) -> tuple[int | None, ...] | None:
        if name in self._init:
            return tuple(int(d) for d in self._init[name].dims)
        vi = self._info.get(name)
        if vi is None or not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            return None
        return tuple(int(d.dim_value) if d.HasField("dim_value") else None
                     for d in vi.type.tensor_type.shape.dim)

    def elem_type(self, name: str) -> int | None:
        if name in self._init:
            return self._init[name].data_type
        vi = self._info.get(name)
        if vi is None or not vi.type.HasField("tensor_type"):
            return None
        return vi.type.tensor_type.elem_type or None

    def constant(self, name: str) -> np.ndarray | None:
        if name not in self._arrays:
            tensor = self._init.get(name)
            node = self._constant_nodes.get(name)
            if tensor is None and node is not None and node.attribute[0].name == "value":
                tensor = node.attribute[0].t
            self._arrays[name] = numpy_helper.to_array(tensor) if tensor is not None else None
        return self._arrays[name]


def check_nodes(model: onnx.ModelProto, path: str) -> None:
    """Every node against the checks its OpSpec declares; one error listing every problem."""
    facts = ModelFacts(model)
    problems: list[Diagnostic] = []
    for node in model.graph.node:
        spec = registry.importer(node.op_type) if node.domain in ("", "ai.onnx") else None
        for check in getattr(spec, "onnx_checks", ()) if spec is not None else ():
            if check.applies(node):
                problems.extend(Diagnostic(node.name, node.op_type, "invalid_node", message)
                                for message in check.problems(node, facts))
    _raise(path, problems)


def _raise(path: str, problems: list[Diagnostic]) -> None:
    if not problems:
        return
    if len(problems) == 1:
        raise InvalidModelError(f"{path}: invalid model: {problems[0]}", problems)
    nodes = list(dict.fromkeys(f"'{d.node}'" for d in problems))
    names = ", ".join(nodes[:5]) + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")
    raise InvalidModelError(f"{path}: invalid model: {len(problems)} problems ({names}); "
                            f"first: {problems[0]}", problems)
