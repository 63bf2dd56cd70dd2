"""Deployment targets as data: one profile per runtime (litert.py, xnnpack.py, tflm.py), each fact
with the source it comes from. Quantization consults the chosen profile; `tflq check` tests any
.tflite file against one."""
from __future__ import annotations

from tflq.errors import InvalidConfigError
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
