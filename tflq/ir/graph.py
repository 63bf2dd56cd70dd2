"""Graph, Op and Tensor: tflq's IR, edited only through Graph methods so its indexes stay right."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable

import numpy as np

from tflq.ir.dtypes import DType
from tflq.ir.quant import QuantParams


class Layout(Enum):
    """How a tensor's axes are ordered: 4-D activations are NCHW (ONNX order) or NHWC; a 3-D one
    that a 1-D convolution or pool reads or writes is NCW (ONNX order) or NWC, a 5-D one that a
    3-D convolution, pool or resize reads or writes NCDHW or NDHWC; the rest are ANY."""

    ANY = "any"
    NCHW = "nchw"
    NHWC = "nhwc"
    NCW = "ncw"
    NWC = "nwc"
    NCDHW = "ncdhw"
    NDHWC = "ndhwc"

    @property
    def channels_last(self) -> bool:
        return self in (Layout.NHWC, Layout.NWC, Layout.NDHWC)

    @property
    def marked_channels_first(self) -> bool:
        """A 3-D or 5-D tensor an importer marked as read or written by a 1-D or 3-D spatial op
        (4-D activations are channels-first without a mark)."""
        return self in (Layout.NCW, Layout.NCDHW)


@dataclass
class Tensor:
    """A named value: `data` set means constant; `quant` set means its integers carry that grid."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    data: np.ndarray | None = None
    quant: QuantParams | None = None
    layout: Layout = Layout.ANY

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class NoAttrs:
    """Attributes of an op kind that has none."""


@dataclass(frozen=True, eq=False)  # (arrays: compared by identity)
class ChannelStats:
    """The mean and standard deviation of each channel of a value (float64 vectors, one entry
    per channel): what a BatchNormalization trained its output toward (beta and |gamma|), kept
    so that bias correction has input means where there is no data (quantize/bias_correction)."""

    mean: np.ndarray
    std: np.ndarray

    def affine(self, scale: np.ndarray | float = 1.0, shift: np.ndarray | float = 0.0) -> ChannelStats:
        """The statistics of x * scale + shift (per channel)."""
        scale = np.asarray(scale, np.float64)
        return ChannelStats(self.mean * scale + np.asarray(shift, np.float64), self.std * np.abs(scale))


@dataclass
class Op:
    """One TFLite operator: `kind` is the builtin name, `origin` the ONNX node it came from.

    `statistics`: the per-channel mean and std of the op's output before its fused activation,
    where a folded BatchNorm gave them (channels on the output's channel axis: the weights'
    output channels); a pass that changes those values carries them or sets None.

    `float_reason`: why the importer keeps this op float in every mode (arithmetic on sampling
    coordinates, whose 8-bit grid would move every sampled pixel); "" lets the op's rule decide."""

    kind: str
    inputs: list[str]
    outputs: list[str]
    attrs: Any = field(default_factory=NoAttrs)
    origin: str = ""
    statistics: ChannelStats | None = None
    float_reason: str = ""

    def replace_attrs(self, **changes) -> None:
        self.attrs = dataclasses.replace(self.attrs, **changes)


