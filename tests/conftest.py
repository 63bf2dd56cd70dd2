"""Shared test helpers: build ONNX models from op cases, run the onnxruntime oracle and LiteRT."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import helper

REQUIRE_ALL = os.environ.get("TFLQ_REQUIRE_ALL_TESTS") == "1"
# Every pass run by the tests is followed by the IR verifier (STYLE.md §6).
os.environ.setdefault("TFLQ_DEBUG", "1")


def importorskip(module: str):
    """pytest.importorskip, except that `make test` (TFLQ_REQUIRE_ALL_TESTS=1) turns a skip into a failure."""
    if REQUIRE_ALL:
        return __import__(module, fromlist=["_"])
    return pytest.importorskip(module)


def case_model(case) -> onnx.ModelProto:
    """A model of the case's nodes: graph inputs from case.inputs, initializers from case.consts."""
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for n, v in case.inputs.items()]
    # Output types left open: shape inference gives them (comparisons are bool, Cast is its `to`).
    outputs = [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in case.outputs]
    inits = [onnx.numpy_helper.from_array(v, n) for n, v in case.consts.items()]
    graph = helper.make_graph(case.nodes, case.name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model)
    for out, typed in zip(model.graph.output, inferred.graph.output):
        out.type.tensor_type.elem_type = typed.type.tensor_type.elem_type or onnx.TensorProto.FLOAT
    return model


def save_model(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def save_graph(path, nodes, inputs: dict, output: str, inits=(), opset: int = 17) -> str:
    """A float model of `nodes` saved at `path`: float32 graph inputs of the given shapes, one
    output of type float32 (its shape left to inference), `inits` as initializers."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, shape)
                                           for n, shape in inputs.items()],
                              [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9 if opset >= 19 else 8
    return save_model(model, path)


def run_onnxruntime(model_or_path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    ort = importorskip("onnxruntime")
    data = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else model_or_path
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def litert_interpreter(tflite: bytes, reference_kernels: bool = False):
    litert = importorskip("ai_edge_litert.interpreter")
    kwargs = {}
    if reference_kernels:
        kwargs["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_REF
    interpreter = litert.Interpreter(model_content=tflite, num_threads=1, **kwargs)
    interpreter.allocate_tensors()
    return interpreter


def litert_constants(tflite: bytes) -> list[dict]:
    """Every 8-bit constant tensor of the file as LiteRT reads it: name, values, scales, zero
    points, quantized dimension."""
    interpreter = litert_interpreter(tflite)
    found = []
    for detail in interpreter.get_tensor_details():
        if detail["dtype"] not in (np.int8, np.uint8):
            continue
        try:
            values = interpreter.get_tensor(detail["index"])
        except ValueError:  # (an activation, not a constant)
            continue
        q = detail["quantization_parameters"]
        found.append({"name": detail["name"], "values": values, "scales": q["scales"],
                      "zero_points": q["zero_points"], "axis": q["quantized_dimension"]})
    return found


def litert_per_sample(tflite: bytes, images: np.ndarray) -> np.ndarray:
    """The file's first output for each NCHW image of `images`, run one at a time (batch 1, NHWC
    input), concatenated along the batch axis."""
    interpreter = litert_interpreter(tflite)
    x, y = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    out = []
    for image in images.transpose(0, 2, 3, 1):
        interpreter.set_tensor(x, np.ascontiguousarray(image[None]))
        interpreter.invoke()
        out.append(interpreter.get_tensor(y).copy())
    return np.concatenate(out)


def run_litert(tflite: bytes, feeds: list[np.ndarray], nchw_io: bool = True,
               reference_kernels: bool = False) -> list[np.ndarray]:
    """Run in LiteRT. Feeds are in ONNX layout; 4-D ones are transposed to NHWC (and outputs back)
    unless the file kept the ONNX layout. Quantized I/O is (de)quantized with the file's params."""
    interpreter = litert_interpreter(tflite, reference_kernels)
    for detail, value in zip(interpreter.get_input_details(), feeds):
        value = np.asarray(value)
        if nchw_io and value.ndim == 4:
            value = value.transpose(0, 2, 3, 1)
        if detail["dtype"] != np.float32 and detail["quantization"][0]:
            scale, zp = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            value = np.clip(np.round(value / scale) + zp, info.min, info.max)
        interpreter.set_tensor(detail["index"], np.array(value, dtype=detail["dtype"], order="C"))
    interpreter.invoke()
    results = []
    for detail in interpreter.get_output_details():
        value = interpreter.get_tensor(detail["index"])
        if detail["dtype"] != np.float32 and detail["quantization"][0]:  # not ids, masks
            scale, zp = detail["quantization"]
            value = (value.astype(np.float32) - zp) * scale
        if nchw_io and value.ndim == 4:
            value = value.transpose(0, 3, 1, 2)
        results.append(value)
    return results


def worst_sqnr_db(path: str, tflite: bytes, feeds: list[dict[str, np.ndarray]]) -> float:
    """The worst output SQNR of a .tflite (LiteRT) against its ONNX model (onnxruntime) over `feeds`."""
    from tflq.ir.quant import sqnr_db
    worst = float("inf")
    for feed in feeds:
        expected, actual = run_onnxruntime(path, feed), run_litert(tflite, list(feed.values()))
        worst = min(worst, min(sqnr_db(e, a) for e, a in zip(expected, actual)))
    return worst


def relative_error(expected: np.ndarray, actual: np.ndarray) -> float:
    """Largest error relative to the largest magnitude; integer/boolean results must be exact (0 or inf)."""
    if np.asarray(expected).dtype.kind in "iub":
        assert np.asarray(actual).dtype == np.asarray(expected).dtype, (actual.dtype, expected.dtype)
        return 0.0 if np.array_equal(expected, actual) else float("inf")
    expected = np.asarray(expected, np.float64)
    actual = np.asarray(actual, np.float64)
    return float(np.max(np.abs(expected - actual)) / max(np.max(np.abs(expected)), 1e-6))


@pytest.fixture(scope="session")
def zoo_paths(tmp_path_factory) -> dict[str, str]:
    """The model zoo's models saved once per test session: name -> .onnx path."""
    from tests import model_zoo

    directory = tmp_path_factory.mktemp("zoo")
    paths = {}
    for name, (build, _) in model_zoo.ZOO.items():
        paths[name] = str(directory / f"{name}.onnx")
        onnx.save(build(), paths[name])
    return paths
