"""A .tflite's own quantization parameters, keyed to the tensors of tflq's float graph of the model,
as a PlanContext: the file's quantization replayed on the IR for any mix of float and quantized
layers (the sensitivity measurement of quantize/precision.py, on the grids the file has).

The file's tensor names are the IR's: an activation keeps its name when quantized, a quantized
constant is `<name>/quantized`, a requantized copy `<name>/requantized`, an 8-bit model output
computed as `<name>/int8` before its DEQUANTIZE; `base_name` undoes these suffixes. A weight
learned rounding replaced is `<name>/adarounded`, a bias bias correction moved `<name>/corrected`
(the float graph keeps `<name>`: the file's values are the repaired ones).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from tflq.backend.tflite_reader import ModelInfo, TensorInfo
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ir.quant import QuantParams
from tflq.quantize.plan import PlanContext, Range

_SUFFIX = re.compile(r"/(quantized|requantized|dequantized|int8|uint8|int16|adarounded|corrected|dead_channels_zeroed)"
                     r"(_\d+)?$")


def base_name(name: str, known) -> str | None:
    """The IR tensor a file tensor stands for (None: no such tensor)."""
    while name not in known:
        stripped = _SUFFIX.sub("", name)
        if stripped == name:
            return None
        name = stripped
    return name


def tensor_params(t: TensorInfo) -> QuantParams | None:
    """A file tensor's quantization (None: float, or an integer value without a scale)."""
    if not t.scale or t.dtype not in ("int8", "uint8", "int16", "int32", "int64"):
        return None
    dtype = DType.parse(t.dtype)
    zero_point = t.zero_point or [0] * len(t.scale)
    if len(t.scale) == 1:
        return QuantParams.per_tensor(dtype, t.scale[0], zero_point[0])
    return QuantParams.per_channel(dtype, t.scale, zero_point, t.quantized_dimension)


@dataclass
class FileParams:
    """The file's parameters by IR tensor name: activations (exact names win over suffixed
    copies) and constants (weights, biases and operands), each with its file tensor."""

    activations: dict[str, tuple[TensorInfo, QuantParams]]
    constants: dict[str, tuple[TensorInfo, QuantParams]]

    @property
    def given(self) -> dict[str, QuantParams]:
        return {**{n: p for n, (_, p) in self.constants.items()},
                **{n: p for n, (_, p) in self.activations.items()}}

    def activation_dtype(self) -> DType | None:
        kinds = Counter(p.dtype for _, p in self.activations.values() if p.dtype != DType.INT32)
        return kinds.most_common(1)[0][0] if kinds else None


def file_params(info: ModelInfo, graph: Graph) -> FileParams:
    activations: dict[str, tuple[TensorInfo, QuantParams]] = {}
    constants: dict[str, tuple[TensorInfo, QuantParams]] = {}
    for t in info.tensors:
        params = tensor_params(t)
        base = base_name(t.name, graph.tensors)
        if params is None or base is None or tuple(t.shape) != graph.tensors[base].shape:
            continue
        table = constants if t.data is not None else activations
        if base not in table or t.name == base:
            table[base] = (t, params)
    return FileParams(activations, constants)


def grid_range(p: QuantParams) -> Range:
    """The real values a per-tensor grid represents: its calibrated range."""
    step, zero_point = float(p.scale), int(p.zero_point)
    return (p.dtype.qmin - zero_point) * step, (p.dtype.qmax - zero_point) * step


class FileContext(PlanContext):
    """A PlanContext that gives every tensor the file's grid; ops touching an activation the file
    keeps float stay float."""

    def __init__(self, graph: Graph, params: FileParams, dtype: DType, float_ops=frozenset(),
                 int16_ops=frozenset()) -> None:
        super().__init__(dtype, float_ops, params.given, int16_ops)
        self.activations = {n for n, t in graph.tensors.items() if not t.is_constant and t.dtype.is_float}

    def range(self, name: str) -> Range | None:
        p = self.given.get(name)
        return None if p is None or p.is_per_channel else grid_range(p)

    def float_reason(self, op: Op) -> str | None:
        reason = super().float_reason(op)
        if reason is None and any(n in self.activations and n not in self.given
                                  for n in op.inputs + op.outputs):
            return "float in the file"
        return reason


def file_int16_nodes(params: FileParams, graph: Graph, dtype: DType) -> frozenset[str]:
    """Nodes whose outputs are int16 in an 8-bit file (--int16-ops)."""
    if dtype == DType.INT16:
        return frozenset()
    producers = graph.producers()
    return frozenset(producers[n].origin for n, (_, p) in params.activations.items()
                     if p.dtype == DType.INT16 and n in producers)
