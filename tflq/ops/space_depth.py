"""DEPTH_TO_SPACE and SPACE_TO_DEPTH: ONNX DepthToSpace (DCR and CRD modes) and SpaceToDepth.

TFLite's NHWC kernels order the moved channels as (block row, block column, channel), which is
ONNX's DCR order and SpaceToDepth's order. CRD (PyTorch's PixelShuffle) orders them (channel,
block row, block column); it becomes a channel GATHER into DCR order, then DEPTH_TO_SPACE.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.DepthToSpaceOptions import DepthToSpaceOptionsT
from tflq._generated.tflite.SpaceToDepthOptions import SpaceToDepthOptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import Case, ChannelsLast, OpSpec, SameAsInput, rand
from tflq.ops.checks import Choice, IntAttr, Rank
from tflq.ops.common import quantized_version
from tflq.ops.gather import add_gather


@dataclass(frozen=True)
class BlockAttrs:
    block_size: int = 1


def crd_to_dcr_channels(channels: int, block: int) -> np.ndarray:
    """Indices that reorder CRD channels (c, i, j) into DCR order (i, j, c)."""
    out_channels = channels // (block * block)
    return np.arange(channels).reshape(out_channels, block, block).transpose(1, 2, 0).reshape(-1)


def _block_size(node, ctx, spatial_divisible: bool) -> int:
    """Validate rank 4 and the divisibility DepthToSpace/SpaceToDepth need; return the block size."""
    x = node.input[0]
    if ctx.rank(x) != 4:
        raise Unsupported(node, f"{node.op_type.lower()}_rank", f"{node.op_type} needs a 4-D input")
    block = int(ctx.attr(node, "blocksize", 0))
    _, c, h, w = ctx.shape(x)
    bad = (h % block or w % block) if spatial_divisible else c % (block * block)
    if block < 1 or bad:
        raise Unsupported(node, "block_size", f"blocksize {block} does not divide the input "
                                              f"{list(ctx.shape(x))}")
    return block


def _case(op_type: str, name: str, shape, block: int, **attrs) -> Case:
    return Case(name, [helper.make_node(op_type, ["x"], ["y"], blocksize=block, **attrs)],
                {"x": rand(*shape)})


@register
class DepthToSpace(OpSpec):
    kind = "DEPTH_TO_SPACE"
    onnx_types = ("DepthToSpace",)
    onnx_checks = (IntAttr(name="blocksize", min=1), Rank(index=0, ranks=(4,)),
                   Choice(name="mode", values=("DCR", "CRD")))
    Attrs = BlockAttrs
    layout = ChannelsLast()
    quant = SameAsInput(moves_values=True)
    cases = [
        _case("DepthToSpace", "dcr_block2", (1, 8, 3, 4), 2),
        _case("DepthToSpace", "dcr_block3_batch2", (2, 18, 2, 3), 3, mode="DCR"),
        _case("DepthToSpace", "crd_block2", (1, 12, 3, 3), 2, mode="CRD"),
        _case("DepthToSpace", "crd_one_output_channel", (1, 4, 3, 3), 2, mode="CRD"),
    ]

    def from_onnx(self, node, ctx) -> None:
        block = _block_size(node, ctx, spatial_divisible=False)
        mode = ctx.attr(node, "mode", "DCR")
        x, out = node.input[0], node.output[0]
        channels = ctx.shape(x)[1]
        if mode not in ("DCR", "CRD"):
            raise Unsupported(node, "depth_to_space_mode", f"DepthToSpace mode '{mode}'")
        if mode == "CRD" and channels != block * block and block > 1:
            reordered = ctx.new_activation(f"{x}/dcr_order", ctx.shape(x))
            add_gather(ctx, x, reordered, crd_to_dcr_channels(channels, block), axis=1)
            x = reordered
        ctx.add_op(self.kind, [x], [out], BlockAttrs(block_size=block))

    def reference(self, x, *, block_size: int):
        n, h, w, c = x.shape
        b = block_size
        y = x.reshape(n, h, w, b, b, c // (b * b)).transpose(0, 1, 3, 2, 4, 5)
        return (y.reshape(n, h * b, w * b, c // (b * b)),)

    def options(self, attrs: BlockAttrs) -> DepthToSpaceOptionsT:
        return DepthToSpaceOptionsT(blockSize=attrs.block_size)

    def version(self, op: Op, graph: Graph) -> int:
        return quantized_version(graph, op)


@register
class SpaceToDepth(OpSpec):
    kind = "SPACE_TO_DEPTH"
    onnx_types = ("SpaceToDepth",)
    onnx_checks = (IntAttr(name="blocksize", min=1), Rank(index=0, ranks=(4,)))
    Attrs = BlockAttrs
    layout = ChannelsLast()
    quant = SameAsInput(moves_values=True)
    cases = [
        _case("SpaceToDepth", "block2", (1, 3, 4, 6), 2),
        _case("SpaceToDepth", "block3_batch2", (2, 2, 6, 3), 3),
    ]

    def from_onnx(self, node, ctx) -> None:
        block = _block_size(node, ctx, spatial_divisible=True)
        ctx.add_op(self.kind, [node.input[0]], [node.output[0]], BlockAttrs(block_size=block))

    def reference(self, x, *, block_size: int):
        n, h, w, c = x.shape
        b = block_size
        y = x.reshape(n, h // b, b, w // b, b, c).transpose(0, 1, 3, 2, 4, 5)
        return (y.reshape(n, h // b, w // b, b * b * c),)

    def options(self, attrs: BlockAttrs) -> SpaceToDepthOptionsT:
        return SpaceToDepthOptionsT(blockSize=attrs.block_size)

    def version(self, op: Op, graph: Graph) -> int:
        return quantized_version(graph, op)
