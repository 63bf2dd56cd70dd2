"""ONNX GridSample (4-D: spatial transformers, optical-flow warps, deformable sampling) lowered to
TFLite ops: TFLite has no grid-sampling kernel, so each output pixel's source pixels are gathered.

With X [N, C, H, W] and grid [N, Ho, Wo, 2] (x then y, in [-1, 1]):
  - the grid is denormalised as onnxruntime does (GsDenormalize): ((g + 1) * L - 1) / 2, or with
    align_corners (g + 1) / 2 * (L - 1);
  - padding 'border' clamps the coordinate to [0, L - 1]; 'reflection' folds it back into
    [0, L - 1] (align_corners) or [-0.5, L - 0.5] (then clamps); 'zeros' pads X with one ring of
    zeros and shifts the coordinate by one, so that every neighbour outside the image reads a zero
    (indices are clamped into the padded image: a far-away neighbour reads the ring too);
  - 'nearest' rounds half to even (ROUND, as std::nearbyint), 'bilinear' takes the 4 neighbours
    FLOOR and FLOOR + 1 weighted by the fractions;
  - the neighbours' integer coordinates become one flat row index (CAST to int32 right after
    FLOOR / ROUND, so that the index arithmetic is integer, never quantized) into X as
    [N * Hp * Wp, C] (TRANSPOSE to channels-last, which the layout pass absorbs), one GATHER each.
'bicubic' (16 neighbours) and 5-D grids are refused.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from tflq.errors import Unsupported
from tflq.ir.dtypes import DType
from tflq.ops.cast import CastAttrs
from tflq.ops.reshape import add_reshape
from tflq.ops.split import SplitAttrs

LINEAR = ("bilinear", "linear")  # opset 16 spelling, opset 20 spelling
NEAREST = ("nearest",)


COORDINATES = "sampling coordinates stay float: an 8-bit grid over the image would move each sampled pixel"


class _Builder:
    """Emits the lowering's ops; those on coordinates and weights (`coordinates`) stay float."""

    def __init__(self, ctx, node) -> None:
        self.ctx, self.node = ctx, node
        self.base = node.output[0]
        self.coordinates = True

    def const(self, what: str, value, dtype=np.float32) -> str:
        return self.ctx.add_constant(f"{self.base}/{what}", np.array(value, dtype))

    def op(self, kind: str, inputs: list[str], shape, what: str, dtype: DType = DType.FLOAT32,
           attrs=None) -> str:
        out = self.ctx.new_activation(f"{self.base}/{what}", tuple(shape), dtype)
        op = self.ctx.add_op(kind, inputs, [out], attrs)
        if op is not None and self.coordinates and dtype.is_float:
            op.float_reason = COORDINATES
        return out

    def binary(self, kind: str, a: str, b, shape, what: str, dtype: DType = DType.FLOAT32) -> str:
        if not isinstance(b, str):
            b = self.const(f"{what}/c", b, dtype.numpy)
        return self.op(kind, [a, b], shape, what, dtype)

    def clamp(self, x: str, low, high, shape, what: str, dtype: DType = DType.FLOAT32) -> str:
        return self.binary("MINIMUM", self.binary("MAXIMUM", x, low, shape, f"{what}_low", dtype),
                           high, shape, what, dtype)

    def to_int(self, x: str, shape, what: str) -> str:
        return self.op("CAST", [x], shape, what, DType.INT32, CastAttrs(to="INT32", source="FLOAT32"))


def _reflect(b: _Builder, x: str, low: float, span: float, shape, what: str) -> str:
    """x folded back into [low, low + span] by reflections at both ends (PyTorch's
    reflect_coordinates): low + span - | (|x - low| mod 2 span) - span |."""
    if span <= 0:
        return b.binary("MUL", x, 0.0, shape, f"{what}_zero")
    t = b.op("ABS", [b.binary("SUB", x, low, shape, f"{what}_from_low")], shape, f"{what}_dist")
    t = b.binary("FLOOR_MOD", t, 2.0 * span, shape, f"{what}_period")
    t = b.op("ABS", [b.binary("SUB", t, span, shape, f"{what}_centred")], shape, f"{what}_fold")
    return b.binary("SUB", b.const(f"{what}_top", low + span), t, shape, what)


