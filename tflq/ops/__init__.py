"""The op registry: every module in this package registers its OpSpecs with @register."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from tflq.ops.base import FusedActivations, OpSpec

_BY_KIND: dict[str, OpSpec] = {}
_BY_ONNX: dict[str, OpSpec] = {}


def register(cls: type[OpSpec]) -> type[OpSpec]:
    """Class decorator: make an OpSpec known by its TFLite kind and its ONNX op types."""
    spec = cls()
    if not spec.kind:
        raise TypeError(f"{cls.__name__} has no kind")
    if spec.fused_activation is not None and not isinstance(spec.fused_activation, FusedActivations):
        raise TypeError(f"{spec.kind}.fused_activation must say which activations its kernels "
                        f"apply (a FusedActivations), not {spec.fused_activation!r}")
    if spec.kind in _BY_KIND:
        raise TypeError(f"two specs for {spec.kind}")
    _BY_KIND[spec.kind] = spec
    for onnx_type in spec.onnx_types:
        if onnx_type in _BY_ONNX:
            raise TypeError(f"ONNX {onnx_type} claimed by {_BY_ONNX[onnx_type].kind} and {spec.kind}")
        _BY_ONNX[onnx_type] = spec
    return cls


def register_family(base: type[OpSpec], *members: dict[str, Any]) -> list[type[OpSpec]]:
    """Register one spec per member of a family whose specs differ only in data (comparisons,
    logical ops, float-only math): each is `base` with the member's class attributes (kind,
    onnx_types, numpy_fn, Options, cases, __doc__, ...), named after its kind (LESS_EQUAL ->
    LessEqual)."""
    made = []
    for attrs in members:
        name = "".join(part.title() for part in attrs["kind"].split("_"))
        body = {"__module__": base.__module__, "__qualname__": name, **attrs}
        if "numpy_fn" in body:
            body["numpy_fn"] = staticmethod(body["numpy_fn"])
        made.append(register(type(name, (base,), body)))
    return made


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def spec(kind: str) -> OpSpec:
    """The spec of a TFLite op kind (KeyError if tflq cannot emit it)."""
    return _BY_KIND[kind]


def importer(onnx_type: str) -> OpSpec | None:
    """The spec whose from_onnx handles this ONNX op type, or None."""
    return _BY_ONNX.get(onnx_type)


def all_specs() -> list[OpSpec]:
    return [_BY_KIND[k] for k in sorted(_BY_KIND)]


def onnx_types() -> dict[str, OpSpec]:
    return dict(sorted(_BY_ONNX.items()))


_load_all()
