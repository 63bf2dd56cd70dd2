"""LiteRT's builtin kernels (the CPU interpreter without delegates): every kind it registers, with
the highest version each kernel accepts.

Source: LiteRT tflite/core/kernels/register.cc, BuiltinOpResolver: one AddBuiltin(kind, kernel,
min_version, max_version) per kind (snapshot of 2026-08-21). A file asking for a higher version
fails to load ("Didn't find op for builtin opcode ... version ..."). Which kinds have integer
kernels, and for which types, is what tflq's op registry says (tflq/ops: each spec's quant rule
names the kernel it follows), so this profile adds no integer list of its own.
"""
from __future__ import annotations

import numpy as np

from tflq.ir.dtypes import DType
from tflq.targets.base import OpView, Target

# register.cc: kind -> max_version (BROADCAST_TO starts at version 2; all others at 1).
MAX_VERSIONS = {
    "ABS": 5, "ADD": 6, "ADD_N": 1, "ARG_MAX": 3, "ARG_MIN": 3, "ASSIGN_VARIABLE": 1, "ATAN2": 1,
    "AVERAGE_POOL_2D": 3, "BATCH_MATMUL": 4, "BATCH_TO_SPACE_ND": 4,
    "BIDIRECTIONAL_SEQUENCE_LSTM": 3, "BIDIRECTIONAL_SEQUENCE_RNN": 3, "BITCAST": 1,
    "BITWISE_XOR": 1, "BROADCAST_ARGS": 1, "BROADCAST_TO": 4, "BUCKETIZE": 1, "CAST": 9,
    "CEIL": 1, "COMPLEX_ABS": 1, "CONCATENATION": 7, "CONV_2D": 8, "CONV_3D": 1,
    "CONV_3D_TRANSPOSE": 1, "COS": 2, "CUMSUM": 1, "DENSIFY": 1, "DEPTHWISE_CONV_2D": 7,
    "DEPTH_TO_SPACE": 2, "DEQUANTIZE": 9, "DILATE": 1, "DIV": 2, "DYNAMIC_UPDATE_SLICE": 6,
    "ELU": 1, "EMBEDDING_LOOKUP": 5, "EMBEDDING_LOOKUP_SPARSE": 1, "EQUAL": 5, "EXP": 2,
    "EXPAND_DIMS": 1, "FAKE_QUANT": 2, "FILL": 5, "FLOOR": 1, "FLOOR_DIV": 3, "FLOOR_MOD": 2,
    "FULLY_CONNECTED": 14, "GATHER": 8, "GATHER_ND": 6, "GELU": 3, "GREATER": 2,
    "GREATER_EQUAL": 3, "HARD_SWISH": 1, "HASHTABLE": 1, "HASHTABLE_FIND": 1,
    "HASHTABLE_IMPORT": 1, "HASHTABLE_LOOKUP": 1, "HASHTABLE_SIZE": 1, "IMAG": 1,
    "L2_NORMALIZATION": 2, "L2_POOL_2D": 1, "LEAKY_RELU": 2, "LESS": 3, "LESS_EQUAL": 2,
    "LOCAL_RESPONSE_NORMALIZATION": 1, "LOG": 2, "LOGICAL_AND": 1, "LOGICAL_NOT": 1,
    "LOGICAL_OR": 1, "LOGISTIC": 3, "LOG_SOFTMAX": 2, "LSH_PROJECTION": 1, "LSTM": 4,
    "MATRIX_DIAG": 1, "MATRIX_SET_DIAG": 1, "MAXIMUM": 4, "MAX_POOL_2D": 3, "MEAN": 3,
    "MINIMUM": 4, "MIRROR_PAD": 3, "MUL": 8, "MULTINOMIAL": 1, "NEG": 1,
    "NON_MAX_SUPPRESSION_V4": 1, "NON_MAX_SUPPRESSION_V5": 1, "NOT_EQUAL": 4, "ONE_HOT": 1,
    "PACK": 5, "PAD": 6, "PADV2": 6, "POW": 1, "PRELU": 1, "QUANTIZE": 6,
    "RANDOM_STANDARD_NORMAL": 1, "RANDOM_UNIFORM": 1, "RANGE": 2, "RANK": 1, "READ_VARIABLE": 1,
    "REAL": 1, "REDUCE_ALL": 1, "REDUCE_ANY": 1, "REDUCE_MAX": 3, "REDUCE_MIN": 3,
    "REDUCE_PROD": 2, "REDUCE_WINDOW": 1, "RELU": 3, "RELU6": 3, "RELU_0_TO_1": 1,
    "RELU_N1_TO_1": 1, "RESHAPE": 1, "RESIZE_BILINEAR": 4, "RESIZE_NEAREST_NEIGHBOR": 4,
    "REVERSE_SEQUENCE": 1, "REVERSE_V2": 4, "RFFT2D": 1, "RIGHT_SHIFT": 1, "RNN": 3, "ROUND": 1,
    "RSQRT": 3, "SCATTER_ND": 1, "SEGMENT_SUM": 1, "SELECT": 4, "SELECT_V2": 2, "SHAPE": 1,
    "SIGN": 2, "SIN": 2, "SKIP_GRAM": 1, "SLICE": 8, "SOFTMAX": 4, "SPACE_TO_BATCH_ND": 4,
    "SPACE_TO_DEPTH": 2, "SPARSE_TO_DENSE": 3, "SPLIT": 5, "SPLIT_V": 3, "SQRT": 2, "SQUARE": 1,
    "SQUARED_DIFFERENCE": 2, "SQUEEZE": 2, "STABLEHLO_ADD": 1, "STABLEHLO_AND": 1,
    "STABLEHLO_CASE": 1, "STABLEHLO_COMPOSITE": 1, "STABLEHLO_GATHER": 1, "STABLEHLO_MAXIMUM": 1,
    "STABLEHLO_MINIMUM": 1, "STABLEHLO_MULTIPLY": 1, "STABLEHLO_PAD": 1,
    "STABLEHLO_REDUCE_WINDOW": 1, "STABLEHLO_RNG_BIT_GENERATOR": 1, "STABLEHLO_SCATTER": 1,
    "STABLEHLO_SHIFT_LEFT": 1, "STRIDED_SLICE": 8, "SUB": 5, "SUM": 2, "SVDF": 4, "TANH": 3,
    "TILE": 3, "TOPK_V2": 3, "TRANSPOSE": 9, "TRANSPOSE_CONV": 5,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 4, "UNIDIRECTIONAL_SEQUENCE_RNN": 3, "UNIQUE": 1, "UNPACK": 6,
    "UNSORTED_SEGMENT_MAX": 1, "UNSORTED_SEGMENT_MIN": 1, "UNSORTED_SEGMENT_PROD": 1,
    "UNSORTED_SEGMENT_SUM": 1, "VAR_HANDLE": 1, "WHERE": 2, "ZEROS_LIKE": 1,
}

