"""ONNX If, Loop and Scan, expanded in place during the folding sweep.

tflq emits no TFLite IF/WHILE. An If whose condition is a constant once input shapes are static is
replaced by the nodes of its taken branch; one whose condition depends on the data by both branches
and a Where per output, where the branches give outputs of one shape and type. A Loop with a constant
trip count, or a condition that folds, is unrolled one iteration at a time (the condition of each
iteration is folded before the next is emitted); once its condition depends on the data, the
remaining iterations up to the trip count all run, each carried value kept by a Where on whether
the Loop still runs (no scan outputs then: their length would depend on the data). Both are bounded
by MAX_LOOP_ITERATIONS iterations and MAX_UNROLLED_NODES nodes in all. A Scan (opset 9+) always has
a static length once input shapes are static: it is unrolled under the same limits. Anything else
is refused with the node's name and the reason.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper, numpy_helper

if TYPE_CHECKING:
    from tflq.frontend.fold import Item, Sweep

MAX_LOOP_ITERATIONS = 256
MAX_UNROLLED_NODES = 20000

HINT = ("tflq expands a Loop only when its trip count and condition are constants once input shapes "
        "are static, and an If on the data only when both branches give outputs of one shape and "
        "type; export the model with the control flow traced out (e.g. torch.onnx.export without "
        "scripting)")


def instantiate(sweep: Sweep, graph: onnx.GraphProto, prefix: str,
                bindings: dict[str, str]) -> tuple[list[onnx.NodeProto], list[str]]:
    """Copy a subgraph's nodes into the enclosing graph under fresh names.

    `bindings` maps the subgraph's inputs to enclosing values. Returns the nodes and the enclosing
    names of the subgraph's outputs. Names the subgraph reads from enclosing scopes stay as they are.
    """
    mapping = dict(bindings)
    for init in graph.initializer:
        mapping[init.name] = sweep.unique(f"{prefix}/{init.name}")
        sweep.set_constant(mapping[init.name], numpy_helper.to_array(init))
    for node in graph.node:
        for out in node.output:
            if out:
                mapping[out] = sweep.unique(f"{prefix}/{out}")
    for vi in graph.value_info:
        if vi.name in mapping:
            sweep._record_vi(_renamed_vi(vi, mapping[vi.name]))
    nodes = []
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = sweep.unique(f"{prefix}/{node.name or node.op_type}")
        del copy.input[:]
        copy.input.extend(mapping.get(n, n) if n else "" for n in node.input)
        del copy.output[:]
        copy.output.extend(mapping.get(n, n) if n else "" for n in node.output)
        for attr in copy.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_free(attr.g, mapping)
        nodes.append(copy)
    return nodes, [mapping.get(vi.name, vi.name) for vi in graph.output]


def _renamed_vi(vi: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(vi)
    copy.name = name
    return copy


def _rename_free(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    """Rename the enclosing-scope names a nested subgraph reads (not those it defines itself)."""
    inner = dict(mapping)
    for vi in graph.input:
        inner.pop(vi.name, None)
    for init in graph.initializer:
        inner.pop(init.name, None)
    for node in graph.node:
        for k, n in enumerate(node.input):
            if n in inner:
                node.input[k] = inner[n]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_free(attr.g, inner)
        for out in node.output:
            inner.pop(out, None)
    for vi in graph.output:
        if vi.name in inner:
            vi.name = inner[vi.name]


def unsqueeze(sweep: Sweep, src: str, axis: int, base: str) -> tuple[onnx.NodeProto, str]:
    """An Unsqueeze of `src` at `axis` in the model's opset (axes an input from opset 13, an
    attribute before), and its output's name."""
    out = sweep.unique(f"{src}/unsqueezed")
    name = sweep.unique(f"{out}/node")
    if sweep.opset >= 13:
        axes = sweep.unique(f"{base}/axes{axis}")
        sweep.set_constant(axes, np.array([axis], np.int64))
        return helper.make_node("Unsqueeze", [src, axes], [out], name=name), out
    return helper.make_node("Unsqueeze", [src], [out], axes=[axis], name=name), out


