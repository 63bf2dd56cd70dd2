"""3-D pools and 5-D Resize: an ONNX MaxPool, AveragePool or Resize on [N, C, D, H, W] as two 2-D nodes.

TFLite has no 3-D pooling or resizing builtin. All three are separable: a max (a mean, a linear
or nearest interpolation) over a (D, H, W) box is the max (mean, interpolation) over D of the
ones over (H, W), exactly, and the 3-D divisor of an average pool (with or without its padding)
is the product of the per-axis ones. So `import_in_two_stages` imports the node as
- the (H, W) stage: the 2-D node on [N*D, C, H, W] (the depth moved next to the batch), then
- the D stage: the 2-D node with a (kD, 1) window on [N, C, D, OH*OW],
each through the 2-D importer (its padding, ceil_mode and count_include_pad handling, its exact
TFLite resize flags), the other axis untouched (kernel 1, scale 1: an identity in every mode).
A stage that does nothing is left out. The TRANSPOSEs that move D are ONNX-order bookkeeping: in
NDHWC, [N, D, H, W, C] -> [N*D, H, W, C] and [N*D, OH, OW, C] -> [N, D, OH*OW, C] move no element,
so the layout pass's transposes and these cancel into RESHAPEs (cleanup.one_transpose_per_chain).
In 8 bits each stage rounds once (the D stage of an average pool adds a rounding on the same grid).
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq.errors import Unsupported
from tflq.ops.conv3d import mark_ncdhw
from tflq.ops.reshape import add_reshape

DEPTH_NEXT_TO_BATCH = (0, 2, 1, 3, 4)  # [N, C, D, H, W] <-> [N, D, C, H, W] (its own inverse)


def _transpose(ctx, x: str, out_shape: tuple[int, ...]) -> str:
    out = ctx.new_activation(f"{x}/depth_moved", out_shape)
    ctx.add_op("TRANSPOSE", [x, ctx.add_constant(f"{out}/perm", np.array(DEPTH_NEXT_TO_BATCH, np.int32))],
               [out])
    return out


def import_in_two_stages(spec, node, ctx, hw: dict | None, depth: dict | None,
                         hw_inputs=(), depth_inputs=()) -> None:
    """Import 5-D `node` as its (H, W) stage and its D stage (module docstring).

    hw, depth: the attributes of each stage's 2-D node (None: the stage does nothing);
    hw_inputs, depth_inputs: their inputs after the data (a Resize's roi, scales, sizes)."""
    x, y = node.input[0], node.output[0]
    n, c, d, h, w = ctx.shape(x)
    _, _, od, oh, ow = ctx.shape(y)
    mark_ncdhw(ctx, x)
    mark_ncdhw(ctx, y)
    source = x
    if hw is not None:
        moved = _transpose(ctx, source, (n, d, c, h, w))
        flat = ctx.new_activation(f"{x}/as_2d", (n * d, c, h, w))
        add_reshape(ctx, moved, flat, (n * d, c, h, w))
        pooled = ctx.new_activation(f"{y}/hw", (n * d, c, oh, ow))
        _import_stage(spec, node, ctx, helper.make_node(node.op_type, [flat, *hw_inputs], [pooled],
                                                         name=f"{node.name}/hw", **hw))
        if depth is None:
            unflat = ctx.new_activation(f"{y}/hw_5d", (n, d, c, oh, ow))
            add_reshape(ctx, pooled, unflat, (n, d, c, oh, ow))
            ctx.add_op("TRANSPOSE", [unflat, ctx.add_constant(f"{y}/perm", np.array(
                DEPTH_NEXT_TO_BATCH, np.int32))], [y])
            return
        unflat = ctx.new_activation(f"{y}/hw_5d", (n, d, c, oh, ow))
        add_reshape(ctx, pooled, unflat, (n, d, c, oh, ow))
        source = _transpose(ctx, unflat, (n, c, d, oh, ow))
    columns = ctx.new_activation(f"{y}/depth_rows", (n, c, d, oh * ow))
    add_reshape(ctx, source, columns, (n, c, d, oh * ow))
    reduced = ctx.new_activation(f"{y}/depth", (n, c, od, oh * ow))
    _import_stage(spec, node, ctx, helper.make_node(node.op_type, [columns, *depth_inputs], [reduced],
                                                     name=f"{node.name}/depth", **depth))
    add_reshape(ctx, reduced, y, (n, c, od, oh, ow))


def _import_stage(spec, node, ctx, stage) -> None:
    """Import one 2-D stage of 5-D `node`; a refusal names the user's node, not the stage's."""
    try:
        spec.from_onnx(stage, ctx)
    except Unsupported as exc:
        d = exc.diagnostic
        raise Unsupported(node, d.reason_code, d.message, d.hint) from exc


_POOL_PASSED = ("ceil_mode", "count_include_pad", "auto_pad", "p")  # (LpPool: each stage a p-norm)


def import_pool_3d(spec, node, ctx) -> None:
    """A 3-D MaxPool or AveragePool as its (H, W) and D stages."""
    if len(node.output) > 1 and node.output[1]:
        raise Unsupported(node, "maxpool_indices", "MaxPool's Indices output is not supported")
    kernel = [int(k) for k in ctx.attr(node, "kernel_shape")]
    strides = [int(s) for s in ctx.attr(node, "strides", None) or [1, 1, 1]]
    dilations = [int(s) for s in ctx.attr(node, "dilations", None) or [1, 1, 1]]
    pads = [int(p) for p in ctx.attr(node, "pads", None) or [0] * 6]
    passed = {a: ctx.attr(node, a) for a in _POOL_PASSED if ctx.attr(node, a) is not None}
    same = passed.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER")
    hw = dict(kernel_shape=kernel[1:], strides=strides[1:], dilations=dilations[1:], **passed)
    depth = dict(kernel_shape=[kernel[0], 1], strides=[strides[0], 1], dilations=[dilations[0], 1],
                 **passed)
    if passed.get("auto_pad", "NOTSET") == "NOTSET":
        hw["pads"] = [pads[1], pads[2], pads[4], pads[5]]
        depth["pads"] = [pads[0], 0, pads[3], 0]
    hw_moves = kernel[1:] != [1, 1] or strides[1:] != [1, 1] or (not same and any(hw.get("pads", ())))
    depth_moves = kernel[0] != 1 or strides[0] != 1 or (not same and any(depth.get("pads", ())))
    if not hw_moves and not depth_moves:
        hw_moves = True  # a 1x1x1 window: one stage, an identity pool, keeps the node's meaning
    import_in_two_stages(spec, node, ctx, hw if hw_moves else None, depth if depth_moves else None)


def import_resize_3d(spec, node, ctx) -> None:
    """A 5-D Resize (N and C kept) as its (H, W) and D stages, each with the node's modes."""
    x, y = node.input[0], node.output[0]
    in_shape, out_shape = ctx.shape(x), ctx.shape(y)
    axes = [int(a) % 5 for a in ctx.attr(node, "axes", None) or []]
    scales = sizes = None
    if len(node.input) > 2 and node.input[2]:
        scales = ctx.require_constant(node, 2, "scales", sets_shape=True).astype(np.float32).ravel()
    if scales is None or scales.size == 0:
        scales = None
        sizes = ctx.require_constant(node, 3, "sizes", sets_shape=True).ravel()

    def full(values, defaults) -> list:
        result = list(defaults)
        if axes:
            for a, v in zip(axes, values):
                result[a] = v
        elif len(values) == 5:
            result = list(values)
        else:
            raise Unsupported(node, "resize_rank", f"Resize scales or sizes of length {len(values)} "
                                                   f"on a 5-D input")
        return result

    if tuple(out_shape[:2]) != tuple(in_shape[:2]):
        raise Unsupported(node, "resize_axes", "only D, H and W of a 5-D Resize can be resized")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "axes"}
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    if attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        raise Unsupported(node, "resize_mode", "5-D Resize with tf_crop_and_resize")
    n, c, d, h, w = in_shape
    _, _, od, oh, ow = out_shape
    if scales is not None:
        s = full(scales, [1.0] * 5)
        hw_in = ["", ctx.add_constant(f"{node.name}/hw_scales", np.array([1, 1, s[3], s[4]], np.float32))]
        depth_in = ["", ctx.add_constant(f"{node.name}/depth_scales",
                                         np.array([1, 1, s[2], 1], np.float32))]
    else:
        full(sizes, in_shape)  # (validates the length)
        hw_in = ["", "", ctx.add_constant(f"{node.name}/hw_sizes", np.array([n * d, c, oh, ow], np.int64))]
        depth_in = ["", "", ctx.add_constant(f"{node.name}/depth_sizes",
                                             np.array([n, c, od, oh * ow], np.int64))]
    hw_moves, depth_moves = (h, w) != (oh, ow), d != od
    if not hw_moves and not depth_moves:
        hw_moves = True
    import_in_two_stages(spec, node, ctx, attrs if hw_moves else None, attrs if depth_moves else None,
                         hw_in, depth_in)


