"""Whole QDQ models converted by tflq and run in LiteRT: the digits sample and the benchmark
networks quantized by onnxruntime's quantize_static, and the quantization-aware-trained sample.

The reference is onnxruntime's own run of the QDQ model on its integer kernels (the QDQ nodes
fused into QLinearConv and friends; `session.qdqisint8allowed` so that int8 activations take that
path too instead of a float detour). Required: at least 99% of the output elements within one
output quantization step of onnxruntime's, none more than two steps away.

Where the two differ at all, it is at ties: TFLite's fixed-point ADD rounds an exact .5 away from
zero, onnxruntime's QLinearAdd to even. The benchmark networks have random weights, which can
amplify one such step through later layers (MobileNetV2 more than ResNet-18), so how close the
outputs are depends somewhat on the calibration data; the seeds here are fixed.
"""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

from tests import model_zoo
from tests.conftest import importorskip, litert_interpreter
from tflq.config import ConvertConfig
from tflq.pipeline import convert

HERE = os.path.dirname(__file__)
SAMPLES = os.path.join(HERE, "..", "..", "sample_models")
# (activation type, weight type, per channel) for onnxruntime's quantize_static
CONFIGS = {"int8_per_channel": ("QInt8", "QInt8", True),
           "uint8_per_tensor": ("QUInt8", "QUInt8", False)}


def _quantize_static(src: onnx.ModelProto, out: str, samples: list[dict[str, np.ndarray]],
                     config: str) -> str:
    """onnxruntime's documented flow: quant_pre_process (folds BatchNormalization), then
    quantize_static in QDQ format."""
    quantization = importorskip("onnxruntime.quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter(samples)

        def get_next(self):
            return next(self.samples, None)

    float_path, pre_path = out + ".float.onnx", out + ".pre.onnx"
    onnx.save(src, float_path)
    quant_pre_process(float_path, pre_path, skip_symbolic_shape=True)
    act, weight, per_channel = CONFIGS[config]
    quantization.quantize_static(pre_path, out, Reader(), quant_format=quantization.QuantFormat.QDQ,
                                 activation_type=getattr(quantization.QuantType, act),
                                 weight_type=getattr(quantization.QuantType, weight),
                                 per_channel=per_channel)
    return out


def _onnxruntime(path: str, inputs: list[np.ndarray]) -> np.ndarray:
    ort = importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdqisint8allowed", "1")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x})[0] for x in inputs])


def _litert(tflite: bytes, inputs: list[np.ndarray]) -> np.ndarray:
    interpreter = litert_interpreter(tflite)
    (detail,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    results = []
    for x in inputs:
        interpreter.set_tensor(detail["index"], np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(results)


def _output_step(path: str) -> float:
    """The scale of the DequantizeLinear that produces the model's output."""
    model = onnx.load(path)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    out = model.graph.output[0].name
    node = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == out)
    return float(inits[node.input[1]].reshape(-1)[0])


def _agreement(path: str, inputs: list[np.ndarray]) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(fraction within one output step, largest difference in steps, onnxruntime, LiteRT)."""
    report = convert(ConvertConfig(model=path))
    assert report.mode == "full" and report.float_ops == [], report.to_text()
    expected, actual = _onnxruntime(path, inputs), _litert(report.tflite, inputs)
    steps = np.abs(expected - actual) / _output_step(path)
    return float(np.mean(steps <= 1.0001)), float(steps.max()), expected, actual


@pytest.fixture(scope="module")
def digits_eval():
    data = np.load(os.path.join(SAMPLES, "digits_eval.npz"))
    return [data["input"][i:i + 1] for i in range(len(data["labels"]))], data["labels"]


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_sample_model_quantized_by_onnxruntime(config, digits_eval, tmp_path):
    calib = np.load(os.path.join(SAMPLES, "digits_calib", "calib_000.npy"))
    path = _quantize_static(onnx.load(os.path.join(SAMPLES, "digits_cnn.onnx")),
                            str(tmp_path / "digits_qdq.onnx"),
                            [{"input": calib[i:i + 1]} for i in range(len(calib))], config)
    inputs, _ = digits_eval
    within, worst, expected, actual = _agreement(path, inputs)
    assert within >= 0.99 and worst <= 2.0001, (within, worst)
    assert np.mean(expected.argmax(1) == actual.argmax(1)) >= 0.99


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_benchmark_models_quantized_by_onnxruntime(name, config, tmp_path):
    model = getattr(model_zoo, name)()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    rng = np.random.default_rng(0)
    calib = [{"input": rng.normal(0, 1, (1, 3, 224, 224)).astype(np.float32)} for _ in range(8)]
    path = _quantize_static(model, str(tmp_path / f"{name}_qdq.onnx"), calib, config)
    inputs = [rng.normal(0, 1, (1, 3, 224, 224)).astype(np.float32) for _ in range(3)]
    within, worst, _, _ = _agreement(path, inputs)
    assert within >= 0.99 and worst <= 2.0001, (within, worst)


def test_quantization_aware_trained_sample(digits_eval):
    """The QAT sample (sample_models/make_qat_sample.py): LiteRT's accuracy within 0.5 points of
    the fake-quantized PyTorch model's."""
    with open(os.path.join(SAMPLES, "digits_qat.json")) as f:
        facts = json.load(f)
    inputs, labels = digits_eval
    path = os.path.join(SAMPLES, "digits_qat.onnx")
    within, worst, expected, actual = _agreement(path, inputs)
    assert within >= 0.99 and worst <= 2.0001, (within, worst)
    litert_accuracy = float(np.mean(actual.argmax(1) == labels))
    assert abs(litert_accuracy - facts["fake_quant_top1_accuracy"]) <= 0.005
    assert abs(float(np.mean(expected.argmax(1) == labels)) - facts["onnxruntime_top1_accuracy"]) < 1e-6
