"""Declarative validity checks on ONNX nodes, stated on each OpSpec as `onnx_checks = (...)`.

Each check is a small frozen dataclass whose `problems(node, facts)` yields what is wrong with a
node (an empty iterator when it is valid or when the facts needed are unknown). The loader runs
them on every node right after loading (tflq.frontend.validate), so a model that onnxruntime
refuses as invalid (INVALID_GRAPH / INVALID_ARGUMENT) is refused by tflq with the node named,
before any folding or conversion work. `only` restricts a check to some of the spec's ONNX types.

These are facts of the ONNX operator specifications (arity, attribute domains, shape agreement),
not tflq limitations: what tflq cannot convert is reported by the importers as Unsupported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Protocol

import numpy as np
from onnx import TensorProto


class NodeFacts(Protocol):
    """What a check may ask about a node's operands (None when unknown)."""

    def shape(self, name: str) -> tuple[int | None, ...] | None: ...
    def constant(self, name: str) -> np.ndarray | None: ...
    def elem_type(self, name: str) -> int | None: ...


def attribute(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _input(node, index: int) -> str:
    return node.input[index] if index < len(node.input) else ""


@dataclass(frozen=True)
class NodeCheck:
    """Base: `only` (ONNX op types) limits where the check applies; empty means all."""

    only: tuple[str, ...] = ()

    def applies(self, node) -> bool:
        return not self.only or node.op_type in self.only

    def problems(self, node, facts: NodeFacts) -> Iterator[str]:
        return iter(())


@dataclass(frozen=True)
class Arity(NodeCheck):
    """Between `inputs[0]` and `inputs[1]` inputs (the first `inputs[0]` present), and at most
    `max_outputs` outputs."""

    inputs: tuple[int, int] = (1, 1)
    max_outputs: int = 1

    def problems(self, node, facts):
        low, high = self.inputs
        if len(node.input) > high:
            yield f"takes at most {high} inputs, has {len(node.input)}"
        missing = [k for k in range(low) if not _input(node, k)]
        if missing:
            yield f"needs at least {low} inputs; input {missing[0]} is missing"
        if len(node.output) > self.max_outputs:
            yield f"has at most {self.max_outputs} outputs, has {len(node.output)}"
        if not node.output or not node.output[0]:
            yield "has no output"


@dataclass(frozen=True)
class Rank(NodeCheck):
    """Input `index` has one of `ranks` (or, with `min_rank`, at least that rank)."""

    index: int = 0
    ranks: tuple[int, ...] = ()
    min_rank: int | None = None

    def problems(self, node, facts):
        shape = facts.shape(_input(node, self.index)) if _input(node, self.index) else None
        if shape is None:
            return
        if self.ranks and len(shape) not in self.ranks:
            yield f"input {self.index} has rank {len(shape)}, must be {' or '.join(map(str, self.ranks))}"
        if self.min_rank is not None and len(shape) < self.min_rank:
            yield f"input {self.index} has rank {len(shape)}, needs at least {self.min_rank}"


@dataclass(frozen=True)
class IntAttr(NodeCheck):
    """Integer attribute `name` (or each of a list) at least `min`, at most `max`; with
    `spatial_length`, a list has one entry per spatial axis of input 0 (`per_axis` entries each)."""

    name: str = ""
    min: int | None = None
    max: int | None = None
    spatial_length: bool = False
    per_axis: int = 1

    def problems(self, node, facts):
        value = attribute(node, self.name)
        if value is None:
            return
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, int) for v in values):
            yield f"attribute {self.name} must be integer"
            return
        if self.min is not None and any(v < self.min for v in values):
            yield f"attribute {self.name}={_show(value)} must be >= {self.min}"
        if self.max is not None and any(v > self.max for v in values):
            yield f"attribute {self.name}={_show(value)} must be <= {self.max}"
        if self.spatial_length:
            shape = facts.shape(_input(node, 0))
            if shape is not None and len(shape) >= 2 and len(values) != self.per_axis * (len(shape) - 2):
                yield (f"attribute {self.name}={_show(value)} needs {self.per_axis * (len(shape) - 2)} "
                       f"values for a rank-{len(shape)} input")


@dataclass(frozen=True)
class FloatAttr(NodeCheck):
    """Float attribute `name` is finite (and at least `min` when given)."""

    name: str = ""
    min: float | None = None

    def problems(self, node, facts):
        value = attribute(node, self.name)
        if value is None:
            return
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            yield f"attribute {self.name}={_show(value)} must be a finite number"
        elif self.min is not None and any(v < self.min for v in values):
            yield f"attribute {self.name}={_show(value)} must be >= {self.min}"


@dataclass(frozen=True)
class Choice(NodeCheck):
    """String attribute `name` is one of `values`."""

    name: str = ""
    values: tuple[str, ...] = ()

    def problems(self, node, facts):
        value = attribute(node, self.name)
        if value is not None and value not in self.values:
            yield f"attribute {self.name}='{value}' is not one of {', '.join(self.values)}"


