"""`tflq check`: every way a .tflite file (tflq's or another converter's) breaks a target's profile,
in each of its subgraphs (the main one, control-flow bodies, other signatures' graphs).

Violations make the file fail on the target (no kernel or version, a tensor type it lacks, kernel
parameters it refuses or computes wrongly with, a limit that fails loading, dynamic shapes where
memory is planned ahead); notes say where it runs slower (an op a delegate leaves to LiteRT's
builtin kernels, splitting the graph). The kernel facts on output and same-scale grids come from
tflq's op registry (each spec's rule names the kernel check it follows); the rest from the
target's profile (tflq/targets).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from tflq import ops as registry
from tflq.backend.tflite_reader import ModelInfo, TensorInfo, read_subgraphs, read_subgraphs_file, read_tflite
from tflq.ir.dtypes import DType
from tflq.ops.base import Calibrated, FixedOutput, FloatOnly, SameAsInput, SameAsOutput
from tflq.targets.base import Effect, OpView, Target, TensorView
from tflq.text import printable

VIOLATION, NOTE = "violation", "note"


@dataclass(frozen=True)
class Finding:
    severity: str        # VIOLATION or NOTE
    code: str            # missing_kernel, op_version, dtype, no_integer_kernel, hybrid,
    #                      fixed_output, same_scale, scale_limit, dynamic_tensor, not_delegated
    op: int | None       # operator index in the subgraph (None: a tensor finding)
    kind: str
    message: str
    subgraph: int = 0    # the subgraph the op or tensor is in (0: the main one)

    def __str__(self) -> str:
        where = f"op {self.op} {self.kind}" if self.op is not None else "tensor"
        if self.subgraph:
            where = f"subgraph {self.subgraph} {where}"
        return f"{self.severity}: {where}: {self.message} [{self.code}]"


@dataclass
class CheckResult:
    file: str
    target: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == VIOLATION]

    @property
    def notes(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == NOTE]

    def to_dict(self) -> dict:
        return {"file": self.file, "target": self.target, "violations": [asdict(f) for f in self.violations],
                "notes": [asdict(f) for f in self.notes]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        lines = [str(f) for f in self.findings]
        lines.append(f"{self.file}: {len(self.violations)} violation(s), {len(self.notes)} note(s) "
                     f"for target {self.target}")
        return "\n".join(printable(line) for line in lines)


def tensor_view(t: TensorInfo) -> TensorView:
    dtype = DType.parse(t.dtype)
    quantized = bool(t.scale)
    return TensorView(dtype, tuple(t.shape), t.data,
                      np.asarray(t.scale, np.float64) if quantized else None,
                      np.asarray(t.zero_point or [0] * len(t.scale), np.int64) if quantized else None,
                      dynamic=any(d < 0 for d in t.shape_signature) or any(d < 0 for d in t.shape))


def _grid(t: TensorView) -> str:
    if t.scale is None:
        return "not quantized"
    if t.scale.size == 1:
        return f"scale {float(t.scale[0]):.6g} zero point {int(t.zero_point.reshape(-1)[0])}"
    return f"{t.scale.size} per-channel scales"


def _same_grid(a: TensorView, b: TensorView) -> bool:
    if a.scale is None or b.scale is None or a.scale.shape != b.scale.shape:
        return False
    return bool(np.allclose(a.scale, b.scale, rtol=1e-6, atol=0) and np.array_equal(a.zero_point, b.zero_point))


def _kernel_rules(k: int, op: OpView, info: ModelInfo) -> list[Finding]:
    """What the registry's rules say about an integer op: fixed and shared grids."""
    try:
        rule = registry.spec(op.kind).quant
    except KeyError:
        return []  # a kind tflq does not emit: no facts beyond the profile's
    found = []
    out = op.outputs[0]
    dtype = out.dtype
    if isinstance(rule, FixedOutput):
        want = rule.output_params(dtype)
        if not np.isclose(float(out.scale.reshape(-1)[0]), float(want.scale), rtol=1e-6, atol=0) or \
                int(out.zero_point.reshape(-1)[0]) != int(want.zero_point):
            found.append(Finding(VIOLATION, "fixed_output", k, op.kind,
                                 f"output has {_grid(out)}; the {dtype.name.lower()} kernel requires "
                                 f"scale {float(want.scale):.6g} zero point {int(want.zero_point)}"))
    if isinstance(rule, Calibrated) and op.data_inputs():
        floor = rule.min_output_scale(dtype, [float(np.max(op.inputs[i].scale)) for i in op.data_inputs()])
        if float(np.max(out.scale)) <= floor:
            found.append(Finding(VIOLATION, "scale_limit", k, op.kind,
                                 f"output scale {float(np.max(out.scale)):.6g} is at or below "
                                 f"{floor:.6g}, where LiteRT's {dtype.name.lower()} kernel aborts loading"))
    shared = isinstance(rule, SameAsInput) or (isinstance(rule, SameAsOutput) and rule.inputs_on_output_grid(dtype))
    if shared and rule.runs_in(dtype):
        for i in op.data_inputs():
            if not _same_grid(op.inputs[i], out):
                name = info.tensors[info.ops[k].inputs[i]].name
                found.append(Finding(VIOLATION, "same_scale", k, op.kind,
                                     f"input {i} '{name}' has {_grid(op.inputs[i])}, the output "
                                     f"{_grid(out)}; the {dtype.name.lower()} kernel computes on one grid"))
    elif not isinstance(rule, FloatOnly) and not rule.runs_in(dtype):
        found.append(Finding(VIOLATION, "no_integer_kernel", k, op.kind,
                             f"LiteRT has no {dtype.name.lower()} kernel for it"))
    return found


