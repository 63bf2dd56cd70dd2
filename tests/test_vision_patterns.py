"""The vision families' graph shapes, small and by hand (tests/test_vision_families.py has the models).

Col2Im (F.fold) lowered to a reshape and transpose (blocks that tile) or a grouped ConvTranspose
(overlap, dilation, padding); torch's GroupNorm (Reshape, InstanceNormalization, Reshape, Mul, Add)
read as one GroupNormalization; tokens turned into NCHW for a padded depthwise conv (CvT) and back
after a GELU (Segformer's mix-FFN), which need no TRANSPOSE. Each against onnxruntime, float and
full int8 in LiteRT, on the worst of 4 inputs.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.conftest import save_graph, worst_sqnr_db
from tflq.config import ConvertConfig
from tflq.pipeline import convert


def _samples(shape, seed, count):
    """Normal inputs inside +-3 (calibration's minmax range then holds every test input)."""
    rng = np.random.default_rng(seed)
    return [{"x": np.clip(rng.standard_normal(shape), -3, 3).astype(np.float32)} for _ in range(count)]


def _check(path, shape, int8_floor, transposes=None):
    report = convert(ConvertConfig(model=path))
    samples = _samples(shape, 0, 4)
    assert worst_sqnr_db(path, report.tflite, samples) >= 100.0
    if transposes is not None:
        assert report.op_counts.get("TRANSPOSE", 0) == transposes, report.op_counts
    full = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=_samples(shape, 1, 16)))
    assert worst_sqnr_db(path, full.tflite, samples) >= int8_floor
    assert not full.float_ops, full.float_ops
    return report


COL2IM = {
    # name: channels, image, block, strides, dilations, pads
    "tiles": (3, (8, 6), (2, 2), (2, 2), (1, 1), (0, 0, 0, 0)),
    "tiles_3x1": (2, (6, 4), (3, 1), (3, 1), (1, 1), (0, 0, 0, 0)),
    "overlap": (2, (7, 7), (3, 3), (2, 2), (1, 1), (0, 0, 0, 0)),
    "stride_rest": (2, (8, 8), (3, 3), (2, 2), (1, 1), (0, 0, 0, 0)),  # a row past the last block
    "padded_dilated": (2, (6, 7), (2, 3), (1, 2), (2, 1), (1, 0, 0, 2)),
}


@pytest.mark.parametrize("name", list(COL2IM))
def test_col2im(tmp_path, name):
    """x [1, C*kh*kw, L] -> Col2Im -> Conv 1x1 (so the result is an image the file keeps NHWC)."""
    channels, image, block, strides, dilations, pads = COL2IM[name]
    blocks = [(image[d] + pads[d] + pads[d + 2] - dilations[d] * (block[d] - 1) - 1) // strides[d] + 1
              for d in range(2)]
    shape = (1, channels * block[0] * block[1], blocks[0] * blocks[1])
    w = np.random.default_rng(2).standard_normal((4, channels, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Col2Im", ["x", "image", "block"], ["img"], strides=list(strides),
                              dilations=list(dilations), pads=list(pads)),
             helper.make_node("Conv", ["img", "w"], ["y"])]
    inits = [numpy_helper.from_array(np.array(image, np.int64), "image"),
             numpy_helper.from_array(np.array(block, np.int64), "block"),
             numpy_helper.from_array(w, "w")]
    path = save_graph(tmp_path / "m.onnx", nodes, {"x": shape}, "y", inits, opset=18)
    # one TRANSPOSE: the blocks' channel-major rows become NHWC channels
    report = _check(path, shape, 20.0, transposes=1)
    kind = "TRANSPOSE" if name.startswith("tiles") else "TRANSPOSE_CONV"
    assert report.op_counts.get(kind) == 1, report.op_counts


def test_col2im_data_dependent_block_is_refused(tmp_path):
    """A block shape from a graph input: refused naming the node, no traceback."""
    from tflq.errors import UnsupportedModelError

    nodes = [helper.make_node("Col2Im", ["x", "image", "block"], ["y"])]
    path = save_graph(tmp_path / "m.onnx", nodes, {"x": (1, 4, 4), "block": (2,)}, "y",
                      [numpy_helper.from_array(np.array([4, 4], np.int64), "image")], opset=18)
    m = onnx.load(path)
    m.graph.input[1].type.tensor_type.elem_type = onnx.TensorProto.INT64
    onnx.save(m, path)
    with pytest.raises(UnsupportedModelError, match="Col2Im"):
        convert(ConvertConfig(model=path))


@pytest.mark.parametrize("groups, shape, affine", [(1, (1, 8, 5, 6), True), (4, (2, 8, 3, 3), True),
                                                   (2, (1, 6, 4, 4), False), (2, (1, 4, 64), True)])