@dataclass(frozen=True)
class InputTypes(NodeCheck):
    """Input `index` has one of the ONNX element types `types`."""

    index: int = 0
    types: tuple[int, ...] = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)

    def problems(self, node, facts):
        name = _input(node, self.index)
        elem = facts.elem_type(name) if name else None
        if elem is not None and elem and elem not in self.types:
            names = ", ".join(TensorProto.DataType.Name(t).lower() for t in self.types)
            yield (f"input {self.index} is {TensorProto.DataType.Name(elem).lower()}; the op takes "
                   f"{names}")


@dataclass(frozen=True)
class ConstantValues(NodeCheck):
    """A constant input `index` is non-empty, finite and (with `min`) at least `min`."""

    index: int = 1
    what: str = "weights"
    non_empty: bool = True
    min: float | None = None
    positive: bool = False

    def problems(self, node, facts):
        name = _input(node, self.index)
        value = facts.constant(name) if name else None
        if value is None:
            return
        if self.non_empty and value.size == 0:
            yield f"{self.what} '{name}' are empty (shape {list(value.shape)})"
            return
        if value.dtype.kind == "f":
            if not np.isfinite(value).all():
                yield f"{self.what} '{name}' hold NaN or infinite values"
                return
        if value.size and value.dtype.kind in "fiu":
            low = float(value.min())
            if self.min is not None and low < self.min:
                yield f"{self.what} '{name}' hold {low}, below {self.min}"
            elif self.positive and low <= 0:
                yield f"{self.what} '{name}' hold {low}; they must be positive"


@dataclass(frozen=True)
class Axis(NodeCheck):
    """Integer attribute `name` is an axis of input `index` (`extra` more axes allowed, as for
    Unsqueeze-like ops; `-rank - extra <= axis < rank + extra`)."""

    name: str = "axis"
    index: int = 0
    extra: int = 0

    def problems(self, node, facts):
        value = attribute(node, self.name)
        shape = facts.shape(_input(node, self.index)) if _input(node, self.index) else None
        if value is None or shape is None:
            return
        rank = len(shape) + self.extra
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        bad = [v for v in values if not isinstance(v, int) or not -rank <= v < max(rank, 1)]
        if bad:
            yield f"attribute {self.name}={_show(value)} is out of range for rank {len(shape)}"


@dataclass(frozen=True)
class ReshapeCount(NodeCheck):
    """Reshape keeps the element count (0 copies a dimension unless allowzero, -1 once)."""

    def problems(self, node, facts):
        x = facts.shape(_input(node, 0))
        target = facts.constant(_input(node, 1)) if _input(node, 1) else None
        if target is None:
            return
        target = [int(v) for v in np.asarray(target).reshape(-1)]
        if target.count(-1) > 1:
            yield f"shape {target} has more than one -1"
            return
        if any(v < -1 for v in target):
            yield f"shape {target} has a negative dimension"
            return
        if x is None or None in x:
            return
        allow_zero = attribute(node, "allowzero", 0)
        dims = []
        for k, v in enumerate(target):
            if v == 0 and not allow_zero:
                if k >= len(x):
                    yield f"shape {target} copies dimension {k}, the input has rank {len(x)}"
                    return
                v = x[k]
            dims.append(v)
        count, known = math.prod(x), math.prod(d for d in dims if d != -1)
        if -1 in dims:
            if known == 0 or count % known:
                yield f"cannot reshape {list(x)} ({count} elements) to {target}"
        elif known != count:
            yield f"cannot reshape {list(x)} ({count} elements) to {target} ({known} elements)"


@dataclass(frozen=True)
class ContractedDims(NodeCheck):
    """Gemm / MatMul: the contracted dimensions of A and B agree (Gemm's transA/transB applied;
    MatMul's 1-D operands promoted as numpy does)."""

    def problems(self, node, facts):
        a = facts.shape(_input(node, 0))
        b = facts.shape(_input(node, 1))
        if a is None or b is None or not a or not b:
            return
        if node.op_type == "Gemm":
            if len(a) != 2 or len(b) != 2:
                return  # Rank declarations name these
            k_a = a[0] if attribute(node, "transA", 0) else a[1]
            k_b = b[1] if attribute(node, "transB", 0) else b[0]
        else:
            k_a, k_b = a[-1], (b[0] if len(b) == 1 else b[-2])
        if k_a is not None and k_b is not None and k_a != k_b:
            yield f"A {list(a)} and B {list(b)} disagree on the contracted dimension ({k_a} vs {k_b})"


@dataclass(frozen=True)
class QuantAxis(NodeCheck):
    """Quantize/DequantizeLinear with per-channel (1-D, length > 1) parameters: `axis` is an axis
    of the input (the lengths themselves are the QDQ rules' qdq_channels check)."""

    def problems(self, node, facts):
        x = facts.shape(_input(node, 0))
        scale = facts.shape(_input(node, 1)) if _input(node, 1) else None
        if x is None or scale is None or len(scale) != 1 or scale[0] in (1, None):
            return
        axis = attribute(node, "axis", 1)
        if not isinstance(axis, int) or not -len(x) <= axis < len(x):
            yield f"axis {axis} is out of range for rank {len(x)}"


