"""ONNX Col2Im (torch's F.fold / nn.Fold, opset 18) lowered during the folding sweep.

MobileViTV2 folds its patches back into an image with F.fold(kernel_size=patch, stride=patch).
TFLite has no such op. Col2Im's input [N, C * kh * kw, L] holds, for each of the L = Lh * Lw block
positions, each channel's block (channel-major); the output [N, C, H, W] sums every block into its
place. Blocks that tile the image (stride = block, no padding or dilation) do not overlap: the
output is the input reshaped to [N, C, kh, kw, Lh, Lw] and transposed to [N, C, Lh, kh, Lw, kw]
(exact, and in NHWC one TRANSPOSE). Otherwise it is a ConvTranspose of the [N, C * kh * kw, Lh, Lw]
view with C groups whose filter k = i * kw + j is 1 at tap (i, j): each input channel adds its
values at its offset in the block, with Col2Im's strides, dilations and pads (output_padding
restores the rows a stride leaves past the last block).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper

if TYPE_CHECKING:
    from tflq.frontend.fold import Item, Sweep

HINT = "tflq lowers Col2Im (F.fold) to a reshape and transpose or a ConvTranspose, which needs a " \
       "constant image and block shape and a 2-D image"


def _refuse(sweep: Sweep, node: onnx.NodeProto, message: str) -> list[Item]:
    sweep.refuse(node, "bad_col2im", message, HINT)
    sweep.kept.append(node)
    return []


def _ints(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    return [int(v) for v in next((a.ints for a in node.attribute if a.name == name), default)]


def lower_col2im(sweep: Sweep, node: onnx.NodeProto) -> list[Item]:
    x, image_name, block_name = (node.input[k] if k < len(node.input) else "" for k in range(3))
    for what, name in (("image shape", image_name), ("block shape", block_name)):
        if name not in sweep.constants:
            return _refuse(sweep, node, f"its {what} '{name}' depends on the input data")
    image = [int(v) for v in np.asarray(sweep.constants[image_name]).reshape(-1)]
    block = [int(v) for v in np.asarray(sweep.constants[block_name]).reshape(-1)]
    shape = sweep.shape_of(x)
    if len(image) != 2 or len(block) != 2 or shape is None or len(shape) != 3:
        return _refuse(sweep, node, f"image shape {image}, block shape {block} and input shape "
                                    f"{shape}: tflq lowers 2-D images of a static [N, C*kh*kw, L] input")
    strides = _ints(node, "strides", [1, 1])
    dilations = _ints(node, "dilations", [1, 1])
    pads = _ints(node, "pads", [0, 0, 0, 0])
    kh, kw = block
    blocks = [(image[d] + pads[d] + pads[d + 2] - dilations[d] * (block[d] - 1) - 1) // strides[d] + 1
              for d in range(2)]
    n, rows, length = shape
    if (min(block + strides + dilations) < 1 or min(pads) < 0 or min(blocks) < 1 or rows % (kh * kw)
            or blocks[0] * blocks[1] != length):
        return _refuse(sweep, node, f"an input of {shape} does not hold {blocks} blocks of {block} "
                                    f"for an image of {image} (strides {strides}, dilations "
                                    f"{dilations}, pads {pads})")
    channels = rows // (kh * kw)
    base = node.name
    items: list[Item] = []
    tiles = strides == block and dilations == [1, 1] and not any(pads) and \
        all(image[d] == blocks[d] * block[d] for d in range(2))
    if tiles:
        split, moved = sweep.unique(f"{base}/blocks"), sweep.unique(f"{base}/blocks_in_place")
        split_shape, out_shape = sweep.unique(f"{base}/blocks_shape"), sweep.unique(f"{base}/shape")
        sweep.set_constant(split_shape, np.array([n, channels, kh, kw, *blocks], np.int64))
        sweep.set_constant(out_shape, np.array([n, channels, *image], np.int64))
        items.append(helper.make_node("Reshape", [x, split_shape], [split], name=sweep.unique(f"{base}/split")))
        items.append(helper.make_node("Transpose", [split], [moved], perm=[0, 1, 4, 2, 5, 3],
                                      name=sweep.unique(f"{base}/place")))
        items.append(helper.make_node("Reshape", [moved, out_shape], [node.output[0]], name=base))
    else:
        view, view_shape = sweep.unique(f"{base}/block_grid"), sweep.unique(f"{base}/block_grid_shape")
        sweep.set_constant(view_shape, np.array([n, rows, *blocks], np.int64))
        weights = np.zeros((rows, 1, kh, kw), np.float32)
        taps = np.arange(kh * kw)
        for c in range(channels):
            weights[c * kh * kw + taps, 0, taps // kw, taps % kw] = 1.0
        w_name = sweep.unique(f"{base}/block_taps")
        sweep.set_constant(w_name, weights)
        covered = [strides[d] * (blocks[d] - 1) + dilations[d] * (block[d] - 1) + 1 - pads[d] - pads[d + 2]
                   for d in range(2)]
        items.append(helper.make_node("Reshape", [x, view_shape], [view], name=sweep.unique(f"{base}/grid")))
        items.append(helper.make_node("ConvTranspose", [view, w_name], [node.output[0]], name=base,
                                      group=channels, kernel_shape=block, strides=strides,
                                      dilations=dilations, pads=pads,
                                      output_padding=[image[d] - covered[d] for d in range(2)]))
    sweep.result.folded += 1
    return items
