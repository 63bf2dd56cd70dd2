"""The one layout pass: turn the imported NCHW graph into TFLite's NHWC with as few TRANSPOSEs as possible.

Rank-4 activations start in ONNX (NCHW) order; so do rank-3 ones marked NCW (what a 1-D convolution
or pool reads and writes: the importers run those as 2-D ops with a height of 1), which become NWC
by the same rules, and rank-5 ones marked NCDHW (what 3-D convolutions, pools and resizes read and
write), which become NDHWC. A tensor becomes NHWC where an op that needs it
(each spec's `layout` rule) or the model's edge asks; ops that work in any layout follow their
inputs, with axis arguments and constant operands permuted to match. A TRANSPOSE is inserted
only where an op needs the ONNX axis order of an NHWC tensor and no cheaper rewrite exists: a
transpose that only moves size-1 axes becomes a RESHAPE, and a flatten in front of a
FULLY_CONNECTED is absorbed by permuting the weights' columns.
"""
from __future__ import annotations

import math

import numpy as np

from tflq import ops as registry
from tflq.ir.graph import Graph, Layout, Op, Tensor
from tflq.ir.layout import (CHANNELS_FIRST, CHANNELS_LAST, TO_NCHW, TO_NHWC, channels_last_axis,
                             onnx_shape, to_channels_first, to_channels_last)