# quantize.cc Prepare: the (input, output) types each QUANTIZE may have (float: quantize; else
# requantize; float32 may also go to int4 and uint4, which tflq's DType does not spell). int16 ->
# uint8 is not among them: that edge takes int16 -> int8 -> uint8.
QUANTIZE_PAIRS = {
    DType.FLOAT32: frozenset({DType.UINT8, DType.INT8, DType.INT16}),
    DType.INT16: frozenset({DType.INT8, DType.INT16, DType.INT32}),
    DType.INT32: frozenset({DType.INT8, DType.INT16}),
    DType.INT8: frozenset({DType.UINT8, DType.INT8, DType.INT16}),
    DType.UINT8: frozenset({DType.UINT8, DType.INT8, DType.INT16}),
}


def quantize_refusal(source: DType, dest: DType) -> str | None:
    """Why LiteRT's QUANTIZE refuses to go from `source` to `dest` (None: quantize.cc takes it)."""
    if dest not in QUANTIZE_PAIRS.get(source, frozenset()):
        return (f"its QUANTIZE kernel does not go from {source.name.lower()} to "
                f"{dest.name.lower()} (quantize.cc Prepare)")
    return None


def _quantize(op: OpView) -> str | None:
    """quantize.cc Prepare: the type pair, and int16 -> int16 on zero points 0."""
    source, dest = op.inputs[0], op.outputs[0]
    refused = quantize_refusal(source.dtype, dest.dtype)
    if refused is None and dest.scale is None:
        refused = "its QUANTIZE kernel needs an output with affine quantization (quantize.cc Prepare)"
    if refused is None and source.dtype == dest.dtype == DType.INT16 and \
            (source.zero_point is None or dest.zero_point is None or
             np.any(source.zero_point) or np.any(dest.zero_point)):
        refused = "its int16 -> int16 QUANTIZE needs zero points 0 (quantize.cc Prepare)"
    return refused


def _same_operand_types(source: str, output_too: bool):
    """add.cc / sub.cc / mul.cc Prepare: TF_LITE_ENSURE_TYPES_EQ(input1->type, input2->type);
    add and sub then set the output's type to the inputs' (a different declared type is not what
    runs, and its readers read the bytes as the wrong type)."""
    def check(op: OpView) -> str | None:
        a, b = op.inputs[0], op.inputs[1]
        if a is not None and b is not None and a.dtype != b.dtype:
            return (f"its kernel needs both inputs of one type, not {a.dtype.name.lower()} and "
                    f"{b.dtype.name.lower()} ({source} Prepare)")
        out = op.outputs[0]
        if output_too and b is not None and out.dtype != b.dtype:
            return (f"its kernel makes the output {b.dtype.name.lower()} like the inputs; the file "
                    f"declares {out.dtype.name.lower()} ({source} Prepare)")
        return None
    return check


def _mul(op: OpView) -> str | None:
    """mul.cc: Prepare's type check, then EvalQuantized runs one type throughout, or int16
    inputs to a uint8 or int8 output; any other output fails at invoke ("Unsupported
    combination of input and output types in Mul")."""
    refused = _same_operand_types("mul.cc", False)(op)
    a, out = op.inputs[0], op.outputs[0]
    if refused is None and a is not None and a.quantized and out.dtype != a.dtype and \
            not (a.dtype == DType.INT16 and out.dtype in (DType.UINT8, DType.INT8)):
        refused = (f"its kernel has no {a.dtype.name.lower()} -> {out.dtype.name.lower()} "
                   f"multiplication (mul.cc EvalQuantized: fails at invoke)")
    return refused


CONDITIONS = {"QUANTIZE": _quantize, "ADD": _same_operand_types("add.cc", True),
              "SUB": _same_operand_types("sub.cc", True), "MUL": _mul}

LITERT = Target(
    name="litert", title="LiteRT", kinds=MAX_VERSIONS, conditions=CONDITIONS,
    fuses_pad_into_conv=True,  # XNNPACK, which LiteRT applies by default (see xnnpack.py)
    default_delegate="xnnpack",
    source="LiteRT builtin kernels (tflite/core/kernels/register.cc)")
