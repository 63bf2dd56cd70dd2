"""1-D convolutions and pools: a rank-3 [N, C, W] node runs as its 2-D op with a height of 1.

The importer of a 2-D op calls `import_as_2d` for a rank-3 input: the node is rewritten with a unit
height in every spatial attribute (and in its weights), imported as usual between two RESHAPEs,
[N, C, W] -> [N, C, 1, W] and back, and both 3-D ends are marked NCW. The layout pass turns NCW into
NWC exactly as it turns NCHW into NHWC, so the RESHAPEs only add or drop a unit axis;
`tflq.passes.one_d` keeps chains of such ops in their 4-D form between them.
"""
from __future__ import annotations

from onnx import helper

from tflq.ir.graph import Layout
from tflq.ops.reshape import add_reshape

# attribute -> how its 1-D value becomes the 2-D one (height first)
_AS_2D = {
    "kernel_shape": lambda v: [1] + list(v),
    "strides": lambda v: [1] + list(v),
    "dilations": lambda v: [1] + list(v),
    "output_padding": lambda v: [0] + list(v),
    "output_shape": lambda v: [1] + list(v)[-1:],
    "pads": lambda v: [0, v[0], 0, v[1]],
}


def one_d_case(case):
    """A test case on [N, C, W] data: run with the ONNX layout kept (the generic op tests feed ONNX
    order; tests/test_one_d.py covers NWC inputs and outputs)."""
    case.options = {**case.options, "keep_io_layout": True}
    return case


def _mark_ncw(ctx, name: str) -> None:
    t = ctx.graph.tensors[ctx.tensor(name)]
    if not t.is_constant and t.rank == 3:
        t.layout = Layout.NCW


def import_as_2d(spec, node, ctx, weight_inputs: tuple[int, ...] = ()) -> None:
    """Import rank-3 `node` through `spec.from_onnx` as the 2-D node with a height of 1.

    weight_inputs: constant inputs with a spatial axis last ([Cout, Cin, K] -> [Cout, Cin, 1, K]).
    """
    x, y = node.input[0], node.output[0]
    n, c, w = ctx.shape(x)
    _mark_ncw(ctx, x)
    x4 = ctx.new_activation(f"{x}/2d", (n, c, 1, w))
    add_reshape(ctx, x, x4, (n, c, 1, w))
    inputs = [x4] + list(node.input[1:])
    for index in weight_inputs:
        if index < len(inputs) and inputs[index]:
            value = ctx.require_constant(node, index, "weights")
            if value.ndim == 3:
                inputs[index] = ctx.add_constant(f"{inputs[index]}/2d", value[:, :, None, :])
    n_out, c_out, w_out = ctx.shape(y)
    y4 = ctx.new_activation(f"{y}/2d", (n_out, c_out, 1, w_out))
    lifted = helper.make_node(node.op_type, inputs, [y4] + list(node.output[1:]), name=node.name,
                              domain=node.domain)
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if attr.name in _AS_2D and isinstance(value, list):
            lifted.attribute.append(helper.make_attribute(attr.name, _AS_2D[attr.name](value)))
        else:
            lifted.attribute.append(attr)
    spec.from_onnx(lifted, ctx)
    add_reshape(ctx, y4, y, (n_out, c_out, w_out))
    _mark_ncw(ctx, y)
