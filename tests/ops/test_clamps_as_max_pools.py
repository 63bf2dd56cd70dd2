"""An 8-bit RELU, RELU6 or RELU_N1_TO_1 that no producer can fuse (here after a CONCATENATION),
between ops XNNPACK runs: XNNPACK has no 8-bit RELU, so LiteRT split the graph around it (a
toy Conv/Concat/Relu/Conv model ran 2.8x slower); it is written as a 1x1 MAX_POOL_2D with the
clamp fused (plus a QUANTIZE to the clamp's grid where that differs). One XNNPACK partition,
onnxruntime's result within the output grid's steps, with XNNPACK and the builtin kernels."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from tests.conftest import importorskip, run_litert, run_onnxruntime, save_graph
from tflq import convert
from tflq.backend.tflite_reader import read_tflite

CLAMPS = {"RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}


def _model(path, kind: str) -> str:
    rng = np.random.default_rng(4)
    low, high = CLAMPS[kind]
    inits = [numpy_helper.from_array(rng.normal(0, 0.4, shape).astype(np.float32), name)
             for name, shape in (("w1", (4, 4, 3, 3)), ("w2", (4, 4, 3, 3)), ("w3", (4, 8, 3, 3)))]
    if kind == "RELU":
        clamp = helper.make_node("Relu", ["c"], ["r"])
    else:
        inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", low), ("hi", high))]
        clamp = helper.make_node("Clip", ["c", "lo", "hi"], ["r"])
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w2"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["a", "b"], ["c"], axis=1), clamp,
             helper.make_node("Conv", ["r", "w3"], ["y"], pads=[1, 1, 1, 1])]
    return save_graph(path, nodes, {"x": [1, 4, 12, 12]}, "y", inits)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("kind", list(CLAMPS))
def test_unfused_clamp_is_a_max_pool_xnnpack_runs(tmp_path, kind, dtype):
    importorskip("ai_edge_litert")
    from tests.delegation import xnnpack_delegation

    model = _model(tmp_path / "m.onnx", kind)
    rng = np.random.default_rng(5)
    samples = [{"x": rng.normal(0, 1, (1, 4, 12, 12)).astype(np.float32)} for _ in range(8)]
    data = convert(model, mode="full", dtype=dtype, calib=samples).tflite
    info = read_tflite(data)
    kinds = info.op_kinds()
    assert not set(CLAMPS) & set(kinds) and "MAX_POOL_2D" in kinds, kinds
    pool = next(op for op in info.ops if op.kind == "MAX_POOL_2D")
    assert (pool.options.filterHeight, pool.options.filterWidth) == (1, 1)
    delegation = xnnpack_delegation(data)
    assert not set(CLAMPS) & set(delegation.undelegated)
    # one partition: the uint8 CONCATENATION's inputs share its grid too (XNNPACK refuses others)
    assert delegation.partitions == 1 and delegation.undelegated == [], delegation
    dequantize = next(op for op in info.ops if op.kind == "DEQUANTIZE")
    step = float(info.tensors[dequantize.inputs[0]].scale[0])  # the output grid's
    for sample in samples[:4]:
        expected = run_onnxruntime(model, sample)[0]
        for reference_kernels in (False, True):
            worst = float(np.abs(run_litert(data, [sample["x"]], reference_kernels=reference_kernels)[0]
                                 - expected).max())
            # the 8-bit model's own error (input grid, weights, two convolutions): up to 3.2
            # steps here, the same as with the standalone clamp op
            assert worst <= 4 * step, f"{worst / step:.2f} output steps"
