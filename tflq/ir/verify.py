"""The IR verifier: small named checks that every pass must leave true."""
from __future__ import annotations

from typing import Callable

from tflq.ir.graph import Graph

Check = Callable[[Graph], list[str]]


def inputs_are_defined(graph: Graph) -> list[str]:
    """Every op input is a graph input, a constant, or produced by an earlier op."""
    available = set(graph.inputs) | {n for n, t in graph.tensors.items() if t.is_constant}
    problems = []
    for op in graph.ops:
        for name in op.inputs:
            if name and name not in available:
                problems.append(f"{op.kind} ({op.origin}) reads '{name}' before it is produced")
        available.update(op.outputs)
    for name in graph.outputs:
        if name not in available:
            problems.append(f"graph output '{name}' is never produced")
    return problems


def tensors_exist(graph: Graph) -> list[str]:
    names = [n for op in graph.ops for n in op.inputs + op.outputs if n] + graph.inputs + graph.outputs
    return [f"'{n}' is not a tensor" for n in dict.fromkeys(names) if n not in graph.tensors]


def single_producer(graph: Graph) -> list[str]:
    seen: set[str] = set()
    problems = []
    for op in graph.ops:
        for name in op.outputs:
            if name in seen or name in graph.inputs:
                problems.append(f"'{name}' is produced twice")
            seen.add(name)
    return problems


def constants_match_shapes(graph: Graph) -> list[str]:
    return [f"constant '{t.name}' has data of shape {t.data.shape}, declared {t.shape}"
            for t in graph.tensors.values() if t.is_constant and tuple(t.data.shape) != t.shape]


def quantized_tensors_have_params(graph: Graph) -> list[str]:
    """8/16-bit tensors carry QuantParams, except plain integers between CASTs (ONNX Cast to uint8)."""
    problems = []
    for op in graph.ops:
        if op.kind == "CAST":
            continue
        for name in op.inputs + op.outputs:
            t = graph.tensors.get(name) if name else None
            if t is not None and t.dtype.name in ("INT8", "UINT8", "INT16") and t.quant is None:
                problems.append(f"{op.kind} ({op.origin}): 8/16-bit tensor '{name}' has no quantization")
    return problems


def ops_are_emittable(graph: Graph) -> list[str]:
    from tflq import ops as registry

    problems = []
    for op in graph.ops:
        try:
            registry.spec(op.kind)
        except KeyError:
            problems.append(f"no spec can emit {op.kind} ({op.origin})")
    return problems


def fused_activations_are_applied(graph: Graph) -> list[str]:
    """Every fused_activation_function is one the kernel that runs the op applies (LiteRT's ADD
    silently ignores a fused TANH; the float FULLY_CONNECTED refuses it)."""
    from tflq import ops as registry

    problems = []
    for op in graph.ops:
        try:
            table = registry.spec(op.kind).fused_activation
        except KeyError:
            continue  # ops_are_emittable reports it
        if table is None:
            continue
        variant = registry.spec(op.kind).kernel_variant(op, graph)
        if op.attrs.fused_activation not in table.applied(variant):
            problems.append(f"{op.kind} ({op.origin}): the {variant.value} kernel does not apply "
                            f"the fused activation {op.attrs.fused_activation}")
    return problems


CHECKS: list[Check] = [tensors_exist, inputs_are_defined, single_producer, constants_match_shapes,
                       quantized_tensors_have_params, ops_are_emittable, fused_activations_are_applied]


def verify(graph: Graph, after: str = "") -> None:
    """Raise AssertionError listing every broken invariant (an internal error, not a user's)."""
    problems = [p for check in CHECKS for p in check(graph)]
    if problems:
        where = f" after {after}" if after else ""
        raise AssertionError(f"invalid graph{where}:\n  " + "\n  ".join(problems[:20]))