@dataclass(frozen=True)
class Windowed(NodeCheck):
    """Conv / ConvTranspose / pooling geometry: input 0 is N x C x spatial..., the window (the
    weight's trailing dims, else `kernel_shape`) agrees with `kernel_shape`, fits the padded input
    (dilated), strides/dilations are positive, pads non-negative, one entry per spatial axis.
    `weight`: the weight input (None for pooling); `transposed`: ConvTranspose's weight is
    C x M/group x k..., and output_padding < stride or dilation."""

    weight: int | None = None
    bias: int | None = None
    transposed: bool = False

    def problems(self, node, facts):
        x = facts.shape(_input(node, 0))
        w = facts.shape(_input(node, self.weight)) if self.weight is not None and _input(node, self.weight) \
            else None
        if x is None:
            return
        spatial = len(x) - 2
        if spatial < 1:
            yield f"input 0 has rank {len(x)}; needs N x C x spatial dimensions"
            return
        group = attribute(node, "group", 1)
        kernel = attribute(node, "kernel_shape")
        if w is not None:
            if len(w) != len(x):
                yield f"weight has rank {len(w)}, the input rank {len(x)}"
                return
            if kernel is not None and list(kernel) != list(w[2:]) and None not in w[2:]:
                yield f"kernel_shape {list(kernel)} disagrees with the weight's {list(w[2:])}"
            kernel = list(w[2:])
            if isinstance(group, int) and group >= 1 and x[1] is not None and w[0] is not None \
                    and w[1] is not None:
                channels_in = w[0] if self.transposed else w[1] * group
                if x[1] % group:
                    yield f"group={group} does not divide the {x[1]} input channels"
                elif channels_in != x[1]:
                    yield (f"weight {list(w)} with group={group} expects {channels_in} input "
                           f"channels, the input has {x[1]}")
                if not self.transposed and w[0] % group:
                    yield f"group={group} does not divide the weight's {w[0]} output channels"
            if self.bias is not None and _input(node, self.bias):
                b = facts.shape(_input(node, self.bias))
                out_channels = None
                if isinstance(group, int) and None not in w[:2]:
                    out_channels = w[1] * group if self.transposed else w[0]
                if b is not None and out_channels is not None and tuple(b) != (out_channels,):
                    yield f"bias has shape {list(b)}, expected [{out_channels}]"
        if kernel is None:
            if self.weight is None:
                yield "attribute kernel_shape is missing"
            return
        if len(kernel) != spatial:
            yield f"kernel_shape {list(kernel)} needs {spatial} values for a rank-{len(x)} input"
            return
        strides = list(attribute(node, "strides", [1] * spatial))
        dilations = list(attribute(node, "dilations", [1] * spatial))
        pads = list(attribute(node, "pads", [0] * (2 * spatial)))
        for name, values, count in (("strides", strides, spatial), ("dilations", dilations, spatial),
                                    ("pads", pads, 2 * spatial)):
            if len(values) != count:
                yield f"attribute {name}={values} needs {count} values for a rank-{len(x)} input"
                return
        if any(k is not None and k < 1 for k in kernel):
            yield f"kernel {list(kernel)} has an empty axis"
            return
        if any(s < 1 for s in strides) or any(d < 1 for d in dilations) or any(p < 0 for p in pads):
            return  # the IntAttr declarations name these
        if self.transposed:
            out_pad = list(attribute(node, "output_padding", [0] * spatial))
            if len(out_pad) != spatial:
                yield f"attribute output_padding={out_pad} needs {spatial} values"
            elif any(p < 0 or (p >= s and p >= d) for p, s, d in zip(out_pad, strides, dilations)):
                yield (f"output_padding {out_pad} must be smaller than the strides {strides} "
                       f"or dilations {dilations}")
            return
        auto_pad = attribute(node, "auto_pad", "NOTSET")
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            return
        if auto_pad == "VALID":
            pads = [0] * (2 * spatial)
        for axis in range(spatial):
            size, k = x[2 + axis], kernel[axis]
            if size is None or k is None:
                continue
            window = (k - 1) * dilations[axis] + 1
            padded = size + pads[axis] + pads[axis + spatial]
            if window > padded:
                yield (f"the window {window} (kernel {k}, dilation {dilations[axis]}) is larger than "
                       f"the padded input {padded} along spatial axis {axis}")


CONV_AUTO_PAD = Choice(name="auto_pad", values=("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"))


def window_checks(weight: int | None, bias: int | None = None,
                  transposed: bool = False) -> tuple[NodeCheck, ...]:
    """The checks every Conv-like or pooling node needs."""
    return (Rank(index=0, min_rank=3), CONV_AUTO_PAD,
            IntAttr(name="strides", min=1, spatial_length=True),
            IntAttr(name="dilations", min=1, spatial_length=True),
            IntAttr(name="pads", min=0, spatial_length=True, per_axis=2),
            IntAttr(name="kernel_shape", min=1, spatial_length=True),
            Windowed(weight=weight, bias=bias, transposed=transposed))


def _show(value) -> str:
    return str(list(value)) if isinstance(value, (list, tuple)) else repr(value)
