"""PixelUnshuffle and PixelShuffle written as Reshape -> 6-D Transpose -> Reshape, as their ONNX ops.

torch exports nn.PixelUnshuffle(r) (both exporters) as Reshape [N, C, H/r, r, W/r, r], Transpose
[0, 1, 3, 5, 2, 4], Reshape [N, C*r*r, H/r, W/r]: the moved channels in (channel, block row,
block column) order. Imported as written it is a 6-D TRANSPOSE between two RESHAPEs of NCHW
order (TRANSPOSEs each side in the NHWC file). It is SpaceToDepth (block row, block column,
channel order) followed by a channel Gather into the (channel, row, column) order; the same
pattern the other way ([N, C, r, r, H, W], [0, 1, 4, 2, 5, 3], [N, C, H*r, W*r]) is DepthToSpace
in CRD mode (what torch writes for nn.PixelShuffle). The channel Gathers that a conv computes or
reads fold into its weights after import (tflq.passes.channels).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tflq.frontend.onnx_patterns import consumer_map, splice_nodes, static_shapes

UNSHUFFLE = (0, 1, 3, 5, 2, 4)
SHUFFLE = (0, 1, 4, 2, 5, 3)


def pixel_shuffles_as_depth_ops(model: onnx.ModelProto) -> int:
    """Rewrite each Reshape -> Transpose -> Reshape PixelUnshuffle / PixelShuffle (see the module
    doc); returns how many."""
    g = model.graph
    shapes = static_shapes(g)
    consumers = consumer_map(g)
    producers = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}

    def only(name: str, op_type: str):
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type and name not in outputs else None

    replaced: dict[int, list] = {}
    dead: set[int] = set()
    for first in g.node:
        if first.op_type != "Reshape":
            continue
        x, six = first.input[0], first.output[0]
        transpose = only(six, "Transpose")
        last = only(transpose.output[0], "Reshape") if transpose is not None else None
        if last is None:
            continue
        perm = tuple(next((helper.get_attribute_value(a) for a in transpose.attribute if a.name == "perm"), ()))
        xs, ss, ys = shapes.get(x), shapes.get(six), shapes.get(last.output[0])
        if xs is None or ss is None or ys is None or len(xs) != 4 or len(ss) != 6:
            continue
        n, c, h, w = xs
        base = last.name or last.output[0]
        if perm == UNSHUFFLE:
            r = ss[3]
            if r < 2 or ss != (n, c, h // r, r, w // r, r) or h % r or w % r or ys != (n, c * r * r, h // r, w // r):
                continue
            depth = f"{base}/space_to_depth"
            # SpaceToDepth's channel (i*r + j)*C + c  ->  (c*r + i)*r + j
            order = np.arange(c * r * r).reshape(r, r, c).transpose(2, 0, 1).reshape(-1)
            index = f"{base}/crd_order"
            g.initializer.append(numpy_helper.from_array(order.astype(np.int64), index))
            g.value_info.append(helper.make_tensor_value_info(
                depth, next((vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input)
                             if vi.name == x), onnx.TensorProto.FLOAT), ys))
            nodes = [helper.make_node("SpaceToDepth", [x], [depth], name=depth, blocksize=r),
                     helper.make_node("Gather", [depth, index], [last.output[0]], name=f"{base}/crd", axis=1)]
        elif perm == SHUFFLE:
            r = ss[2]
            if r < 2 or c % (r * r) or ss != (n, c // (r * r), r, r, h, w) or ys != (n, c // (r * r), h * r, w * r):
                continue
            nodes = [helper.make_node("DepthToSpace", [x], [last.output[0]], name=base, blocksize=r, mode="CRD")]
        else:
            continue
        replaced[id(last)] = nodes
        dead.update((id(first), id(transpose)))
    return splice_nodes(g, replaced, dead)
