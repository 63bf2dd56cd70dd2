"""Target: what one runtime runs, as data (kernels, versions, types, numeric limits), and the small
views of a tensor and an op that both the quantizer (on the IR) and `tflq check` (on a file) give it."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Mapping

import numpy as np

from tflq.ir.dtypes import DType


class Effect(Enum):
    """What the runtime does with an op outside a limit."""

    REFUSED = "refused"              # loading the file fails (the delegate cannot build its graph)
    NOT_DELEGATED = "not_delegated"  # the op runs on LiteRT's builtin kernel: the graph splits


@dataclass(frozen=True)
class TensorView:
    """A tensor as a target sees it: type, shape, constant data, quantization."""

    dtype: DType
    shape: tuple[int, ...]
    data: np.ndarray | None = None
    scale: np.ndarray | None = None        # None: not quantized
    zero_point: np.ndarray | None = None
    dynamic: bool = False                  # a dimension is unknown until run time

    @property
    def constant(self) -> bool:
        return self.data is not None

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.dtype.is_quantized_type


@dataclass(frozen=True)
class OpView:
    kind: str
    inputs: tuple[TensorView | None, ...]
    outputs: tuple[TensorView, ...]
    version: int = 1

    @property
    def integer(self) -> bool:
        """Runs an integer kernel: its (first) output is a quantized 8/16-bit tensor."""
        return bool(self.outputs) and self.outputs[0].quantized

    def data_inputs(self) -> list[int]:
        """Inputs carrying values on a quantization grid (not shapes, axes, indices)."""
        return [i for i, t in enumerate(self.inputs) if t is not None and t.quantized]


class Ratio(Enum):
    """Which quantity of an integer op a ScaleLimit bounds."""

    INPUT_OUTPUT = "input scale / output scale"                     # each data input
    PRODUCT_OUTPUT = "input1 scale x input2 scale / output scale"
    FILTER_OUTPUT = "input scale x filter scale / output scale"     # largest filter scale


@dataclass(frozen=True)
class ScaleLimit:
    """`low <= ratio < high` (`<= high` when `high_inclusive`) for the integer kernels of `kinds`."""

    kinds: frozenset[str]
    ratio: Ratio
    low: float
    high: float
    high_inclusive: bool
    effect: Effect
    source: str  # the kernel check this comes from
    dtypes: frozenset[DType] = frozenset({DType.INT8, DType.UINT8, DType.INT16})  # of the output

    def holds(self, value: float) -> bool:
        return self.low <= value and (value <= self.high if self.high_inclusive else value < self.high)

    def values(self, op: OpView) -> list[tuple[int, float]]:
        """(input index, ratio) pairs of `op` that this limit bounds."""
        if op.kind not in self.kinds or not op.integer or op.outputs[0].dtype not in self.dtypes:
            return []
        out = float(np.max(op.outputs[0].scale))
        data = op.data_inputs()
        if self.ratio == Ratio.INPUT_OUTPUT:
            return [(i, float(np.max(op.inputs[i].scale)) / out) for i in data]
        if self.ratio == Ratio.PRODUCT_OUTPUT and len(data) >= 2:
            a, b = op.inputs[data[0]], op.inputs[data[1]]
            return [(data[1], float(np.max(a.scale)) * float(np.max(b.scale)) / out)]
        filters = [i for i in data if op.inputs[i].constant]
        sources = [i for i in data if not op.inputs[i].constant]
        if self.ratio == Ratio.FILTER_OUTPUT and filters and sources:
            a, w = op.inputs[sources[0]], op.inputs[filters[0]]
            return [(filters[0], float(a.scale.reshape(-1)[0]) * float(np.max(w.scale)) / out)]
        return []

    def describe(self) -> str:
        return f"{self.ratio.value} in [{self.low:g}, {self.high:g}{']' if self.high_inclusive else ')'}"


@dataclass(frozen=True)
class Delegate:
    """A delegate running inside LiteRT (XNNPACK): the ops it takes, by kernel type, and the
    conditions on a particular op (None when it takes it, else why not)."""

    name: str
    float_kinds: frozenset[str]
    integer_kinds: frozenset[str]
    integer_dtypes: frozenset[DType]
    conditions: Mapping[str, Callable[[OpView], str | None]] = field(default_factory=dict)

    def refusal(self, op: OpView) -> str | None:
        """Why the delegate leaves `op` to LiteRT's builtin kernels (None: it takes it)."""
        if op.integer:
            if op.outputs[0].dtype not in self.integer_dtypes:
                return f"{self.name} has no {op.outputs[0].dtype.name.lower()} kernels"
            if op.kind not in self.integer_kinds:
                return f"{self.name} has no integer kernel for it" + \
                    (" (it runs it in float)" if op.kind in self.float_kinds else "")
        elif any(t is not None and not t.constant and not t.quantized and
                 t.dtype not in (DType.FLOAT32, DType.FLOAT16) for t in op.inputs + op.outputs):
            return f"{self.name} runs float and quantized tensors only"
        elif op.kind not in self.float_kinds:
            return f"{self.name} has no kernel for it"
        condition = self.conditions.get(op.kind)
        return condition(op) if condition is not None else None


