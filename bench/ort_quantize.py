"""onnxruntime's quantize_static on the benchmark's calibration data: the full-integer baseline.

    python bench/ort_quantize.py MODEL.onnx CALIB_DIR SAMPLES OUT.onnx

Static int8 QDQ, per-channel weights, MinMax calibration (onnxruntime's defaults otherwise), over
the first SAMPLES .npy files of CALIB_DIR in name order (the files tflq calibrates on). The
benchmark times this whole process, as it times `tflq convert`.
"""
from __future__ import annotations

import sys
from pathlib import Path

# Not this script's folder: its float16.py would shadow the module of that name that
# onnxruntime.quantization imports (onnxruntime/transformers/float16.py).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)


class NpyReader(CalibrationDataReader):
    def __init__(self, model: str, folder: str, count: int) -> None:
        import onnx

        graph = onnx.load(model, load_external_data=False).graph
        initializers = {i.name for i in graph.initializer}
        self.name = next(v.name for v in graph.input if v.name not in initializers)
        self.files = iter(sorted(Path(folder).glob("*.npy"))[:count])

    def get_next(self):
        path = next(self.files, None)
        return None if path is None else {self.name: np.load(path)}


def main() -> None:
    model, folder, count, output = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    quantize_static(model, output, NpyReader(model, folder, count), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)


if __name__ == "__main__":
    main()
