"""Train-time multi-branch blocks (RepVGG, MobileOne, ACNet) merged into one conv before import
(tflq.frontend.conv_branches): each sum of parallel convs over one input with the same strides,
dilations and groups, identity BatchNorms and bias constants becomes one CONV_2D /
DEPTHWISE_CONV_2D. Checked against onnxruntime on the unmerged model, float and full int8;
branches that do not fit (another stride, an output read elsewhere) stay, exactly."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.conftest import save_graph, worst_sqnr_db
from tflq.config import ConvertConfig
from tflq.frontend.conv_branches import merge_parallel_convs
from tflq.pipeline import convert

C = 8


def _init(rng, name, *shape, scale=0.3):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _bn(rng, name, x, out, c=C):
    inits = [numpy_helper.from_array((1 + 0.3 * rng.standard_normal(c)).astype(np.float32), f"{name}.g"),
             _init(rng, f"{name}.b", c, scale=0.2), _init(rng, f"{name}.m", c, scale=0.2),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), f"{name}.v")]
    return helper.make_node("BatchNormalization", [x, *(i.name for i in inits)], [out], epsilon=1e-3), inits


def _block(kind: str):
    """(nodes, initializers, input shape): a sum of branches over x, then Relu."""
    rng = np.random.default_rng(3)
    nodes, inits, terms = [], [], []

    def conv(name, k, pads, stride=1, group=1, dilation=1, bias=True, cin=C, bn=False):
        inits.append(_init(rng, f"{name}.w", C, cin // group, *k))
        ins = ["x", f"{name}.w"]
        if bias:
            inits.append(_init(rng, f"{name}.bias", C, scale=0.1))
            ins.append(f"{name}.bias")
        out = f"{name}.y"
        nodes.append(helper.make_node("Conv", ins, [out + ("0" if bn else "")], kernel_shape=list(k), pads=pads,
                                      strides=[stride, stride], group=group, dilations=[dilation, dilation]))
        if bn:
            node, more = _bn(rng, f"{name}.bn", out + "0", out)
            nodes.append(node)
            inits.extend(more)
        terms.append(out)

    def identity():
        node, more = _bn(rng, "id", "x", "id.y")
        nodes.append(node)
        inits.extend(more)
        terms.append("id.y")

    if kind == "repvgg":  # 3x3 + 1x1 + identity BN
        conv("k3", (3, 3), [1, 1, 1, 1]); conv("k1", (1, 1), [0, 0, 0, 0]); identity()
    elif kind == "repvgg_torchscript":  # Conv -> BatchNormalization per branch
        conv("k3", (3, 3), [1, 1, 1, 1], bias=False, bn=True); conv("k1", (1, 1), [0, 0, 0, 0], bias=False, bn=True)
        identity()
    elif kind == "acnet":  # 3x3 + 1x3 + 3x1 (asymmetric kernels)
        conv("k3", (3, 3), [1, 1, 1, 1]); conv("h", (1, 3), [0, 1, 0, 1]); conv("v", (3, 1), [1, 0, 1, 0])
    elif kind == "mobileone_depthwise":  # two depthwise 3x3, a depthwise 1x1, identity, stride 1
        conv("a", (3, 3), [1, 1, 1, 1], group=C); conv("b", (3, 3), [1, 1, 1, 1], group=C)
        conv("s", (1, 1), [0, 0, 0, 0], group=C); identity()
    elif kind == "strided":  # stride 2 on an even input: 3x3 pad 1 and 1x1 pad 0
        conv("k3", (3, 3), [1, 1, 1, 1], stride=2); conv("k1", (1, 1), [0, 0, 0, 0], stride=2)
    elif kind == "dilated":  # 3x3 dilation 2 pad 2 and 1x1: the 1x1 at the centre tap
        conv("k3", (3, 3), [2, 2, 2, 2], dilation=2); conv("k1", (1, 1), [0, 0, 0, 0], dilation=2)
    elif kind == "five_and_three":  # 5x5 pad 2 + 3x3 pad 1 + a bias constant
        conv("k5", (5, 5), [2, 2, 2, 2]); conv("k3", (3, 3), [1, 1, 1, 1])
        inits.append(_init(rng, "shift", C, 1, 1))
        terms.append("shift")
    elif kind == "strided_even_kernel":  # a 2x2 stride 2 sits in a 3x3 stride 2 pad 1 window
        conv("a", (3, 3), [1, 1, 1, 1], stride=2); conv("b", (1, 1), [0, 0, 0, 0], stride=2)
        nodes[-1] = helper.make_node("Conv", nodes[-1].input, nodes[-1].output, kernel_shape=[2, 2],
                                     pads=[0, 0, 0, 0], strides=[2, 2])
        inits[-2] = _init(rng, "b.w", C, C, 2, 2)
    elif kind == "mixed_dilations":  # nothing merges: another dilation each
        conv("a", (3, 3), [1, 1, 1, 1]); conv("b", (3, 3), [2, 2, 2, 2], dilation=2)
    elif kind == "shared_branch":  # the 1x1's output is read elsewhere too: 3x3 + identity merge
        conv("k3", (3, 3), [1, 1, 1, 1]); conv("k1", (1, 1), [0, 0, 0, 0]); identity()
    acc = terms[0]
    for i, t in enumerate(terms[1:]):
        nodes.append(helper.make_node("Add", [acc, t], [f"sum{i}"]))
        acc = f"sum{i}"
    nodes.append(helper.make_node("Relu", [acc], ["r"]))
    if kind == "shared_branch":
        nodes.append(helper.make_node("Mul", ["r", "k1.y"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["r"], ["y"]))
    return nodes, inits, (1, C, 8, 8)


# kind -> (merged convs, CONV_2D + DEPTHWISE_CONV_2D left in the file)
KINDS = {"repvgg": (1, 1), "repvgg_torchscript": (1, 1), "acnet": (1, 1), "mobileone_depthwise": (1, 1),
         "strided": (1, 1), "dilated": (1, 1), "five_and_three": (1, 1), "strided_even_kernel": (1, 1), "mixed_dilations": (0, 2),
         "shared_branch": (1, 2)}


@pytest.mark.parametrize("kind", list(KINDS))
def test_parallel_branches_merge_into_one_conv(kind, tmp_path):
    nodes, inits, shape = _block(kind)
    path = save_graph(tmp_path / "m.onnx", nodes, {"x": list(shape)}, "y", inits)
    merged, convs = KINDS[kind]
    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    assert merge_parallel_convs(model) == merged
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(3)]
    report = convert(ConvertConfig(model=path))
    assert report.op_counts.get("CONV_2D", 0) + report.op_counts.get("DEPTHWISE_CONV_2D", 0) == convs
    assert worst_sqnr_db(path, report.tflite, samples) > 100
    calib = [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(16)]
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=calib))
    assert worst_sqnr_db(path, report.tflite, samples) > 25


@pytest.mark.parametrize("dtype,convs", [("int8", 1), ("uint8", 2)])
def test_quantized_files_merge_what_their_weight_grid_keeps(dtype, convs, tmp_path):
    """Per-channel int8 weights: the convs merge, the identity BatchNorm stays an addend (its ~1
    centre tap would be an outlier on the merged kernel's grid); per-tensor uint8: nothing merges
    (conv_branches.merge_policy has the measurements)."""
    nodes, inits, shape = _block("repvgg")
    path = save_graph(tmp_path / "m.onnx", nodes, {"x": list(shape)}, "y", inits)
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(3)]
    calib = [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(16)]
    report = convert(ConvertConfig(model=path, mode="full", dtype=dtype, calib=calib))
    # the identity BatchNorm: a MUL and an ADD, then the sum's ADD
    assert report.op_counts.get("CONV_2D") == convs and report.op_counts.get("MUL") == 1, report.op_counts
    assert worst_sqnr_db(path, report.tflite, samples) > 25
