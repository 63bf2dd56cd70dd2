"""QDQ import on a trained MobileNetV3-style network (HardSwish, squeeze-excitation gates, a
residual; sample_models/make_repair_models.py): quantized by onnxruntime's quantize_static, the
tflq file agrees with onnxruntime's own integer run of the QDQ model.

What is left between them is LiteRT's integer kernels rounding differently from onnxruntime's
dequantize-compute-quantize: compared tensor by tensor (64 digits), the first differences are
1-step ones in HARD_SWISH (0.02% of the stem's values; LiteRT's fixed-point formula) and in the
squeeze-excitation MEAN (1.6%), and they grow with depth (23% of the last conv's values, at most
4 steps). No parameter tflq chose differs from the graph's."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tests.conftest import litert_per_sample
from tflq.config import ConvertConfig
from tflq.ir.quant import sqnr_db
from tflq.pipeline import convert

SAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "sample_models")
MODEL = os.path.join(SAMPLES, "digits_mnv3.onnx")

# measured: tflq vs onnxruntime's integer run over the 360 held-out digits (calibrated on 100),
# output SQNR over all samples / worst sample, top-1 agreement: int8 per-channel 34.4 / 21.1 dB,
# 99.7%; uint8 per-tensor 34.7 / 23.3 dB, 99.7% (with all 200 calibration digits: 37.0 / 25.4
# and 37.5 / 26.1, 100%)
FLOORS = {"int8_per_channel": (31.0, 18.0), "uint8_per_tensor": (31.0, 18.0)}


def _calibration():
    from onnxruntime.quantization import CalibrationDataReader

    data = np.concatenate([np.load(os.path.join(SAMPLES, "digits_calib", f))
                           for f in sorted(os.listdir(os.path.join(SAMPLES, "digits_calib")))])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter([{"input": data[i:i + 1]} for i in range(0, len(data), 2)])

        def get_next(self):
            return next(self.samples, None)

    return Reader()


@pytest.mark.parametrize("scheme", list(FLOORS))
def test_qdq_mobilenetv3_agrees_with_onnxruntime_integer_run(scheme, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    int8 = scheme.startswith("int8")
    kind = QuantType.QInt8 if int8 else QuantType.QUInt8
    qdq = str(tmp_path / "q.onnx")
    quantize_static(MODEL, qdq, _calibration(), quant_format=QuantFormat.QDQ, activation_type=kind,
                    weight_type=kind, per_channel=int8)
    images = np.load(os.path.join(SAMPLES, "digits_eval.npz"))["input"]
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdqisint8allowed", "1")
    session = ort.InferenceSession(qdq, options, providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": images})[0]
    report = convert(ConvertConfig(model=qdq))
    actual = litert_per_sample(report.tflite, images)
    overall, worst = FLOORS[scheme]
    assert sqnr_db(expected, actual) >= overall
    assert min(sqnr_db(e, a) for e, a in zip(expected, actual)) >= worst
    assert np.mean(expected.argmax(1) == actual.argmax(1)) >= 0.99