@dataclass(frozen=True)
class Target:
    """One runtime's profile. Every fact in the modules that build these names its source.

    kinds: op kind -> highest version it runs (None: it ignores versions; `kind_names` then
        lists the kinds it has).
    integer_dtypes: activation types of its integer kernels.
    integer_kinds: kinds with integer kernels (None: tflq's registry decides, i.e. LiteRT's).
    float_in_full_integer: in a full-integer model an op without an integer kernel may stay
        float between DEQUANTIZE and QUANTIZE (False: it is an error naming the node).
    """

    name: str
    title: str
    kinds: Mapping[str, int] | None
    kind_names: frozenset[str] = frozenset()
    integer_dtypes: frozenset[DType] = frozenset({DType.INT8, DType.UINT8, DType.INT16})
    integer_kinds: frozenset[str] | None = None
    float_in_full_integer: bool = True
    hybrid_kernels: bool = True        # float ops reading int8 weights directly
    float16_constants: bool = True     # DEQUANTIZE of float16 constants
    tensor_dtypes: frozenset[DType] | None = None  # None: every type the schema has
    static_shapes: bool = False        # a dynamic tensor is a violation
    # a zero PAD in front of a convolution costs nothing: the runtime pads inside the convolution
    fuses_pad_into_conv: bool = False
    # the target whose delegate the runtime applies by default (LiteRT: XNNPACK), if any: an
    # 8-bit clamp between two ops it runs becomes a 1x1 max pool (pool.clamps_as_max_pools)
    default_delegate: str | None = None
    limits: tuple[ScaleLimit, ...] = ()
    # 8-bit kinds it has no kernel for that run as one it has, rewritten after quantization
    # (activations.relu_0_to_1_as_relu): kind -> the kind it runs as
    integer_as: Mapping[str, str] = field(default_factory=dict)
    # kind -> why the kernel refuses a particular op (None: it runs it)
    conditions: Mapping[str, Callable[[OpView], str | None]] = field(default_factory=dict)
    delegate: Delegate | None = None
    source: str = ""

    def has_kind(self, kind: str) -> bool:
        return kind in (self.kinds if self.kinds is not None else self.kind_names)

    def max_version(self, kind: str) -> int | None:
        return None if self.kinds is None else self.kinds.get(kind)

    def integer_reason(self, kind: str, dtype: DType) -> str | None:
        """Why this target has no `dtype` kernel for `kind` (None: the profile does not object;
        tflq's registry still decides for LiteRT's kernels)."""
        if kind in self.integer_as and dtype in self.integer_dtypes:
            return None
        if not self.has_kind(kind):
            return f"{self.title} has no kernel for it"
        if dtype not in self.integer_dtypes:
            return f"{self.title} has no {dtype.name.lower()} kernels"
        if self.integer_kinds is not None and kind not in self.integer_kinds:
            return f"{self.title} has no {dtype.name.lower()} kernel for it"
        if self.delegate is not None and kind in self.delegate.float_kinds and \
                kind not in self.delegate.integer_kinds:
            return (f"{self.delegate.name} runs it in float only (an integer op would split the "
                    f"graph onto LiteRT's builtin kernel)")
        return None
