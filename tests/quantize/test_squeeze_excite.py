"""A squeeze-excitation gate and a YOLO SiLU stay integer end to end (no float islands, no requantize)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests import model_zoo
from tests.conftest import run_litert, run_onnxruntime
from tflq.config import ConvertConfig
from tflq.ir.quant import sqnr_db
from tflq.pipeline import convert


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_squeeze_excite_block_is_fully_integer(tmp_path, dtype):
    path = str(tmp_path / "se.onnx")
    onnx.save(model_zoo.squeeze_excite(), path)
    rng = np.random.default_rng(0)
    calib = [{"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(16)]
    report = convert(ConvertConfig(model=path, mode="full", dtype=dtype, calib=calib))
    assert not report.float_ops
    assert report.op_counts.get("QUANTIZE") == 1 and report.op_counts.get("DEQUANTIZE") == 1
    assert {"LOGISTIC", "MUL", "MEAN", "HARD_SWISH"} <= set(report.op_counts)
    xs = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    expected = np.concatenate([run_onnxruntime(path, {"input": x})[0] for x in xs])
    actual = np.concatenate([run_litert(report.tflite, [x])[0] for x in xs])
    assert sqnr_db(expected, actual) >= 25
