"""The one layout pass: turn the imported NCHW graph into TFLite's NHWC with as few TRANSPOSEs as possible.

Rank-4 activations start in ONNX (NCHW) order. A tensor becomes NHWC where an op that needs it
(each spec's `layout` rule) or the model's edge asks; ops that work in any layout follow their
inputs, with axis arguments and constant operands permuted to match. A TRANSPOSE is inserted
only where an op needs the ONNX axis order of an NHWC tensor and no cheaper rewrite exists: a
transpose that only moves size-1 axes becomes a RESHAPE, and a flatten in front of a
FULLY_CONNECTED is absorbed by permuting the weights' columns.
"""
from __future__ import annotations

import numpy as np

from tflq import ops as registry
from tflq.ir.graph import Graph, Layout, Op, Tensor
from tflq.ops.base import AxisSensitive, ChannelsLast, LayoutBreaking, PermutesAxes, Transparent

TO_NHWC = (0, 2, 3, 1)  # NHWC axis j holds NCHW axis TO_NHWC[j]
TO_NCHW = (0, 3, 1, 2)
NCHW_AXIS_TO_NHWC = {0: 0, 1: 3, 2: 1, 3: 2}


def _moves_only_unit_axes(shape: tuple[int, ...], perm: tuple[int, ...]) -> bool:
    """True when transposing `shape` by `perm` leaves the bytes in the same order."""
    kept = [axis for axis in perm if shape[axis] != 1]
    return kept == sorted(kept)


