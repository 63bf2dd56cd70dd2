"""RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR: ONNX Resize (opset 11+) over the H and W axes, and
over the W axis of a rank-3 [N, C, W] input (as the 2-D op with a height of 1, see one_d.py).

TFLite has two flags, align_corners and half_pixel_centers; ONNX has five coordinate transforms and
four nearest roundings. Bilinear modes map one to one where the formulas agree. For nearest, the
importer computes the source index of every output row and column both ways (onnxruntime's float
arithmetic, TFLite's kernels) and accepts a flag setting only if the indices are identical, so any
accepted model resizes exactly as onnxruntime does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from tflq._generated.tflite.ResizeBilinearOptions import ResizeBilinearOptionsT
from tflq._generated.tflite.ResizeNearestNeighborOptions import ResizeNearestNeighborOptionsT
from tflq.errors import Unsupported
from tflq.ir.graph import Graph, Op
from tflq.ops import register
from tflq.ops.base import WITH_INT16, Case, ChannelsLast, OpSpec, SameAsInput, rand
from tflq.ops.checks import Arity, Choice, ConstantValues
from tflq.ops.conv3d import volume_case
from tflq.ops.one_d import import_as_2d, one_d_case

F32 = np.float32
# (align_corners, half_pixel_centers) settings tried for nearest, the most widely supported first.
NEAREST_FLAGS = ((False, False), (False, True), (True, False))
LINEAR_FLAGS = {"half_pixel": (False, True), "pytorch_half_pixel": (False, True),
                "half_pixel_symmetric": (False, True), "align_corners": (True, False),
                "asymmetric": (False, False)}
NEAREST_HINT = ("TFLite reproduces nearest resizing for coordinate_transformation_mode 'asymmetric' with "
                "nearest_mode 'floor' (PyTorch's 'nearest'), 'half_pixel' or 'tf_half_pixel_for_nn' "
                "with 'round_prefer_ceil' / 'floor' respectively, and 'align_corners' with "
                "'round_prefer_ceil'; other combinations only where no rounding tie occurs")


@dataclass(frozen=True)
class ResizeAttrs:
    align_corners: bool = False
    half_pixel_centers: bool = False


# ---- onnxruntime's coordinate arithmetic (float32, as in its upsamplebase.h) ---------------------

def onnx_source_coordinates(mode: str, length_in: int, length_out: int, scale: float) -> np.ndarray:
    """The input coordinate each output index maps to under an ONNX coordinate_transformation_mode."""
    x, s = np.arange(length_out, dtype=F32), F32(scale)
    if mode == "asymmetric":
        return x / s
    if mode == "half_pixel":
        return (x + F32(0.5)) / s - F32(0.5)
    if mode == "pytorch_half_pixel":
        return (x + F32(0.5)) / s - F32(0.5) if length_out > 1 else np.zeros(length_out, F32)
    if mode == "tf_half_pixel_for_nn":
        return (x + F32(0.5)) / s
    if mode == "align_corners":
        if length_out == 1:
            return np.zeros(1, F32)
        return x * F32(length_in - 1) / F32(length_out - 1)
    if mode == "half_pixel_symmetric":
        adjustment = F32(length_out) / (s * F32(length_in))
        offset = F32(length_in / 2) * (F32(1) - adjustment)
        return (offset + (x.astype(np.float64) + 0.5) / s - 0.5).astype(F32)
    raise ValueError(mode)


def _round_half_away(values: np.ndarray) -> np.ndarray:
    """std::round on float32 values (computed in float64, where adding 0.5 is exact)."""
    wide = values.astype(np.float64)
    return np.sign(wide) * np.floor(np.abs(wide) + 0.5)


def onnx_nearest_indices(coords: np.ndarray, nearest_mode: str, length_in: int) -> np.ndarray:
    if nearest_mode == "floor":
        idx = np.floor(coords)
    elif nearest_mode == "ceil":
        idx = np.ceil(coords)
    elif nearest_mode == "round_prefer_ceil":
        idx = _round_half_away(coords)
    else:  # round_prefer_floor
        halfway = coords == np.trunc(coords) + F32(0.5)
        idx = np.where(halfway, np.floor(coords), _round_half_away(coords))
    return np.clip(idx.astype(np.int64), 0, length_in - 1)


# ---- TFLite's kernels ------------------------------------------------------------------------

def tflite_nearest_indices(length_in: int, length_out: int, align_corners: bool,
                           half_pixel_centers: bool) -> np.ndarray:
    """Source index per output index in TFLite's reference nearest kernel (float32 arithmetic)."""
    if align_corners and length_out > 1:
        scale = F32(length_in - 1) / F32(length_out - 1)
    else:
        scale = F32(length_in) / F32(length_out)
    value = (np.arange(length_out, dtype=F32) + F32(0.5 if half_pixel_centers else 0.0)) * scale
    idx = _round_half_away(value) if align_corners else np.floor(value)
    return np.clip(idx.astype(np.int64), 0, length_in - 1)


