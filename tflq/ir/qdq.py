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


@dataclass
class QdqModel:
    """What an ONNX model's QuantizeLinear/DequantizeLinear nodes say, gathered once after loading."""

    node_count: int
    activation_types: set[DType] = field(default_factory=set)
    constants: dict[str, QuantizedConstant] = field(default_factory=dict)  # DQ output -> constant
    node_inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # node name -> inputs
    values: set[str] = field(default_factory=set)  # every value name of the ONNX graph

    def is_intermediate(self, name: str) -> bool:
        """True for a tensor an importer made inside one ONNX node's lowering (the graph has no
        QDQ pair for it, nor a float meaning of its own to keep)."""
        return name not in self.values

    def describe(self) -> str:
        kinds = "/".join(sorted(t.name.lower() for t in self.activation_types)) or "no"
        return f"{self.node_count} QuantizeLinear/DequantizeLinear nodes ({kinds} activations)"
