"""XNNPACK, LiteRT's default CPU delegate: it takes the ops below and leaves the rest to LiteRT's
builtin kernels, which splits the graph into partitions.

Sources (snapshot of 2026-08-21): LiteRT tflite/delegates/xnnpack/xnnpack_delegate.cc (VisitNode's
switch lists the kinds; each Visit*Node checks the tensor types: CheckTensorFloatType is float
only, CheckTensorFloatOrQUInt8Type float or 8-bit quantized), and XNNPACK's operator constructors
(src/operators/convolution-nhwc.c, fully-connected-nc.c, deconvolution-nhwc.c), whose refusals
happen when the delegate builds its graph, so that loading the whole file fails.
"""
from __future__ import annotations

import numpy as np

from tflq.ir.dtypes import DType
from tflq.targets.base import Delegate, Effect, OpView, Ratio, ScaleLimit, Target
from tflq.targets.litert import CONDITIONS as LITERT_CONDITIONS, MAX_VERSIONS

# VisitNode's switch: every kind the delegate visits (float32, and float16 weights unpacked at
# load time).
FLOAT_KINDS = frozenset({
    "ABS", "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CEIL", "CONCATENATION", "CONV_2D", "COS",
    "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE", "DIV", "ELU", "EXP", "EXPAND_DIMS",
    "FLOOR", "FULLY_CONNECTED", "GELU", "HARD_SWISH", "LEAKY_RELU", "LOG", "LOGISTIC",
    "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "NEG", "PAD", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "ROUND", "RSQRT", "SIN", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQRT", "SQUARE",
    "SQUARED_DIFFERENCE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})

# The kinds whose Visit*Node accepts 8-bit quantized tensors (CheckTensorFloatOrQUInt8Type or
# CheckTensorFloatOrQInt8Type, ELU). Not here although visited: VisitUnaryNode's float-only group
# (ABS, EXP, GELU, HARD_SWISH, LOG, RELU, RELU6, RELU_N1_TO_1, RSQRT, SQRT...), VisitBinaryNode's
# DIV, MAXIMUM, MINIMUM, PRELU (CheckTensorFloatType), AVERAGE_POOL_2D and SOFTMAX
# (CheckTensorFloatType), and BATCH_MATMUL, whose quantized right-hand side must be a
# per-channel int8 constant with zero point 0 (CheckTensorFloat32OrQCInt8Type), which an
# activation times an activation never is.
INTEGER_KINDS = frozenset({
    "ADD", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE", "ELU",
    "EXPAND_DIMS", "FULLY_CONNECTED", "LEAKY_RELU", "LOGISTIC", "MAX_POOL_2D", "MEAN", "MUL", "PAD",
    "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RESHAPE", "RESIZE_BILINEAR", "SLICE", "SPACE_TO_DEPTH",
    "SPLIT", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})

XNN_MAX_TENSOR_DIMS = 6  # CheckTensorShape(..., max_num_dims=XNN_MAX_TENSOR_DIMS)


def _unit_strides(op: OpView) -> str | None:
    """VisitStridedSliceNode: "Only support strides = 1"."""
    strides = op.inputs[3] if len(op.inputs) > 3 else None
    if strides is not None and strides.constant and np.any(strides.data != 1):
        return "XNNPACK slices with strides of 1 only"
    return None


def _inputs_on_output_grid(op: OpView) -> str | None:
    """VisitConcatenationNode: a quantized input's zero point and scale must equal the output's
    ("Mismatching quantization zero point / scale"; uint8 too, which LiteRT's kernel rescales)."""
    out = op.outputs[0]
    if out.scale is None:
        return None
    for i, t in enumerate(op.inputs):
        if t is not None and t.scale is not None and not t.constant and \
                (float(t.scale.reshape(-1)[0]) != float(out.scale.reshape(-1)[0]) or
                 int(t.zero_point.reshape(-1)[0]) != int(out.zero_point.reshape(-1)[0])):
            return f"XNNPACK concatenates quantized inputs on the output's grid only (input {i} is not)"
    return None


CONDITIONS = {"STRIDED_SLICE": _unit_strides, "CONCATENATION": _inputs_on_output_grid}

LIMITS = (
    # VisitBinaryNode: CheckTensorsInputOutputScale(..., 1.0f / 1024.0f, 256.0f) for ADD and SUB
    ScaleLimit(frozenset({"ADD", "SUB"}), Ratio.INPUT_OUTPUT, 2.0 ** -10, 2.0 ** 8, False,
               Effect.NOT_DELEGATED, "xnnpack_delegate.cc VisitBinaryNode CheckTensorsInputOutputScale"),
    # VisitBinaryNode: CheckTensorsInputProductOutputScale(..., 1.0f / 65536.0f, 256.0f) for MUL
    ScaleLimit(frozenset({"MUL"}), Ratio.PRODUCT_OUTPUT, 2.0 ** -16, 2.0 ** 8, False,
               Effect.NOT_DELEGATED,
               "xnnpack_delegate.cc VisitBinaryNode CheckTensorsInputProductOutputScale"),
    # VisitUnaryNode LEAKY_RELU: positive_scale < 1/256 or > 128 is refused
    ScaleLimit(frozenset({"LEAKY_RELU"}), Ratio.INPUT_OUTPUT, 2.0 ** -8, 2.0 ** 7, True,
               Effect.NOT_DELEGATED, "xnnpack_delegate.cc VisitUnaryNode LEAKY_RELU"),
    # VisitUnaryNode QUANTIZE (8-bit to 8-bit): input_output_scale < 1/256 or > 128 is refused
    ScaleLimit(frozenset({"QUANTIZE"}), Ratio.INPUT_OUTPUT, 2.0 ** -8, 2.0 ** 7, True,
               Effect.NOT_DELEGATED, "xnnpack_delegate.cc VisitUnaryNode QUANTIZE"),
    # XNNPACK convolution-nhwc.c, fully-connected-nc.c, deconvolution-nhwc.c: "requantization
    # scale ... is greater or equal to 256.0" -> xnn_status_unsupported_parameter at creation
    ScaleLimit(frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}),
               Ratio.FILTER_OUTPUT, 0.0, 256.0, False, Effect.REFUSED,
               "XNNPACK src/operators convolution-nhwc.c / fully-connected-nc.c / deconvolution-nhwc.c"),
)