def tflite_nearest_indices_fixed_point(length_in: int, length_out: int) -> np.ndarray:
    """The uint8 optimized kernel (no flags) computes the same index in 16.16 fixed point."""
    scale = (length_in << 16) // length_out + 1
    return np.minimum((np.arange(length_out, dtype=np.int64) * scale) >> 16, length_in - 1)


def tflite_linear_weights(length_in: int, length_out: int, align_corners: bool,
                          half_pixel_centers: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, weight of upper) per output index, as TFLite's bilinear kernel."""
    if align_corners and length_out > 1:
        scale = F32(length_in - 1) / F32(length_out - 1)
    else:
        scale = F32(length_in) / F32(length_out)
    x = np.arange(length_out, dtype=F32)
    value = (x + F32(0.5)) * scale - F32(0.5) if half_pixel_centers else x * scale
    floor = np.floor(value)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(value), length_in - 1).astype(np.int64)
    return lower, upper, (value - floor).astype(F32)


# ---- the ONNX node ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ResizeRequest:
    """What an ONNX Resize node asks for on its two spatial axes."""

    mode: str
    coordinate_mode: str
    nearest_mode: str
    size_in: tuple[int, int]
    size_out: tuple[int, int]
    scales: tuple[float, float]  # the scales onnxruntime computes coordinates with


def _all_axes(node, values: np.ndarray, axes: list[int], defaults: tuple[float, ...],
              what: str) -> np.ndarray:
    """Scales or sizes for all 4 axes (opset 18's `axes` expanded); N and C must keep their defaults."""
    full = np.array(defaults, np.float64)
    if axes:
        for a, v in zip(axes, values):
            full[a % 4] = v
    elif values.size == 4:
        full = values.astype(np.float64)
    else:
        raise Unsupported(node, "resize_rank", f"Resize {what} of length {values.size} on a 4-D input")
    if tuple(full[:2]) != tuple(defaults[:2]):
        raise Unsupported(node, "resize_axes", f"Resize changes the batch or channel axis ({what} "
                                                f"{full.tolist()}); only H and W can be resized")
    return full


def resize_request(node, ctx) -> ResizeRequest:
    x, y = node.input[0], node.output[0]
    if ctx.rank(x) != 4:
        raise Unsupported(node, "resize_rank", f"only 3-D, 4-D and 5-D Resize is supported (rank {ctx.rank(x)})")
    mode = ctx.attr(node, "mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        raise Unsupported(node, "resize_mode", f"Resize mode '{mode}' has no TFLite kernel",
                          "use mode 'nearest', 'linear' or 'cubic'")
    if ctx.attr(node, "antialias", 0):
        raise Unsupported(node, "resize_mode", "antialiased Resize has no TFLite kernel")
    if ctx.attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        raise Unsupported(node, "resize_mode", "keep_aspect_ratio_policy other than 'stretch'")
    axes = [int(a) for a in ctx.attr(node, "axes", None) or []]
    scales_in = ctx.require_constant(node, 2, "scales", sets_shape=True) \
        if len(node.input) > 2 and node.input[2] else None
    sizes_in = None
    if scales_in is None or scales_in.size == 0:
        sizes_in = ctx.require_constant(node, 3, "sizes", sets_shape=True)
    in_shape, out_shape = ctx.shape(x), ctx.shape(y)
    if scales_in is not None and scales_in.size > 0:
        scales = _all_axes(node, scales_in.astype(F32).ravel(), axes, (1.0,) * 4, "scales")[2:]
    else:
        sizes = sizes_in.ravel()
        _all_axes(node, sizes, axes, tuple(float(d) for d in in_shape), "sizes")
        scales = [F32(o) / F32(i) for o, i in zip(out_shape[2:], in_shape[2:])]
    if tuple(out_shape[:2]) != tuple(in_shape[:2]):
        raise Unsupported(node, "resize_axes", "only H and W can be resized")
    return ResizeRequest(mode, ctx.attr(node, "coordinate_transformation_mode", "half_pixel"),
                         ctx.attr(node, "nearest_mode", "round_prefer_floor"),
                         tuple(in_shape[2:]), tuple(out_shape[2:]),  # type: ignore[arg-type]
                         (float(scales[0]), float(scales[1])))