class _LayoutRewriter:
    def __init__(self, graph: Graph, keep_io_layout: bool) -> None:
        self.graph = graph
        self.keep_io_layout = keep_io_layout
        self.converted: dict[tuple[str, Layout], str] = {}
        self.inserted = 0

    # ---- tensor helpers ---------------------------------------------------------------------
    def layout(self, name: str) -> Layout:
        return self.graph.tensors[name].layout if name else Layout.ANY

    def is_rank4_activation(self, name: str) -> bool:
        t = self.graph.tensors[name] if name else None
        return t is not None and t.rank == 4 and not t.is_constant

    def mark_nhwc(self, name: str) -> None:
        t = self.graph.tensors[name]
        if t.layout != Layout.NHWC:
            t.shape = tuple(t.shape[i] for i in TO_NHWC)
            t.layout = Layout.NHWC

    def mark_output_layout(self, op: Op, layout: Layout) -> None:
        for name in op.outputs:
            if self.is_rank4_activation(name):
                if layout == Layout.NHWC:
                    self.mark_nhwc(name)
                else:
                    self.graph.tensors[name].layout = Layout.NCHW

    def convert(self, name: str, to: Layout, before: Op) -> str:
        """`name` in layout `to`: a permuted constant, a RESHAPE, or a TRANSPOSE (cached)."""
        t = self.graph.tensors[name]
        if t.layout == to:
            return name
        key = (name, to)
        if key in self.converted:
            return self.converted[key]
        perm = TO_NHWC if to == Layout.NHWC else TO_NCHW
        new_shape = tuple(t.shape[i] for i in perm)
        suffix = "nhwc" if to == Layout.NHWC else "nchw"
        out = self.graph.add_activation(f"{name}/{suffix}", t.dtype, new_shape, to)
        if _moves_only_unit_axes(t.shape, perm):
            shape_const = self.graph.add_constant(f"{out}/shape", np.array(new_shape, np.int32))
            self.graph.insert_before(before, Op("RESHAPE", [name, shape_const], [out], origin=name))
        else:
            perm_const = self.graph.add_constant(f"{out}/perm", np.array(perm, np.int32))
            self.graph.insert_before(before, Op("TRANSPOSE", [name, perm_const], [out], origin=name))
            self.inserted += 1
        self.converted[key] = out
        return out

    def permuted_constant(self, name: str, out_rank: int) -> str:
        """A broadcasting constant operand rewritten for an NHWC rank-4 result."""
        t = self.graph.tensors[name]
        if t.rank == 0 or t.size == 1 and t.rank <= out_rank:
            return name
        data = t.data.reshape((1,) * (4 - t.rank) + t.shape)
        return self.graph.add_constant(f"{name}/nhwc", np.ascontiguousarray(data.transpose(TO_NHWC)),
                                       t.dtype)

    # ---- per rule ---------------------------------------------------------------------------
    def visit(self, op: Op) -> None:
        rule = registry.spec(op.kind).layout
        if isinstance(rule, ChannelsLast):
            for i in rule.data_inputs:
                if i < len(op.inputs) and self.is_rank4_activation(op.inputs[i]):
                    op.inputs[i] = self.convert(op.inputs[i], Layout.NHWC, op)
            self.mark_output_layout(op, Layout.NHWC)
        elif isinstance(rule, Transparent):
            self.visit_transparent(op)
        elif isinstance(rule, AxisSensitive):
            self.visit_axis_sensitive(op, rule)
        elif isinstance(rule, PermutesAxes):
            self.visit_transpose(op, rule)
        elif isinstance(rule, LayoutBreaking):
            self.visit_breaking(op)
        else:
            raise TypeError(f"unknown layout rule {rule!r} on {op.kind}")

    def _nhwc_wanted(self, op: Op, data_inputs) -> bool:
        return any(self.layout(op.inputs[i]) == Layout.NHWC for i in data_inputs
                   if i < len(op.inputs) and op.inputs[i])

    def visit_transparent(self, op: Op) -> None:
        activations = [i for i, n in enumerate(op.inputs) if n and not self.graph.is_constant(n)]
        if not self._nhwc_wanted(op, activations):
            self.mark_output_layout(op, Layout.NCHW)
            return
        out_rank = self.graph.tensors[op.outputs[0]].rank
        lower_rank = [i for i in activations if self.graph.tensors[op.inputs[i]].rank != 4]
        if out_rank != 4 or lower_rank:
            self.to_onnx_order(op)
            return
        for i, name in enumerate(op.inputs):
            if not name:
                continue
            if self.graph.is_constant(name):
                op.inputs[i] = self.permuted_constant(name, out_rank)
            else:
                op.inputs[i] = self.convert(name, Layout.NHWC, op)
        self.mark_output_layout(op, Layout.NHWC)

    def visit_axis_sensitive(self, op: Op, rule: AxisSensitive) -> None:
        special = set(rule.axis_inputs) | set(rule.per_axis_inputs)
        data = [i for i, n in enumerate(op.inputs) if n and i not in special]
        if not self._nhwc_wanted(op, data):
            self.mark_output_layout(op, Layout.NCHW)
            return
        attrs = op.attrs
        new_values = {}
        for field in rule.attrs:
            value = getattr(attrs, field)
            if isinstance(value, (tuple, list)):
                new_values[field] = type(value)(NCHW_AXIS_TO_NHWC[a % 4] for a in value)
            else:
                new_values[field] = NCHW_AXIS_TO_NHWC[value % 4]
        out_ranks = {self.graph.tensors[n].rank for n in op.outputs if n}
        removed = self._removed_axes(op, attrs, rule) if out_ranks != {4} else set()
        if out_ranks != {4} and not self._reduced_order_ok(op, removed):
            self.to_onnx_order(op)
            return
        if new_values:
            op.replace_attrs(**new_values)
        for i in rule.axis_inputs:
            t = self.graph.tensors[op.inputs[i]]
            mapped = np.vectorize(lambda a: NCHW_AXIS_TO_NHWC[int(a) % 4])(t.data).astype(t.dtype.numpy)
            op.inputs[i] = self.graph.add_constant(f"{op.inputs[i]}/nhwc", mapped, t.dtype)
        for i in rule.per_axis_inputs:
            t = self.graph.tensors[op.inputs[i]]
            op.inputs[i] = self.graph.add_constant(f"{op.inputs[i]}/nhwc", t.data[list(TO_NHWC)], t.dtype)
        for i in data:
            name = op.inputs[i]
            if self.graph.is_constant(name) and self.graph.tensors[name].rank == 4:
                op.inputs[i] = self.permuted_constant(name, 4)
            elif self.is_rank4_activation(name):
                op.inputs[i] = self.convert(name, Layout.NHWC, op)
        self.mark_output_layout(op, Layout.NHWC)
        if out_ranks != {4}:
            self.reshape_to_onnx_shape(op, removed)

    def _removed_axes(self, op: Op, attrs, rule: AxisSensitive) -> set[int]:
        """The ONNX (NCHW) axes a rank-reducing op removes."""
        removed: set[int] = set()
        for field in rule.attrs:
            value = getattr(attrs, field)
            removed.update(a % 4 for a in (value if isinstance(value, (tuple, list)) else [value]))
        for i in rule.axis_inputs:
            removed.update(int(a) % 4 for a in np.ravel(self.graph.tensors[op.inputs[i]].data))
        return removed

    def reshape_to_onnx_shape(self, op: Op, removed: set[int]) -> None:
        """The op reduced NHWC axes: its result holds the ONNX bytes (_reduced_order_ok) in NHWC
        axis order, e.g. [N, W, 1] for ONNX's [N, 1, W]; a RESHAPE gives it the ONNX shape."""
        x = self.graph.tensors[op.inputs[0]]
        nchw_shape = tuple(x.shape[i] for i in TO_NCHW)
        produced = tuple(nchw_shape[a] for a in TO_NHWC if a not in removed)
        for k, name in enumerate(op.outputs):
            y = self.graph.tensors[name] if name else None
            if y is None or y.shape == produced or len(produced) != y.rank:
                continue
            mid = self.graph.add_activation(f"{name}/nhwc_order", y.dtype, produced, Layout.ANY)
            op.outputs[k] = mid
            shape_const = self.graph.add_constant(f"{name}/shape", np.array(y.shape, np.int32))
            self.graph.insert_after(op, Op("RESHAPE", [mid, shape_const], [name], origin=op.origin))

    def _reduced_order_ok(self, op: Op, removed: set[int]) -> bool:
        """A rank-reducing op on NHWC keeps ONNX order iff the surviving axes stay in order."""
        x = self.graph.tensors[op.inputs[0]]
        if any(self.graph.tensors[n].rank >= x.rank for n in op.outputs if n):
            return False  # only ops that remove axes are understood here
        nchw_shape = tuple(x.shape[i] for i in TO_NCHW)
        survivors = [a for a in TO_NHWC if a not in removed and nchw_shape[a] != 1]
        return survivors == sorted(survivors)

    def visit_transpose(self, op: Op, rule: PermutesAxes) -> None:
        x = op.inputs[0]
        perm_name = op.inputs[rule.perm_input]
        perm = tuple(int(p) for p in self.graph.tensors[perm_name].data)
        y = self.graph.tensors[op.outputs[0]]
        if self.layout(x) == Layout.NHWC:
            # y_onnx = x_onnx.transpose(perm), and x_onnx = x_phys.transpose(TO_NCHW).
            perm = tuple(TO_NCHW[p] for p in perm)
        if y.rank == 4:
            as_nhwc = tuple(perm[i] for i in TO_NHWC)
            if as_nhwc == tuple(range(4)) or self._consumers_want_nhwc(op.outputs[0]):
                perm = as_nhwc
                self.mark_nhwc(op.outputs[0])
            else:
                y.layout = Layout.NCHW
        op.inputs[rule.perm_input] = self.graph.add_constant(perm_name, np.array(perm, np.int32))

    def _consumers_want_nhwc(self, name: str) -> bool:
        return any(isinstance(registry.spec(c.kind).layout, ChannelsLast) for c in self.graph.consumers(name))

    def visit_breaking(self, op: Op) -> None:
        if op.kind == "RESHAPE" and self.layout(op.inputs[0]) == Layout.NHWC and self.reshape_in_place(op):
            self.mark_output_layout(op, Layout.NCHW)
            return
        self.to_onnx_order(op)

    def to_onnx_order(self, op: Op) -> None:
        for i, name in enumerate(op.inputs):
            if name and self.layout(name) == Layout.NHWC:
                op.inputs[i] = self.convert(name, Layout.NCHW, op)
        self.mark_output_layout(op, Layout.NCHW)

    def reshape_in_place(self, op: Op) -> bool:
        """Reshape an NHWC tensor directly when that gives the ONNX result (or can be made to)."""
        x = self.graph.tensors[op.inputs[0]]
        y = self.graph.tensors[op.outputs[0]]
        nchw_shape = tuple(x.shape[i] for i in TO_NCHW)
        if _moves_only_unit_axes(nchw_shape, TO_NHWC):
            return True
        # Flatten [N, C, H, W] -> [N, C*H*W] feeding only FULLY_CONNECTED ops with constant weights.
        if y.rank != 2 or y.shape[0] != x.shape[0]:
            return False
        consumers = self.graph.consumers(op.outputs[0])
        if (not consumers or op.outputs[0] in self.graph.outputs
                or any(c.kind != "FULLY_CONNECTED" or c.inputs[0] != op.outputs[0]
                       or not self.graph.is_constant(c.inputs[1]) for c in consumers)):
            return False
        _, c, h, w = nchw_shape
        # Column k of the NHWC flattening holds NCHW feature order[k].
        order = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
        for consumer in consumers:
            weights = self.graph.tensors[consumer.inputs[1]]
            consumer.inputs[1] = self.graph.add_constant(f"{consumer.inputs[1]}/nhwc_columns",
                                                         weights.data[:, order], weights.dtype)
        return True

    # ---- edges ------------------------------------------------------------------------------
    def run(self) -> int:
        g = self.graph
        if not self.keep_io_layout:
            for name in g.inputs:
                if self.is_rank4_activation(name):
                    self.mark_nhwc(name)
        for op in list(g.ops):
            self.visit(op)
        wanted = Layout.NCHW if self.keep_io_layout else Layout.NHWC
        for index, name in enumerate(list(g.outputs)):
            if self.is_rank4_activation(name) and self.layout(name) != wanted:
                inner = g.unique_name(f"{name}/{self.layout(name).value}")
                g.rename(name, inner)
                perm = TO_NHWC if wanted == Layout.NHWC else TO_NCHW
                t = g.tensors[inner]
                g.add_tensor(Tensor(name, t.dtype, tuple(t.shape[i] for i in perm), layout=wanted))
                const = np.array(perm, np.int32)
                if _moves_only_unit_axes(t.shape, perm):
                    g.add_op(Op("RESHAPE", [inner, g.add_constant(f"{name}/shape", np.array(
                        g.tensors[name].shape, np.int32))], [name], origin=name))
                else:
                    g.add_op(Op("TRANSPOSE", [inner, g.add_constant(f"{name}/perm", const)], [name],
                                origin=name))
                    self.inserted += 1
                g.outputs[index] = name
        for name in g.inputs + g.outputs:
            t = g.tensors[name]
            if t.rank == 4 and t.layout == Layout.ANY:
                t.layout = Layout.NCHW
        g.remove_unused()
        return self.inserted


def to_nhwc(graph: Graph, keep_io_layout: bool = False) -> int:
    """Convert the graph to NHWC in place; return the number of TRANSPOSE ops inserted."""
    return _LayoutRewriter(graph, keep_io_layout).run()