def test_torch_group_norm(tmp_path, groups, shape, affine):
    """torch.nn.GroupNorm as both exporters write it: no TRANSPOSE around the [N, G, -1] view."""
    rng = np.random.default_rng(3)
    channels = shape[1]
    per_channel = (channels,) + (1,) * (len(shape) - 2)
    # a 1x1 conv first, so that a 4-D input is NHWC (a 3-D one is normalized as it is)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1])] if len(shape) == 4 else \
        [helper.make_node("Identity", ["x"], ["c"])]
    nodes += [helper.make_node("Reshape", ["c", "grouped_shape"], ["g"]),
             helper.make_node("InstanceNormalization", ["g", "ones", "zeros"], ["n"], epsilon=1e-5),
             helper.make_node("Reshape", ["n", "image_shape"], ["y" if not affine else "r"])]
    inits = [numpy_helper.from_array(rng.standard_normal((channels, channels, 1, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([0, groups, -1], np.int64), "grouped_shape"),
             numpy_helper.from_array(np.array(shape, np.int64), "image_shape"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, groups).astype(np.float32), "ones"),
             numpy_helper.from_array(rng.normal(0, 0.1, groups).astype(np.float32), "zeros")]
    if affine:
        nodes += [helper.make_node("Mul", ["r", "gamma"], ["s"]), helper.make_node("Add", ["s", "beta"], ["y"])]
        inits += [numpy_helper.from_array(rng.uniform(0.5, 1.5, per_channel).astype(np.float32), "gamma"),
                  numpy_helper.from_array(rng.normal(0, 0.1, per_channel).astype(np.float32), "beta")]
    path = save_graph(tmp_path / "m.onnx", nodes, {"x": shape}, "y", inits, opset=18)
    report = _check(path, shape, 20.0, transposes=0)
    assert report.op_counts.get("MUL", 0) <= 4, report.op_counts  # the affine folded into the norm


def test_tokens_through_padded_depthwise_conv(tmp_path):
    """CvT's projection: conv stem -> tokens [N, HW, C] -> back to NCHW -> depthwise conv with
    padding and stride 2 (an explicit PAD) -> tokens; Segformer's mix-FFN: tokens -> NCHW ->
    depthwise conv -> flatten -> tokens -> GELU (here Tanh) -> MatMul. All RESHAPEs in NHWC."""
    rng = np.random.default_rng(4)
    c, h, w = 8, 6, 6
    nodes = [helper.make_node("Conv", ["x", "stem"], ["s"], kernel_shape=[1, 1]),
             helper.make_node("Reshape", ["s", "flat"], ["f"]),
             helper.make_node("Transpose", ["f"], ["tokens"], perm=[0, 2, 1]),
             helper.make_node("Transpose", ["tokens"], ["t2"], perm=[0, 2, 1]),
             helper.make_node("Reshape", ["t2", "image"], ["img"]),
             helper.make_node("Conv", ["img", "dw"], ["d"], group=c, kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Conv", ["img", "dw"], ["d1"], group=c, kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["d1", "flat"], ["f1"]),
             helper.make_node("Transpose", ["f1"], ["tokens1"], perm=[0, 2, 1]),
             helper.make_node("Tanh", ["tokens1"], ["act"]),
             helper.make_node("MatMul", ["act", "fc"], ["y1"]),
             helper.make_node("Reshape", ["d", "flat_small"], ["f2"]),
             helper.make_node("Transpose", ["f2"], ["tokens2"], perm=[0, 2, 1]),
             helper.make_node("Concat", ["y1", "tokens2"], ["y"], axis=1)]
    inits = [numpy_helper.from_array(rng.standard_normal((c, 3, 1, 1)).astype(np.float32), "stem"),
             numpy_helper.from_array(np.array([1, c, h * w], np.int64), "flat"),
             numpy_helper.from_array(np.array([1, c, (h // 2) * (w // 2)], np.int64), "flat_small"),
             numpy_helper.from_array(np.array([1, c, h, w], np.int64), "image"),
             numpy_helper.from_array((rng.standard_normal((c, 1, 3, 3)) / 3).astype(np.float32), "dw"),
             numpy_helper.from_array((rng.standard_normal((c, c)) / 3).astype(np.float32), "fc")]
    path = save_graph(tmp_path / "m.onnx", nodes, {"x": (1, 3, h, w)}, "y", inits, opset=18)
    _check(path, (1, 3, h, w), 20.0, transposes=0)


@pytest.mark.parametrize("indices, gathers, transposes", [
    ([[0, 2, 4, 6], [1, 3, 5, 7]], 0, 1),  # MobileViTV2's unfold: h = 2 * lh + kh, blocks first
    ([[0, 4], [1, 5], [2, 6], [3, 7]], 0, 1),
    # three factors of H and of W: 8 axes, past TFLite's 6-D TRANSPOSE, so two
    ([[[0, 4], [2, 6]], [[1, 5], [3, 7]]], 0, 2),
    ([[0, 2, 4, 6], [1, 3, 5, 6]], 2, None),  # not a permutation: stays a GATHER
])
def test_unfold_by_gather(tmp_path, indices, gathers, transposes):
    """Gather along H then W by constant indices that read the axis as a transposed split, then a
    Transpose and Reshape into [N, C, patch pixels, patches] (MobileViTV2's F.unfold), then a conv:
    one TRANSPOSE for the whole unfold (a GATHER moved one axis by a table, and two transposes
    stayed around it)."""
    idx = np.array(indices, np.int64)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Gather", ["c", "idx"], ["g1"], axis=2),
             helper.make_node("Gather", ["g1", "idx"], ["g2"], axis=2 + idx.ndim),
             helper.make_node("Reshape", ["g2", "flat"], ["y0"]),
             helper.make_node("Conv", ["y0", "w2"], ["y"], kernel_shape=[1, 1])]
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(idx, "idx"),
             numpy_helper.from_array(np.array([1, 4, idx.shape[0] ** 2, -1], np.int64), "flat")]
    path = save_graph(tmp_path / "m.onnx", nodes, {"x": (1, 3, 8, 8)}, "y", inits, opset=18)
    report = _check(path, (1, 3, 8, 8), 25.0)
    assert report.op_counts.get("GATHER", 0) == gathers, report.op_counts
    if transposes is not None:
        assert report.op_counts.get("TRANSPOSE", 0) == transposes, report.op_counts