def _identity(sweep: Sweep, src: str, dst: str, base: str) -> onnx.NodeProto:
    return helper.make_node("Identity", [src], [dst], name=sweep.unique(f"{base}/output"))


LIMIT_HINT = ("tflq unrolls a Loop (it emits no TFLite WHILE) up to "
              f"{MAX_LOOP_ITERATIONS} iterations and {MAX_UNROLLED_NODES} nodes")


def _keep_refused(sweep: Sweep, node: onnx.NodeProto, reason: str, message: str) -> list[Item]:
    sweep.refuse(node, reason, message, LIMIT_HINT if reason.startswith("loop_too") else HINT)
    sweep.kept.append(node)
    return []


def inline_if(sweep: Sweep, node: onnx.NodeProto) -> list[Item]:
    """The taken branch's nodes, then Identities onto the If's outputs; for a condition of the
    data, both branches and a Where per output (select_branches); or a refusal."""
    cond = sweep.constants.get(node.input[0])
    if cond is None:
        return select_branches(sweep, node)
    if cond.size != 1:
        return _keep_refused(sweep, node, "bad_condition",
                             f"its condition has {cond.size} elements; ONNX wants one")
    branch_name = "then_branch" if bool(cond.reshape(-1)[0]) else "else_branch"
    branch = next(a.g for a in node.attribute if a.name == branch_name)
    nodes, outs = instantiate(sweep, branch, f"{node.name}/{branch_name}", {})
    sweep.result.folded += 1
    return nodes + [_identity(sweep, src, dst, node.name)
                    for src, dst in zip(outs, node.output) if dst]


def _not_selectable(sweep: Sweep, a: str, b: str) -> str | None:
    """Why a Where cannot pick between the values `a` and `b` of the two paths of an If or Loop on
    the data (a sequence; shapes or types that differ or are unknown), or None."""
    if a in sweep.sequences or b in sweep.sequences:
        return "is a sequence"
    shapes = (sweep.shape_of(a), sweep.shape_of(b))
    if None in shapes or shapes[0] != shapes[1] or sweep.dtype_of(a) != sweep.dtype_of(b):
        seen = " vs ".join("unknown" if s is None else str(list(s)) for s in shapes)
        return f"differs in shape or type ({seen})"
    return None


def _as_scalar(sweep: Sweep, src: str, base: str) -> tuple[onnx.NodeProto, str]:
    """A Reshape of the one-element condition `src` to shape [] (a Where then broadcasts it alike
    over any output and layout), and its output's name."""
    shape = sweep.unique(f"{base}/scalar_shape")
    sweep.set_constant(shape, np.zeros(0, np.int64))
    out = sweep.unique(f"{base}/scalar")
    return helper.make_node("Reshape", [src, shape], [out], name=sweep.unique(f"{out}/node")), out


def select_branches(sweep: Sweep, node: onnx.NodeProto) -> list[Item]:
    """An If whose condition depends on the data: both branches run, and each output is
    Where(condition, then, else), which is the If wherever both branches give outputs of one shape
    and type (checked once their shapes are known; else refused). The branch not taken still
    computes, so it costs its ops and its values (NaN from a Log, say) meet calibration."""
    shape = sweep.shape_of(node.input[0])
    if shape is not None and int(np.prod(shape)) != 1:
        return _keep_refused(sweep, node, "bad_condition",
                             f"its condition has {int(np.prod(shape))} elements; ONNX wants one")
    branches = {a.name: a.g for a in node.attribute if a.name in ("then_branch", "else_branch")}
    then_nodes, then_outs = instantiate(sweep, branches["then_branch"], f"{node.name}/then_branch", {})
    else_nodes, else_outs = instantiate(sweep, branches["else_branch"], f"{node.name}/else_branch", {})

    def select() -> list[Item]:
        for k, (t, e) in enumerate(zip(then_outs, else_outs)):
            why = _not_selectable(sweep, t, e) if node.output[k] else None
            if why:
                return _keep_refused(sweep, node, "data_dependent_if",
                                     f"its condition '{node.input[0]}' depends on the input data and "
                                     f"its branches' output {k} {why}")
        reshape, scalar = _as_scalar(sweep, node.input[0], f"{node.name}/condition")
        items: list[Item] = [reshape]
        for t, e, dst in zip(then_outs, else_outs, node.output):
            if dst:
                items.append(helper.make_node("Where", [scalar, t, e], [dst],
                                              name=sweep.unique(f"{node.name}/select")))
        sweep.result.folded += 1
        return items

    return then_nodes + else_nodes + [select]


