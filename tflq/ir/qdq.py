"""What an ONNX model's QuantizeLinear/DequantizeLinear nodes say, recorded by the importer
(tflq/frontend/onnx_qdq.py) so that quantization reads them from the IR, not from the ONNX file."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tflq.ir.dtypes import DType
from tflq.ir.quant import QuantParams


@dataclass(frozen=True)
class QuantizedConstant:
    """A constant the ONNX graph stores quantized (a DequantizeLinear of an integer initializer, or
    of a QuantizeLinear of a float one): its integers and parameters, in ONNX axis order."""

    values: np.ndarray
    params: QuantParams


@dataclass(frozen=True)
class BlockedConstant:
    """A constant the ONNX graph stores in blocks of `block_size` integers of `bits` bits, each
    block on its own scale (opset 21 DequantizeLinear with block_size, onnxruntime's 4-bit
    MatMul QDQ; com.microsoft MatMulNBits): TFLite has no such grid, so the importer reads the
    float values it computes. `node` is the ONNX node that holds the blocks (`op_type`), `size`
    the constant's number of values."""

    op_type: str
    node: str
    bits: int
    block_size: int
    size: int

    def describe(self) -> str:
        return f"{self.bits}-bit blocks of {self.block_size}"


@dataclass
class QdqModel:
    """What an ONNX model's QuantizeLinear/DequantizeLinear nodes say, gathered once after loading."""

    node_count: int
    activation_types: set[DType] = field(default_factory=set)
    constants: dict[str, QuantizedConstant] = field(default_factory=dict)  # DQ output -> constant
    node_inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # node name -> inputs
    values: set[str] = field(default_factory=set)  # every value name of the ONNX graph
    blocked: dict[str, BlockedConstant] = field(default_factory=dict)  # float value -> its blocks

    def is_intermediate(self, name: str) -> bool:
        """True for a tensor an importer made inside one ONNX node's lowering (the graph has no
        QDQ pair for it, nor a float meaning of its own to keep)."""
        return name not in self.values

    def describe(self) -> str:
        kinds = "/".join(sorted(t.name.lower() for t in self.activation_types)) or "no"
        parts = [f"{self.node_count} QuantizeLinear/DequantizeLinear nodes"] if self.node_count else []
        nbits = sum(b.op_type == "MatMulNBits" for b in self.blocked.values())
        if nbits:
            parts.append(f"{nbits} MatMulNBits nodes")
        return f"{' and '.join(parts)} ({kinds} activations)"
