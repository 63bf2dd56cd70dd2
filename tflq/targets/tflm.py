"""TensorFlow Lite Micro: microcontrollers, int8 integer kernels, static memory plans.

Sources (tensorflow/tflite-micro, snapshot of 2026-08-20):
- the kinds: tensorflow/lite/micro/micro_mutable_op_resolver.h, one Add<Op>() per kernel;
- versions: micro_op_resolver.h "explicitly remove support for Op versions" (a kernel is looked up
  by its builtin code alone), so any version runs;
- the int8 kernels: each kernel file under tensorflow/lite/micro/kernels/ and the type switch of
  its Eval/Prepare (a kind missing from INT8_KINDS has no kTfLiteInt8 case, or no kernel);
- no uint8: TFLM removed its uint8 kernels (no kernel file has a kTfLiteUInt8 case); no hybrid
  kernels (conv.cc, fully_connected.cc take a float filter with float input only); DEQUANTIZE
  takes int8/int16/uint8 input (dequantize_common.cc), never float16;
- static shapes: micro_allocator.cc plans every tensor's memory before the first invoke, from the
  shapes in the file.
"""
from __future__ import annotations

from tflq.ir.dtypes import DType
from tflq.targets.base import OpView, Target

# micro_mutable_op_resolver.h (the Add<Op>() list), as TFLite builtin kinds.
KINDS = frozenset({
    "ABS", "ADD", "ADD_N", "ARG_MAX", "ARG_MIN", "ASSIGN_VARIABLE", "AVERAGE_POOL_2D",
    "BATCH_MATMUL", "BATCH_TO_SPACE_ND", "BROADCAST_ARGS", "BROADCAST_TO", "CALL_ONCE", "CAST",
    "CEIL", "CONCATENATION", "CONV_2D", "COS", "CUMSUM", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D",
    "DEQUANTIZE", "DIV", "DYNAMIC_UPDATE_SLICE", "ELU", "EMBEDDING_LOOKUP", "EQUAL", "EXP",
    "EXPAND_DIMS", "FILL", "FLOOR", "FLOOR_DIV", "FLOOR_MOD", "FULLY_CONNECTED", "GATHER",
    "GATHER_ND", "GREATER", "GREATER_EQUAL", "HARD_SWISH", "IF", "L2_NORMALIZATION", "L2_POOL_2D",
    "LEAKY_RELU", "LESS", "LESS_EQUAL", "LOG", "LOG_SOFTMAX", "LOGICAL_AND", "LOGICAL_NOT",
    "LOGICAL_OR", "LOGISTIC", "MAX_POOL_2D", "MAXIMUM", "MEAN", "MINIMUM", "MIRROR_PAD", "MUL",
    "NEG", "NOT_EQUAL", "PACK", "PAD", "PADV2", "PRELU", "QUANTIZE", "READ_VARIABLE", "REDUCE_ALL",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "REVERSE_V2", "ROUND", "RSQRT", "SELECT_V2", "SHAPE", "SIN",
    "SLICE", "SOFTMAX", "SPACE_TO_BATCH_ND", "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V", "SQRT",
    "SQUARE", "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "SVDF", "TANH",
    "TRANSPOSE", "TRANSPOSE_CONV", "UNIDIRECTIONAL_SEQUENCE_LSTM", "UNPACK", "VAR_HANDLE", "WHILE",
    "ZEROS_LIKE",
})