def nearest_flags(request: ResizeRequest) -> tuple[bool, bool] | None:
    """The TFLite flags whose source indices equal onnxruntime's on both axes, if any."""
    if request.coordinate_mode not in ("asymmetric", "half_pixel", "pytorch_half_pixel",
                                       "tf_half_pixel_for_nn", "align_corners", "half_pixel_symmetric"):
        return None
    wanted = [onnx_nearest_indices(onnx_source_coordinates(request.coordinate_mode, n_in, n_out, s),
                                   request.nearest_mode, n_in)
              for n_in, n_out, s in zip(request.size_in, request.size_out, request.scales)]
    for flags in NEAREST_FLAGS:
        ok = True
        for want, n_in, n_out in zip(wanted, request.size_in, request.size_out):
            ok = ok and np.array_equal(want, tflite_nearest_indices(n_in, n_out, *flags))
            if flags == (False, False):
                ok = ok and np.array_equal(want, tflite_nearest_indices_fixed_point(n_in, n_out))
        if ok:
            return flags
    return None


def linear_flags(node, request: ResizeRequest) -> tuple[bool, bool]:
    """TFLite flags for ONNX linear resizing; TFLite always uses scale = output / input size."""
    mode = request.coordinate_mode
    if mode not in LINEAR_FLAGS:
        raise Unsupported(node, "resize_mode", f"linear Resize with coordinate_transformation_mode "
                                               f"'{mode}' has no TFLite equivalent",
                          "use 'half_pixel', 'pytorch_half_pixel', 'align_corners' or 'asymmetric'")
    if mode != "align_corners":
        for n_in, n_out, s in zip(request.size_in, request.size_out, request.scales):
            if abs(s * n_in - n_out) > 1e-5 * n_out:
                raise Unsupported(node, "resize_scale",
                                  f"scale {s} does not equal output/input size {n_out}/{n_in}; TFLite "
                                  f"interpolates with the size ratio", "give 'sizes' instead of 'scales'")
    if mode == "pytorch_half_pixel" and any(n_out == 1 < n_in for n_in, n_out in
                                            zip(request.size_in, request.size_out)):
        raise Unsupported(node, "resize_mode", "pytorch_half_pixel resizing to a single row or column")
    return LINEAR_FLAGS[mode]


def with_unit_height(node, ctx):
    """A rank-3 Resize as the 4-D node [N, C, 1, W] that import_as_2d lifts it to: its scales or
    sizes (opset 18's `axes` expanded) gain a unit height; roi only matters for
    tf_crop_and_resize, which has no TFLite form either way."""
    rank = 3
    axes = [int(a) % rank for a in ctx.attr(node, "axes", None) or []]

    def lifted(index: int, defaults, dtype, what: str) -> str:
        value = ctx.require_constant(node, index, what, sets_shape=True).ravel()
        full = list(defaults)
        if axes:
            for a, v in zip(axes, value):
                full[a] = v
        elif value.size == rank:
            full = list(value)
        else:
            raise Unsupported(node, "resize_rank", f"Resize {what} of length {value.size} on a 3-D input")
        return ctx.add_constant(f"{node.name}/{what}_2d", np.array(full[:2] + [1] + full[2:], dtype))

    inputs = [node.input[0], ""]
    if len(node.input) > 2 and node.input[2] and ctx.require_constant(node, 2, "scales").size:
        inputs.append(lifted(2, (1.0,) * rank, np.float32, "scales"))
    else:
        inputs += ["", lifted(3, ctx.shape(node.input[0]), np.int64, "sizes")]
    four_d = helper.make_node("Resize", inputs, list(node.output), name=node.name)
    four_d.attribute.extend(a for a in node.attribute if a.name != "axes")
    return four_d


def _resize_case(name: str, mode: str = "nearest", scales=None, sizes=None, shape=(1, 2, 4, 5),
                 opset: int = 13, **attrs) -> Case:
    consts = {"roi": np.zeros(0, np.float32)}
    inputs = ["x", "roi"]
    if scales is not None:
        consts["scales"] = np.array(scales, np.float32)
        inputs.append("scales")
    else:
        consts["scales"] = np.zeros(0, np.float32)
        consts["sizes"] = np.array(sizes, np.int64)
        inputs += ["scales", "sizes"]
    return Case(name, [helper.make_node("Resize", inputs, ["y"], mode=mode, **attrs)],
                {"x": rand(*shape)}, consts, opset=opset)