class _Unroller:
    """A Loop being unrolled: each call emits one iteration (or the final outputs) as items."""

    def __init__(self, sweep: Sweep, node: onnx.NodeProto, trip: int | None, cond: str | None,
                 carried: list[str]) -> None:
        self.sweep, self.node, self.trip, self.cond = sweep, node, trip, cond
        self.body = next(a.g for a in node.attribute if a.name == "body")
        self.carried = carried
        self.n_scan = len(self.body.output) - 1 - len(carried)
        self.scans: list[list[str]] = [[] for _ in range(self.n_scan)]
        self.iteration = 0
        self.active: str | None = None  # masked mode: whether the Loop is still running (a scalar)

    def __call__(self) -> list[Item]:
        sweep, node = self.sweep, self.node
        if self.active is None and self.cond is not None:
            value = sweep.constants.get(self.cond)
            if value is None:
                return self._start_masked()
            if not bool(np.asarray(value).reshape(-1)[0]):
                return self._finish()
        if self.trip is not None and self.iteration >= self.trip:
            return self._finish()
        if self.iteration >= MAX_LOOP_ITERATIONS:
            return self._refuse("loop_too_long", f"it runs more than {MAX_LOOP_ITERATIONS} "
                                                 f"iterations, tflq's unroll limit")
        sweep.unrolled_nodes += len(self.body.node)
        if sweep.unrolled_nodes > MAX_UNROLLED_NODES:
            return self._refuse("loop_too_large", f"unrolling it would exceed "
                                                  f"{MAX_UNROLLED_NODES} nodes")
        prefix = f"{node.name}/iteration{self.iteration}"
        bindings: dict[str, str] = {}
        inputs = [vi.name for vi in self.body.input]
        iter_name = sweep.unique(f"{prefix}/iteration_number")
        sweep.set_constant(iter_name, np.array(self.iteration, np.int64))
        bindings[inputs[0]] = iter_name
        cond_name = self.cond
        if cond_name is None or self.active is not None:  # (an iteration that runs sees True)
            cond_name = sweep.unique(f"{prefix}/condition")
            sweep.set_constant(cond_name, np.array(True))
        bindings[inputs[1]] = cond_name
        bindings.update(zip(inputs[2:], self.carried))
        nodes, outs = instantiate(sweep, self.body, prefix, bindings)
        self.iteration += 1
        if self.active is not None:
            return [*nodes, lambda: self._masked_step(outs, prefix)]
        self.cond = outs[0]
        self.carried = outs[1:1 + len(self.carried)]
        for k, name in enumerate(outs[1 + len(self.carried):]):
            self.scans[k].append(name)
        return [*nodes, self]

    def _start_masked(self) -> list[Item]:
        """The condition depends on the data: with a constant trip count, the remaining iterations
        all run, each carried value kept from the last iteration that ran (Where on `active`,
        the And of the conditions so far), which is the Loop wherever the carried values keep
        their shapes. Scan outputs would have a length of the data: refused."""
        sweep, node = self.sweep, self.node
        why = f"its condition after iteration {self.iteration} depends on the input data"
        if self.trip is None:
            return self._refuse("data_dependent_loop", f"{why} and it has no trip count to bound it")
        if any(node.output[len(self.carried):]):
            return self._refuse("data_dependent_loop", f"{why} and it has scan outputs, whose "
                                                       f"length would depend on the data too")
        if self.trip - self.iteration > MAX_LOOP_ITERATIONS:
            return self._refuse("loop_too_long", f"{why}; its remaining {self.trip - self.iteration} "
                                                 f"iterations exceed tflq's unroll limit of "
                                                 f"{MAX_LOOP_ITERATIONS}")
        shape = sweep.shape_of(self.cond)
        if shape is not None and int(np.prod(shape)) != 1:
            return self._refuse("bad_condition", f"its condition has {int(np.prod(shape))} elements")
        reshape, self.active = _as_scalar(sweep, self.cond, f"{node.name}/running")
        return [reshape, self]

    def _masked_step(self, outs: list[str], prefix: str) -> list[Item]:
        sweep = self.sweep
        new = outs[1:1 + len(self.carried)]
        for k, (old, value) in enumerate(zip(self.carried, new)):
            why = _not_selectable(sweep, old, value)
            if why:
                return self._refuse("data_dependent_loop", f"its condition depends on the input data "
                                                           f"and its carried value {k} {why}")
        items: list[Item] = []
        kept = []
        for k, (old, value) in enumerate(zip(self.carried, new)):
            name = sweep.unique(f"{prefix}/kept{k}")
            items.append(helper.make_node("Where", [self.active, value, old], [name],
                                          name=sweep.unique(f"{prefix}/keep{k}")))
            kept.append(name)
        self.carried = kept
        if self.iteration < self.trip:  # (the last iteration's condition is never read)
            reshape, cond = _as_scalar(sweep, outs[0], f"{prefix}/condition")
            running = sweep.unique(f"{prefix}/running")
            items += [reshape, helper.make_node("And", [self.active, cond], [running],
                                                name=sweep.unique(f"{prefix}/running_node"))]
            self.active = running
        return [*items, self]

    def _refuse(self, reason: str, message: str) -> list[Item]:
        return _keep_refused(self.sweep, self.node, reason, message)

    def _finish(self) -> list[Item]:
        sweep, node = self.sweep, self.node
        finals = list(node.output)
        items: list[Item] = [_identity(sweep, src, dst, node.name)
                             for src, dst in zip(self.carried, finals) if dst]
        for k, dst in enumerate(finals[len(self.carried):]):
            if not dst:
                continue
            if not self.scans[k]:
                return self._refuse("empty_loop_scan", "it runs no iteration but has scan outputs")
            parts = []
            for part in self.scans[k]:
                item, name = unsqueeze(sweep, part, 0, node.name)
                items.append(item)
                parts.append(name)
            items.append(helper.make_node("Concat", parts, [dst], axis=0,
                                          name=sweep.unique(f"{node.name}/scan{k}")))
        sweep.result.folded += 1
        return items


