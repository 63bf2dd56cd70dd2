"""ONNX sequence values resolved during the folding sweep: a list of tensors whose length and
elements are known once Loops are unrolled.

torch.jit.script exports a Python list appended in a loop (`ys.append(h)`, then `torch.stack(ys)`
or `torch.cat(ys)`) as SequenceEmpty / SequenceInsert in the Loop body and ConcatFromSequence after
it. tflq writes no TFLite sequence type: once the Loop is unrolled, each sequence value is a known
list of tensor names, so SequenceConstruct, SequenceEmpty, SequenceInsert, SequenceErase,
SplitToSequence and Identity build lists, SequenceLength folds, SequenceAt becomes an Identity of an
element and ConcatFromSequence a Concat (of Unsqueezes for new_axis=1). A sequence read any other
way, or at a position that depends on the data, is refused with the node's name.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper

from tflq.frontend.control_flow import unsqueeze

if TYPE_CHECKING:
    from tflq.frontend.fold import Item, Sweep

PRODUCERS = {"SequenceEmpty", "SequenceConstruct", "SequenceInsert", "SequenceErase", "SplitToSequence"}
READERS = {"SequenceAt", "SequenceLength", "ConcatFromSequence"}
OPS = PRODUCERS | READERS
HINT = ("tflq resolves sequences whose length and element positions are constants once input "
        "shapes are static (a list appended in a Loop it unrolls)")


def handles(sweep: Sweep, node: onnx.NodeProto) -> bool:
    """Whether the sweep hands `node` to expand(): a sequence op, or any op reading a sequence."""
    if node.domain not in ("", "ai.onnx"):
        return False
    return node.op_type in OPS or any(n in sweep.sequences for n in node.input if n)


def _refuse(sweep: Sweep, node: onnx.NodeProto, reason: str, message: str) -> list[Item]:
    sweep.refuse(node, reason, message, HINT)
    sweep.kept.append(node)
    return []


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _position(sweep: Sweep, node: onnx.NodeProto, index: int, length: int, insert: bool,
              default: int) -> int | None:
    """The constant position input `index` (negative counts from the end), or None."""
    name = node.input[index] if index < len(node.input) else ""
    if not name:
        return default
    value = sweep.constants.get(name)
    if value is None or value.size != 1:
        return None
    pos = int(np.asarray(value).reshape(-1)[0])
    if pos < 0:
        pos += length
    return pos if 0 <= pos <= length - (0 if insert else 1) else -1


def expand(sweep: Sweep, node: onnx.NodeProto) -> list[Item]:
    """The nodes that stand for `node` (none for one that only builds a list), or a refusal."""
    items = _expand(sweep, node)
    out = node.output[0] if node.output else ""
    if out in sweep.sequences and out in {vi.name for vi in sweep.model.graph.output}:
        return _refuse(sweep, node, "sequence_output", f"its output '{out}' is a sequence and a "
                       f"graph output; a TFLite file has tensor outputs only")
    return items


def _expand(sweep: Sweep, node: onnx.NodeProto) -> list[Item]:
    op, seqs = node.op_type, sweep.sequences
    inputs = list(node.input)
    if op == "Identity":
        seqs[node.output[0]] = list(seqs[inputs[0]])
        return []
    if op not in OPS:
        name = next(n for n in inputs if n in seqs)
        return _refuse(sweep, node, "sequence_input",
                       f"it reads the sequence '{name}'; tflq turns sequences into tensors only "
                       f"through SequenceAt, SequenceLength and ConcatFromSequence")
    if op == "SequenceEmpty":
        seqs[node.output[0]] = []
        return []
    if op == "SequenceConstruct":
        seqs[node.output[0]] = inputs
        return []
    if op == "SplitToSequence":
        return _split(sweep, node)
    if inputs[0] not in seqs:
        return _refuse(sweep, node, "unknown_sequence",
                       f"its sequence '{inputs[0]}' is not one tflq could follow")
    items = seqs[inputs[0]]
    if op == "SequenceLength":
        sweep.set_constant(node.output[0], np.array(len(items), np.int64))
        sweep.result.folded += 1
        return []
    if op in ("SequenceInsert", "SequenceErase", "SequenceAt"):
        insert = op == "SequenceInsert"
        index = 2 if insert else 1
        pos = _position(sweep, node, index, len(items), insert, len(items) if insert else len(items) - 1)
        if pos is None:
            return _refuse(sweep, node, "data_dependent_sequence",
                           f"its position '{inputs[index]}' depends on the input data")
        if pos < 0:
            return _refuse(sweep, node, "bad_sequence_position",
                           f"its position is outside the sequence of {len(items)} tensor(s)")
        if insert:
            seqs[node.output[0]] = items[:pos] + [inputs[1]] + items[pos:]
            return []
        if op == "SequenceErase":
            seqs[node.output[0]] = items[:pos] + items[pos + 1:]
            return []
        return [helper.make_node("Identity", [items[pos]], [node.output[0]], name=node.name)]
    # ConcatFromSequence
    if not items:
        return _refuse(sweep, node, "empty_sequence", "it concatenates an empty sequence")
    axis, new_axis = int(_attr(node, "axis", 0)), int(_attr(node, "new_axis", 0))
    parts, out = list(items), []
    if new_axis:
        shape = sweep.shape_of(items[0])
        if shape is None:
            return _refuse(sweep, node, "data_dependent_shape",
                           f"the rank of its elements ('{items[0]}') is unknown")
        axis %= len(shape) + 1
        parts = []
        for item in items:
            item_node, name = unsqueeze(sweep, item, axis, node.name)
            out.append(item_node)
            parts.append(name)
    sweep.result.folded += 1
    return [*out, helper.make_node("Concat", parts, [node.output[0]], axis=axis, name=node.name)]


def _split(sweep: Sweep, node: onnx.NodeProto) -> list[Item]:
    """SplitToSequence as a Split (and a Squeeze of each part when keepdims=0 and no split given)."""
    x = node.input[0]
    split = node.input[1] if len(node.input) > 1 else ""
    shape = sweep.shape_of(x)
    if shape is None:
        return _refuse(sweep, node, "data_dependent_shape", f"the shape of '{x}' is unknown")
    axis = int(_attr(node, "axis", 0)) % len(shape)
    keepdims = int(_attr(node, "keepdims", 1))
    length = shape[axis]
    if split:
        value = sweep.constants.get(split)
        if value is None:
            return _refuse(sweep, node, "data_dependent_sequence",
                           f"its split '{split}' depends on the input data")
        value = np.asarray(value, np.int64)
        if value.ndim == 0:
            chunk = int(value)
            sizes = [chunk] * (length // chunk) + ([length % chunk] if length % chunk else [])
        else:
            sizes = [int(v) for v in value]
        squeeze = False
    else:
        sizes, squeeze = [1] * length, not keepdims
    if not sizes or sum(sizes) != length or min(sizes) <= 0:
        return _refuse(sweep, node, "bad_split", f"its split {sizes} does not cover the {length} "
                                                 f"elements of axis {axis}")
    parts = [sweep.unique(f"{node.output[0]}/part{k}") for k in range(len(sizes))]
    items: list[Item] = []
    if sweep.opset >= 13:
        sizes_name = sweep.unique(f"{node.name}/sizes")
        sweep.set_constant(sizes_name, np.array(sizes, np.int64))
        items.append(helper.make_node("Split", [x, sizes_name], parts, axis=axis, name=node.name))
    else:
        items.append(helper.make_node("Split", [x], parts, axis=axis, split=sizes, name=node.name))
    if squeeze:
        squeezed = []
        for part in parts:
            name = sweep.unique(f"{part}/squeezed")
            if sweep.opset >= 13:
                axes = sweep.unique(f"{node.name}/axes")
                sweep.set_constant(axes, np.array([axis], np.int64))
                items.append(helper.make_node("Squeeze", [part, axes], [name], name=sweep.unique(f"{name}/node")))
            else:
                items.append(helper.make_node("Squeeze", [part], [name], axes=[axis],
                                              name=sweep.unique(f"{name}/node")))
            squeezed.append(name)
        parts = squeezed
    sweep.sequences[node.output[0]] = parts
    sweep.result.folded += 1
    return items
