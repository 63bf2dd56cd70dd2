"""The patterns of a tf2onnx speech-embedding CNN (openwakeword's embedding model): an NHWC input
transposed to NCHW, Conv + ReLU, a standalone BatchNormalization after the ReLU, LeakyRelu then
Max with one constant folded for every layer, MaxPool. Full int8/uint8 files against onnxruntime,
and the grids the file gives the clamps."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime, save_model
from tflq.backend.tflite_reader import read_tflite
from tflq.config import ConvertConfig
from tflq.ir.quant import sqnr_db
from tflq.pipeline import convert

CLAMP = -0.4
RNG = np.random.default_rng(20261201)


def _conv(name: str, cin: int, cout: int, k: tuple[int, int], rng) -> tuple[list, list]:
    w = rng.normal(0, np.sqrt(2.0 / (cin * k[0] * k[1])), (cout, cin, *k)).astype(np.float32)
    # a few channels an order of magnitude smaller, as trained layers have
    w[: max(1, cout // 4)] *= 0.1
    b = rng.normal(0, 0.3, cout).astype(np.float32)
    inits = [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]
    return inits, [f"{name}_w", f"{name}_b"]


def _embedding_like() -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    nodes, inits = [], [numpy_helper.from_array(np.array([[[[CLAMP]]]], np.float32), "clamp")]
    nodes.append(helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]))
    w, names = _conv("c0", 1, 8, (3, 3), rng)
    inits += w
    nodes += [helper.make_node("Conv", ["t", *names], ["c0"]),
              helper.make_node("Relu", ["c0"], ["r0"])]
    gamma = rng.uniform(0.5, 3.0, 8).astype(np.float32)
    bn = [gamma, rng.normal(0, 1, 8), rng.uniform(0.1, 0.5, 8), rng.uniform(0.05, 0.4, 8)]
    for key, value in zip(("g", "beta", "mean", "var"), bn):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), f"bn_{key}"))
    nodes.append(helper.make_node("BatchNormalization", ["r0", "bn_g", "bn_beta", "bn_mean",
                                                         "bn_var"], ["bn"], epsilon=1e-3))
    x, cin = "bn", 8
    for layer, (cout, k, pool) in enumerate([(8, (1, 3), False), (8, (3, 1), True),
                                             (16, (1, 3), False)]):
        nodes += [helper.make_node("LeakyRelu", [x], [f"l{layer}"], alpha=0.2),
                  helper.make_node("Max", [f"l{layer}", "clamp"], [f"m{layer}"])]
        x = f"m{layer}"
        if pool:
            nodes.append(helper.make_node("MaxPool", [x], [f"p{layer}"], kernel_shape=[2, 1],
                                          strides=[2, 1]))
            x = f"p{layer}"
        w, names = _conv(f"c{layer + 1}", cin, cout, k, rng)
        inits += w
        nodes.append(helper.make_node("Conv", [x, *names], [f"c{layer + 1}"]))
        x, cin = f"c{layer + 1}", cout
    graph = helper.make_graph(nodes, "embedding_like",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, 16, 1])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _samples(count: int, seed: int) -> np.ndarray:
    """Spectrogram-like inputs: positive, smooth along time, varying per band."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(2, 8, (count, 1, 16, 1))
    return (base + np.cumsum(rng.normal(0, 0.4, (count, 24, 16, 1)), axis=1)).astype(np.float32)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embedding_like")
    model = _embedding_like()
    path = save_model(model, tmp / "m.onnx")
    np.save(tmp / "calib.npy", _samples(16, 1))
    files = {dtype: convert(ConvertConfig(model=path, mode="full", dtype=dtype, keep_io_layout=True,
                                          calib=str(tmp / "calib.npy"))).tflite
             for dtype in ("int8", "uint8")}
    return model, files


# worst sample, measured 23.7 (int8) / 21.2 (uint8) dB; -5.7 dB before each MAXIMUM got the
# shared constant on its own grid (the later ones clamped at another value than -0.4)
SQNR_FLOOR = {"int8": 21.0, "uint8": 19.0}


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_full_integer_file_follows_onnxruntime(converted, dtype):
    model, files = converted
    worst = min(sqnr_db(run_onnxruntime(model, {"x": x[None]})[0],
                        run_litert(files[dtype], [x[None]], nchw_io=False)[0])
                for x in _samples(12, 2))
    assert worst >= SQNR_FLOOR[dtype], f"{dtype}: worst sample {worst:.1f} dB"


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_batchnorm_after_relu_folds_its_scale_into_the_conv(converted, dtype):
    info = read_tflite(converted[1][dtype])
    assert "MUL" not in info.op_kinds(), info.op_kinds()  # only the BatchNorm's ADD is left
    assert info.op_kinds().count("ADD") == 1


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_each_clamp_reads_its_constant_on_its_own_grid(converted, dtype):
    """MAXIMUM compares raw integers: the constant must be -0.4 on the op's own grid, and the
    LEAKY_RELU before it spends no steps below the clamp."""
    info = read_tflite(converted[1][dtype])
    clamps = [op for op in info.ops if op.kind == "MAXIMUM"]
    assert len(clamps) == 3
    for op in clamps:
        x, c = (info.tensors[i] for i in op.inputs)
        assert (x.scale, x.zero_point) == (c.scale, c.zero_point)
        value = (int(c.data.reshape(-1)[0]) - c.zero_point[0]) * c.scale[0]
        assert abs(value - CLAMP) <= c.scale[0] / 2 + 1e-7
        lowest = (np.iinfo(x.dtype).min - x.zero_point[0]) * x.scale[0]
        assert lowest >= CLAMP - x.scale[0], f"grid reaches {lowest:.3f}, below the clamp"
