"""Random MaxPool and AveragePool configurations (sizes, kernels, strides, explicit and automatic
padding, ceil_mode, count_include_pad), many pools per model, each on its own input: LiteRT's
outputs against onnxruntime's, in float and full int8/uint8, judged on the worst output.

Float: onnxruntime's result up to float rounding, with XNNPACK (LiteRT's default), LiteRT's
optimized builtin kernels and its reference kernels (all must agree wherever SAME padding
stands in for ONNX's); likewise in 8 bits (where XNNPACK takes max pools, and average pools
that read no padding, written as depthwise convolutions).
8-bit: on the grid the file puts each input on, a max pool is exactly onnxruntime's maximum of
the rounded input, and an average pool onnxruntime's mean of it up to half an output step (one
rounding: SAME divides by the window's real cells itself; a divisor MUL after the pool would be
a second rounding)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.conftest import importorskip, run_onnxruntime, save_model
from tflq import convert
from tflq.backend.tflite_reader import read_tflite

CONFIGS = 128  # per pool kind
PER_MODEL = 32


def _config(rng, op_type: str) -> dict:
    kernel = [int(k) for k in rng.integers(1, 5, 2)]
    attrs: dict = {"kernel_shape": kernel, "strides": [int(s) for s in rng.integers(1, 4, 2)]}
    padding = rng.random()
    if padding < 0.7:
        attrs["pads"] = [int(rng.integers(0, kernel[a % 2])) for a in range(4)]
    elif padding < 0.8:
        attrs["auto_pad"] = "SAME_UPPER"
    elif padding < 0.9:
        attrs["auto_pad"] = "SAME_LOWER"
    if rng.random() < 0.3:
        attrs["ceil_mode"] = 1
    if op_type == "AveragePool":
        attrs["count_include_pad"] = int(rng.integers(0, 2))
    size = [int(rng.integers(k, 15)) for k in kernel]
    return {"attrs": attrs, "shape": (1, 3, *size), "low": float(rng.uniform(-3.0, 1.0))}


def _accepted(op_type: str, config: dict) -> bool:
    """Configurations whose output size onnxruntime and ONNX shape inference agree on (ceil_mode
    can make them differ: tflq refuses those, by design) and whose every window reads a cell."""
    node = helper.make_node(op_type, ["x"], ["y"], **config["attrs"])
    model = _model([node], {"x": config["shape"]}, ["y"])
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception:  # noqa: BLE001 - an invalid configuration: not generated
        return False
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    ort = importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 4
    x = np.zeros(config["shape"], np.float32)
    try:
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        y = session.run(None, {"x": x})[0]
    except Exception:  # noqa: BLE001 - onnxruntime refuses it: not generated
        return False
    return list(y.shape) == [d.dim_value for d in dims] and bool(np.isfinite(y).all()) and y.size > 0


def _model(nodes, inputs: dict, outputs: list[str]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "pools",
                              [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(s))
                               for n, s in inputs.items()],
                              [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                               for n in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _configs(op_type: str, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < CONFIGS:
        config = _config(rng, op_type)
        if _accepted(op_type, config):
            configs.append(config)
    return configs


def _group_models(op_type: str, seed: int):
    """Models of PER_MODEL pools each, with their inputs' value ranges."""
    configs = _configs(op_type, seed)
    for start in range(0, len(configs), PER_MODEL):
        group = configs[start:start + PER_MODEL]
        nodes = [helper.make_node(op_type, [f"x{i}"], [f"y{i}"], name=f"pool{i}", **c["attrs"])
                 for i, c in enumerate(group)]
        model = _model(nodes, {f"x{i}": c["shape"] for i, c in enumerate(group)},
                       [f"y{i}" for i in range(len(group))])
        yield model, group


def _samples(group, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{f"x{i}": rng.uniform(c["low"], c["low"] + 2.0, c["shape"]).astype(np.float32)
             for i, c in enumerate(group)} for _ in range(count)]


def _run(tflite: bytes, feeds: dict[str, np.ndarray], kernels: str = "xnnpack"):
    """LiteRT outputs by name (NCHW), with the 8-bit I/O tensors' (scale, zero point) by name.
    kernels: "xnnpack" (LiteRT's default), "builtin" (its optimized kernels), "reference"."""
    litert = importorskip("ai_edge_litert.interpreter")
    resolvers = {"builtin": litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                 "reference": litert.OpResolverType.BUILTIN_REF}
    kwargs = {"experimental_op_resolver_type": resolvers[kernels]} if kernels in resolvers else {}
    interpreter = litert.Interpreter(model_content=tflite, num_threads=1, **kwargs)
    interpreter.allocate_tensors()
    grids = {}
    for detail in interpreter.get_input_details():
        value = feeds[detail["name"]].transpose(0, 2, 3, 1)
        if detail["dtype"] != np.float32:
            scale, zero_point = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            value = np.clip(np.round(value / scale) + zero_point, info.min, info.max)
            grids[detail["name"]] = (scale, zero_point)
        interpreter.set_tensor(detail["index"], np.ascontiguousarray(value.astype(detail["dtype"])))
    interpreter.invoke()
    outputs = {}
    for detail in interpreter.get_output_details():
        value = interpreter.get_tensor(detail["index"])
        if detail["dtype"] != np.float32:
            scale, zero_point = detail["quantization"]
            value = (value.astype(np.float64) - zero_point) * scale
            grids[detail["name"]] = (scale, zero_point)
        outputs[detail["name"]] = value.transpose(0, 3, 1, 2)
    return outputs, grids


