"""OpSpec and the declarative rules (layout, quantization, weights) an op kind states about itself."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar

import numpy as np

from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, NoAttrs, Op
from tflq.ir.quant import QuantParams

# ---- layout rules: how the NCHW -> NHWC pass treats an op (tflite2onnx's classification) ------


@dataclass(frozen=True)
class LayoutRule:
    """Base of the layout classes."""


@dataclass(frozen=True)
class ChannelsLast(LayoutRule):
    """The kernel works on NHWC: rank-4 inputs listed in `data_inputs` and rank-4 outputs are NHWC."""

    data_inputs: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class Transparent(LayoutRule):
    """Elementwise/broadcasting: works in any layout; constant operands are permuted to match."""


@dataclass(frozen=True)
class AxisSensitive(LayoutRule):
    """Works in any layout once its axis arguments are remapped.

    attrs: attribute fields holding an axis (int) or axes (tuple of ints).
    axis_inputs: constant inputs whose values are axis numbers (MEAN's axes).
    per_axis_inputs: constant inputs with one row per axis (PAD's paddings, SLICE's begin/size).
    """

    attrs: tuple[str, ...] = ()
    axis_inputs: tuple[int, ...] = ()
    per_axis_inputs: tuple[int, ...] = ()


@dataclass(frozen=True)
class PermutesAxes(LayoutRule):
    """TRANSPOSE: the layout pass composes its constant permutation with the layout change."""

    perm_input: int = 1


@dataclass(frozen=True)
class LayoutBreaking(LayoutRule):
    """Needs the ONNX axis order (RESHAPE, TRANSPOSE, FULLY_CONNECTED's flattening...)."""


# ---- quantization rules (ai-edge-quantizer's OpQuantConstraint, ORT's same-as-input) -------

# The activation types a rule allows when it names none: the two 8-bit schemes. Ops with a
# LiteRT 16x8 kernel (int16 activations, int8 weights) add DType.INT16.
EIGHT_BIT_TYPES = frozenset({DType.INT8, DType.UINT8})
WITH_INT16 = EIGHT_BIT_TYPES | {DType.INT16}
INT8_AND_INT16 = frozenset({DType.INT8, DType.INT16})
INT8_ONLY = frozenset({DType.INT8})


def _dtype_set(dtypes) -> frozenset[DType]:
    """`dtypes` as a frozenset of DType; names ("int8") are accepted as the older spelling."""
    return frozenset(DType.parse(d) if isinstance(d, str) else d for d in dtypes)


@dataclass(frozen=True)
class QuantRule:
    """How an op's output parameters are chosen in full-integer mode.

    dtypes: the activation types the TFLite kernel accepts (DType.INT8, DType.UINT8).
    rounding_commutes: rounding the inputs to one grid and then applying the op gives what
        rounding its output to that grid gives (monotone selections: MAXIMUM, CONCATENATION...),
        so a QDQ graph's grid on the output may be carried back to the inputs.
    """

    dtypes: frozenset[DType] = EIGHT_BIT_TYPES
    rounding_commutes: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtypes", _dtype_set(self.dtypes))

    def runs_in(self, dtype: DType) -> bool:
        """Whether LiteRT has a kernel for this op with `dtype` activations."""
        return dtype in self.dtypes

    def island_dtype(self, dtype: DType) -> DType | None:
        """The type the op runs in inside a `dtype` model that has no kernel for it in `dtype`:
        int8 in a uint8 model where LiteRT has an int8 kernel only (BATCH_MATMUL, RSQRT, EXP...).
        QUANTIZE moves a uint8 grid to the int8 one of its range and back exactly (the same
        scale, the zero point 128 apart), so the op computes what a float island would, in
        integer. None: it has a kernel in `dtype`, or no such island."""
        if dtype == DType.UINT8 and not self.runs_in(dtype) and self.runs_in(DType.INT8):
            return DType.INT8
        return None

    def float_reason(self, dtype: DType) -> str | None:
        """Why the op stays float in `dtype` (None: it has a kernel)."""
        if self.runs_in(dtype):
            return None
        return "LiteRT has no 16x8 kernel for it" if dtype == DType.INT16 else \
            f"LiteRT has no {dtype.name.lower()} kernel for it"

    def output_params(self, dtype: DType, source: QuantParams | None = None) -> QuantParams | None:
        """The output's params when the rule alone decides them (`source`: the params of the
        input the rule follows, if known); None when they come from a range."""
        return None

    @property
    def value_preserving(self) -> bool:
        """Outputs are values of the one data input (or zero): a grid carries over exactly."""
        return False

    @property
    def commutes_with_rounding(self) -> bool:
        return self.rounding_commutes or self.value_preserving


@dataclass(frozen=True)
class Calibrated(QuantRule):
    """Output parameters come from the calibrated range.

    rescales_inputs: the kernel first brings every input to one fixed-point scale, twice the
        largest input scale / 2**20 (2**15 for int16), then requantizes that to the output with a
        multiplier that must stay below 1 (LiteRT add.cc/sub.cc, QuantizeMultiplierSmallerThanOneExp:
        the process aborts at allocate_tensors otherwise). An output grid much finer than its
        inputs' (x*1e7 - (x*1e7 - x)) breaks that, so the output scale has a floor.
    """

    rescales_inputs: bool = False

    def min_output_scale(self, dtype: DType, input_scales: list[float]) -> float:
        """The smallest output scale the kernel accepts next to inputs of `input_scales`."""
        if not self.rescales_inputs or not input_scales:
            return 0.0
        return 2.0 * max(input_scales) / 2.0 ** (15 if dtype == DType.INT16 else 20)


@dataclass(frozen=True)
class SameAsInput(QuantRule):
    """Output shares input `index`'s parameters (data movement, max pooling...).

    moves_values: every output value is a value of input `index` (or zero): RESHAPE, MAX_POOL_2D,
        PAD, GATHER... (not AVERAGE_POOL_2D, not bilinear RESIZE, which compute new values).
    clamps: the op clamps input `index` by its constant operands (MAXIMUM, MINIMUM): clipping
        that input to any range holding the output's range and the constants leaves the result
        unchanged, so the input may take the output's (narrower) grid.
    """

    index: int = 0
    moves_values: bool = False
    clamps: bool = False

    def output_params(self, dtype: DType, source: QuantParams | None = None) -> QuantParams | None:
        return source

    @property
    def value_preserving(self) -> bool:
        return self.moves_values


@dataclass(frozen=True)
class SameAsOutput(QuantRule):
    """Every data input is requantized to the output's calibrated parameters (int8 CONCATENATION;
    the uint8 kernel rescales its inputs itself)."""

    rescales_inputs_in: frozenset[DType] = frozenset({DType.UINT8})

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "rescales_inputs_in", _dtype_set(self.rescales_inputs_in))

    def inputs_on_output_grid(self, dtype: DType) -> bool:
        """Whether the `dtype` kernel needs every input on the output's grid."""
        return dtype not in self.rescales_inputs_in


@dataclass(frozen=True)
class FixedOutput(QuantRule):
    """Kernel-mandated output: int8 zero point given; the uint8 one is 128 higher; int16 kernels
    take `scale_int16` with zero point 0."""

    scale: float = 1.0 / 256
    zero_point_int8: int = -128
    scale_int16: float = 1.0 / 32768

    def output_params(self, dtype: DType, source: QuantParams | None = None) -> QuantParams | None:
        if dtype == DType.INT16:
            return QuantParams.per_tensor(dtype, self.scale_int16, 0)
        zero_point = self.zero_point_int8 + (128 if dtype == DType.UINT8 else 0)
        return QuantParams.per_tensor(dtype, self.scale, zero_point)


@dataclass(frozen=True)
class FloatOnly(QuantRule):
    """No quantized kernel: the op stays float between DEQUANTIZE and QUANTIZE.

    reason: what the summary says (an op whose 8-bit kernel tflq declines says why)."""

    dtypes: frozenset[DType] = frozenset()
    reason: str = "no quantized TFLite kernel"

    def float_reason(self, dtype: DType) -> str | None:
        return self.reason


# ---- constant-operand rules --------------------------------------------------------------


@dataclass(frozen=True)
class Weight:
    """A constant weight input.

    axis: the output-channel axis of the weight's TFLite layout (None: no channel axis).
    per_channel_full: int8 full-integer kernels take per-channel scales along `axis`
        (FULLY_CONNECTED: per-tensor, which the published spec guarantees).
    hybrid: LiteRT has a float-input/int8-weight (dynamic-range) kernel for this operand.
    input_axis: the input-channel axis (None: none that a per-channel scale of the input moves
        through); equal to `axis` for a depthwise weight, whose channel i reads input channel i.
    """

    index: int
    axis: int | None = 0
    per_channel_full: bool = True
    hybrid: bool = False
    input_axis: int | None = None


@dataclass(frozen=True)
class Int32Bias:
    """int32 bias input: scale = scale(input `input`) x scale(weight `weight`), zero point 0."""

    index: int
    input: int = 0
    weight: int = 1


# ---- fused activations: what a kernel does with its fused_activation_function ------------

# TFLite's ActivationFunctionType values, in schema order.
ACTIVATION_FUNCTIONS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")
# What kernel_util.h CalculateActivationRange (float) and kernel_util.cc
# CalculateActivationRangeQuantized (int8/uint8) clamp to; any other value gets the full range,
# i.e. the kernel silently does not apply it (TANH fused into ADD is then a plain ADD).
CLAMPS = frozenset({"NONE", "RELU", "RELU_N1_TO_1", "RELU6"})
# f(a * x) = a * f(x) for every a > 0: a positive per-channel scale moves through these fused
# activations (a BatchNorm after a ReLU folds into the convolution before it; cross-layer
# equalization). RELU6 and RELU_N1_TO_1 clip at a fixed value, which the scale would move.
POSITIVELY_HOMOGENEOUS = frozenset({"NONE", "RELU"})
# Fused activations that clamp the output below at 0: its minimum is 0 as soon as one value is.
ZERO_CLAMPED = frozenset({"RELU", "RELU6"})


class KernelVariant(Enum):
    """Which of an op's LiteRT kernels runs it."""

    FLOAT = "float"        # float32 inputs and outputs
    INTEGER = "integer"    # int8/uint8 inputs and outputs
    HYBRID = "hybrid"      # float input and output, int8 weights read directly


@dataclass(frozen=True)
class FusedActivations:
    """The fused_activation_function values each kernel variant applies (the rest it ignores or
    refuses). The fuse pass fuses only what every variant the op may end up in applies, and the
    verifier checks each emitted op against its variant; tests/ops/test_fused_activations.py
    checks every entry against LiteRT."""

    float32: frozenset[str] = CLAMPS
    integer: frozenset[str] = CLAMPS
    hybrid: frozenset[str] = CLAMPS

    def applied(self, variant: KernelVariant) -> frozenset[str]:
        return {KernelVariant.FLOAT: self.float32, KernelVariant.INTEGER: self.integer,
                KernelVariant.HYBRID: self.hybrid}[variant]

    def everywhere(self) -> frozenset[str]:
        """What may be fused before the kernel variant is known (before quantization)."""
        return self.float32 & self.integer & self.hybrid


# ---- facts the graph passes read ------------------------------------------------------


@dataclass(frozen=True)
class Affine:
    """An op computing x * scale + shift with constant scale/shift (either may be None)."""

    x: str
    scale: np.ndarray | None = None
    shift: np.ndarray | None = None


# ---- values an integer kernel refuses at invoke --------------------------------------------


class Refused(Enum):
    """Input values on which a LiteRT integer kernel stops the whole invoke with an error."""

    ZERO_POINT = "zero_point"   # the value equal to the zero point (real 0): DIV's divisor
    NEGATIVE = "negative"       # values below the zero point (real < 0): SQRT


@dataclass(frozen=True)
class IntegerRefusal:
    """The integer kernel fails at invoke when input `index` holds a `values` value. The mark
    phase keeps the op float unless the input's grid cannot hold such a value: a file tflq
    writes must never be refused by LiteRT on any input."""

    index: int
    values: Refused
    source: str  # the kernel check, for the reason shown to the user


# ---- test cases that live with the op ---------------------------------------------------


@dataclass
class Case:
    """One small ONNX model exercising an op: `nodes` over graph inputs `inputs` and `consts`."""

    name: str
    nodes: list[Any]
    inputs: dict[str, np.ndarray]
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: tuple[str, ...] = ("y",)
    opset: int = 17
    quantize: bool = True  # False: skip the quantized check (kernel lacks the type, etc.)
    calib_inputs: dict[str, np.ndarray] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # ConvertConfig fields for this case
    tolerance: float = 1e-4  # relative error allowed against onnxruntime in the conversion test
    # The TFLite kinds the converted case must contain (None: the spec's own kind; () for an ONNX
    # op that static shapes fold into a constant, such as Range or ConstantOfShape).
    emits: tuple[str, ...] | None = None
    # Output steps a quantized run may add where the case's lowering computes more than its
    # spec's kind does (GridSample: a weighted sum of 4 GATHERs, Calibrated's budget); None: the rule's.
    quant_steps: float | None = None
    # The lowering keeps some of its ops float by design (GridSample's coordinate arithmetic):
    # only the 8-bit full-quantization test runs it quantized, the all-integer suites do not.
    float_parts: bool = False


def rand(*shape: int, seed: int = 0, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Seeded uniform float32 test data."""
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(np.float32)


# ---- the spec --------------------------------------------------------------------------


class OpSpec:
    """Everything tflq knows about one TFLite op kind (one class per kind; see STYLE.md §4).

    Subclasses set the class attributes and override the methods they need:
    - from_onnx(node, ctx): validate the ONNX node, then add IR ops through ctx;
    - reference(*inputs, **attrs): float numpy kernel on the NHWC graph, returns a tuple;
    - options(attrs): the generated FlatBuffers options object (e.g. Conv2DOptionsT) or None;
    - version(op, graph): the op version TFLite's versioning rules give for these types.
    """

    kind: ClassVar[str] = ""
    onnx_types: ClassVar[tuple[str, ...]] = ()
    Attrs: ClassVar[type] = NoAttrs
    layout: ClassVar[LayoutRule] = Transparent()
    quant: ClassVar[QuantRule] = FloatOnly()
    weights: ClassVar[tuple[Weight, ...]] = ()
    bias: ClassVar[Int32Bias | None] = None
    # Attrs has a `fused_activation` field, and this says which values the kernels apply.
    fused_activation: ClassVar[FusedActivations | None] = None
    row_wise: ClassVar[bool] = False  # acts on each row of the last axis independently
    # ADD: the output is the sum of the two inputs (an additive attention mask is found by it).
    sums_inputs: ClassVar[bool] = False
    # f(s * x) = s * f(x) for every per-channel s > 0 (RELU, LEAKY_RELU, PRELU): cross-layer
    # equalization may rescale the layers on both sides of it
    positively_homogeneous: ClassVar[bool] = False
    # y = f(x) element by element from one input (activations): analytic bias correction takes
    # the mean of f over the normal a BatchNorm trained its input toward
    elementwise: ClassVar[bool] = False
    # Validity facts of the ONNX ops this spec imports (tflq.ops.checks), run right after loading.
    onnx_checks: ClassVar[tuple[Any, ...]] = ()
    # Evaluated at import when every input is constant (not QUANTIZE/DEQUANTIZE/FAKE_QUANT, which
    # carry quantization meaning).
    folds_at_import: ClassVar[bool] = True
    integer_refusal: ClassVar[IntegerRefusal | None] = None  # see IntegerRefusal
    # The input the op divides by. Kept float in a quantized model, the op reads it off a grid
    # that always holds 0 (an int8 ADD of var + 1e-5 rounds to it on a constant row), so the
    # rewrite holds it at its calibrated extreme when calibration never saw it reach 0.
    divisor: ClassVar[int | None] = None
    # The output is a factor other values are multiplied by (RSQRT's 1/std in a LayerNorm): its
    # relative precision is what counts, so an 8-bit grid over a range of many octaves (a
    # constant row in calibration gives 1/sqrt(eps)) keeps it and its readers float.
    scale_factor_output: ClassVar[bool] = False
    cases: ClassVar[list[Case]] = []

    def from_onnx(self, node, ctx) -> None:
        raise NotImplementedError(f"{self.kind} has no ONNX importer")

    def reference(self, *inputs: np.ndarray, **attrs) -> tuple[np.ndarray, ...]:
        raise NotImplementedError(f"{self.kind} has no reference kernel")

    def options(self, attrs) -> Any:
        return None

    def onnx_equivalent(self, op: Op, graph: Graph, onnx_axes: list[int]) -> Any:
        """(ONNX nodes, initializers) computing `op`'s outputs, under their own names and with the
        same values, from its inputs' ONNX tensors; onnx_axes[i]: the ONNX axis of the op's
        tensors' axis i. Lets calibration's onnxruntime engine compute a lowered op in
        onnxruntime (tflq.calibration.engines). None: the reference kernel computes it."""
        return None

    def extremes_from_input(self, op: Op, graph: Graph) -> tuple[float, ...] | None:
        """The values `op`'s output holds besides those of its first input, when it holds all of
        those and only those (an explicit PAD: its padding value; () if it pads nothing): its
        minimum and maximum then follow from the input's. None: they do not."""
        return None

    def nonzero_test_of(self, op: Op, graph: Graph) -> str | None:
        """The tensor whose `!= 0` this op's bool output is (a CAST to bool); None: no such test."""
        return None

    def inputs_read_as_zero(self, op: Op, graph: Graph) -> tuple[int, ...]:
        """The inputs whose values reach the output only where they are 0 (a select of x where
        x != 0 is false): replacing such an input by a 0 changes no output value."""
        return ()

    def negligible_below_row_max(self, op: Op) -> float | None:
        """How far below its row's maximum an input value may be raised without changing the
        output by more than 1e-7 of the row (SOFTMAX: exp weighs it by e^-16 at 16 / beta);
        None where every input value matters."""
        return None

    def written_once(self, op: Op, graph: Graph) -> int | None:
        """The input whose values `op` writes into a tensor of zeros, each output value one of
        them or a zero (SCATTER_ND with constant index rows that never repeat); None: no such
        input."""
        return None

    def version(self, op: Op, graph: Graph) -> int:
        return 1

    def kernel_variant(self, op: Op, graph: Graph) -> KernelVariant:
        """The LiteRT kernel variant that runs this op, from its tensors' types."""
        if not graph.tensors[op.outputs[0]].dtype.is_float:
            return KernelVariant.INTEGER
        if any(not graph.tensors[op.inputs[w.index]].dtype.is_float for w in self.weights
               if w.index < len(op.inputs) and op.inputs[w.index]):
            return KernelVariant.HYBRID
        return KernelVariant.FLOAT

    def affine(self, op: Op, graph: Graph) -> Affine | None:
        """This op as x * scale + shift by constants, if it is one (BatchNorm folding)."""
        return None

    def acts_on_rows(self, op: Op, graph: Graph) -> bool:
        """Whether input 0's rows along the last axis map to the output's rows one by one, each
        alone (the other inputs constant): then the op commutes with any permutation of the
        axes before the last (a transpose that keeps the last axis in place can sink past it)."""
        return self.row_wise

    def keeps_channel_means(self, op: Op, graph: Graph) -> bool:
        """Whether each channel of the output (last axis) has the mean over positions of the
        same channel of input 0, borders aside (analytic bias correction follows such ops back
        to a BatchNorm's statistics: average pools, spatial means, zero padding, reshapes that
        keep the channels last)."""
        return False

    def matmul_rows(self, x: np.ndarray, weight_shape: tuple[int, ...], attrs) -> np.ndarray | None:
        """The op's output before bias, for data input x, as rows @ filters^T per group g, the
        filters weight_to_filters(w): rows [G, M, K]; None for an op that is no such product
        (learned rounding, quantize/rounding.py)."""
        return None

    def weight_to_filters(self, w: np.ndarray) -> np.ndarray:
        """The weight as filters [G, O, K] (default: one group, a row per output channel 0)."""
        return w.reshape(1, w.shape[0], -1)

    def filters_to_weight(self, filters: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return filters.reshape(shape)

    def hybrid_attrs(self, op: Op) -> dict[str, Any]:
        """Attribute changes for running `op` on LiteRT's float-input/int8-weight kernel."""
        return {}

    def hybrid_supported(self, op: Op, graph: Graph) -> bool:
        """Whether LiteRT's float-input/int8-weight kernel accepts this particular op."""
        return any(w.hybrid for w in self.weights)

    # helpers for subclasses
    @staticmethod
    def attr_kwargs(attrs) -> dict[str, Any]:
        return {f.name: getattr(attrs, f.name) for f in fields(attrs)}

    def __repr__(self) -> str:
        return f"<OpSpec {self.kind}>"
