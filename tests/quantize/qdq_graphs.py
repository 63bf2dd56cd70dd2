"""QDQ ONNX graphs built with onnx.helper for the QDQ tests: activations and weights quantized the
way onnxruntime's quantize_static and PyTorch's QAT export write them (QuantizeLinear ->
DequantizeLinear around activations, DequantizeLinear of integer initializers for weights)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.model_zoo import GraphBuilder
from tflq.backend.tflite_reader import ModelInfo, OpInfo, TensorInfo


def activation_params(low: float, high: float, dtype=np.int8) -> tuple[float, int]:
    """Asymmetric (scale, zero point) covering [low, high] (with 0) on dtype's grid."""
    info = np.iinfo(dtype)
    low, high = min(low, 0.0), max(high, 0.0)
    scale = float(np.float32((high - low) / (info.max - info.min)))
    return scale, int(np.clip(round(info.min - low / scale), info.min, info.max))


class QdqBuilder(GraphBuilder):
    """GraphBuilder plus the QuantizeLinear/DequantizeLinear idioms of QDQ models."""

    def qdq(self, x: str, scale: float, zero_point: int, dtype=np.int8) -> str:
        """x -> QuantizeLinear -> DequantizeLinear (an activation's fake quantization)."""
        s = self.const("scale", np.array(scale, np.float32))
        z = self.const("zero_point", np.array(zero_point, dtype))
        return self.node("DequantizeLinear", [self.node("QuantizeLinear", [x, s, z]), s, z])

    def quantized(self, values: np.ndarray, scale, zero_point, axis: int | None = None) -> str:
        """DequantizeLinear of an integer initializer (onnxruntime's weights and biases)."""
        q = self.const("q", values)
        s = self.const("scale", np.asarray(scale, np.float32))
        z = self.const("zero_point", np.asarray(zero_point, values.dtype))
        attrs = {} if axis is None else {"axis": axis}
        return self.node("DequantizeLinear", [q, s, z], **attrs)

    def weight(self, shape: tuple[int, ...], axis: int | None = 0, dtype=np.int8,
               low: float = -0.5, high: float = 0.5) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        """Random weights stored quantized: symmetric int8 (per channel along `axis`, or per
        tensor) or asymmetric per-tensor uint8. Returns (name, integers, scales, zero points)."""
        w = self.rng.uniform(low, high, shape).astype(np.float32)
        if dtype == np.uint8:
            scale, zero_point = activation_params(float(w.min()), float(w.max()), np.uint8)
            q = np.clip(np.rint(w / scale) + zero_point, 0, 255).astype(np.uint8)
            return self.quantized(q, scale, zero_point), q, np.float32(scale), np.uint8(zero_point)
        if axis is None:
            scale = np.float32(np.abs(w).max() / 127)
            q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
            return self.quantized(q, scale, 0), q, scale, np.int8(0)
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        scale = (np.abs(w).max(axis=reduce) / 127).astype(np.float32)
        shape_b = [1] * w.ndim
        shape_b[axis] = -1
        q = np.clip(np.rint(w / scale.reshape(shape_b)), -127, 127).astype(np.int8)
        zero_point = np.zeros(scale.shape, np.int8)
        return self.quantized(q, scale, zero_point, axis), q, scale, zero_point

    def bias(self, channels: int, scale) -> tuple[str, np.ndarray]:
        """An int32 bias on `scale` (input scale x weight scale), as onnxruntime stores it."""
        scale = np.asarray(scale, np.float32)
        q = self.rng.integers(-2000, 2000, channels).astype(np.int32)
        zero_point = np.zeros(scale.shape, np.int32)
        return self.quantized(q, scale, zero_point, 0 if scale.ndim else None), q

    def model(self, inputs: dict[str, tuple[int, ...]], outputs: list[str],
              opset: int = 13) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "qdq",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        return model


def op_of(info: ModelInfo, kind: str) -> OpInfo:
    ops = [op for op in info.ops if op.kind == kind]
    assert len(ops) == 1, f"expected one {kind}, found {info.op_kinds()}"
    return ops[0]


def tensor_at(info: ModelInfo, op: OpInfo, index: int, output: bool = False) -> TensorInfo:
    return info.tensors[(op.outputs if output else op.inputs)[index]]


def assert_params(t: TensorInfo, scale, zero_point, dtype: str | None = None,
                  dimension: int | None = None) -> None:
    """The tensor's quantization in the file equals (scale, zero point) exactly (float32)."""
    scale = np.atleast_1d(np.asarray(scale, np.float32))
    zero_point = np.atleast_1d(np.asarray(zero_point, np.int64))
    assert np.array_equal(np.asarray(t.scale, np.float32), scale), (t.name, t.scale, scale)
    assert np.array_equal(np.asarray(t.zero_point, np.int64), zero_point), (t.name, t.zero_point)
    if dtype is not None:
        assert t.dtype == dtype, (t.name, t.dtype)
    if dimension is not None:
        assert t.quantized_dimension == dimension, (t.name, t.quantized_dimension)
