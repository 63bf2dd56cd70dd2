"""Run a float Graph with the ops' numpy reference kernels (calibration and pass checks)."""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from tflq import ops as registry
from tflq.ir.graph import Graph
from tflq.ops.common import apply_activation

TensorHook = Callable[[str, np.ndarray], None]


def run_graph(graph: Graph, feeds: Mapping[str, np.ndarray],
              on_tensor: TensorHook | None = None) -> dict[str, np.ndarray]:
    """Evaluate the graph on `feeds` (graph input name -> array, in the graph's layout).

    `on_tensor(name, value)` is called for every graph input and every op output as soon as it
    is computed; values are dropped once their last consumer has run, so memory stays at the
    live set, not the whole network.
    """
    values: dict[str, np.ndarray] = {}
    last_use: dict[str, int] = {}
    for i, op in enumerate(graph.ops):
        for name in op.inputs:
            last_use[name] = i
    keep = set(graph.outputs)
    for name in graph.inputs:
        value = np.asarray(feeds[name], dtype=graph.tensors[name].dtype.numpy)
        values[name] = value
        if on_tensor is not None:
            on_tensor(name, value)
    for i, op in enumerate(graph.ops):
        spec = registry.spec(op.kind)
        args = []
        for name in op.inputs:
            if not name:
                args.append(None)
            elif name in values:
                args.append(values[name])
            else:
                args.append(graph.tensors[name].data)
        kwargs = spec.attr_kwargs(op.attrs)
        activation = kwargs.pop("fused_activation", "NONE")
        results = spec.reference(*args, **kwargs)
        for name, value in zip(op.outputs, results):
            value = apply_activation(np.asarray(value), activation)
            values[name] = value
            if on_tensor is not None:
                on_tensor(name, value)
        for name in op.inputs:
            if name in values and last_use.get(name) == i and name not in keep:
                del values[name]
    return {name: values[name] if name in values else graph.tensors[name].data
            for name in graph.outputs}
