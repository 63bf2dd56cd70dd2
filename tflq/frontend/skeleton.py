"""A model's skeleton for ONNX's shape inference and checker: the model without its large
initializers, each declared as a graph input of its type and shape instead.

Both serialize the whole model and parse their answer back, weights included: on ResNet-18 (46 MB
of weights) the loader's four passes took about half a second of a five-second conversion, on
the skeleton a few milliseconds. No output shape depends on a large tensor's values: what shape
inference reads of a constant (shapes, axes, pads, scales, repeats, counts) is a few numbers, so
the skeleton infers what the model infers. The large tensors' data is checked by
validate.check_structure (types, sizes, external data).
"""
from __future__ import annotations

import math

import onnx

# Initializers with more elements than this lose their data in the skeleton.
SKELETON_ELEMENTS = 1024


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A new model with `model`'s nodes, inputs, outputs and value_info (their copies), whose
    large initializers are graph inputs; `model` itself when it has none (nothing is copied)."""
    graph = model.graph
    declared = {vi.name for vi in graph.input}
    # IR version 3 lists every initializer as a graph input; the checker requires it (kept whole).
    large = [t for t in graph.initializer if t.name not in declared and model.ir_version > 3
             and math.prod(t.dims) > SKELETON_ELEMENTS]
    if not large:
        return model
    result = onnx.ModelProto()
    _copy_fields(model, result, skip="graph")
    _copy_fields(graph, result.graph, skip="initializer")
    names = {t.name for t in large}
    result.graph.initializer.extend(t for t in graph.initializer if t.name not in names)
    result.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                              for t in large)
    return result


def take_inferred(model: onnx.ModelProto, inferred: onnx.ModelProto) -> None:
    """Give `model` what shape inference on its skeleton found: the nodes (their subgraphs'
    value_info), the outputs' types and the value_info (its inputs and initializers stay)."""
    for name in ("node", "output", "value_info"):
        field = getattr(model.graph, name)
        del field[:]
        field.extend(getattr(inferred.graph, name))


def _copy_fields(source, target, skip: str) -> None:
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if field.is_repeated:
            getattr(target, field.name).extend(value)
        elif field.type == field.TYPE_MESSAGE:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)