# Kinds whose kernel has an int8 case. Not here although they have a kernel: EXP (exp.cc: float32
# only), LOG, SQRT, SIN, COS, SQUARE (elementwise.cc IsNumericSupportedType: float32 only), CEIL,
# FLOOR, ROUND, FLOOR_MOD, FLOOR_DIV (float kernels). Without any kernel: GELU, RELU_0_TO_1,
# RELU_N1_TO_1, TILE, TOPK_V2, REDUCE_PROD, POW, RANGE, SCATTER_ND, SIGN.
INT8_KINDS = frozenset({
    "ABS",                      # elementwise.cc IsAbsSupportedType: float32, int8, int16
    "ADD", "SUB", "MUL", "DIV",  # add.cc, sub.cc, mul_common.cc, div.cc
    "ARG_MAX", "ARG_MIN",       # arg_min_max.cc: int8 input
    "AVERAGE_POOL_2D", "MAX_POOL_2D",  # pooling.cc
    "BATCH_MATMUL",             # batch_matmul_common.cc
    "BROADCAST_TO",             # broadcast_to.cc copies elements of any size
    "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV",
    "DEPTH_TO_SPACE", "SPACE_TO_DEPTH",
    "DEQUANTIZE", "QUANTIZE",   # dequantize_common.cc, quantize_common.cc
    "ELU", "HARD_SWISH", "LEAKY_RELU", "LOGISTIC", "TANH", "PRELU", "RELU", "RELU6",
    "SOFTMAX", "LOG_SOFTMAX",   # softmax_common.cc, log_softmax.cc
    "RSQRT",                    # elementwise.cc IsRsqrtSupportedType: float32, int8
    "NEG",                      # neg.cc
    "GATHER", "GATHER_ND",      # gather.cc, gather_nd.cc: int8 params
    "MAXIMUM", "MINIMUM",       # maximum_minimum.cc
    "MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN",  # reduce_common.cc
    "PAD", "PADV2", "MIRROR_PAD",  # pad_common.cc, mirror_pad.cc
    "RESHAPE", "SQUEEZE", "EXPAND_DIMS",  # type-agnostic copies
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
    "SELECT_V2",                # select.cc
    "SLICE", "STRIDED_SLICE", "SPLIT", "SPLIT_V", "UNPACK", "PACK", "TRANSPOSE",
    "SQUARED_DIFFERENCE",       # squared_difference.cc
})

def _int32_indices(op: OpView) -> str | None:
    """arg_min_max.cc: "Only int32_t are supported currently" (the output type)."""
    if op.outputs and op.outputs[0].dtype != DType.INT32:
        return f"its kernel writes int32 indices only, not {op.outputs[0].dtype.name.lower()}"
    return None


def _rank_at_most_4(op: OpView) -> str | None:
    """strided_slice_common.cc: "input dim should not exceed 4"."""
    if op.inputs and op.inputs[0] is not None and len(op.inputs[0].shape) > 4:
        return f"its kernel takes at most 4 dimensions, not {len(op.inputs[0].shape)}"
    return None


def _int32_coordinates(op: OpView) -> str | None:
    """gather.cc and gather_nd.cc switch on the indices' type: kTfLiteInt32 only."""
    if len(op.inputs) > 1 and op.inputs[1] is not None and op.inputs[1].dtype != DType.INT32:
        return f"its kernel takes int32 indices only, not {op.inputs[1].dtype.name.lower()}"
    return None


def _float_only(op: OpView) -> str | None:
    """floor_mod.cc switches on the input type: kTfLiteFloat32 only."""
    if op.inputs and op.inputs[0] is not None and op.inputs[0].dtype != DType.FLOAT32:
        return f"its kernel takes float32 only, not {op.inputs[0].dtype.name.lower()}"
    return None


CONDITIONS = {"ARG_MAX": _int32_indices, "ARG_MIN": _int32_indices, "STRIDED_SLICE": _rank_at_most_4,
              "GATHER": _int32_coordinates, "GATHER_ND": _int32_coordinates, "FLOOR_MOD": _float_only}

TFLM = Target(
    name="tflm", title="TFLite Micro", kinds=None, kind_names=KINDS,
    integer_dtypes=frozenset({DType.INT8}), integer_kinds=INT8_KINDS,
    float_in_full_integer=False, hybrid_kernels=False, float16_constants=False,
    tensor_dtypes=frozenset({DType.FLOAT32, DType.INT8, DType.INT16, DType.INT32, DType.INT64,
                             DType.BOOL}),
    static_shapes=True, conditions=CONDITIONS,
    # hardsigmoid (MobileNetV3's squeeze-excitation and hardswish-free gates): an 8-bit clamp to
    # [0, 1] is relu.cc's clamp to [zero point, 127] on an output grid that ends at 1 at most
    integer_as={"RELU_0_TO_1": "RELU"},
    source="TFLite Micro kernels (tensorflow/lite/micro/micro_mutable_op_resolver.h, kernels/)")