def import_conv_transpose_3d(spec, node, ctx) -> None:
    """A 3-D ConvTranspose whose depth windows do not overlap (kernel depth == stride depth, no
    depth padding: U-Net's 2x2x2/2 up-convolution) as one 2-D TRANSPOSE_CONV over (H, W) on
    [N*D, C, H, W] that writes the KD output depths of each input depth as KD x Cout channels,
    then a depth-to-space along D (one TRANSPOSE of [N*D, OH*OW, KD, Cout] in NDHWC): every
    output is one transposed-convolution sum, rounded once in 8 bits. LiteRT's CONV_3D_TRANSPOSE
    is float only, and overlapping depth windows would need sums of such convolutions; those
    are refused naming the node."""
    x, y = node.input[0], node.output[0]
    w = ctx.require_constant(node, 1, "weights")
    b = ctx.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if len(node.input) > 2 and node.input[2] and b is None:
        raise Unsupported(node, "non_constant_input", "input 2 (bias) must be a constant")
    group = int(ctx.attr(node, "group", 1))
    strides = [int(s) for s in ctx.attr(node, "strides", None) or [1, 1, 1]]
    dilations = [int(s) for s in ctx.attr(node, "dilations", None) or [1, 1, 1]]
    pads = [int(p) for p in ctx.attr(node, "pads", None) or [0] * 6]
    output_padding = [int(p) for p in ctx.attr(node, "output_padding", None) or [0, 0, 0]]
    cin, cout, kd = w.shape[0], w.shape[1], w.shape[2]
    if (group != 1 or kd != strides[0] or dilations[0] != 1 or pads[0] or pads[3]
            or output_padding[0] or ctx.attr(node, "output_shape", None) is not None
            or ctx.attr(node, "auto_pad", "NOTSET") != "NOTSET"):
        raise Unsupported(node, "convtranspose_3d",
                          "3-D ConvTranspose is supported without groups, with a depth stride equal "
                          "to the kernel depth and no depth padding (LiteRT's CONV_3D_TRANSPOSE is "
                          f"float only); this one has group {group}, kernel depth {kd}, strides "
                          f"{strides}, pads {pads}, output_padding {output_padding}")
    n, _, d, h, wd = ctx.shape(x)
    _, _, od, oh, ow = ctx.shape(y)
    mark_ncdhw(ctx, x)
    mark_ncdhw(ctx, y)
    # 2-D weights [Cin, KD*Cout, KH, KW]: channel i*Cout + o is output depth tap i of channel o
    w2 = np.ascontiguousarray(w.astype(np.float32).transpose(0, 2, 1, 3, 4).reshape(
        cin, kd * cout, *w.shape[3:]))
    inputs = [_flattened(ctx, x, (n, d, cin, h, wd)),
              ctx.add_constant(f"{node.input[1]}/depth_as_channels", w2)]
    if b is not None:
        inputs.append(ctx.add_constant(f"{node.name}/bias_per_tap", np.tile(b.astype(np.float32), kd)))
    planes = ctx.new_activation(f"{y}/planes", (n * d, kd * cout, oh, ow))
    attrs = dict(strides=strides[1:], dilations=dilations[1:], pads=[pads[1], pads[2], pads[4], pads[5]],
                 output_padding=output_padding[1:], kernel_shape=list(w.shape[3:]))
    spec.from_onnx(helper.make_node("ConvTranspose", inputs, [planes], name=f"{node.name}/hw",
                                    **attrs), ctx)
    split = ctx.new_activation(f"{y}/taps", (n, d, kd, cout, oh, ow))
    add_reshape(ctx, planes, split, (n, d, kd, cout, oh, ow))
    interleaved = ctx.new_activation(f"{y}/interleaved", (n, cout, d, kd, oh, ow))
    ctx.add_op("TRANSPOSE", [split, ctx.add_constant(f"{y}/perm", np.array([0, 3, 1, 2, 4, 5], np.int32))],
               [interleaved])
    add_reshape(ctx, interleaved, y, (n, cout, od, oh, ow))


def _flattened(ctx, x: str, moved_shape: tuple[int, ...]) -> str:
    """[N, C, D, H, W] as [N*D, C, H, W] (the depth moved next to the batch)."""
    n, d, c, h, w = moved_shape
    moved = _transpose(ctx, x, moved_shape)
    flat = ctx.new_activation(f"{x}/as_2d", (n * d, c, h, w))
    add_reshape(ctx, moved, flat, (n * d, c, h, w))
    return flat