def unroll_loop(sweep: Sweep, node: onnx.NodeProto) -> list[Item]:
    """Start unrolling a Loop whose trip count and condition are constants; or refuse it."""
    inputs = list(node.input) + [""] * (2 - len(node.input))
    trip_name, cond_name = inputs[0], inputs[1]
    trip = None
    if trip_name:
        value = sweep.constants.get(trip_name)
        if value is None:
            return _keep_refused(sweep, node, "data_dependent_loop",
                                 f"its trip count '{trip_name}' depends on the input data")
        trip = int(np.asarray(value).reshape(-1)[0])
        if trip > MAX_LOOP_ITERATIONS:
            return _keep_refused(sweep, node, "loop_too_long",
                                 f"its trip count {trip} exceeds tflq's unroll limit of "
                                 f"{MAX_LOOP_ITERATIONS} iterations")
    if cond_name and cond_name not in sweep.constants and trip is None:
        return _keep_refused(sweep, node, "data_dependent_loop",
                             f"its condition '{cond_name}' depends on the input data and it has no "
                             f"trip count to bound it")
    if not trip_name and not cond_name:
        return _keep_refused(sweep, node, "infinite_loop",
                             "it has neither a trip count nor a condition")
    return [_Unroller(sweep, node, trip, cond_name or None, list(inputs[2:]))]


def _attr_ints(node: onnx.NodeProto, name: str, count: int) -> list[int]:
    values = next((list(a.ints) for a in node.attribute if a.name == name), [])
    return values + [0] * (count - len(values))