class Graph:
    """Tensors by name and ops in topological order, with a producer/consumer index."""

    def __init__(self) -> None:
        self.tensors: dict[str, Tensor] = {}
        self.ops: list[Op] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._names: set[str] = set()
        # the ONNX model's node names, also of nodes folded, fused or removed since (what
        # --float-ops and --int16-ops may name); empty for a graph not imported from ONNX
        self.source_nodes: frozenset[str] = frozenset()
        # graph input -> (lowest, highest, what): the values an index input may hold (token ids
        # into an embedding's rows), as the ONNX model defines them; data is checked against it
        self.index_bounds: dict[str, tuple[int, int, str]] = {}

    # ---- tensors -------------------------------------------------------------------------
    def add_tensor(self, tensor: Tensor) -> Tensor:
        if tensor.name in self.tensors:
            raise ValueError(f"tensor '{tensor.name}' already exists")
        self.tensors[tensor.name] = tensor
        self._names.add(tensor.name)
        return tensor

    def add_constant(self, base: str, value: np.ndarray, dtype: DType | None = None) -> str:
        """Add a constant tensor under a fresh name derived from `base`; return the name."""
        value = np.asarray(value)
        dtype = dtype or DType.from_numpy(value.dtype)
        value = np.array(value, dtype=dtype.numpy, order="C")
        name = self.unique_name(base)
        self.add_tensor(Tensor(name, dtype, tuple(int(d) for d in value.shape), value))
        return name

    def add_activation(self, base: str, dtype: DType, shape: Iterable[int],
                       layout: Layout = Layout.ANY) -> str:
        name = self.unique_name(base)
        self.add_tensor(Tensor(name, dtype, tuple(int(d) for d in shape), layout=layout))
        return name

    def unique_name(self, base: str) -> str:
        if base not in self._names:
            self._names.add(base)
            return base
        i = 1
        while f"{base}_{i}" in self._names:
            i += 1
        name = f"{base}_{i}"
        self._names.add(name)
        return name

    def tensor(self, name: str) -> Tensor:
        return self.tensors[name]

    def is_constant(self, name: str) -> bool:
        return bool(name) and self.tensors[name].is_constant

    def is_quantized(self, name: str) -> bool:
        return bool(name) and self.tensors[name].quant is not None

    # ---- ops -----------------------------------------------------------------------------
    def add_op(self, op: Op, index: int | None = None) -> Op:
        """Append (or insert at `index`) an op; its inputs must already exist."""
        for name in op.inputs + op.outputs:
            if name and name not in self.tensors:
                raise KeyError(f"op {op.kind} ({op.origin}) refers to unknown tensor '{name}'")
        if index is None:
            self.ops.append(op)
        else:
            self.ops.insert(index, op)
        return op

    def insert_before(self, anchor: Op, op: Op) -> Op:
        return self.add_op(op, self.ops.index(anchor))

    def insert_after(self, anchor: Op, op: Op) -> Op:
        return self.add_op(op, self.ops.index(anchor) + 1)

    def remove_op(self, op: Op) -> None:
        self.ops.remove(op)

    def producer(self, name: str) -> Op | None:
        for op in self.ops:
            if name in op.outputs:
                return op
        return None

    def consumers(self, name: str) -> list[Op]:
        return [op for op in self.ops if name in op.inputs]

    def producers(self) -> dict[str, Op]:
        """Tensor name -> producing op, for passes that look up many producers at once."""
        return {out: op for op in self.ops for out in op.outputs}

    def consumer_map(self) -> dict[str, list[Op]]:
        result: dict[str, list[Op]] = {}
        for op in self.ops:
            for name in dict.fromkeys(op.inputs):
                if name:
                    result.setdefault(name, []).append(op)
        return result

    def replace_uses(self, old: str, new: str, *, after: Op | None = None) -> int:
        """Point every consumer of `old` (and the graph outputs) at `new`; return how many."""
        count = 0
        start = self.ops.index(after) + 1 if after is not None else 0
        for op in self.ops[start:]:
            for i, name in enumerate(op.inputs):
                if name == old:
                    op.inputs[i] = new
                    count += 1
        for i, name in enumerate(self.outputs):
            if name == old:
                self.outputs[i] = new
                count += 1
        return count

    def bypass(self, op: Op) -> str | None:
        """Remove `op`, whose output holds the same values as its first input: its consumers read
        the input instead. Graph output names are kept: when the output is one, the input takes
        its name (None, and the op stays, if the input's name must stay too: a graph input or
        output, a constant, or a tensor other ops read). Returns the value's name afterwards."""
        src, dst = op.inputs[0], op.outputs[0]
        if dst not in self.outputs:
            self.remove_op(op)
            self.replace_uses(dst, src)
            return src
        if src in self.inputs or src in self.outputs or self.is_constant(src) or \
                len(self.consumers(src)) != 1:
            return None
        self.remove_op(op)
        layout = self.tensors.pop(dst).layout  # what the output holds (an identity TRANSPOSE of
        self.rename(src, dst)                  # NWC data gives ONNX-order [N, W, C])
        self.tensors[dst].layout = layout
        return dst

    def rename(self, old: str, new: str) -> None:
        """Give tensor `old` the name `new` everywhere (ops, graph inputs and outputs)."""
        if new in self.tensors:
            raise ValueError(f"tensor '{new}' already exists")
        tensor = self.tensors.pop(old)
        tensor.name = new
        self.tensors[new] = tensor
        self._names.add(new)
        for op in self.ops:
            op.inputs = [new if n == old else n for n in op.inputs]
            op.outputs = [new if n == old else n for n in op.outputs]
        self.inputs = [new if n == old else n for n in self.inputs]
        self.outputs = [new if n == old else n for n in self.outputs]

    def remove_unused(self) -> int:
        """Drop tensors nothing refers to; return how many were dropped."""
        used = set(self.inputs) | set(self.outputs)
        for op in self.ops:
            used.update(op.inputs)
            used.update(op.outputs)
        dead = [name for name in self.tensors if name not in used]
        for name in dead:
            del self.tensors[name]
        return len(dead)

    def copy(self) -> Graph:
        """A copy whose ops and tensors can be edited independently (constant data is shared)."""
        other = Graph()
        other.tensors = {n: dataclasses.replace(t) for n, t in self.tensors.items()}
        other.ops = [Op(o.kind, list(o.inputs), list(o.outputs), o.attrs, o.origin, o.statistics, o.float_reason)
                     for o in self.ops]
        other.inputs = list(self.inputs)
        other.outputs = list(self.outputs)
        other._names = set(self._names)
        other.source_nodes = self.source_nodes
        other.index_bounds = dict(self.index_bounds)
        return other
