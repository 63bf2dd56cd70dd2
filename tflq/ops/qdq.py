"""FAKE_QUANT: ONNX QuantizeLinear/DequantizeLinear (QDQ) read as the quantize-dequantize they compute.

Quantization-aware-trained models and onnxruntime's QDQ models carry their quantization as
QuantizeLinear -> DequantizeLinear pairs. The importer keeps the graph's real-valued meaning:
- a QuantizeLinear of an activation becomes one FAKE_QUANT op (real in, real on the grid out) whose
  attributes hold the QuantParams; the DequantizeLinear that reads it adds nothing;
- a DequantizeLinear of an integer constant (or of a QuantizeLinear of a float constant) becomes the
  dequantized float constant, so importers that need constant weights see one.
Full-integer conversion folds the FAKE_QUANT ops into their tensors' parameters
(tflq/quantize/qdq.py); a float conversion writes them as TFLite FAKE_QUANT ops, so LiteRT computes
what onnxruntime computes for the ONNX graph. Only 8-bit types and int16 (16x8) are converted, and
uint16, which is an int16 grid in disguise (see as_int16_grid); anything else is refused with the
node's name, never silently changed. An asymmetric 16-bit activation grid is kept here as the graph
says (a float conversion computes it exactly); the full-integer conversion moves it to the
symmetric int16 grid LiteRT's 16x8 kernels take (tflq/quantize/qdq.py symmetric_int16).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

from tflq._generated.tflite.FakeQuantOptions import FakeQuantOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ir.quant import QuantParams
from tflq.ops import register
from tflq.ops.base import Case, OpSpec, Transparent, rand
from tflq.ops.checks import Arity, QuantAxis

EIGHT_BIT = {np.dtype(np.int8): DType.INT8, np.dtype(np.uint8): DType.UINT8}
# 4-bit integers (opset 21) are points of the 8-bit grid of the same scale and zero point: a
# DequantizeLinear of int4/uint4 weights is read as int8/uint8 ones, exactly.
FOUR_BIT = {helper.tensor_dtype_to_np_dtype(TensorProto.INT4): DType.INT8,
            helper.tensor_dtype_to_np_dtype(TensorProto.UINT4): DType.UINT8}
# Activation types of a QuantizeLinear: the 8-bit ones, and int16 (LiteRT's 16x8 kernels).
ACTIVATION_TYPES = {**EIGHT_BIT, np.dtype(np.int16): DType.INT16}
_ONNX_ACTIVATION_TYPES = {TensorProto.INT8: DType.INT8, TensorProto.UINT8: DType.UINT8,
                          TensorProto.INT16: DType.INT16}
_HINT = ("tflq converts 8-bit QDQ models (int8/uint8 activations and weights, int32 biases) and "
         "16x8 ones (int16 activations, int8 weights); re-quantize the model with those types")

# A uint16 grid s * (q - z), q in [0, 65535], is the int16 grid s * (q' - (z - 32768)) with
# q' = q - 32768 in [-32768, 32767]: the same real values, and ONNX's QuantizeLinear rounds and
# saturates to the same points on both. So uint16 is read as int16 with the zero point moved.
UINT16_OFFSET = 32768

@dataclass(frozen=True)
class FakeQuantAttrs:
    """The grid the values are rounded to (per tensor: TFLite quantizes activations per tensor)."""

    params: QuantParams


def _type_name(dtype: np.dtype) -> str:
    return str(getattr(dtype, "name", dtype))


def _attr(node, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(helper.get_attribute_value(a))
    return default


def block_size(node) -> int:
    """A DequantizeLinear's `block_size` (opset 21 blocked quantization), 0 when it has none."""
    return _attr(node, "block_size", 0)


def as_int16_grid(integers: np.ndarray) -> np.ndarray:
    """uint16 integers (stored values or zero points) on the int16 grid with the same real values:
    q - 32768 (exact; see UINT16_OFFSET). Other types are returned unchanged."""
    integers = np.asarray(integers)
    if integers.dtype != np.uint16:
        return integers
    return (integers.astype(np.int32) - UINT16_OFFSET).astype(np.int16)


def default_zero_point(values: np.ndarray, scale: np.ndarray,
                       zero_point: np.ndarray | None) -> np.ndarray | None:
    """A DequantizeLinear's zero point, made explicit (0 of the stored type, one per scale) when the
    node has none and its integers are uint16, whose zero point moves on the int16 grid."""
    if zero_point is None and np.asarray(values).dtype == np.uint16:
        return np.zeros(np.shape(scale), np.uint16)
    return zero_point


