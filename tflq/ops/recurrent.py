"""UNPACK, and ONNX LSTM, GRU and RNN unrolled over time into FULLY_CONNECTED, ADD, MUL, SUB,
LOGISTIC, TANH, SPLIT, CONCATENATION and RESHAPE.

The input projection of every time step is one FULLY_CONNECTED over [T * B, I] (both biases
folded in), which UNPACK cuts into the steps; each step adds the recurrent FULLY_CONNECTED of the
previous hidden state and applies the gates with elementwise ops, exactly as the ONNX equations
read (no fused gate kernel, so no approximation). Every op has an int8 kernel, so a full-integer
file stays integer; the hidden states all feed one CONCATENATION (Y), whose int8 grid they share.

Why not TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM: its state lives in variable tensors that the
interpreter zeroes, so it cannot take an initial state from the graph (the streaming pattern) or
give Y_c; it has no reverse or GRU/RNN form; and its int8 kernel needs int16 cell state and
calibrated intermediate tensors. The unrolled form covers all of ONNX's variants the same way.

Supported: forward, reverse and bidirectional; initial_h/initial_c given (a graph input, computed
or constant) or absent; sequence_lens absent, constant or a graph input (past its length an entry
outputs 0 and keeps its state: a 0/1 mask per step); LSTM
peepholes; GRU linear_before_reset 0 and 1; layout 0 and 1; the activations Sigmoid, Tanh, Relu,
HardSigmoid, LeakyRelu, Affine and ScaledTanh (with their activation_alpha/activation_beta).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.UnpackOptions import UnpackOptionsT
from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import Case, LayoutBreaking, OpSpec, SameAsInput, rand
from tflq.ops.activations import LeakyReluAttrs
from tflq.ops.cast import add_cast
from tflq.ops.concat import ConcatenationAttrs
from tflq.ops.fully_connected import FullyConnectedAttrs
from tflq.ops.split import SplitAttrs

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
ACTIVATION_KINDS = {"Sigmoid": "LOGISTIC", "Tanh": "TANH", "Relu": "RELU"}
# Activations with parameters: how many of (activation_alpha, activation_beta) each consumes, in
# the order the activations are listed (tf2onnx writes Keras' hard_sigmoid as HardSigmoid 0.2/0.5).
PARAMETERS = {"HardSigmoid": 2, "LeakyRelu": 1, "Affine": 2, "ScaledTanh": 2}


@dataclass(frozen=True)
class Activation:
    name: str
    alpha: float = 0.0
    beta: float = 0.0


def _activations(node, ctx, kind: str, directions: int) -> list[Activation]:
    names = list(ctx.attr(node, "activations", None) or DEFAULT_ACTIVATIONS[kind] * directions)
    alphas = list(ctx.attr(node, "activation_alpha", None) or [])
    betas = list(ctx.attr(node, "activation_beta", None) or [])
    bad = sorted({a for a in names if a not in ACTIVATION_KINDS and a not in PARAMETERS})
    if bad or len(names) != len(DEFAULT_ACTIVATIONS[kind]) * directions:
        raise Unsupported(node, "recurrent_activation",
                          f"{kind} activations {names}: only "
                          f"{sorted(ACTIVATION_KINDS) + sorted(PARAMETERS)} are supported")
    result = []
    for name in names:
        count = PARAMETERS.get(name, 0)
        if count and (not alphas or count == 2 and not betas):
            raise Unsupported(node, "recurrent_activation",
                              f"{kind} activation {name} without activation_alpha/activation_beta values")
        alpha = float(alphas.pop(0)) if count else 0.0
        beta = float(betas.pop(0)) if count == 2 else 0.0
        result.append(Activation(name, alpha, beta))
    return result


@dataclass(frozen=True)
class UnpackAttrs:
    num: int = 1
    axis: int = 0


class _Builder:
    """Adds the IR ops of one unrolled recurrent node; every value is [B, width] unless said."""

    def __init__(self, ctx, node) -> None:
        self.ctx, self.node = ctx, node

    def new(self, base: str, shape) -> str:
        return self.ctx.new_activation(f"{self.node.name}/{base}", tuple(shape))

    def const(self, base: str, value: np.ndarray) -> str:
        return self.ctx.add_constant(f"{self.node.name}/{base}", np.ascontiguousarray(value, np.float32))

    def op(self, kind: str, inputs, base: str, shape, attrs=None) -> str:
        out = self.new(base, shape)
        self.ctx.add_op(kind, list(inputs), [out], attrs)
        return out

    def fc(self, x: str, weights: np.ndarray, bias: np.ndarray | None, base: str) -> str:
        rows = self.ctx.shape(x)[0]
        bias = np.zeros(weights.shape[0], np.float32) if bias is None else bias
        return self.op("FULLY_CONNECTED", [x, self.const(f"{base}/weights", weights),
                                           self.const(f"{base}/bias", bias)],
                       base, (rows, weights.shape[0]), FullyConnectedAttrs())

    def reshape(self, x: str, shape, base: str) -> str:
        shape_name = self.ctx.add_constant(f"{self.node.name}/{base}/shape", np.array(shape, np.int32))
        return self.op("RESHAPE", [x, shape_name], base, shape)

    def split(self, x: str, parts: int, axis: int, base: str) -> list[str]:
        shape = list(self.ctx.shape(x))
        if parts == 1:
            return [x]
        shape[axis] //= parts
        outs = [self.new(f"{base}{k}", shape) for k in range(parts)]
        axis_name = self.ctx.add_constant(f"{self.node.name}/{base}/axis", np.array(axis, np.int32))
        self.ctx.add_op("SPLIT", [axis_name, x], outs, SplitAttrs(num_splits=parts))
        return outs

    def concat(self, parts: list[str], axis: int, base: str) -> str:
        if len(parts) == 1:
            return parts[0]
        shape = list(self.ctx.shape(parts[0]))
        shape[axis] = sum(self.ctx.shape(p)[axis] for p in parts)
        return self.op("CONCATENATION", parts, base, shape, ConcatenationAttrs(axis=axis))

    def binary(self, kind: str, a: str, b: str, base: str) -> str:
        return self.op(kind, [a, b], base, self.ctx.shape(a))

    def activation(self, act: Activation, x: str, base: str) -> str:
        shape = self.ctx.shape(x)
        if act.name in ACTIVATION_KINDS:
            return self.op(ACTIVATION_KINDS[act.name], [x], base, shape)
        if act.name == "LeakyRelu":
            return self.op("LEAKY_RELU", [x], base, shape, LeakyReluAttrs(act.alpha))
        if act.name == "ScaledTanh":  # alpha * tanh(beta * x)
            inner = self.binary("MUL", x, self.const(f"{base}/beta", np.array(act.beta)), f"{base}/scaled")
            return self.binary("MUL", self.op("TANH", [inner], f"{base}/tanh", shape),
                               self.const(f"{base}/alpha", np.array(act.alpha)), base)
        affine = self.binary("ADD", self.binary("MUL", x, self.const(f"{base}/alpha", np.array(act.alpha)),
                                                f"{base}/alpha_x"),
                             self.const(f"{base}/beta", np.array(act.beta)), f"{base}/affine")
        if act.name == "Affine":
            return affine
        return self.op("RELU_0_TO_1", [affine], base, shape)  # HardSigmoid


def _masked(b: _Builder, inside: str, new: str, previous: str | None, mask: str, base: str) -> str:
    """The state after a step under `mask`: `new` where 1, `previous` where 0. `inside` is
    new * mask, which is the whole answer when the previous state is zero (None)."""
    if previous is None:
        return inside
    return b.binary("ADD", previous, b.binary("MUL", b.binary("SUB", new, previous, f"{base}/delta"),
                                              mask, f"{base}/step"), base)


def _optional(node, index: int) -> str:
    return node.input[index] if len(node.input) > index and node.input[index] else ""


def _zero_constant(ctx, name: str) -> bool:
    value = ctx.constant(name) if name else None
    return value is not None and not np.any(value)


def recurrent_case(name: str, kind: str, steps: int = 5, batch: int = 2, inputs: int = 3,
                   hidden: int = 4, seed: int = 0, bias: bool = True, initial: bool = False,
                   outputs=("y",), **attrs) -> Case:
    """A seeded single-node LSTM/GRU/RNN case; `initial` makes the states graph inputs."""
    directions = 2 if attrs.get("direction") == "bidirectional" else 1
    gates = GATES[kind]
    layout = attrs.get("layout", 0)
    consts = {"w": rand(directions, gates * hidden, inputs, seed=seed + 1, low=-0.6, high=0.6),
              "r": rand(directions, gates * hidden, hidden, seed=seed + 2, low=-0.6, high=0.6)}
    names = ["x", "w", "r"]
    if bias or initial:
        consts["b"] = rand(directions, 2 * gates * hidden, seed=seed + 3, low=-0.3, high=0.3)
        names.append("b" if bias else "")
    feeds = {"x": rand(*((steps, batch, inputs) if layout == 0 else (batch, steps, inputs)), seed=seed)}
    if initial:
        names.append("")  # sequence_lens
        state = (directions, batch, hidden) if layout == 0 else (batch, directions, hidden)
        feeds["h0"] = rand(*state, seed=seed + 4)
        names.append("h0")
        if kind == "LSTM":
            feeds["c0"] = rand(*state, seed=seed + 5)
            names.append("c0")
    node_outputs = [n if n in outputs else "" for n in ("y", "y_h", "y_c")[:3 if kind == "LSTM" else 2]]
    while node_outputs and not node_outputs[-1]:
        node_outputs.pop()
    node = helper.make_node(kind, names, node_outputs, hidden_size=hidden, **attrs)
    # quantize=False: the generic check allows 2 output steps per op, and an unrolled cell is
    # dozens of ops deep; tests/test_recurrent.py runs full int8 files and reports their SQNR.
    return Case(name, [node], feeds, consts, outputs=tuple(outputs), quantize=False)


@register
class Unpack(OpSpec):
    """UNPACK; imports ONNX LSTM, GRU and RNN, whose time steps it separates (see the module)."""

    kind = "UNPACK"
    onnx_types = ("LSTM", "GRU", "RNN")
    Attrs = UnpackAttrs
    layout = LayoutBreaking()
    quant = SameAsInput()  # unpack.cc copies the integers: the outputs keep the input's grid
    cases = [
        recurrent_case("lstm_forward", "LSTM"),
        recurrent_case("lstm_reverse_states_all_outputs", "LSTM", direction="reverse", initial=True,
                       outputs=("y", "y_h", "y_c")),
        recurrent_case("lstm_bidirectional_states", "LSTM", direction="bidirectional", initial=True,
                       outputs=("y", "y_h")),
        recurrent_case("gru_forward", "GRU", outputs=("y", "y_h")),
        recurrent_case("gru_linear_before_reset_bidirectional", "GRU", direction="bidirectional",
                       linear_before_reset=1, initial=True, outputs=("y", "y_h")),
        recurrent_case("gru_reverse_no_bias", "GRU", direction="reverse", bias=False, steps=3),
        recurrent_case("rnn_forward_states", "RNN", initial=True, outputs=("y", "y_h")),
        recurrent_case("rnn_bidirectional_relu", "RNN", direction="bidirectional",
                       activations=["Relu", "Tanh"]),
    ]

    def from_onnx(self, node, ctx) -> None:
        kind = node.op_type
        gates = GATES[kind]
        b = _Builder(ctx, node)
        x = node.input[0]
        if len(ctx.shape(x)) != 3:
            raise Unsupported(node, "recurrent_rank", f"{kind} input must be 3-D, not {ctx.shape(x)}")
        layout = int(ctx.attr(node, "layout", 0))
        steps, batch, _ = ctx.shape(x) if layout == 0 else \
            (ctx.shape(x)[1], ctx.shape(x)[0], ctx.shape(x)[2])
        w = ctx.require_constant(node, 1, "W").astype(np.float32)
        r = ctx.require_constant(node, 2, "R").astype(np.float32)
        hidden = int(ctx.attr(node, "hidden_size", r.shape[-1]))
        directions = w.shape[0]
        direction = ctx.attr(node, "direction", "forward")
        if (direction == "bidirectional") != (directions == 2):
            raise Unsupported(node, "recurrent_direction",
                              f"direction '{direction}' with weights for {directions} direction(s)")
        bias = np.zeros((directions, 2 * gates * hidden), np.float32)
        if _optional(node, 3):
            bias = ctx.require_constant(node, 3, "B").astype(np.float32)
        lens = _optional(node, 4)
        masks = None
        if lens:
            value = ctx.constant(lens)
            if value is not None and (value.size != batch or np.any(value < 0) or np.any(value > steps)):
                raise Unsupported(node, "recurrent_sequence_lens",
                                  f"sequence_lens {value.tolist()} must give each of the {batch} batch "
                                  f"entries a length from 0 to the sequence length ({steps})")
            if value is None or np.any(value != steps):
                masks = self._step_masks(b, ctx, lens, steps, batch)
        if ctx.attr(node, "clip", None) is not None:
            raise Unsupported(node, "recurrent_clip", f"{kind} with a clip threshold is not supported")
        if kind == "LSTM" and int(ctx.attr(node, "input_forget", 0)):
            raise Unsupported(node, "lstm_input_forget", "LSTM input_forget=1 is not supported")
        acts = _activations(node, ctx, kind, directions)
        per_dir = len(DEFAULT_ACTIVATIONS[kind])
        peepholes = ctx.constant(_optional(node, 7)) if kind == "LSTM" else None
        if kind == "LSTM" and _optional(node, 7) and peepholes is None:
            raise Unsupported(node, "non_constant_input", "input 7 (P) must be a constant")
        lbr = int(ctx.attr(node, "linear_before_reset", 0)) if kind == "GRU" else 0

        # The input projection of every step at once: [T * B, I] (rows time-major for layout 0).
        flat = b.reshape(x, (steps * batch if layout == 0 else batch * steps, ctx.shape(x)[2]), "x_rows")
        initial = [self._initial_states(b, node, ctx, 5, directions, batch, hidden, layout)]
        initial.append(self._initial_states(b, node, ctx, 6, directions, batch, hidden, layout)
                       if kind == "LSTM" else [None] * directions)
        hs, last_h, last_c = [], [], []
        for d in range(directions):
            wb, rb = bias[d, :gates * hidden], bias[d, gates * hidden:]
            proj_bias = wb + rb
            if kind == "GRU" and lbr:
                proj_bias = proj_bias.copy()
                proj_bias[2 * hidden:] = wb[2 * hidden:]  # Rbh stays inside r * (H R_h^T + Rbh)
            proj = b.fc(flat, w[d], proj_bias, f"d{d}/input_projection")
            grid = (steps, batch, gates * hidden) if layout == 0 else (batch, steps, gates * hidden)
            proj = b.reshape(proj, grid, f"d{d}/input_projection_steps")
            axis = 0 if layout == 0 else 1
            step_inputs = [b.new(f"d{d}/x_t{t}", (batch, gates * hidden)) for t in range(steps)]
            ctx.add_op("UNPACK", [proj], step_inputs, UnpackAttrs(num=steps, axis=axis))
            reverse = direction == "reverse" or d == 1
            order = range(steps - 1, -1, -1) if reverse else range(steps)
            h, c = initial[0][d], initial[1][d]
            outputs: list[str] = [""] * steps
            f_act = acts[d * per_dir:(d + 1) * per_dir]
            for t in order:
                base = f"d{d}/t{t}"
                h_prev, c_prev = h, c
                if kind == "LSTM":
                    h, c = self._lstm_step(b, step_inputs[t], h, c, r[d], peepholes, d, hidden, f_act, base)
                elif kind == "GRU":
                    h = self._gru_step(b, step_inputs[t], h, r[d], rb, lbr, hidden, f_act, base)
                else:
                    gate = step_inputs[t] if h is None else b.binary(
                        "ADD", step_inputs[t], b.fc(h, r[d], None, f"{base}/recurrent"), f"{base}/gate")
                    h = b.activation(f_act[0], gate, f"{base}/h")
                outputs[t] = h
                if masks is not None:  # past its length an entry outputs 0 and keeps its state
                    outputs[t] = b.binary("MUL", h, masks[t], f"{base}/y_masked")
                    h = _masked(b, outputs[t], h, h_prev, masks[t], f"{base}/h_masked")
                    if c is not None:
                        c = _masked(b, b.binary("MUL", c, masks[t], f"{base}/c_inside"), c, c_prev,
                                    masks[t], f"{base}/c_masked")
            hs.append(outputs)
            last_h.append(h)
            last_c.append(c)
        self._outputs(b, node, ctx, hs, last_h, last_c, steps, batch, hidden, layout)

    @staticmethod
    def _step_masks(b: _Builder, ctx, lens: str, steps: int, batch: int) -> list[str]:
        """Per step t, [B, 1]: 1.0 where t < sequence_lens[b] (inside that entry's sequence), else
        0.0; computed in the file from a sequence_lens graph input (a torch export with a lengths
        input: pack_padded_sequence), folded for a constant one."""
        name = b.node.name
        lens_type = ctx.graph.tensors[ctx.tensor(lens)].dtype
        row = ctx.new_activation(f"{name}/lens_row", (1, batch), lens_type)
        ctx.add_op("RESHAPE", [lens, ctx.add_constant(f"{name}/lens_row/shape", np.array([1, batch], np.int32))],
                   [row])
        t_column = ctx.add_constant(f"{name}/step_numbers", np.arange(steps, dtype=lens_type.numpy)[:, None])
        inside = ctx.new_activation(f"{name}/inside", (steps, batch), DType.BOOL)
        ctx.add_op("LESS", [t_column, row], [inside])
        mask = ctx.new_activation(f"{name}/mask", (steps, batch))
        add_cast(ctx, inside, mask, DType.FLOAT32)
        masks = [b.new(f"mask_t{t}", (batch, 1)) for t in range(steps)]
        ctx.add_op("UNPACK", [b.reshape(mask, (steps, batch, 1), "mask_steps")], masks,
                   UnpackAttrs(num=steps, axis=0))
        return masks

    @staticmethod
    def _initial_states(b: _Builder, node, ctx, index: int, directions: int, batch: int, hidden: int,
                        layout: int) -> list[str | None]:
        """initial_h / initial_c per direction as [B, H], or None (absent or all zero)."""
        name = _optional(node, index)
        if not name or _zero_constant(ctx, name):
            return [None] * directions
        what = "h0" if index == 5 else "c0"
        if layout == 0:  # [D, B, H]
            rows = b.reshape(name, (directions * batch, hidden), f"{what}_rows")
            return b.split(rows, directions, 0, f"{what}_d")
        wide = b.reshape(name, (batch, directions * hidden), f"{what}_wide")  # [B, D, H]
        return b.split(wide, directions, 1, f"{what}_d")

    @staticmethod
    def _lstm_step(b: _Builder, x_t: str, h, c, r: np.ndarray, peepholes, d: int, hidden: int,
                   acts, base: str) -> tuple[str, str]:
        f, g, h_act = acts
        gates = x_t if h is None else b.binary("ADD", x_t, b.fc(h, r, None, f"{base}/recurrent"),
                                              f"{base}/gates")
        gi, go, gf, gc = b.split(gates, 4, 1, f"{base}/gate")  # ONNX order: i, o, f, c
        p = None if peepholes is None else peepholes[d].astype(np.float32)
        if p is not None and c is not None:
            gi = b.binary("ADD", gi, b.binary("MUL", c, b.const(f"{base}/p_i", p[:hidden]),
                                              f"{base}/peep_i"), f"{base}/gi_peep")
            gf = b.binary("ADD", gf, b.binary("MUL", c, b.const(f"{base}/p_f", p[2 * hidden:]),
                                              f"{base}/peep_f"), f"{base}/gf_peep")
        i = b.activation(f, gi, f"{base}/i")
        candidate = b.activation(g, gc, f"{base}/g")
        new_c = b.binary("MUL", i, candidate, f"{base}/i_g")
        if c is not None:
            forget = b.activation(f, gf, f"{base}/f")
            new_c = b.binary("ADD", b.binary("MUL", forget, c, f"{base}/f_c"), new_c, f"{base}/c")
        if p is not None:
            go = b.binary("ADD", go, b.binary("MUL", new_c, b.const(f"{base}/p_o", p[hidden:2 * hidden]),
                                              f"{base}/peep_o"), f"{base}/go_peep")
        o = b.activation(f, go, f"{base}/o")
        new_h = b.binary("MUL", o, b.activation(h_act, new_c, f"{base}/c_act"), f"{base}/h")
        return new_h, new_c

    @staticmethod
    def _gru_step(b: _Builder, x_t: str, h, r: np.ndarray, rb: np.ndarray, lbr: int, hidden: int,
                  acts, base: str) -> str:
        f, g = acts
        xz, xr, xh = b.split(x_t, 3, 1, f"{base}/x_gate")  # ONNX order: z, r, h
        rbh = rb[2 * hidden:]
        if h is None:  # zero state: H R^T = 0
            z = b.activation(f, xz, f"{base}/z")
            pre = xh
            if lbr:
                rgate = b.activation(f, xr, f"{base}/r")
                pre = b.binary("ADD", xh, b.binary("MUL", rgate, b.const(f"{base}/rbh", rbh),
                                                   f"{base}/r_rbh"), f"{base}/h_pre")
            candidate = b.activation(g, pre, f"{base}/h_candidate")
            return b.binary("SUB", candidate, b.binary("MUL", z, candidate, f"{base}/z_h"), f"{base}/h")
        if lbr:
            bias = np.concatenate([np.zeros(2 * hidden, np.float32), rbh])
            hz, hr, hh = b.split(b.fc(h, r, bias, f"{base}/recurrent"), 3, 1, f"{base}/h_gate")
            z = b.activation(f, b.binary("ADD", xz, hz, f"{base}/z_pre"), f"{base}/z")
            rgate = b.activation(f, b.binary("ADD", xr, hr, f"{base}/r_pre"), f"{base}/r")
            pre = b.binary("ADD", xh, b.binary("MUL", rgate, hh, f"{base}/r_hh"), f"{base}/h_pre")
        else:
            hz, hr = b.split(b.fc(h, r[:2 * hidden], None, f"{base}/recurrent"), 2, 1, f"{base}/h_gate")
            z = b.activation(f, b.binary("ADD", xz, hz, f"{base}/z_pre"), f"{base}/z")
            rgate = b.activation(f, b.binary("ADD", xr, hr, f"{base}/r_pre"), f"{base}/r")
            reset = b.binary("MUL", rgate, h, f"{base}/r_h")
            pre = b.binary("ADD", xh, b.fc(reset, r[2 * hidden:], None, f"{base}/recurrent_h"),
                           f"{base}/h_pre")
        candidate = b.activation(g, pre, f"{base}/h_candidate")
        # H = (1 - z) * candidate + z * H_prev = candidate + z * (H_prev - candidate)
        delta = b.binary("MUL", z, b.binary("SUB", h, candidate, f"{base}/h_delta"), f"{base}/z_delta")
        return b.binary("ADD", candidate, delta, f"{base}/h")

    @staticmethod
    def _outputs(b: _Builder, node, ctx, hs, last_h, last_c, steps: int, batch: int, hidden: int,
                 layout: int) -> None:
        directions = len(hs)
        y = node.output[0] if node.output else ""
        if y:
            if layout == 0:  # Y [T, D, B, H]
                parts = [b.reshape(b.concat(outs, 0, f"d{d}/y_rows"), (steps, 1, batch, hidden),
                                   f"d{d}/y") for d, outs in enumerate(hs)]
                full = b.concat(parts, 1, "y_directions")
            else:  # Y [B, T, D, H]
                per_step = [b.reshape(b.concat([hs[d][t] for d in range(directions)], 1, f"t{t}/y_dirs"),
                                      (batch, 1, directions * hidden), f"t{t}/y") for t in range(steps)]
                full = b.concat(per_step, 1, "y_steps")
            b.ctx.add_op("RESHAPE", [full, ctx.add_constant(f"{y}/shape", np.array(
                ctx.shape(y), np.int32))], [y])
        for index, states in ((1, last_h), (2, last_c)):
            out = node.output[index] if len(node.output) > index else ""
            if not out:
                continue
            joined = b.concat(states, 0 if layout == 0 else 1, f"y_{'h' if index == 1 else 'c'}_dirs")
            ctx.add_op("RESHAPE", [joined, ctx.add_constant(f"{out}/shape", np.array(
                ctx.shape(out), np.int32))], [out])

    def reference(self, x, *, num: int, axis: int):
        return tuple(np.squeeze(part, axis) for part in np.split(x, num, axis=axis))

    def options(self, attrs: UnpackAttrs) -> UnpackOptionsT:
        return UnpackOptionsT(num=attrs.num, axis=attrs.axis)

    def version(self, op: Op, graph: Graph) -> int:
        # op_version.cc: int8/uint8 input -> 2, bool -> 3, int16 -> 4.
        dtype = graph.tensors[op.inputs[0]].dtype.name
        if dtype == "INT16":
            return 4
        if dtype == "BOOL":
            return 3
        return 2 if dtype in ("INT8", "UINT8") else 1
