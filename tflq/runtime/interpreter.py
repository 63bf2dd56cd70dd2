"""Run a Graph with the ops' numpy reference kernels (calibration and pass checks).

Values are real numbers throughout: quantized constants are dequantized once up front, and
QUANTIZE/DEQUANTIZE act as the identity, so a partly quantized graph runs as its float meaning.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from tflq.ir.graph import Graph

TensorHook = Callable[[str, np.ndarray], None]


class GraphRunner:
    """Prepared once per graph (constants, kernels, last uses), then run on many samples."""

    def __init__(self, graph: Graph, round_activations: bool = False) -> None:
        """round_activations: round every quantized activation to its grid as it is made (a
        quantized graph's integer arithmetic, simulated on its real values)."""
        # (here: tflq.ops imports onnx, which a calibration worker of onnxruntime never needs)
        from tflq import ops as registry

        self.graph = graph
        self.grids = {name: t.quant for name, t in graph.tensors.items() if round_activations
                      and t.data is None and t.quant is not None and t.dtype.is_quantized_type}
        self.constants: dict[str, np.ndarray] = {}
        for name, t in graph.tensors.items():
            if t.data is not None:
                self.constants[name] = (t.quant.dequantize(t.data)
                                        if t.quant is not None and not t.dtype.is_float else t.data)
        self.steps = []
        last_use: dict[str, int] = {}
        for i, op in enumerate(graph.ops):
            for name in op.inputs:
                last_use[name] = i
        keep = set(graph.outputs)
        for i, op in enumerate(graph.ops):
            spec = registry.spec(op.kind)
            kwargs = spec.attr_kwargs(op.attrs)
            activation = kwargs.pop("fused_activation", "NONE")
            release = [n for n in dict.fromkeys(op.inputs)
                       if n and last_use.get(n) == i and n not in keep and n not in self.constants]
            self.steps.append((op, spec.reference, kwargs, activation, release))

    def run(self, feeds: Mapping[str, np.ndarray],
            on_tensor: TensorHook | None = None) -> dict[str, np.ndarray]:
        """Evaluate on `feeds` (graph input name -> array, in the graph's layout).

        `on_tensor(name, value)` sees every graph input and op output as soon as it exists;
        values are dropped after their last use, so memory stays at the live set.
        """
        from tflq.ops.common import apply_activation

        values: dict[str, np.ndarray] = dict(self.constants)
        for name in self.graph.inputs:
            t = self.graph.tensors[name]  # integer/boolean inputs keep their type; values are real
            value = np.asarray(feeds[name], dtype=np.float32 if t.quant is not None or t.dtype.is_float
                               else t.dtype.numpy)
            values[name] = value
            if on_tensor is not None:
                on_tensor(name, value)
        for op, kernel, kwargs, activation, release in self.steps:
            args = [values[n] if n else None for n in op.inputs]
            results = kernel(*args, **kwargs)
            for name, value in zip(op.outputs, results):
                value = np.asarray(value)
                if activation != "NONE":
                    # in place when the kernel made a fresh array (no view of an input)
                    fresh = value.flags.writeable and value.dtype == np.float32 and not any(
                        isinstance(a, np.ndarray) and np.may_share_memory(value, a) for a in args)
                    value = apply_activation(value, activation, out=value if fresh else None)
                grid = self.grids.get(name)
                if grid is not None:
                    value = grid.dequantize(grid.quantize(value))
                values[name] = value
                if on_tensor is not None:
                    on_tensor(name, value)
            for name in release:
                del values[name]
        return {name: values[name] for name in self.graph.outputs}


def run_graph(graph: Graph, feeds: Mapping[str, np.ndarray],
              on_tensor: TensorHook | None = None) -> dict[str, np.ndarray]:
    """One-shot GraphRunner(graph).run(feeds, on_tensor)."""
    return GraphRunner(graph).run(feeds, on_tensor)
