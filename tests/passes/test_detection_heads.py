"""Detection heads end with the fewest TRANSPOSEs their output layout needs (passes/sink.py).

Each head is built here with onnx.helper from the exporters' op sequence; the file is checked
against onnxruntime on its worst sample (float and full int8/uint8) and its TRANSPOSEs counted.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.conftest import save_graph, worst_sqnr_db
from tflq.config import ConvertConfig
from tflq.pipeline import convert

LEVELS = ((8, 8, 8), (4, 4, 16))  # (h, w, stride)
CHANNELS = 6


def _const(name: str, value) -> object:
    return numpy_helper.from_array(np.asarray(value), name)


def _level_convs(rng, out_channels: int, nodes: list, inits: list, tag: str = "") -> list[str]:
    """A 3x3 conv + SiLU, then a 1x1 conv to `out_channels`, per level: [1, out, h, w] each."""
    outs = []
    for level, _ in enumerate(LEVELS):
        k = f"{tag}{level}"
        inits += [_const(f"w{k}", rng.standard_normal((8, CHANNELS, 3, 3)).astype(np.float32) * 0.3),
                  _const(f"p{k}", rng.standard_normal((out_channels, 8, 1, 1)).astype(np.float32) * 0.3),
                  _const(f"pb{k}", rng.standard_normal(out_channels).astype(np.float32))]
        nodes += [helper.make_node("Conv", [f"x{level}", f"w{k}"], [f"c{k}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Sigmoid", [f"c{k}"], [f"s{k}"]),
                  helper.make_node("Mul", [f"c{k}", f"s{k}"], [f"a{k}"]),
                  helper.make_node("Conv", [f"a{k}", f"p{k}", f"pb{k}"], [f"o{k}"])]
        outs.append(f"o{k}")
    return outs


def _anchor_grid() -> tuple[np.ndarray, np.ndarray]:
    centres, strides = [], []
    for h, w, stride in LEVELS:
        ys, xs = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        centres.append(np.stack([xs.ravel(), ys.ravel()]))
        strides.append(np.full(h * w, stride))
    return (np.concatenate(centres, 1)[None].astype(np.float32),
            np.concatenate(strides)[None].astype(np.float32))


def yolov8(rng, reg: int = 4, classes: int = 3, extra: str = ""):
    """Per level [1, no, h*w], concat on anchors, split, DFL (view (1, 4, reg, a), transpose(2, 1),
    softmax(1), 1x1 conv over reg, view (1, 4, a)), box decode, concat: output [1, 4+nc, a].
    extra="pose": keypoints (view (1, K, 3, a), xy * 2 + anchors - 0.5, times strides, sigmoid
    visibility) concatenated after; "seg": mask coefficients after, and a proto output [1, nm, h, w]."""
    no = 4 * reg + classes
    nodes, inits = [], []
    outs = _level_convs(rng, no, nodes, inits)
    extra_out = _level_convs(rng, {"pose": 6, "seg": 4}[extra], nodes, inits, tag="e") if extra else []
    anchors = sum(h * w for h, w, _ in LEVELS)
    centres, strides = _anchor_grid()
    inits += [_const("flat", np.array([1, no, -1], np.int64)), _const("split", np.array([4 * reg, classes], np.int64)),
              _const("dfl4", np.array([1, 4, reg, anchors], np.int64)), _const("box", np.array([1, 4, anchors], np.int64)),
              _const("dflw", np.arange(reg, dtype=np.float32).reshape(1, reg, 1, 1)),
              _const("half", np.array([2, 2], np.int64)), _const("centres", centres), _const("strides", strides),
              _const("two", np.array(2.0, np.float32))]
    for k, o in enumerate(outs):
        nodes.append(helper.make_node("Reshape", [o, "flat"], [f"v{k}"]))
    nodes += [helper.make_node("Concat", [f"v{k}" for k in range(len(outs))], ["cat"], axis=2),
              helper.make_node("Split", ["cat", "split"], ["boxes", "scores"], axis=1),
              helper.make_node("Reshape", ["boxes", "dfl4"], ["bins"]),
              helper.make_node("Transpose", ["bins"], ["bins_t"], perm=[0, 2, 1, 3]),
              helper.make_node("Softmax", ["bins_t"], ["prob"], axis=1),
              helper.make_node("Conv", ["prob", "dflw"], ["dist"]),
              helper.make_node("Reshape", ["dist", "box"], ["ltrb"]),
              helper.make_node("Split", ["ltrb", "half"], ["lt", "rb"], axis=1),
              helper.make_node("Sub", ["centres", "lt"], ["x1y1"]),
              helper.make_node("Add", ["centres", "rb"], ["x2y2"]),
              helper.make_node("Add", ["x1y1", "x2y2"], ["sum"]),
              helper.make_node("Div", ["sum", "two"], ["xy"]),
              helper.make_node("Sub", ["x2y2", "x1y1"], ["wh"]),
              helper.make_node("Concat", ["xy", "wh"], ["xywh"], axis=1),
              helper.make_node("Mul", ["xywh", "strides"], ["dbox"]),
              helper.make_node("Sigmoid", ["scores"], ["cls"])]
    parts = ["dbox", "cls"]
    if extra:
        width = {"pose": 6, "seg": 4}[extra]
        inits.append(_const("eflat", np.array([1, width, -1], np.int64)))
        nodes += [helper.make_node("Reshape", [o, "eflat"], [f"ev{k}"]) for k, o in enumerate(extra_out)]
        nodes.append(helper.make_node("Concat", [f"ev{k}" for k in range(len(extra_out))], ["ecat"], axis=2))
        parts.append("ecat")
    if extra == "pose":
        inits += [_const("kshape", np.array([1, 2, 3, anchors], np.int64)),
                  _const("kflat", np.array([1, 6, anchors], np.int64)),
                  _const("xy_sizes", np.array([2, 1], np.int64)), _const("centres_half", centres - 0.5)]
        nodes += [helper.make_node("Reshape", ["ecat", "kshape"], ["kpt"]),
                  helper.make_node("Split", ["kpt", "xy_sizes"], ["kxy", "kvis"], axis=2),
                  helper.make_node("Mul", ["kxy", "two"], ["kxy2"]),
                  helper.make_node("Add", ["kxy2", "centres_half"], ["kxya"]),
                  helper.make_node("Mul", ["kxya", "strides"], ["kxys"]),
                  helper.make_node("Sigmoid", ["kvis"], ["kvs"]),
                  helper.make_node("Concat", ["kxys", "kvs"], ["kdec"], axis=2),
                  helper.make_node("Reshape", ["kdec", "kflat"], ["kout"])]
        parts[-1] = "kout"
    nodes.append(helper.make_node("Concat", parts, ["y"], axis=1))
    if extra == "seg":  # the proto masks: a second, NCHW output (NHWC in the file, as every 4-D one)
        inits += [_const("pw", rng.standard_normal((4, CHANNELS, 3, 3)).astype(np.float32) * 0.3)]
        nodes += [helper.make_node("Conv", ["x0", "pw"], ["pc"], pads=[1, 1, 1, 1]),
                  helper.make_node("Sigmoid", ["pc"], ["ps"]), helper.make_node("Mul", ["pc", "ps"], ["proto"])]
    return nodes, inits, 1  # the output's ONNX layout [1, channels, anchors]: one transpose


def yolov5(rng, na: int = 3, no: int = 7):
    """Per level view (1, na, no, h, w), permute(0, 1, 3, 4, 2), sigmoid, grid math, view
    (1, -1, no), concat on anchors: output [1, anchors, no]. Its anchors run (anchor, y, x) where
    the NHWC conv has (y, x, anchor): one real transpose per level, which no rewrite can share
    (the levels differ in h, w until the final reshape has merged them)."""
    nodes, inits = [], []
    outs = _level_convs(rng, na * no, nodes, inits)
    for k, (o, (h, w, stride)) in enumerate(zip(outs, LEVELS)):
        grid = np.zeros((1, na, h, w, no), np.float32)
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        grid[..., 0], grid[..., 1] = xs - 0.5, ys - 0.5
        gain = np.ones(no, np.float32)
        gain[:2] = 2 * stride
        inits += [_const(f"s5_{k}", np.array([1, na, no, h, w], np.int64)), _const(f"grid{k}", grid * stride),
                  _const(f"gain{k}", gain), _const(f"f{k}", np.array([1, -1, no], np.int64))]
        nodes += [helper.make_node("Reshape", [o, f"s5_{k}"], [f"v{k}"]),
                  helper.make_node("Transpose", [f"v{k}"], [f"t{k}"], perm=[0, 1, 3, 4, 2]),
                  helper.make_node("Sigmoid", [f"t{k}"], [f"g{k}"]),
                  helper.make_node("Mul", [f"g{k}", f"gain{k}"], [f"m{k}"]),
                  helper.make_node("Add", [f"m{k}", f"grid{k}"], [f"d{k}"]),
                  helper.make_node("Reshape", [f"d{k}", f"f{k}"], [f"r{k}"])]
    nodes.append(helper.make_node("Concat", [f"r{k}" for k in range(len(outs))], ["y"], axis=1))
    return nodes, inits, len(LEVELS)


def yolox(rng, classes: int = 3):
    """Decoupled head: per level cat(reg, obj, cls) on channels, flatten(2), cat on anchors,
    permute(0, 2, 1): output [1, anchors, 5 + nc]."""
    nodes, inits = [], []
    outs = _level_convs(rng, 5 + classes, nodes, inits)
    inits.append(_const("sizes", np.array([4, 1, classes], np.int64)))
    for k, o in enumerate(outs):
        nodes += [helper.make_node("Split", [o, "sizes"], [f"reg{k}", f"obj{k}", f"cls{k}"], axis=1),
                  helper.make_node("Sigmoid", [f"obj{k}"], [f"os{k}"]),
                  helper.make_node("Sigmoid", [f"cls{k}"], [f"cs{k}"]),
                  helper.make_node("Concat", [f"reg{k}", f"os{k}", f"cs{k}"], [f"l{k}"], axis=1)]
    inits.append(_const("flat", np.array([1, 5 + classes, -1], np.int64)))
    for k in range(len(outs)):
        nodes.append(helper.make_node("Reshape", [f"l{k}", "flat"], [f"v{k}"]))
    nodes += [helper.make_node("Concat", [f"v{k}" for k in range(len(outs))], ["cat"], axis=2),
              helper.make_node("Transpose", ["cat"], ["y"], perm=[0, 2, 1])]
    return nodes, inits, 0


def fcos(rng, k: int = 5):
    """RetinaNet/FCOS-like: per level permute(0, 2, 3, 1).reshape(1, -1, k), concat on anchors."""
    nodes, inits = [], []
    outs = _level_convs(rng, k, nodes, inits)
    inits.append(_const("flat", np.array([1, -1, k], np.int64)))
    for j, o in enumerate(outs):
        nodes += [helper.make_node("Transpose", [o], [f"t{j}"], perm=[0, 2, 3, 1]),
                  helper.make_node("Reshape", [f"t{j}", "flat"], [f"v{j}"])]
    nodes += [helper.make_node("Concat", [f"v{j}" for j in range(len(outs))], ["cat"], axis=1),
              helper.make_node("Sigmoid", ["cat"], ["y"])]
    return nodes, inits, 0


HEADS = {"yolov8": yolov8, "yolov8_pose": lambda rng: yolov8(rng, extra="pose"),
         "yolov8_seg": lambda rng: yolov8(rng, extra="seg"), "yolov5": yolov5, "yolox": yolox, "fcos": fcos}


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("mode", ["float", "uint8", "int8"])
def test_head_converts_with_fewest_transposes(head, mode, tmp_path):
    rng = np.random.default_rng(0)
    nodes, inits, transposes = HEADS[head](rng)
    inputs = {f"x{k}": [1, CHANNELS, h, w] for k, (h, w, _) in enumerate(LEVELS)}
    path = save_graph(tmp_path / f"{head}.onnx", nodes, inputs, "y", inits)
    if any(node.output[0] == "proto" for node in nodes):
        model = onnx.load(path)
        model.graph.output.append(helper.make_tensor_value_info("proto", onnx.TensorProto.FLOAT, None))
        onnx.save(model, path)

    def feeds(n):
        return [{name: rng.standard_normal(shape).astype(np.float32) for name, shape in inputs.items()}
                for _ in range(n)]
    samples = feeds(4)
    if mode == "float":
        report = convert(ConvertConfig(model=path))
        floor = 100.0
    else:
        report = convert(ConvertConfig(model=path, mode="full", dtype=mode, calib=feeds(16)))
        floor = 25.0
    assert report.op_counts.get("TRANSPOSE", 0) == transposes, report.op_counts
    assert worst_sqnr_db(path, report.tflite, samples) > floor