def _largest_divisor_fix(config: dict, out: tuple[int, int]) -> float:
    """The largest full-window size over ONNX's divisor of an AveragePool (hand-computed from
    the ONNX spec: real cells, or with count_include_pad cells inside the explicit padding)."""
    attrs, size = config["attrs"], config["shape"][2:]
    kernel, strides = attrs["kernel_shape"], attrs["strides"]
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if attrs.get("auto_pad", "NOTSET").startswith("SAME"):
        for a in (0, 1):
            total = max((-(-size[a] // strides[a]) - 1) * strides[a] + kernel[a] - size[a], 0)
            small = total // 2
            pads[a], pads[a + 2] = (small, total - small) if attrs["auto_pad"] == "SAME_UPPER" \
                else (total - small, small)
    counts = []
    for a in (0, 1):
        starts = np.arange(out[a]) * strides[a] - pads[a]
        ends = starts + kernel[a]
        if attrs.get("count_include_pad"):
            counts.append(np.minimum(ends, size[a] + pads[a + 2]) - starts)
        else:
            counts.append(np.minimum(ends, size[a]) - np.maximum(starts, 0))
    return float(kernel[0] * kernel[1] / np.outer(*counts).min())


@pytest.mark.parametrize("op_type", ["MaxPool", "AveragePool"])
def test_random_pools_float(op_type, tmp_path):
    importorskip("ai_edge_litert")
    for index, (model, group) in enumerate(_group_models(op_type, seed=10)):
        data = convert(save_model(model, tmp_path / f"m{index}.onnx")).tflite
        feeds = _samples(group, 1, seed=index)[0]
        expected = dict(zip([f"y{i}" for i in range(len(group))], run_onnxruntime(model, feeds)))
        for kernels in ("xnnpack", "builtin", "reference"):
            actual, _ = _run(data, feeds, kernels)
            for i, config in enumerate(group):
                worst = float(np.abs(actual[f"y{i}"] - expected[f"y{i}"]).max())
                assert worst <= 1e-5, f"{config} {kernels}: {worst}"


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("op_type", ["MaxPool", "AveragePool"])
def test_random_pools_8_bit(op_type, dtype, tmp_path):
    importorskip("ai_edge_litert")
    for index, (model, group) in enumerate(_group_models(op_type, seed=20)):
        samples = _samples(group, 4, seed=100 + index)
        data = convert(save_model(model, tmp_path / f"m{index}.onnx"), mode="full", dtype=dtype, calib=samples,
                       io_type=dtype).tflite
        info = read_tflite(data)
        producers = {t: op.kind for op in info.ops for t in op.outputs}
        # pools whose divisor a MUL fixes afterwards (count_include_pad=1, or no SAME form):
        # a second rounding, on the MUL's own grid
        rescaled = {i for i in range(len(group))
                    if producers[next(t.index for t in info.tensors if t.name == f"y{i}")] == "MUL"}
        for sample, kernels in zip(samples, ("xnnpack", "builtin", "reference")):
            actual, grids = _run(data, sample, kernels)
            rounded = {}
            for name, value in sample.items():  # the input on the file's grid, in float
                scale, zero_point = grids[name]
                info = np.iinfo(dtype)
                q = np.clip(np.round(value / scale) + zero_point, info.min, info.max)
                rounded[name] = ((q - zero_point) * scale).astype(np.float32)
            expected = dict(zip([f"y{i}" for i in range(len(group))], run_onnxruntime(model, rounded)))
            for i, config in enumerate(group):
                step = grids[f"y{i}"][0]
                worst = float(np.abs(actual[f"y{i}"] - expected[f"y{i}"]).max()) / step
                bound = 1e-3 if op_type == "MaxPool" else 0.5 + 1e-3
                if i in rescaled:
                    # the pool's rounding scaled by the factor, the MUL's own, and the factor
                    # constant's (8 bits over factors from 1 to `fix`: relative 1/2 of 127/fix)
                    fix = _largest_divisor_fix(config, expected[f"y{i}"].shape[2:])
                    largest = float(np.abs(expected[f"y{i}"]).max()) / step
                    bound = 0.5 * fix * grids[f"x{i}"][0] / step + 0.5 + largest * 0.5 * fix / 127 + 0.05
                assert worst <= bound, f"{config} {worst:.3f} output steps"
