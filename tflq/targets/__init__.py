"""Deployment targets as data: one profile per runtime (litert.py, xnnpack.py, tflm.py), each fact
with the source it comes from. Quantization consults the chosen profile; `tflq check` tests any
.tflite file against one."""
from __future__ import annotations

from tflq.errors import InvalidConfigError
from tflq.ir.dtypes import DType
from tflq.targets.base import Target
from tflq.targets.litert import LITERT
from tflq.targets.tflm import TFLM
from tflq.targets.xnnpack import XNNPACK

TARGETS: dict[str, Target] = {t.name: t for t in (LITERT, XNNPACK, TFLM)}
DEFAULT_TARGET = "litert"


def get_target(name: str | Target) -> Target:
    """The profile called `name`; an unknown name is an error listing the known ones."""
    if isinstance(name, Target):
        return name
    found = TARGETS.get(name)
    if found is None:
        raise InvalidConfigError(f"unknown target '{name}'; known targets: {', '.join(TARGETS)}",
                                 reason_code="unknown_target")
    return found


def island_dtype(target: str | Target, kind: str, dtype: DType) -> DType | None:
    """The type an op of `kind` runs in inside a `dtype` model where it has no kernel in `dtype`
    (its rule's QuantRule.island_dtype: int8 in a uint8 model), where the target runs it so;
    None where it is better left a float island: the target lacks the kernel, or the target's
    default delegate takes the kind in float only (XNNPACK's BATCH_MATMUL, RSQRT, EXP...), so an
    integer op would split its graph onto LiteRT's builtin kernels while the float island stays
    delegated: nn.TransformerEncoder in uint8 (2 layers, d 128, 64 tokens) ran 2x slower as
    int8 islands (535 -> 1170 us on one core), as accurate as with float islands (30.0 -> 30.2
    dB worst at d 32)."""
    from tflq import ops as registry

    target = get_target(target)
    island = registry.spec(kind).quant.island_dtype(dtype)
    if island is None or target.integer_reason(kind, island) is not None:
        return None
    if target.default_delegate is not None:
        delegate = get_target(target.default_delegate).delegate
        if delegate is not None and kind in delegate.float_kinds and kind not in delegate.integer_kinds:
            return None
    return island