def _shape_condition(op: OpView) -> str | None:
    """CheckTensorShape: at most XNN_MAX_TENSOR_DIMS dimensions."""
    if any(t is not None and len(t.shape) > XNN_MAX_TENSOR_DIMS for t in op.inputs + op.outputs):
        return f"XNNPACK takes tensors of at most {XNN_MAX_TENSOR_DIMS} dimensions"
    return None


def _condition(kind_condition):
    def check(op: OpView) -> str | None:
        return _shape_condition(op) or (kind_condition(op) if kind_condition else None)
    return check


XNNPACK = Target(
    name="xnnpack", title="XNNPACK", kinds=MAX_VERSIONS,
    conditions=LITERT_CONDITIONS,  # what XNNPACK leaves runs on LiteRT's kernels, which refuse these
    integer_dtypes=frozenset({DType.INT8, DType.UINT8}),  # Visit*Node: QInt8 or QUInt8; no int16
    limits=LIMITS,
    # XNNPACK src/subgraph.c (xnn_subgraph_fusion): a static constant pad of the spatial axes
    # whose value is the zero point (0.0 in float) becomes the padding of the [depthwise]
    # convolution 2D it feeds (not SAME-padded ones; never a pool's)
    fuses_pad_into_conv=True,
    default_delegate="xnnpack",
    delegate=Delegate("XNNPACK", FLOAT_KINDS, INTEGER_KINDS, frozenset({DType.INT8, DType.UINT8}),
                      {kind: _condition(CONDITIONS.get(kind)) for kind in FLOAT_KINDS}),
    source="LiteRT with its XNNPACK delegate (tflite/delegates/xnnpack/xnnpack_delegate.cc)")
