"""ONNX Resize with mode 'cubic' (torch's bicubic F.interpolate) as two constant matrix products.

TFLite has no bicubic kernel, but for a static size a cubic resize is a fixed linear map per
axis: output row o reads the 4 input rows floor(x) - 1 .. floor(x) + 2 around its source
coordinate x (the Resize's coordinate_transformation_mode) with Keys' weights of cubic_coeff_a;
rows outside the input are clamped to the edge, or with exclude_outside dropped and the weights
renormalised (onnxruntime's upsample.cc). The [out, in] matrix of each axis is built here in
float64 and the image, channels-last ([N, H, W, C], a TRANSPOSE the layout pass absorbs), is
multiplied by it: BATCH_MATMUL(A_h, [N, H, W*C]) then BATCH_MATMUL(A_w, [N*Ho, W, C]). Exact in
float up to summation order; in 8 bits each product is one rounding (LiteRT has no uint8
BATCH_MATMUL: in uint8 mode the products stay float). An axis that keeps its size under an
identity map (a 1-D resize's unit height) is not multiplied.
"""
from __future__ import annotations

import numpy as np

from tflq.ops.batch_matmul import BatchMatMulAttrs
from tflq.ops.reshape import add_reshape
from tflq.ops.resize import onnx_source_coordinates


def cubic_weights(a: float, t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution weights [len(t), 4] of the taps at -1, 0, 1, 2 for fractions t."""
    def w(d):
        d = np.abs(d)
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        return np.where(d <= 1, near, np.where(d < 2, far, 0.0))
    t = t[:, None]
    return w(np.concatenate([t + 1, t, 1 - t, 2 - t], axis=1))


def cubic_matrix(coordinate_mode: str, length_in: int, length_out: int, scale: float,
                 a: float = -0.75, exclude_outside: bool = False) -> np.ndarray:
    """The [length_out, length_in] matrix of a cubic Resize along one axis, as onnxruntime
    computes it (source coordinates in float32, as its upsamplebase.h)."""
    x = onnx_source_coordinates(coordinate_mode, length_in, length_out, scale).astype(np.float64)
    base = np.floor(x)
    weights = cubic_weights(a, x - base)
    taps = base[:, None].astype(np.int64) + np.arange(-1, 3)[None, :]
    inside = (taps >= 0) & (taps < length_in)
    if exclude_outside:
        weights = np.where(inside, weights, 0.0)
        weights = weights / weights.sum(axis=1, keepdims=True)
    matrix = np.zeros((length_out, length_in))
    rows = np.repeat(np.arange(length_out), 4)
    np.add.at(matrix, (rows, np.clip(taps, 0, length_in - 1).ravel()), weights.ravel())
    return matrix


def import_cubic(node, ctx, request) -> None:
    """Emit the two products for a 4-D cubic Resize (see the module doc)."""
    a = float(ctx.attr(node, "cubic_coeff_a", -0.75))
    exclude = bool(ctx.attr(node, "exclude_outside", 0))
    x, y = node.input[0], node.output[0]
    n, c = ctx.shape(x)[:2]
    (h, w), (ho, wo) = request.size_in, request.size_out
    mats = [cubic_matrix(request.coordinate_mode, li, lo, s, a, exclude)
            for li, lo, s in zip(request.size_in, request.size_out, request.scales)]
    base = node.name or y
    nhwc = ctx.new_activation(f"{base}/nhwc", (n, h, w, c))
    ctx.add_op("TRANSPOSE", [x, ctx.add_constant(f"{base}/to_nhwc", np.array([0, 2, 3, 1], np.int32))], [nhwc])
    value, rows = nhwc, h
    if not (ho == h and np.array_equal(mats[0], np.eye(h))):
        flat = ctx.new_activation(f"{base}/rows", (n, h, w * c))
        add_reshape(ctx, value, flat, (n, h, w * c))
        mixed = ctx.new_activation(f"{base}/rows_resized", (n, ho, w * c))
        matrix = ctx.add_constant(f"{base}/row_matrix", mats[0][None].astype(np.float32))
        ctx.add_op("BATCH_MATMUL", [matrix, flat], [mixed], BatchMatMulAttrs())
        value, rows = mixed, ho
    if not (wo == w and np.array_equal(mats[1], np.eye(w))):
        flat = ctx.new_activation(f"{base}/columns", (n * rows, w, c))
        add_reshape(ctx, value, flat, (n * rows, w, c))
        mixed = ctx.new_activation(f"{base}/columns_resized", (n * rows, wo, c))
        matrix = ctx.add_constant(f"{base}/column_matrix", mats[1][None].astype(np.float32))
        ctx.add_op("BATCH_MATMUL", [matrix, flat], [mixed], BatchMatMulAttrs())
        value = mixed
    image = ctx.new_activation(f"{base}/resized", (n, ho, wo, c))
    add_reshape(ctx, value, image, (n, ho, wo, c))
    ctx.add_op("TRANSPOSE", [image, ctx.add_constant(f"{base}/to_nchw", np.array([0, 3, 1, 2], np.int32))], [y])
