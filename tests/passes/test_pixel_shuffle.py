"""PixelShuffle (DepthToSpace CRD) and PixelUnshuffle (torch's Reshape -> 6-D Transpose -> Reshape)
against onnxruntime: the CRD channel order folds into a conv's weights next to it (before
PixelShuffle, after PixelUnshuffle), so no GATHER is left; where no conv can take it (a bare
shuffle, a conv read elsewhere, a grouped conv) the GATHER stays, exact; never a TRANSPOSE."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from tests.conftest import save_graph, worst_sqnr_db
from tflq.config import ConvertConfig
from tflq.pipeline import convert


def _w(rng, name, *shape):
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)


def _unshuffle(x, out, n, c, h, w, r):
    """torch's nn.PixelUnshuffle(r) export."""
    return [helper.make_node("Reshape", [x, f"{out}/s6"], [f"{out}/six"]),
            helper.make_node("Transpose", [f"{out}/six"], [f"{out}/t"], perm=[0, 1, 3, 5, 2, 4]),
            helper.make_node("Reshape", [f"{out}/t", f"{out}/s4"], [out])], [
        numpy_helper.from_array(np.array([n, c, h // r, r, w // r, r], np.int64), f"{out}/s6"),
        numpy_helper.from_array(np.array([-1, c * r * r, h // r, w // r], np.int64), f"{out}/s4")]


def _graph(kind):
    rng = np.random.default_rng(2)
    if kind == "shuffle_after_conv":  # ESPCN: conv -> PixelShuffle(3) -> conv
        nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node("DepthToSpace", ["c"], ["d"], blocksize=3, mode="CRD"),
                 helper.make_node("Conv", ["d", "w2"], ["y"], pads=[1, 1, 1, 1])]
        inits = [_w(rng, "w1", 18, 3, 3, 3), _w(rng, "b1", 18), _w(rng, "w2", 4, 2, 3, 3)]
        return nodes, inits, (1, 3, 6, 6), {"GATHER": 0, "DEPTH_TO_SPACE": 1}
    if kind == "shuffle_relu":  # the conv's fused ReLU commutes with the reorder
        nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["c"], ["r"]),
                 helper.make_node("DepthToSpace", ["r"], ["y"], blocksize=2, mode="CRD")]
        inits = [_w(rng, "w1", 12, 3, 3, 3), _w(rng, "b1", 12)]
        return nodes, inits, (1, 3, 5, 5), {"GATHER": 0, "DEPTH_TO_SPACE": 1}
    if kind == "unshuffle_before_conv":  # Real-ESRGAN x2 stem: PixelUnshuffle(2) -> conv
        nodes, inits = _unshuffle("x", "u", 1, 3, 8, 12, 2)
        nodes.append(helper.make_node("Conv", ["u", "w1", "b1"], ["y"], pads=[1, 1, 1, 1]))
        inits += [_w(rng, "w1", 8, 12, 3, 3), _w(rng, "b1", 8)]
        return nodes, inits, (1, 3, 8, 12), {"GATHER": 0, "SPACE_TO_DEPTH": 1}
    if kind == "unshuffle_bare":
        nodes, inits = _unshuffle("x", "y", 2, 3, 6, 9, 3)
        return nodes, inits, (2, 3, 6, 9), {"GATHER": 1, "SPACE_TO_DEPTH": 1}
    if kind == "shuffle_conv_read_twice":  # the conv's output is also an addend: GATHER stays
        nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node("DepthToSpace", ["c"], ["d"], blocksize=2, mode="CRD"),
                 helper.make_node("ReduceMean", ["c"], ["m"], axes=[1], keepdims=1),
                 helper.make_node("Resize", ["m", "", "sc"], ["mu"], mode="nearest"),
                 helper.make_node("Add", ["d", "mu"], ["y"])]
        inits = [_w(rng, "w1", 8, 3, 3, 3),
                 numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")]
        return nodes, inits, (1, 3, 4, 4), {"GATHER": 1, "DEPTH_TO_SPACE": 1}
    if kind == "unshuffle_grouped_conv":  # a grouped conv reads channel groups: GATHER stays
        nodes, inits = _unshuffle("x", "u", 1, 2, 4, 4, 2)
        nodes.append(helper.make_node("Conv", ["u", "w1"], ["y"], group=2))
        inits.append(_w(rng, "w1", 4, 4, 1, 1))
        return nodes, inits, (1, 2, 4, 4), {"GATHER": 1, "SPACE_TO_DEPTH": 1}
    raise ValueError(kind)


KINDS = ["shuffle_after_conv", "shuffle_relu", "unshuffle_before_conv", "unshuffle_bare",
         "shuffle_conv_read_twice", "unshuffle_grouped_conv"]


@pytest.mark.parametrize("kind", KINDS)
def test_crd_order_folds_into_the_conv_beside_it(kind, tmp_path):
    nodes, inits, shape, counts = _graph(kind)
    path = save_graph(tmp_path / "m.onnx", nodes, {"x": list(shape)}, "y", inits)
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(3)]
    report = convert(ConvertConfig(model=path))
    assert {k: report.op_counts.get(k, 0) for k in counts} == counts, report.op_counts
    assert "TRANSPOSE" not in report.op_counts, report.op_counts
    assert worst_sqnr_db(path, report.tflite, samples) > 100
    calib = [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(16)]
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=calib))
    assert worst_sqnr_db(path, report.tflite, samples) > 25