def unroll_scan(sweep: Sweep, node: onnx.NodeProto) -> list[Item]:
    """A Scan unrolled over its scan axis: per step, each scan input's slice (Gather of the step's
    index, reverse direction from the end), the body under fresh names, and at the end each scan
    output stacked (Unsqueeze + Concat) along its axis in its direction."""
    if sweep.opset < 9:
        return _keep_refused(sweep, node, "scan_opset8", "opset 8 Scan (with a batch axis) is not supported")
    body = next(a.g for a in node.attribute if a.name == "body")
    n_scan_in = int(next(a.i for a in node.attribute if a.name == "num_scan_inputs"))
    n_state = len(node.input) - n_scan_in
    n_scan_out = len(body.output) - n_state
    in_axes, in_reverse = _attr_ints(node, "scan_input_axes", n_scan_in), \
        _attr_ints(node, "scan_input_directions", n_scan_in)
    out_axes, out_reverse = _attr_ints(node, "scan_output_axes", n_scan_out), \
        _attr_ints(node, "scan_output_directions", n_scan_out)
    scan_inputs = list(node.input[n_state:])
    shapes = [sweep.shape_of(name) for name in scan_inputs]
    if any(shape is None for shape in shapes):
        return _keep_refused(sweep, node, "data_dependent_shape",
                             "the length of its scan inputs is not static")
    in_axes = [a % len(shape) for a, shape in zip(in_axes, shapes)]
    lengths = {shape[a] for a, shape in zip(in_axes, shapes)}
    if len(lengths) != 1:
        return _keep_refused(sweep, node, "bad_scan", f"its scan inputs have lengths {sorted(lengths)}")
    steps = lengths.pop()
    if steps > MAX_LOOP_ITERATIONS:
        return _keep_refused(sweep, node, "loop_too_long", f"it scans {steps} steps, more than tflq's "
                                                            f"unroll limit of {MAX_LOOP_ITERATIONS}")
    sweep.unrolled_nodes += steps * (len(body.node) + n_scan_in)
    if sweep.unrolled_nodes > MAX_UNROLLED_NODES:
        return _keep_refused(sweep, node, "loop_too_large",
                             f"unrolling it would exceed {MAX_UNROLLED_NODES} nodes")
    if steps == 0 and n_scan_out:
        return _keep_refused(sweep, node, "empty_loop_scan", "it scans no step but has scan outputs")
    items: list[Item] = []
    states = list(node.input[:n_state])
    outputs: list[list[str]] = [[] for _ in range(n_scan_out)]
    body_inputs = [vi.name for vi in body.input]
    for step in range(steps):
        prefix = f"{node.name}/step{step}"
        bindings = dict(zip(body_inputs, states))
        for k, (name, axis) in enumerate(zip(scan_inputs, in_axes)):
            index = sweep.unique(f"{prefix}/index{k}")
            sweep.set_constant(index, np.array(steps - 1 - step if in_reverse[k] else step, np.int64))
            sliced = sweep.unique(f"{prefix}/scan_input{k}")
            items.append(helper.make_node("Gather", [name, index], [sliced], axis=axis,
                                          name=sweep.unique(f"{sliced}/node")))
            bindings[body_inputs[n_state + k]] = sliced
        nodes, outs = instantiate(sweep, body, prefix, bindings)
        items += nodes
        states = outs[:n_state]
        for k, name in enumerate(outs[n_state:]):
            outputs[k].append(name)
    items += [_identity(sweep, src, dst, node.name) for src, dst in zip(states, node.output) if dst]
    for k, dst in enumerate(node.output[n_state:]):
        if not dst:
            continue
        axis = out_axes[k]
        if axis < 0:  # counted from the end of the stacked output: needs the body output's rank
            declared = body.output[n_state + k].type.tensor_type
            if not declared.HasField("shape"):
                return _keep_refused(sweep, node, "bad_scan", f"scan output {k} has a negative "
                                     f"axis and its body output no declared rank")
            axis %= len(declared.shape.dim) + 1
        parts = []
        for part in (reversed(outputs[k]) if out_reverse[k] else outputs[k]):
            # opset 9-12 Scans too: an opset-13 Unsqueeze (axes an input) was refused there
            item, name = unsqueeze(sweep, part, axis, node.name)
            items.append(item)
            parts.append(name)
        items.append(helper.make_node("Concat", parts, [dst], axis=axis, name=sweep.unique(f"{node.name}/scan{k}")))
    sweep.result.folded += 1
    return items
