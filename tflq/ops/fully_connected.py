"""FULLY_CONNECTED: ONNX Gemm, and MatMul with a constant 2-D right-hand side."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.FullyConnectedOptions import FullyConnectedOptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import (ACTIVATION_FUNCTIONS, WITH_INT16, Calibrated, Case, FusedActivations,
                           Int32Bias, LayoutBreaking, OpSpec, Weight, rand)
from tflq.ops.checks import Arity, ConstantValues, ContractedDims, FloatAttr, IntAttr, Rank
from tflq.ops.common import activation_code
from tflq.ops.einsum import FULLY_CONNECTED_CASES


@dataclass(frozen=True)
class FullyConnectedAttrs:
    keep_num_dims: bool = False
    fused_activation: str = "NONE"
    asymmetric_quantize_inputs: bool = False


def add_fully_connected(ctx, node, x: str, weights: np.ndarray, bias: np.ndarray | None,
                        out: str, name: str = "") -> None:
    """y = x @ weights.T + bias, weights [units, in] (TFLite's layout); `name` tells the constants
    of several FULLY_CONNECTEDs of one node apart."""
    units = weights.shape[0]
    bias = np.zeros(units, np.float32) if bias is None else bias.astype(np.float32)
    prefix = f"{node.name}/{name}" if name else node.name
    w_name = ctx.add_constant(f"{prefix}/weights", weights.astype(np.float32))
    b_name = ctx.add_constant(f"{prefix}/bias", bias)
    ctx.add_op("FULLY_CONNECTED", [x, w_name, b_name], [out],
               FullyConnectedAttrs(keep_num_dims=ctx.rank(x) != 2))


@register
class FullyConnected(OpSpec):
    kind = "FULLY_CONNECTED"
    onnx_types = ("Gemm", "MatMul")
    onnx_checks = (Arity(inputs=(2, 3), only=("Gemm",)), Arity(inputs=(2, 2), only=("MatMul",)),
                   Rank(index=0, ranks=(2,), only=("Gemm",)), Rank(index=1, ranks=(2,), only=("Gemm",)),
                   IntAttr(name="transA", min=0, max=1), IntAttr(name="transB", min=0, max=1),
                   FloatAttr(name="alpha"), FloatAttr(name="beta"),
                   Rank(index=0, min_rank=1), Rank(index=1, min_rank=1), ContractedDims(),
                   ConstantValues(index=1, what="weights"), ConstantValues(index=2, what="bias"))
    Attrs = FullyConnectedAttrs
    layout = LayoutBreaking()
    quant = Calibrated(dtypes=WITH_INT16)
    weights = (Weight(1, axis=0, per_channel_full=False, hybrid=True, input_axis=1),)

    def hybrid_attrs(self, op: Op) -> dict:
        return {"asymmetric_quantize_inputs": True}
    bias = Int32Bias(2)
    # fully_connected.cc: the float and integer kernels refuse TANH and SIGN_BIT at Prepare; the
    # hybrid kernel applies every value (ApplyActivationToVector).
    fused_activation = FusedActivations(hybrid=frozenset(ACTIVATION_FUNCTIONS))
    cases = [
        Case("gemm_transB", [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
             {"x": rand(2, 8)}, {"w": rand(5, 8, seed=1), "b": rand(5, seed=2)}),
        Case("gemm_alpha_beta", [helper.make_node("Gemm", ["x", "w", "b"], ["y"], alpha=0.5, beta=2.0)],
             {"x": rand(3, 6)}, {"w": rand(6, 4, seed=1), "b": rand(1, 4, seed=2)}),
        Case("gemm_no_bias", [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
             {"x": rand(1, 16)}, {"w": rand(10, 16, seed=1)}),
        Case("matmul_2d", [helper.make_node("MatMul", ["x", "w"], ["y"])],
             {"x": rand(4, 8)}, {"w": rand(8, 3, seed=1)}),
        Case("matmul_3d_keep_dims", [helper.make_node("MatMul", ["x", "w"], ["y"])],
             {"x": rand(2, 5, 8)}, {"w": rand(8, 6, seed=1)}),
    ] + FULLY_CONNECTED_CASES  # Einsum with a constant operand (einsum.py)

    def from_onnx(self, node, ctx) -> None:
        x = node.input[0]
        if node.op_type == "MatMul":
            w = ctx.constant(node.input[1])
            if w is None or w.ndim != 2 or ctx.rank(x) < 2:
                return self._batch_matmul(node, ctx)
            add_fully_connected(ctx, node, x, w.T, None, node.output[0])
            return
        w = ctx.require_constant(node, 1, "B")
        if ctx.attr(node, "transA", 0):
            raise Unsupported(node, "gemm_transA", "Gemm with transA=1 is not supported")
        if ctx.rank(x) != 2:
            raise Unsupported(node, "gemm_rank", "Gemm input must be 2-D")
        alpha, beta = float(ctx.attr(node, "alpha", 1.0)), float(ctx.attr(node, "beta", 1.0))
        weights = (w if ctx.attr(node, "transB", 0) else w.T) * alpha
        bias = None
        if len(node.input) > 2 and node.input[2]:
            c = ctx.require_constant(node, 2, "C") * beta
            if c.size == 1 or (c.ndim >= 1 and c.shape[-1] == weights.shape[0]
                               and c.size == weights.shape[0]):
                bias = np.broadcast_to(c.reshape(-1), (weights.shape[0],)).copy()
            else:
                raise Unsupported(node, "gemm_bias_shape",
                                  f"Gemm C of shape {list(c.shape)} is not a per-unit bias")
        add_fully_connected(ctx, node, x, weights, bias, node.output[0])

    def _batch_matmul(self, node, ctx) -> None:
        from tflq import ops as registry

        try:
            spec = registry.spec("BATCH_MATMUL")
        except KeyError:
            raise Unsupported(node, "matmul_non_constant",
                              "MatMul of two activations is not supported yet") from None
        spec.from_onnx(node, ctx)

    def matmul_rows(self, x, weight_shape, attrs):
        return x.reshape(1, -1, weight_shape[1])

    def reference(self, x, w, b=None, *, keep_num_dims, asymmetric_quantize_inputs):
        # One 2-D GEMM whatever the input's rank (a stacked matmul is slower).
        y = x.reshape(-1, w.shape[1]) @ w.T
        if b is not None:
            y += b
        y = y.reshape(x.shape[:-1] + (w.shape[0],)) if keep_num_dims else y.reshape(-1, w.shape[0])
        return (y.astype(np.float32, copy=False),)

    def options(self, attrs: FullyConnectedAttrs):
        return FullyConnectedOptionsT(
            fusedActivationFunction=activation_code(attrs.fused_activation),
            keepNumDims=attrs.keep_num_dims,
            asymmetricQuantizeInputs=attrs.asymmetric_quantize_inputs)

    def version(self, op: Op, graph: Graph) -> int:
        x, w = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
        if op.attrs.keep_num_dims:
            return 5
        if x.dtype.name == "INT8" and w.dtype.name == "INT8":
            return 4
        if x.dtype.is_float and w.dtype.name == "INT8":
            if w.quant is not None and w.quant.is_per_channel:
                return 12
            return 9 if op.attrs.asymmetric_quantize_inputs else 3
        return 1