def _resize_version(op: Op, graph: Graph, flag_version: bool) -> int:
    dtype = graph.tensors[op.inputs[0]].dtype.name
    if dtype == "INT16":
        return 4
    if flag_version:
        return 3
    return 2 if dtype == "INT8" else 1


class _Resize(OpSpec):
    Attrs = ResizeAttrs
    layout = ChannelsLast()
    quant = SameAsInput()  # neither kernel rescales: the output must carry the input's parameters


@register
class ResizeNearestNeighbor(_Resize):
    """ONNX Resize ('linear' is emitted as RESIZE_BILINEAR, 'cubic' as matrix products, resize_cubic.py)."""

    kind = "RESIZE_NEAREST_NEIGHBOR"
    quant = SameAsInput(dtypes=WITH_INT16, moves_values=True)
    onnx_types = ("Resize",)
    onnx_checks = (Arity(inputs=(1, 4)), ConstantValues(index=2, what="scales", non_empty=False, positive=True),
                   ConstantValues(index=3, what="sizes", non_empty=False, positive=True),
                   Choice(name="mode", values=("nearest", "linear", "cubic")),
                   Choice(name="coordinate_transformation_mode",
                          values=("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                                  "asymmetric", "tf_crop_and_resize", "tf_half_pixel_for_nn")),
                   Choice(name="nearest_mode", values=("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")))
    cases = [
        _resize_case("asymmetric_floor_x2", scales=[1, 1, 2, 2],
                     coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        _resize_case("asymmetric_floor_sizes", sizes=[1, 2, 7, 9],
                     coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        _resize_case("default_half_pixel_x2", scales=[1, 1, 2, 2]),
        _resize_case("half_pixel_round_prefer_ceil_down", sizes=[1, 2, 2, 3], shape=(1, 2, 6, 7),
                     nearest_mode="round_prefer_ceil"),
        _resize_case("tf_half_pixel_floor", sizes=[1, 2, 6, 8], opset=11,
                     coordinate_transformation_mode="tf_half_pixel_for_nn", nearest_mode="floor"),
        _resize_case("align_corners_round_prefer_ceil", sizes=[1, 2, 7, 9],
                     coordinate_transformation_mode="align_corners", nearest_mode="round_prefer_ceil"),
        _resize_case("opset18_axes", scales=[3, 2], opset=18, axes=[2, 3],
                     coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        one_d_case(_resize_case("ncw_asymmetric_floor_x2", scales=[1, 1, 2], shape=(1, 3, 7),
                                coordinate_transformation_mode="asymmetric", nearest_mode="floor")),
        one_d_case(_resize_case("ncw_half_pixel_sizes", sizes=[1, 3, 10], shape=(1, 3, 5))),
        one_d_case(_resize_case("ncw_opset18_axes", scales=[3], opset=18, axes=[-1], shape=(2, 2, 4),
                                coordinate_transformation_mode="asymmetric", nearest_mode="floor")),
        # 5-D (volume.py): torch's nearest Upsample, opset 18's axes
        volume_case(_resize_case("ncdhw_nearest_x2", scales=[1, 1, 2, 2, 2], shape=(1, 2, 3, 4, 5),
                                 coordinate_transformation_mode="asymmetric", nearest_mode="floor")),
        volume_case(_resize_case("ncdhw_opset18_axes", scales=[2, 2, 2], opset=18, axes=[2, 3, 4],
                                 shape=(1, 2, 2, 3, 3), coordinate_transformation_mode="asymmetric",
                                 nearest_mode="floor")),
    ]

    def from_onnx(self, node, ctx) -> None:
        if ctx.rank(node.input[0]) == 3:
            return import_as_2d(self, with_unit_height(node, ctx), ctx)
        if ctx.rank(node.input[0]) == 5:
            from tflq.ops.volume import import_resize_3d

            return import_resize_3d(self, node, ctx)
        request = resize_request(node, ctx)
        if request.mode == "cubic":
            from tflq.ops.resize_cubic import import_cubic  # (it reads this module's coordinates)

            if request.coordinate_mode == "tf_crop_and_resize":
                raise Unsupported(node, "resize_mode", "cubic Resize with tf_crop_and_resize")
            return import_cubic(node, ctx, request)
        if request.mode == "linear":
            flags, kind = linear_flags(node, request), "RESIZE_BILINEAR"
        else:
            found, kind = nearest_flags(request), self.kind
            if found is None:
                raise Unsupported(node, "resize_mode",
                                  f"nearest Resize with coordinate_transformation_mode "
                                  f"'{request.coordinate_mode}' and nearest_mode '{request.nearest_mode}' "
                                  f"picks different pixels than any TFLite setting for "
                                  f"{list(request.size_in)} -> {list(request.size_out)}", NEAREST_HINT)
            flags = found
        size = ctx.add_constant(f"{node.name}/size", np.array(request.size_out, np.int32))
        ctx.add_op(kind, [node.input[0], size], [node.output[0]], ResizeAttrs(*flags))

    def reference(self, x, size, *, align_corners, half_pixel_centers):
        rows = tflite_nearest_indices(x.shape[1], int(size[0]), align_corners, half_pixel_centers)
        cols = tflite_nearest_indices(x.shape[2], int(size[1]), align_corners, half_pixel_centers)
        return (x[:, rows][:, :, cols],)

    def options(self, attrs: ResizeAttrs):
        return ResizeNearestNeighborOptionsT(alignCorners=attrs.align_corners,
                                             halfPixelCenters=attrs.half_pixel_centers)

    def version(self, op: Op, graph: Graph) -> int:
        return _resize_version(op, graph, op.attrs.align_corners or op.attrs.half_pixel_centers)


@register
class ResizeBilinear(_Resize):
    """Emitted by ResizeNearestNeighbor's importer for ONNX Resize with mode 'linear'."""

    kind = "RESIZE_BILINEAR"
    # The int16 kernel lands up to ~1 int8 step (233 int16 steps) from the float result
    # (measured on the cases below), no better than int8: int16x8 keeps it float.
    cases = [
        _resize_case("half_pixel_x2", "linear", scales=[1, 1, 2, 2]),
        _resize_case("half_pixel_down", "linear", sizes=[1, 2, 3, 4], shape=(1, 2, 7, 9)),
        _resize_case("pytorch_half_pixel_sizes", "linear", sizes=[1, 2, 6, 11],
                     coordinate_transformation_mode="pytorch_half_pixel"),
        _resize_case("align_corners", "linear", sizes=[1, 2, 7, 9],
                     coordinate_transformation_mode="align_corners"),
        _resize_case("asymmetric_opset11", "linear", scales=[1, 1, 2, 3], opset=11,
                     coordinate_transformation_mode="asymmetric"),
        _resize_case("half_pixel_symmetric_opset19", "linear", scales=[1, 1, 1.5, 2], opset=19,
                     shape=(1, 2, 4, 5), coordinate_transformation_mode="half_pixel_symmetric"),
        one_d_case(_resize_case("ncw_linear_half_pixel_x2", "linear", scales=[1, 1, 2], shape=(1, 4, 6))),
        one_d_case(_resize_case("ncw_linear_align_corners", "linear", sizes=[1, 2, 11], shape=(1, 2, 6),
                                coordinate_transformation_mode="align_corners")),
        # 5-D (volume.py): torch's trilinear Upsample, sizes, depth only
        volume_case(_resize_case("ncdhw_trilinear_x2", "linear", scales=[1, 1, 2, 2, 2],
                                 shape=(1, 2, 3, 4, 5),
                                 coordinate_transformation_mode="pytorch_half_pixel")),
        volume_case(_resize_case("ncdhw_trilinear_align_corners_sizes", "linear",
                                 sizes=[1, 2, 5, 7, 6], shape=(1, 2, 3, 4, 5),
                                 coordinate_transformation_mode="align_corners")),
        volume_case(_resize_case("ncdhw_depth_only_half_pixel", "linear", scales=[1, 1, 2, 1, 1],
                                 shape=(2, 2, 3, 4, 4))),
    ]

    def reference(self, x, size, *, align_corners, half_pixel_centers):
        y0, y1, fy = tflite_linear_weights(x.shape[1], int(size[0]), align_corners, half_pixel_centers)
        x0, x1, fx = tflite_linear_weights(x.shape[2], int(size[1]), align_corners, half_pixel_centers)
        fy, fx = fy[None, :, None, None], fx[None, None, :, None]
        top = x[:, y0][:, :, x0] * (1 - fx) + x[:, y0][:, :, x1] * fx
        bottom = x[:, y1][:, :, x0] * (1 - fx) + x[:, y1][:, :, x1] * fx
        return ((top * (1 - fy) + bottom * fy).astype(np.float32),)

    def options(self, attrs: ResizeAttrs):
        return ResizeBilinearOptionsT(alignCorners=attrs.align_corners,
                                      halfPixelCenters=attrs.half_pixel_centers)

    def version(self, op: Op, graph: Graph) -> int:
        return _resize_version(op, graph, op.attrs.half_pixel_centers)