def check_subgraphs(infos: list[ModelInfo], target: Target) -> list[Finding]:
    """check_model on each decoded subgraph of a file (read_subgraphs), in file order."""
    return [finding for info in infos for finding in check_model(info, target)]


def check_model(info: ModelInfo, target: Target) -> list[Finding]:
    """Every finding of `target`'s profile on the decoded subgraph `info` (read_tflite: the
    main one), each naming `info.subgraph`."""
    return [replace(f, subgraph=info.subgraph) if info.subgraph else f
            for f in _check_subgraph(info, target)]


def _check_subgraph(info: ModelInfo, target: Target) -> list[Finding]:
    views = [tensor_view(t) for t in info.tensors]
    findings: list[Finding] = []
    for k, o in enumerate(info.ops):
        op = OpView(o.kind, tuple(views[i] if i >= 0 else None for i in o.inputs),
                    tuple(views[i] for i in o.outputs), o.version)
        if not target.has_kind(op.kind):
            findings.append(Finding(VIOLATION, "missing_kernel", k, op.kind, f"{target.title} has no kernel for it"))
            continue
        highest = target.max_version(op.kind)
        if highest is not None and op.version > highest:
            findings.append(Finding(VIOLATION, "op_version", k, op.kind,
                                    f"version {op.version}; {target.title}'s kernel runs versions up to {highest}"))
        condition = target.conditions.get(op.kind)
        refused = condition(op) if condition is not None else None
        if refused is not None:
            findings.append(Finding(VIOLATION, "kernel_condition", k, op.kind, f"{target.title}: {refused}"))
        tensors = [t for t in op.inputs + op.outputs if t is not None]
        if target.tensor_dtypes is not None:
            for t in sorted({t.dtype for t in tensors} - target.tensor_dtypes, key=lambda d: d.name):
                findings.append(Finding(VIOLATION, "dtype", k, op.kind,
                                        f"{target.title} has no {t.name.lower()} tensors"))
        if op.integer:
            reason = target.integer_reason(op.kind, op.outputs[0].dtype)
            if reason is not None and (target.delegate is None or target.integer_kinds is not None):
                findings.append(Finding(VIOLATION, "no_integer_kernel", k, op.kind, reason))
            findings.extend(_kernel_rules(k, op, info))
        elif not target.hybrid_kernels and op.kind != "DEQUANTIZE" and \
                any(t is not None and t.constant and t.quantized for t in op.inputs):
            findings.append(Finding(VIOLATION, "hybrid", k, op.kind,
                                    f"float op reading 8-bit weights; {target.title} has no hybrid kernels"))
        for limit in target.limits:
            for i, value in limit.values(op):
                if not limit.holds(value):
                    refused = limit.effect == Effect.REFUSED
                    findings.append(Finding(
                        VIOLATION if refused else NOTE, "scale_limit", k, op.kind,
                        f"{limit.ratio.value} = {value:.6g} (input {i}) outside "
                        f"{limit.describe().split(' in ')[-1]}: "
                        f"{'loading fails' if refused else target.title + ' leaves it to LiteRT'} "
                        f"({limit.source})"))
        if target.delegate is not None:
            reason = target.delegate.refusal(op)
            if reason is not None:
                findings.append(Finding(NOTE, "not_delegated", k, op.kind,
                                        f"{reason}: runs on LiteRT's builtin kernel"))
    if target.static_shapes:
        for t, view in zip(info.tensors, views):
            if view.dynamic:
                findings.append(Finding(VIOLATION, "dynamic_tensor", None, "",
                                        f"'{t.name}' has dynamic shape {t.shape_signature or t.shape}; "
                                        f"{target.title} plans memory from static shapes"))
    return findings


def check_file(path: str, target: Target) -> CheckResult:
    """check_model on every subgraph of a file (InvalidModelError naming it when it is no TFLite
    file)."""
    return CheckResult(path, target.name, check_subgraphs(read_subgraphs_file(path), target))


def check_tflite(tflite: str | bytes, target: Target) -> CheckResult:
    """check_file on a path, or on a file's bytes."""
    if isinstance(tflite, (bytes, bytearray, memoryview)):
        return CheckResult("(bytes)", target.name, check_subgraphs(read_subgraphs(bytes(tflite)), target))
    return check_file(os.fspath(tflite), target)


def require_target(graph, data: bytes, target: Target) -> list[str]:
    """The violations of the file tflq wrote (`data`, from `graph`, whose ops it lists in order)
    as one error naming each ONNX node; its notes as summary lines. Raises UnsupportedModelError."""
    from tflq.errors import Diagnostic, UnsupportedModelError

    findings = check_model(read_tflite(data), target)
    bad = [f for f in findings if f.severity == VIOLATION]
    if bad:
        diagnostics = [Diagnostic(graph.ops[f.op].origin if f.op is not None else "", f.kind, f.code, f.message)
                       for f in bad]
        raise UnsupportedModelError(f"--target {target.name}: {len(bad)} problem(s) the file would have "
                                    f"on {target.title}", diagnostics, reason_code="target_violation")
    return [f"{target.title}: op {f.op} {f.kind} (node '{graph.ops[f.op].origin}'): {f.message}"
            for f in findings if f.op is not None]