from tflq.ops.base import AxisSensitive, ChannelsLast, LayoutBreaking, PermutesAxes, Transparent


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

    def is_activation(self, name: str, rank: int) -> bool:
        t = self.graph.tensors[name] if name else None
        return t is not None and t.rank == rank and not t.is_constant

    def mark_nhwc(self, name: str) -> None:
        """Give a 4-D (or NCW 3-D, NCDHW 5-D) activation its channels-last shape and layout."""
        t = self.graph.tensors[name]
        if not t.layout.channels_last:
            t.shape = tuple(t.shape[i] for i in to_channels_last(t.rank))
            t.layout = CHANNELS_LAST[t.rank]

    def mark_output_layout(self, op: Op, layout: Layout, rank: int = 4) -> None:
        """NHWC: the outputs of `rank` hold channels-last data (rank 4 or 3; other outputs ONNX
        order); NCHW: they all hold ONNX order."""
        for name in op.outputs:
            if self.is_rank4_activation(name):
                if layout == Layout.NHWC and rank == 4:
                    self.mark_nhwc(name)
                else:
                    self.graph.tensors[name].layout = Layout.NCHW
            elif rank in (3, 5) and self.is_activation(name, rank) and layout == Layout.NHWC:
                self.mark_nhwc(name)

    def convert(self, name: str, to: Layout, before: Op) -> str:
        """`name` channels-last (`to` NHWC) or in ONNX order (NCHW), for rank 4 or 3: a RESHAPE
        or a TRANSPOSE (cached)."""
        t = self.graph.tensors[name]
        last = to == Layout.NHWC
        if t.layout.channels_last == last:
            return name
        key = (name, to)
        if key in self.converted:
            return self.converted[key]
        perm = to_channels_last(t.rank) if last else to_channels_first(t.rank)
        new_shape = tuple(t.shape[i] for i in perm)
        to = (CHANNELS_LAST if last else CHANNELS_FIRST)[t.rank]
        suffix = to.value
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
        data = t.data.reshape((1,) * (out_rank - t.rank) + t.shape)
        return self.graph.add_constant(f"{name}/{CHANNELS_LAST[out_rank].value}",
                                       np.ascontiguousarray(data.transpose(to_channels_last(out_rank))),
                                       t.dtype)

    # ---- per rule ---------------------------------------------------------------------------
    def visit(self, op: Op) -> None:
        rule = registry.spec(op.kind).layout
        if isinstance(rule, ChannelsLast):
            for i in rule.data_inputs:
                if i < len(op.inputs) and (self.is_rank4_activation(op.inputs[i])
                                           or self.is_activation(op.inputs[i], 5)):
                    op.inputs[i] = self.convert(op.inputs[i], Layout.NHWC, op)
            out = self.graph.tensors[op.outputs[0]] if op.outputs and op.outputs[0] else None
            self.mark_output_layout(op, Layout.NHWC, 5 if out is not None and out.rank == 5 else 4)
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
        return any(self.layout(op.inputs[i]).channels_last for i in data_inputs
                   if i < len(op.inputs) and op.inputs[i]) or self._readers_want_nhwc(op, data_inputs)

    def _readers_want_nhwc(self, op: Op, data_inputs) -> bool:
        """One 4-D ONNX-order activation in, 4-D outputs read only as NHWC data (a convolution's
        explicit PAD, an activation before a pool): converting the input costs the one TRANSPOSE
        that converting the output would, and puts it next to the producer, where it can cancel
        (CvT's tokens -> NCHW -> PAD -> depthwise conv is a RESHAPE of the tokens then)."""
        activations = [op.inputs[i] for i in data_inputs if i < len(op.inputs) and op.inputs[i]
                       and not self.graph.is_constant(op.inputs[i])]
        if len(activations) != 1 or not self.is_rank4_activation(activations[0]) or not op.outputs:
            return False
        for name in op.outputs:
            readers = self.graph.consumers(name) if self.is_rank4_activation(name) else []
            if not readers or name in self.graph.outputs:
                return False
            for reader in readers:
                rule = registry.spec(reader.kind).layout
                if not isinstance(rule, ChannelsLast) or any(
                        n == name and i not in rule.data_inputs for i, n in enumerate(reader.inputs)):
                    return False
        return True

    def visit_transparent(self, op: Op) -> None:
        activations = [i for i, n in enumerate(op.inputs) if n and not self.graph.is_constant(n)]
        out_rank = self.graph.tensors[op.outputs[0]].rank
        # one element (a scalar condition, a [1] gate): it broadcasts alike in every layout
        single = {i for i in activations if self.graph.tensors[op.inputs[i]].rank <= out_rank
                  and math.prod(self.graph.tensors[op.inputs[i]].shape) == 1}
        if not self._nhwc_wanted(op, [i for i in activations if i not in single]):
            self.mark_output_layout(op, Layout.NCHW)
            return
        other_rank = [i for i in activations if self.graph.tensors[op.inputs[i]].rank != out_rank
                      and i not in single]
        if out_rank not in CHANNELS_LAST or other_rank:
            self.to_onnx_order(op)
            return
        for i, name in enumerate(op.inputs):
            if not name or i in single:
                continue
            if self.graph.is_constant(name):
                op.inputs[i] = self.permuted_constant(name, out_rank)
            else:
                op.inputs[i] = self.convert(name, Layout.NHWC, op)
        self.mark_output_layout(op, Layout.NHWC, out_rank)

    def visit_axis_sensitive(self, op: Op, rule: AxisSensitive) -> None:
        special = set(rule.axis_inputs) | set(rule.per_axis_inputs)
        data = [i for i, n in enumerate(op.inputs) if n and i not in special]
        if not self._nhwc_wanted(op, data):
            self.mark_output_layout(op, Layout.NCHW)
            return
        rank = next((self.graph.tensors[op.inputs[i]].rank for i in data
                     if self.layout(op.inputs[i]).channels_last), 4)  # else _readers_want_nhwc's
        if any(self.graph.tensors[op.inputs[i]].rank != rank for i in data
               if not self.graph.is_constant(op.inputs[i])):
            self.to_onnx_order(op)
            return
        attrs = op.attrs
        new_values = {}
        for field in rule.attrs:
            value = getattr(attrs, field)
            if isinstance(value, (tuple, list)):
                new_values[field] = type(value)(channels_last_axis(a, rank) for a in value)
            else:
                new_values[field] = channels_last_axis(value, rank)
        out_ranks = {self.graph.tensors[n].rank for n in op.outputs if n}
        removed = self._removed_axes(op, attrs, rule, rank) if out_ranks != {rank} else set()
        if out_ranks != {rank} and not self._reduced_order_ok(op, removed):
            self.to_onnx_order(op)
            return
        if new_values:
            op.replace_attrs(**new_values)
        suffix = CHANNELS_LAST[rank].value
        for i in rule.axis_inputs:
            t = self.graph.tensors[op.inputs[i]]
            mapped = np.vectorize(lambda a: channels_last_axis(int(a), rank))(t.data).astype(t.dtype.numpy)
            op.inputs[i] = self.graph.add_constant(f"{op.inputs[i]}/{suffix}", mapped, t.dtype)
        for i in rule.per_axis_inputs:
            t = self.graph.tensors[op.inputs[i]]
            op.inputs[i] = self.graph.add_constant(f"{op.inputs[i]}/{suffix}",
                                                   t.data[list(to_channels_last(rank))], t.dtype)
        for i in data:
            name = op.inputs[i]
            if self.graph.is_constant(name) and self.graph.tensors[name].rank == rank:
                op.inputs[i] = self.permuted_constant(name, rank)
            elif self.is_activation(name, rank):
                op.inputs[i] = self.convert(name, Layout.NHWC, op)
        self.mark_output_layout(op, Layout.NHWC, rank)
        if out_ranks != {rank}:
            self.reshape_to_onnx_shape(op, removed)

    def _removed_axes(self, op: Op, attrs, rule: AxisSensitive, rank: int) -> set[int]:
        """The ONNX (channels-first) axes a rank-reducing op removes."""
        removed: set[int] = set()
        for field in rule.attrs:
            value = getattr(attrs, field)
            removed.update(a % rank for a in (value if isinstance(value, (tuple, list)) else [value]))
        for i in rule.axis_inputs:
            removed.update(int(a) % rank for a in np.ravel(self.graph.tensors[op.inputs[i]].data))
        return removed

    def reshape_to_onnx_shape(self, op: Op, removed: set[int]) -> None:
        """The op reduced NHWC axes: its result holds the ONNX bytes (_reduced_order_ok) in NHWC
        axis order, e.g. [N, W, 1] for ONNX's [N, 1, W]; a RESHAPE gives it the ONNX shape."""
        x = self.graph.tensors[op.inputs[0]]
        nchw_shape = onnx_shape(x)
        produced = tuple(nchw_shape[a] for a in to_channels_last(x.rank) if a not in removed)
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
        nchw_shape = onnx_shape(x)
        survivors = [a for a in to_channels_last(x.rank) if a not in removed and nchw_shape[a] != 1]
        return survivors == sorted(survivors)

    def visit_transpose(self, op: Op, rule: PermutesAxes) -> None:
        x = op.inputs[0]
        perm_name = op.inputs[rule.perm_input]
        perm = tuple(int(p) for p in self.graph.tensors[perm_name].data)
        y = self.graph.tensors[op.outputs[0]]
        if self.layout(x).channels_last:
            # y_onnx = x_onnx.transpose(perm), and x_onnx = x_phys.transpose(TO_NCHW).
            first = to_channels_first(len(perm))
            perm = tuple(first[p] for p in perm)
        if y.rank == 4:
            as_nhwc = tuple(perm[i] for i in TO_NHWC)
            if as_nhwc == tuple(range(4)) or self._consumers_want_nhwc(op.outputs[0]):
                perm = as_nhwc
                self.mark_nhwc(op.outputs[0])
            else:
                y.layout = Layout.NCHW
        elif y.rank in (3, 5) and y.layout.marked_channels_first:
            # A 1-D (3-D) convolution reads y: the model's own transpose delivers it channels-last.
            perm = tuple(perm[i] for i in to_channels_last(y.rank))
            self.mark_nhwc(op.outputs[0])
        op.inputs[rule.perm_input] = self.graph.add_constant(perm_name, np.array(perm, np.int32))

    def _consumers_want_nhwc(self, name: str) -> bool:
        return any(isinstance(registry.spec(c.kind).layout, ChannelsLast) for c in self.graph.consumers(name))

    def visit_breaking(self, op: Op) -> None:
        if op.kind == "RESHAPE" and self.layout(op.inputs[0]).channels_last:
            if self.reshape_in_place(op):
                self.mark_output_layout(op, Layout.NCHW)
                return
            if self.reshape_keeps_channels_last(op):
                return
        self.to_onnx_order(op)

    def reshape_keeps_channels_last(self, op: Op) -> bool:
        """[N, C, spatial...] -> [N, C, spatial'...] where the spatial sizes differ only by 1s (the
        height a 1-D op runs with, added or dropped): the channels-last bytes are the same, so the
        result is channels-last too (NWC <-> NHWC) and the RESHAPE gets the channels-last shape."""
        x, y = self.graph.tensors[op.inputs[0]], self.graph.tensors[op.outputs[0]]
        if y.rank not in CHANNELS_LAST or y.is_constant:
            return False
        n, c, *spatial_in = onnx_shape(x)
        n_out, c_out, *spatial_out = y.shape
        # With a 5-D side (a 3-D op's lowering views [N, C, D, H, W] as [N, C, D, H*W] and back),
        # any regrouping of the spatial axes keeps the channels-last bytes: N and C stay outermost
        # and innermost, the spatial cells in between in the same row-major order.
        regrouped = 5 in (x.rank, y.rank) and x.rank >= 3 and y.rank >= 3 and \
            math.prod(spatial_in) == math.prod(spatial_out)
        if (n, c) != (n_out, c_out) or not regrouped and [d for d in spatial_in if d != 1] != \
                [d for d in spatial_out if d != 1]:
            return False
        self.mark_nhwc(op.outputs[0])
        op.inputs[1] = self.graph.add_constant(f"{op.outputs[0]}/shape", np.array(y.shape, np.int32))
        return True

    def to_onnx_order(self, op: Op) -> None:
        for i, name in enumerate(op.inputs):
            if name and self.layout(name).channels_last:
                op.inputs[i] = self.convert(name, Layout.NCHW, op)
        self.mark_output_layout(op, Layout.NCHW)

    def reshape_in_place(self, op: Op) -> bool:
        """Reshape an NHWC tensor directly when that gives the ONNX result (or can be made to)."""
        x = self.graph.tensors[op.inputs[0]]
        y = self.graph.tensors[op.outputs[0]]
        nchw_shape = onnx_shape(x)
        if _moves_only_unit_axes(nchw_shape, to_channels_last(x.rank)):
            return True
        # Flatten [N, C, H, W] -> [N, C*H*W] feeding only FULLY_CONNECTED ops with constant weights.
        if y.rank != 2 or y.shape[0] != x.shape[0]:
            return False
        consumers = self.graph.consumers(op.outputs[0])
        if (not consumers or op.outputs[0] in self.graph.outputs
                or any(c.kind != "FULLY_CONNECTED" or c.inputs[0] != op.outputs[0]
                       or not self.graph.is_constant(c.inputs[1]) for c in consumers)):
            return False
        features = nchw_shape[1:]
        # Column k of the NHWC (NWC) flattening holds NCHW (NCW) feature order[k].
        order = np.arange(int(np.prod(features))).reshape(features).transpose(
            tuple(range(1, len(features))) + (0,)).reshape(-1)
        for consumer in consumers:
            weights = self.graph.tensors[consumer.inputs[1]]
            consumer.inputs[1] = self.graph.add_constant(f"{consumer.inputs[1]}/nhwc_columns",
                                                         weights.data[:, order], weights.dtype)
        return True

    # ---- edges ------------------------------------------------------------------------------
    def _transposes_by(self, op: Op, perm: tuple[int, ...]) -> bool:
        return op.kind == "TRANSPOSE" and self.graph.is_constant(op.inputs[1]) and \
            tuple(int(p) for p in self.graph.tensors[op.inputs[1]].data) == perm

    def absorb_nhwc_inputs(self) -> set[str]:
        """tf2onnx's inputs: a 4-D input already NHWC, read only by Transposes to NCHW. The input
        becomes the NCHW tensor those compute, marked channels-last, which is its ONNX shape and
        data: the file keeps the ONNX input and the transposes go."""
        g = self.graph
        absorbed = set()
        for name in g.inputs:
            readers = g.consumers(name)
            if not self.is_rank4_activation(name) or not readers or name in g.outputs or any(
                    not self._transposes_by(op, TO_NCHW) or op.outputs[0] in g.outputs for op in readers):
                continue
            g.tensors[name].shape = g.tensors[readers[0].outputs[0]].shape
            for op in readers:
                g.remove_op(op)
                g.replace_uses(op.outputs[0], name)
            absorbed.add(name)
        return absorbed

    def nhwc_outputs(self) -> set[str]:
        """Outputs the model itself transposes from NCHW to NHWC (tf2onnx): their ONNX order is
        already what TFLite wants, so the edge leaves them in it."""
        producers = self.graph.producers()
        return {name for name in self.graph.outputs if self.is_rank4_activation(name)
                and name in producers and self._transposes_by(producers[name], TO_NHWC)}

    def run(self) -> int:
        g = self.graph
        nhwc_inputs = self.absorb_nhwc_inputs()
        nhwc_outputs = self.nhwc_outputs()
        for name in nhwc_inputs:
            self.mark_nhwc(name)
        one_d = {name for name in g.outputs if self.layout(name).marked_channels_first}
        if not self.keep_io_layout:
            for name in g.inputs:
                if self.is_rank4_activation(name) or self.layout(name).marked_channels_first:
                    self.mark_nhwc(name)
        for op in list(g.ops):
            self.visit(op)
        for name in nhwc_inputs:
            # The file's input is the ONNX input as it is: calibration and callers feed it so.
            g.tensors[name].layout = Layout.ANY
        for index, name in enumerate(list(g.outputs)):
            t = g.tensors[name]
            if not (self.is_rank4_activation(name) or name in one_d or t.layout.channels_last):
                continue
            # 4-D and 1-D conv outputs are channels-last unless the ONNX layout is kept; other
            # 3-D outputs keep the ONNX order.
            last = not self.keep_io_layout and (t.rank == 4 or name in one_d) and \
                name not in nhwc_outputs
            if t.layout.channels_last != last:
                inner = g.unique_name(f"{name}/{self.layout(name).value}")
                g.rename(name, inner)
                perm = to_channels_last(t.rank) if last else to_channels_first(t.rank)
                wanted = (CHANNELS_LAST if last else CHANNELS_FIRST)[t.rank]
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


def channels_last_1d_io(graph: Graph) -> list[str]:
    """One note per 1-D ([N, C, W]) or 3-D ([N, C, D, H, W]) graph input or output that the file
    holds channels-last (NWC, NDHWC)."""
    notes = []
    for what, names in (("input", graph.inputs), ("output", graph.outputs)):
        for name in names:
            t = graph.tensors[name]
            if t.layout == Layout.NWC:
                notes.append(f"{what} '{name}': ONNX [N, C, W] {list(onnx_shape(t))} is NWC "
                             f"{list(t.shape)} in the file (--keep-io-layout keeps NCW)")
            elif t.layout == Layout.NDHWC:
                notes.append(f"{what} '{name}': ONNX [N, C, D, H, W] {list(onnx_shape(t))} is "
                             f"NDHWC {list(t.shape)} in the file (--keep-io-layout keeps NCDHW)")
    return notes


def to_nhwc(graph: Graph, keep_io_layout: bool = False) -> int:
    """Convert the graph to NHWC in place; return the number of TRANSPOSE ops inserted."""
    return _LayoutRewriter(graph, keep_io_layout).run()
