"""Which float ops of a graph only carry integers from one integer tensor to another (index and
length arithmetic written in float), a fact of the graph that calibration and the plan share."""
from __future__ import annotations

from tflq.ir.graph import Graph, Op


def integer_arithmetic_ops(graph: Graph) -> list[Op]:
    """The float ops between integers: each made only from integers (a CAST of an integer
    tensor, constants, or such ops) and read only on the way back to an integer type (a CAST
    to one). Index and length arithmetic written in float (int64 division as tflq lowers it,
    torch's lengths.float() / stride then floor and long, T5's log-spaced relative position
    buckets of run-time positions) is exact in float, and one step of a calibrated grid off is
    another index; the float values never reach an activation. They may hold what no grid
    holds, too: the bucket's log(0) = -inf that a clamp then replaces."""
    from_integers: set[str] = set()
    for op in graph.ops:
        sources = [n for n in op.inputs if n and not graph.is_constant(n)]
        floats = [n for n in op.outputs if n and graph.tensors[n].dtype.is_float]
        if floats and sources and all(not graph.tensors[n].dtype.is_float or n in from_integers
                                      for n in sources):
            from_integers.update(floats)
    consumers = graph.consumer_map()
    outputs = set(graph.outputs)
    to_integers: set[str] = set()
    kept: list[Op] = []
    for op in reversed(graph.ops):
        floats = [n for n in op.outputs if n and graph.tensors[n].dtype.is_float]
        if not floats or not all(n in from_integers and n not in outputs and consumers.get(n) and
                                 all(_toward_integers(graph, reader, to_integers) for reader in consumers[n])
                                 for n in floats):
            continue
        to_integers.update(floats)
        kept.append(op)
    kept.reverse()
    return kept


def integer_arithmetic_tensors(graph: Graph) -> set[str]:
    """The float tensors the ops of integer_arithmetic_ops make: none is ever quantized."""
    return {n for op in integer_arithmetic_ops(graph) for n in op.outputs
            if n and graph.tensors[n].dtype.is_float}


def _toward_integers(graph: Graph, reader: Op, to_integers: set[str]) -> bool:
    """`reader` makes integers of its float inputs (a CAST to an integer type), or float values
    that only become integers (in `to_integers`)."""
    floats = [n for n in reader.outputs if n and graph.tensors[n].dtype.is_float]
    if not floats:
        return reader.kind == "CAST"
    return all(n in to_integers for n in floats)
