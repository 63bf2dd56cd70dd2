"""ConvertConfig: the one frozen description of a conversion, shared by the CLI and the Python API."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping


class Mode(Enum):
    FLOAT = "float"
    WEIGHTS_ONLY = "weights-only"
    FULL = "full"


class QuantDType(Enum):
    UINT8 = "uint8"
    INT8 = "int8"


class CalibMethod(Enum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    MSE = "mse"
    ENTROPY = "entropy"


class IOType(Enum):
    FLOAT = "float"
    UINT8 = "uint8"
    INT8 = "int8"


@dataclass(frozen=True)
class ConvertConfig:
    """What to convert and how. Paths are strings; `calib` may also be an iterable of
    {input_name: ndarray} samples (Python API only)."""

    model: str
    output: str | None = None
    mode: Mode | None = None  # None: float, or full for a model with Quantize/DequantizeLinear
    dtype: QuantDType = QuantDType.UINT8
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    keep_io_layout: bool = False
    min_weight_elements: int = 1024
    calib: Any = None
    calib_samples: int | None = None
    calib_method: CalibMethod = CalibMethod.MINMAX
    percentile: float = 99.99
    stats: tuple[str, ...] = ()
    save_stats: str | None = None
    report: str | None = None  # where convert() writes the summary as JSON
    io_type: IOType = IOType.FLOAT
    float_ops: tuple[str, ...] = ()
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: float | None = None
    show_progress: bool = False

    def __post_init__(self) -> None:
        for name, enum in (("mode", Mode), ("dtype", QuantDType), ("calib_method", CalibMethod),
                           ("io_type", IOType)):
            value = getattr(self, name)
            if not isinstance(value, enum) and not (name == "mode" and value is None):
                object.__setattr__(self, name, enum(value))
        object.__setattr__(self, "input_shapes", {k: tuple(int(d) for d in v)
                                                  for k, v in dict(self.input_shapes).items()})
        object.__setattr__(self, "float_ops", tuple(self.float_ops))
        object.__setattr__(self, "stats", tuple(self.stats))


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