def import_grid_sample(node, ctx) -> None:
    from tflq.ops.gather import GatherAttrs  # (gather.py imports this module)

    x, grid, out = node.input[0], node.input[1], node.output[0]
    mode = ctx.attr(node, "mode", "bilinear")
    padding = ctx.attr(node, "padding_mode", "zeros")
    align = bool(ctx.attr(node, "align_corners", 0))
    if ctx.rank(x) != 4:
        raise Unsupported(node, "grid_sample_rank", f"only 4-D GridSample is supported (rank {ctx.rank(x)})")
    if mode not in LINEAR + NEAREST:
        raise Unsupported(node, "grid_sample_mode", f"GridSample mode '{mode}' has no TFLite lowering",
                          "use mode 'bilinear' or 'nearest'")
    if padding not in ("zeros", "border", "reflection"):
        raise Unsupported(node, "grid_sample_padding", f"GridSample padding_mode '{padding}'")
    n, c, h, w = ctx.shape(x)
    gn, ho, wo, two = ctx.shape(grid)
    if two != 2 or gn != n:
        raise Unsupported(node, "grid_sample_shape", f"grid of shape {[gn, ho, wo, two]} for data {[n, c, h, w]}")
    b = _Builder(ctx, node)
    points = ho * wo
    col = (n, points, 1)
    pad = 1 if padding == "zeros" else 0
    hp, wp = h + 2 * pad, w + 2 * pad

    # the data as rows of C channels: [N * Hp * Wp, C]
    b.coordinates = False
    nhwc = b.op("TRANSPOSE", [x, b.const("perm_in", [0, 2, 3, 1], np.int32)], (n, h, w, c), "nhwc")
    if pad:
        nhwc = b.op("PAD", [nhwc, b.const("ring", [[0, 0], [1, 1], [1, 1], [0, 0]], np.int32)],
                    (n, hp, wp, c), "padded")
    rows = ctx.new_activation(f"{out}/rows", (n * hp * wp, c))
    add_reshape(ctx, nhwc, rows, (n * hp * wp, c))
    b.coordinates = True

    # pixel coordinates of each output point, [N, Ho * Wo, 1] each
    flat_grid = ctx.new_activation(f"{out}/grid_points", (n, points, 2))
    add_reshape(ctx, grid, flat_grid, (n, points, 2))
    gx, gy = (ctx.new_activation(f"{out}/g{axis}", col) for axis in "xy")
    ctx.add_op("SPLIT", [b.const("split_axis", 2, np.int32), flat_grid], [gx, gy], SplitAttrs(num_splits=2))

    def coordinate(g: str, length: int, what: str) -> str:
        t = b.binary("ADD", g, 1.0, col, f"{what}_plus1")
        if align:
            t = b.binary("MUL", t, 0.5 * (length - 1), col, f"{what}_px")
        else:
            t = b.binary("MUL", b.binary("SUB", b.binary("MUL", t, float(length), col, f"{what}_scaled"),
                                         1.0, col, f"{what}_shifted"), 0.5, col, f"{what}_px")
        if padding == "reflection":
            t = _reflect(b, t, 0.0, length - 1.0, col, f"{what}_reflected") if align else \
                _reflect(b, t, -0.5, float(length), col, f"{what}_reflected")
        if padding in ("border", "reflection"):
            t = b.clamp(t, 0.0, length - 1.0, col, f"{what}_clamped")
        if pad:
            t = b.binary("ADD", t, float(pad), col, f"{what}_in_ring")
        return t

    px, py = coordinate(gx, w, "x"), coordinate(gy, h, "y")
    batch_rows = b.const("batch_rows", (np.arange(n) * hp * wp).reshape(n, 1, 1), np.int32)

    def index(iy: str, ix: str, what: str) -> str:
        """The flat row of integer coordinates (clamped into the padded image)."""
        iy = b.clamp(iy, 0, hp - 1, col, f"{what}_row", DType.INT32)
        ix = b.clamp(ix, 0, wp - 1, col, f"{what}_col", DType.INT32)
        flat = b.binary("ADD", b.binary("MUL", iy, wp, col, f"{what}_row_start", DType.INT32), ix,
                        col, f"{what}_in_image", DType.INT32)
        flat = b.binary("ADD", flat, batch_rows, col, f"{what}_flat", DType.INT32)
        flat2 = ctx.new_activation(f"{out}/{what}_index", (n, points), DType.INT32)
        add_reshape(ctx, flat, flat2, (n, points))
        return flat2

    def gather(idx: str, what: str) -> str:
        b.coordinates = False
        value = b.op("GATHER", [rows, idx], (n, points, c), what, attrs=GatherAttrs(axis=0))
        b.coordinates = True
        return value

    if mode in NEAREST:
        ix = b.to_int(b.op("ROUND", [px], col, "x_round"), col, "x_int")
        iy = b.to_int(b.op("ROUND", [py], col, "y_round"), col, "y_int")
        sampled = gather(index(iy, ix, "nearest"), "sampled")
    else:
        fx, fy = b.op("FLOOR", [px], col, "x_floor"), b.op("FLOOR", [py], col, "y_floor")
        x0, y0 = b.to_int(fx, col, "x0"), b.to_int(fy, col, "y0")
        x1, y1 = b.binary("ADD", x0, 1, col, "x1", DType.INT32), b.binary("ADD", y0, 1, col, "y1", DType.INT32)
        wx1, wy1 = b.binary("SUB", px, fx, col, "wx1"), b.binary("SUB", py, fy, col, "wy1")
        wx0 = b.binary("SUB", b.const("one_x", 1.0), wx1, col, "wx0")
        wy0 = b.binary("SUB", b.const("one_y", 1.0), wy1, col, "wy0")
        terms = []
        for yi, wy, xi, wx, what in ((y0, wy0, x0, wx0, "tl"), (y0, wy0, x1, wx1, "tr"),
                                     (y1, wy1, x0, wx0, "bl"), (y1, wy1, x1, wx1, "br")):
            weight = b.binary("MUL", wy, wx, col, f"{what}_weight")
            value = gather(index(yi, xi, what), f"{what}_value")
            b.coordinates = False  # the weighted sum of the pixels runs quantized
            terms.append(b.binary("MUL", value, weight, (n, points, c), f"{what}_term"))
            b.coordinates = True
        b.coordinates = False
        top = b.binary("ADD", terms[0], terms[1], (n, points, c), "top")
        bottom = b.binary("ADD", terms[2], terms[3], (n, points, c), "bottom")
        sampled = b.binary("ADD", top, bottom, (n, points, c), "sampled")
    image = ctx.new_activation(f"{out}/nhwc", (n, ho, wo, c))
    add_reshape(ctx, sampled, image, (n, ho, wo, c))
    ctx.add_op("TRANSPOSE", [image, b.const("perm_out", [0, 3, 1, 2], np.int32)], [out])


def grid_sample_case(name: str, data_shape, grid_shape, seed: int = 0, spread: float = 1.2,
                     opset: int = 16, **attrs):
    """A GridSample case: grid points spread a little past [-1, 1] to reach the padding."""
    from tflq.ops.base import Case, rand
    return Case(f"grid_sample_{name}", [helper.make_node("GridSample", ["x", "g"], ["y"], **attrs)],
                {"x": rand(*data_shape, seed=seed), "g": rand(*grid_shape, seed=seed + 1, low=-spread, high=spread)},
                opset=opset, emits=("GATHER",), quant_steps=None if attrs.get("mode") == "nearest" else 3.0,
                float_parts=True)