def stored_integers(values: np.ndarray) -> tuple[np.ndarray, DType] | None:
    """A quantized constant's integers and the 8-bit (or int16/int32) type tflq reads them as;
    None for a type it cannot (float8, int64...). uint16 integers come back on the int16 grid
    (as_int16_grid), so their zero point must go through qdq_params, which moves it the same way."""
    if values.dtype == np.uint16:
        return as_int16_grid(values), DType.INT16
    if values.dtype in FOUR_BIT:
        dtype = FOUR_BIT[values.dtype]
        return values.astype(dtype.numpy), dtype
    allowed = {**ACTIVATION_TYPES, np.dtype(np.int32): DType.INT32}
    if values.dtype not in allowed:
        return None
    return values, allowed[values.dtype]


def dequantize_blocked(node, values: np.ndarray, scale: np.ndarray,
                       zero_point: np.ndarray | None) -> np.ndarray:
    """ONNX DequantizeLinear with `block_size` B (opset 21): along `axis`, each run of B values
    has its own scale and zero point, (q - zero_point) * scale in float32. Exact, so a blocked
    weight becomes the float constant the graph computes."""
    size = block_size(node)
    rank = values.ndim
    axis = _attr(node, "axis", 1)
    if not -rank <= axis < rank:
        raise Unsupported(node, "qdq_axis", f"axis {axis} is out of range for rank {rank}")
    axis %= rank
    scale = np.asarray(scale, np.float32)
    expected = list(values.shape)
    expected[axis] = -(-values.shape[axis] // size)
    zero_point = np.zeros(scale.shape, np.int64) if zero_point is None else np.asarray(zero_point)
    if list(scale.shape) != expected or zero_point.shape != scale.shape:
        raise Unsupported(node, "qdq_channels",
                          f"blocked parameters do not fit: scale {list(scale.shape)} and zero point "
                          f"{list(zero_point.shape)} for blocks of {size} along axis {axis} of "
                          f"shape {list(values.shape)} (expected {expected})",
                          hint="the model's quantization parameters are broken; re-export it")
    if not np.all(np.isfinite(scale)):  # (any sign: onnxruntime's symmetric 4-bit blocks map
        # each block's largest magnitude to -8, on a negative scale when that value is positive)
        raise Unsupported(node, "qdq_scale", "every scale must be finite",
                          hint="the model's quantization parameters are broken; re-export it")
    spread = [np.repeat(p, size, axis=axis).take(range(values.shape[axis]), axis=axis)
              for p in (scale, zero_point.astype(np.int64))]
    return ((values.astype(np.int64) - spread[1]).astype(np.float32) * spread[0]).astype(np.float32)


def qdq_params(node, scale: np.ndarray, zero_point: np.ndarray | None, dtype: DType,
               shape: tuple[int, ...]) -> QuantParams:
    """The (scale, zero point, axis) of a QuantizeLinear/DequantizeLinear node as QuantParams, with
    the axis in the ONNX value's own axis order (a uint16 zero point moved to the int16 grid).
    Raises Unsupported for anything not 8-bit affine (or int16, or int32 for biases)."""
    if _attr(node, "block_size", 0):
        raise Unsupported(node, "qdq_blocked", "blocked quantization (block_size) is not supported",
                          hint=_HINT)
    scale = np.asarray(scale, np.float64)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        bad = scale[~(np.isfinite(scale) & (scale > 0))].ravel()[:3]
        raise Unsupported(node, "qdq_scale", f"every scale must be finite and > 0, got {bad.tolist()}",
                          hint="the model's quantization parameters are broken; re-export it")
    zero_point = np.zeros(scale.shape, np.int64) if zero_point is None else as_int16_grid(zero_point)
    if np.any(zero_point < dtype.qmin) or np.any(zero_point > dtype.qmax):
        raise Unsupported(node, "qdq_zero_point",
                          f"zero point {zero_point.ravel()[:3].tolist()} is out of range for "
                          f"{dtype.name.lower()}", hint="the model's quantization parameters are broken")
    if scale.size == 1 and zero_point.size == 1:
        return QuantParams.per_tensor(dtype, float(scale.reshape(())), int(zero_point.reshape(())))
    rank = len(shape)
    axis = _attr(node, "axis", 1)
    if not -rank <= axis < rank:
        raise Unsupported(node, "qdq_axis", f"axis {axis} is out of range for rank {rank}")
    axis %= rank
    if scale.ndim != 1 or scale.shape != zero_point.shape or scale.size != shape[axis]:
        raise Unsupported(node, "qdq_channels",
                          f"per-channel parameters do not fit: {scale.size} scale(s) and "
                          f"{zero_point.size} zero point(s) for axis {axis} of shape {list(shape)}",
                          hint="the model's quantization parameters are broken; re-export it")
    return QuantParams.per_channel(dtype, scale, zero_point, axis)


def _read_params(node, ctx, dtype: DType, shape: tuple[int, ...],
                 stored: np.ndarray | None = None) -> QuantParams:
    """qdq_params of a node whose scale and zero point the importer looks up as constants
    (`stored`: a DequantizeLinear's constant integers as the ONNX graph holds them)."""
    scale = ctx.constant(node.input[1]) if len(node.input) > 1 else None
    has_zero_point = len(node.input) > 2 and node.input[2]
    zero_point = ctx.constant(node.input[2]) if has_zero_point else None
    if scale is None or (has_zero_point and zero_point is None):
        raise Unsupported(node, "qdq_dynamic_scale", "the scale and zero point must be constants")
    if stored is not None:
        zero_point = default_zero_point(stored, scale, zero_point)
    return qdq_params(node, scale, zero_point, dtype, shape)


def quantize_like_onnx(x: np.ndarray, params: QuantParams) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_to_even(x / scale) + zero_point), in float32."""
    x = np.asarray(x, np.float32)
    scale, zero_point = params.broadcast(x.ndim)
    q = np.rint(x / scale.astype(np.float32)) + zero_point
    return np.clip(q, params.dtype.qmin, params.dtype.qmax).astype(params.dtype.numpy)


def dequantize_like_onnx(q: np.ndarray, params: QuantParams) -> np.ndarray:
    """ONNX DequantizeLinear: (q - zero_point) * scale, in float32."""
    q = np.asarray(q)
    scale, zero_point = params.broadcast(q.ndim)
    return ((q.astype(np.int64) - zero_point).astype(np.float32) * scale.astype(np.float32))


def quantized_type(node, zero_point: np.ndarray | None) -> DType:
    """The integer type a QuantizeLinear produces: its zero point's type, else `output_dtype`,
    else uint8 (ONNX's default). A uint16 zero point gives int16 (its grid is an int16 one; see
    UINT16_OFFSET); a uint16 `output_dtype` without one stays refused: its implicit zero point
    (uint16's 0, int16's -32768) is not what a DequantizeLinear without one reads here."""
    if zero_point is not None:
        if zero_point.dtype == np.uint16:
            return DType.INT16
        if zero_point.dtype not in ACTIVATION_TYPES:
            raise Unsupported(node, "qdq_type", f"{_type_name(zero_point.dtype)} quantization is not "
                                                f"supported",
                              hint=_HINT)
        return ACTIVATION_TYPES[zero_point.dtype]
    output_dtype = _attr(node, "output_dtype", 0)
    if output_dtype and output_dtype not in _ONNX_ACTIVATION_TYPES:
        raise Unsupported(node, "qdq_type", f"{TensorProto.DataType.Name(output_dtype).lower()} "
                                            f"quantization is not supported", hint=_HINT)
    return _ONNX_ACTIVATION_TYPES.get(output_dtype, DType.UINT8)


def _qdq_case(name: str, act: DType, scale: float, zero_point: int) -> Case:
    """x -> QuantizeLinear -> DequantizeLinear -> Relu (the activation pattern of a QDQ graph)."""
    zp = np.array(zero_point, act.numpy)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
             helper.make_node("Relu", ["xd"], ["y"])]
    return Case(name, nodes, {"x": rand(1, 3, 6, 6, low=-2, high=2)},
                {"s": np.array(scale, np.float32), "zp": zp}, options={"mode": "float"},
                tolerance=scale / 2 * 1.01)


def _conv_case() -> Case:
    """Activation QDQ in front of a Conv whose weights are an int8 per-channel DequantizeLinear."""
    rng = np.random.default_rng(7)
    w_q = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["w"], axis=0),
             helper.make_node("Conv", ["xd", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "ys", "yzp"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "ys", "yzp"], ["y"])]
    consts = {"s": np.array(0.01, np.float32), "zp": np.array(128, np.uint8), "wq": w_q,
              "ws": np.array([0.002, 0.004, 0.003, 0.001], np.float32),
              "wzp": np.zeros(4, np.int8), "ys": np.array(0.02, np.float32),
              "yzp": np.array(3, np.int8)}
    return Case("conv_int8_per_channel_weights", nodes, {"x": rand(1, 3, 8, 8)}, consts,
                options={"mode": "float"}, tolerance=0.02)


@register
class FakeQuant(OpSpec):
    """ONNX QuantizeLinear/DequantizeLinear. Emitted only by float conversions of QDQ models."""

    kind = "FAKE_QUANT"
    folds_at_import = False
    onnx_types = ("QuantizeLinear", "DequantizeLinear")
    onnx_checks = (Arity(inputs=(2, 3)), QuantAxis())
    Attrs = FakeQuantAttrs
    layout = Transparent()
    cases = [
        _qdq_case("int8_activation", DType.INT8, 0.02, -10),
        _qdq_case("uint8_activation", DType.UINT8, 1 / 64, 128),
        _conv_case(),
    ]

    def from_onnx(self, node, ctx) -> None:
        if node.op_type == "QuantizeLinear":
            self._quantize(node, ctx)
        else:
            self._dequantize(node, ctx)

    def _quantize(self, node, ctx) -> None:
        x = node.input[0]
        zero_point = ctx.constant(node.input[2]) if len(node.input) > 2 else None
        dtype = quantized_type(node, zero_point)
        params = _read_params(node, ctx, dtype, ctx.shape(x))
        value = ctx.constant(x)
        if value is not None:  # a float weight quantized in the graph: fold it here
            name = ctx.add_constant(node.output[0], quantize_like_onnx(value, params), dtype)
            ctx.graph.tensors[name].quant = params
            ctx.alias(node.output[0], name)
            return
        if params.is_per_channel:
            raise Unsupported(node, "qdq_per_channel_activation",
                              "per-channel quantization of an activation is not supported "
                              "(TFLite quantizes activations per tensor)", hint=_HINT)
        out = ctx.new_activation(node.output[0], ctx.shape(x))
        ctx.add_op(self.kind, [x], [out], FakeQuantAttrs(params))
        ctx.alias(node.output[0], out)

    def _dequantize(self, node, ctx) -> None:
        q = node.input[0]
        value = ctx.constant(q)
        if value is not None:
            # (int16: onnxruntime's 16x8 QDQ models store a Mul's or Add's constant operand on an
            # int16 activation grid)
            stored = stored_integers(value)
            if stored is None:
                raise Unsupported(node, "qdq_type", f"{_type_name(value.dtype)} quantization is not "
                                                    f"supported", hint=_HINT)
            if block_size(node):  # (the ONNX integers and zero points as stored: exact in int64)
                scale, zero_point = (ctx.constant(n) if n else None for n in (node.input[1:3] + [""])[:2])
                if scale is None or (len(node.input) > 2 and node.input[2] and zero_point is None):
                    raise Unsupported(node, "qdq_dynamic_scale", "the scale and zero point must be constants")
                dequantized = dequantize_blocked(node, value, scale, zero_point)
            else:
                raw, (value, dtype) = value, stored
                dequantized = dequantize_like_onnx(
                    value, _read_params(node, ctx, dtype, tuple(value.shape), raw))
            name = ctx.add_constant(node.output[0], dequantized)
            ctx.alias(node.output[0], name)
            return
        source = ctx.tensor(q)
        producer = ctx.graph.producer(source)
        if producer is None and q in ctx.refused_values:
            ctx.alias(node.output[0], source)  # its QuantizeLinear is reported already
            return
        zero_point = ctx.constant(node.input[2]) if len(node.input) > 2 else None
        quantized_type(node, zero_point)  # refuses a 4-bit, float8 or 32-bit pair by its type
        if producer is None or producer.kind != self.kind:
            raise Unsupported(node, "dequantize_without_quantize",
                              f"'{q}' is not the output of a QuantizeLinear (or an integer constant)",
                              hint="tflq converts QDQ graphs, where each DequantizeLinear of an "
                                   "activation reads a QuantizeLinear")
        quantized = producer.attrs.params
        params = _read_params(node, ctx, quantized.dtype, ctx.shape(q))
        if params != quantized:
            raise Unsupported(node, "qdq_mismatch",
                              f"its parameters ({params.describe()}) differ from those of the "
                              f"QuantizeLinear it reads ({quantized.describe()})",
                              hint="a DequantizeLinear must use its QuantizeLinear's scale and "
                                   "zero point")
        ctx.alias(node.output[0], source)

    def reference(self, x, *, params: QuantParams):
        return (dequantize_like_onnx(quantize_like_onnx(x, params), params),)

    def options(self, attrs: FakeQuantAttrs):
        """TFLite's FakeQuant takes [min, max] on a 0..255 grid: the same grid for 8-bit params."""
        p = attrs.params
        scale, zero_point = float(p.scale), int(p.zero_point)
        return FakeQuantOptionsT(min=(p.dtype.qmin - zero_point) * scale,
                                 max=(p.dtype.qmax - zero_point) * scale,
                                 numBits=16 if p.dtype == DType.INT16 else 8, narrowRange=False)

    def version(self, op: Op, graph: Graph) -> int:
        return 1
