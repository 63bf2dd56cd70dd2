"""`tflq convert --html`: the per-layer report of the file just converted, on its calibration samples."""
from __future__ import annotations

from tflq.config import ConvertConfig
from tflq.errors import InvalidConfigError
from tflq.report import ConversionReport


def check_report_request(config: ConvertConfig) -> None:
    """Before any work: the report needs samples to run on, and matplotlib."""
    from tflq.analysis.plots import require_matplotlib

    if config.calib is None:
        raise InvalidConfigError("--html evaluates the converted file on the calibration samples: "
                                 "give --calib (or use tflq eval with --data)")
    require_matplotlib()


def calibration_report(config: ConvertConfig, tflite: bytes, report: ConversionReport) -> bytes:
    """The HTML report of `tflite` (converted from config.model, as `report` says) on
    config.calib's samples, with what the conversion's repairs changed per layer."""
    from tflq.analysis.evaluate import evaluate
    from tflq.analysis.html_report import render_html
    from tflq.analysis.result import Repairs

    result = evaluate(config.model, tflite, config.calib, samples=config.calib_samples,
                      input_shapes=config.input_shapes, keep_io_layout=config.keep_io_layout,
                      mean=config.mean, std=config.std, scale=config.scale,
                      data_convert=config.calib_convert, layers=True,
                      max_tensor_bytes=config.max_tensor_bytes)
    result.repairs = Repairs(report.equalization, report.bias_correction, report.rounding) or None
    return render_html(result)
