"""ConvertConfig: the one frozen description of a conversion, shared by the CLI and the Python API."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping

from tflq.ir.dtypes import DType


class Mode(Enum):
    FLOAT = "float"
    WEIGHTS_ONLY = "weights-only"
    FULL = "full"
    FLOAT16 = "float16"  # float constants stored as float16 behind DEQUANTIZE


# The activation types of --dtype (int16 activations always come with int8 weights: "int16x8"),
# and the integer types --io-type offers besides float.
QUANT_DTYPES = (DType.UINT8, DType.INT8, DType.INT16)
IO_DTYPES = (DType.UINT8, DType.INT8, DType.INT16)


def dtype_name(dtype: DType) -> str:
    """The CLI's name of an activation type of --dtype: uint8, int8, int16x8."""
    return "int16x8" if dtype == DType.INT16 else dtype.name.lower()


def _dtype(value: Any, allowed: tuple[DType, ...], option: str, none: str | None = None,
           names=lambda d: d.name.lower()) -> DType | None:
    """`value` (a DType, or its name as the CLI spells it) as one of `allowed`; `none` names the
    value that stands for None ("float" for float I/O)."""
    if value is None or (none is not None and value == none):
        return None
    if isinstance(value, str):
        value = {names(d): d for d in allowed}.get(value, value)
    if value not in allowed:
        choices = [names(d) for d in allowed] + ([none] if none else [])
        raise ValueError(f"{option} must be one of {', '.join(choices)}")
    return value


class CalibMethod(Enum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    MSE = "mse"
    ENTROPY = "entropy"


class CalibEngine(Enum):
    """What runs the float graph during calibration (tflq.calibration.engines)."""

    AUTO = "auto"                # onnxruntime when it can be imported, else numpy
    NUMPY = "numpy"              # tflq's reference interpreter
    ONNXRUNTIME = "onnxruntime"


@dataclass(frozen=True)
class ConvertConfig:
    """What to convert and how. Paths are strings; `calib` may also be an iterable of
    {input_name: ndarray} samples (Python API only)."""

    model: str
    output: str | None = None
    mode: Mode | None = None  # None: float, or full for a model with Quantize/DequantizeLinear
    dtype: DType = DType.UINT8  # the activation type of the quantized modes
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    keep_io_layout: bool = False
    min_weight_elements: int = 1024
    calib: Any = None
    calib_samples: int | None = None
    calib_convert: bool = False  # cast calibration arrays of another numeric type to the input's
    calib_method: CalibMethod = CalibMethod.MINMAX
    calib_engine: CalibEngine = CalibEngine.AUTO
    percentile: float = 99.99
    stats: tuple[str, ...] = ()
    save_stats: str | None = None
    report: str | None = None  # where convert() writes the summary as JSON
    html: str | None = None  # where convert() writes the per-layer report on the calibration samples
    max_tensor_bytes: int = 2 * 1024 ** 3  # no folded, computed or stored tensor may be larger
    io_type: DType | None = None  # None: float model inputs and outputs
    float_ops: tuple[str, ...] = ()
    int16_ops: tuple[str, ...] = ()  # nodes run with int16 activations (int8 weights) in an 8-bit model
    target_sqnr: float | None = None  # dB: promote the fewest layers int8 -> int16 -> float to reach it
    eval_data: Any = None  # what target_sqnr measures on (as calib; None: the first calibration samples)
    accept_below_target: bool = False  # target_sqnr out of reach: write the best model found anyway
    # cross-layer equalization before quantizing; None: where weights are per-tensor (uint8)
    equalize: bool | None = None
    # empirical bias correction on the calibration data; None: where it measurably helps
    bias_correction: bool | None = None
    # "adaround": learned weight rounding for the rounding_layers worst layers, within
    # rounding_seconds (full mode with --calib); "nearest": round to nearest; None: adaround
    # for int16x8 with --calib (within a fixed amount of work), else nearest
    rounding: str | None = None
    rounding_layers: int = 8
    rounding_seconds: float = 30.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: float | None = None
    show_progress: bool = False
    target: str = "litert"  # the runtime the file is for (tflq.targets): litert, xnnpack, tflm
    # Calibration processes: 1 runs in this process; None (the default, as in the CLI) uses the
    # CPUs this process may use once calibration is long enough to gain from it. `executor`, any
    # concurrent.futures.Executor (e.g. Dask's Client.get_executor()), runs the shards instead.
    jobs: int | None = None
    executor: Any = None
    # weights-only mode inferred from a QDQ model that quantizes only weights: the graph's own
    # weight integers are stored and the constants it keeps float stay float
    only_graph_weights: bool = False

    def __post_init__(self) -> None:
        if not any(self.calib_engine in (e, e.value) for e in CalibEngine):
            from tflq.errors import InvalidConfigError

            raise InvalidConfigError(f"calib_engine must be one of {[e.value for e in CalibEngine]}, "
                                     f"got {self.calib_engine!r}")
        for name, enum in (("mode", Mode), ("calib_method", CalibMethod), ("calib_engine", CalibEngine)):
            value = getattr(self, name)
            if not isinstance(value, enum) and not (name == "mode" and value is None):
                object.__setattr__(self, name, enum(value))
        object.__setattr__(self, "dtype", _dtype(self.dtype, QUANT_DTYPES, "dtype", names=dtype_name))
        object.__setattr__(self, "io_type", _dtype(self.io_type, IO_DTYPES, "io_type", "float"))
        object.__setattr__(self, "input_shapes", {k: tuple(int(d) for d in v)
                                                  for k, v in dict(self.input_shapes).items()})
        object.__setattr__(self, "float_ops", tuple(self.float_ops))
        object.__setattr__(self, "int16_ops", tuple(self.int16_ops))
        object.__setattr__(self, "stats", tuple(self.stats))
        from tflq.targets import get_target

        get_target(self.target)  # an unknown target is an error naming the known ones
        if self.jobs is not None and (isinstance(self.jobs, bool) or not isinstance(self.jobs, int)
                                      or self.jobs < 1):
            from tflq.errors import InvalidConfigError

            raise InvalidConfigError(f"jobs must be a positive number of processes (or None for "
                                     f"one per CPU), got {self.jobs!r}")


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """'input:1,3,224,224' -> ('input', (1, 3, 224, 224))."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name:
        raise ValueError(f"'{text}' is not NAME:D0,D1,...")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise ValueError(f"'{text}': dimensions must be integers") from None
    if any(d <= 0 for d in shape):
        raise ValueError(f"'{text}': dimensions must be positive")
    return name, shape
