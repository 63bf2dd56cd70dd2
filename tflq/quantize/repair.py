"""Accuracy repairs before quantization (issue 13): which ones run for a conversion, and their
summaries. The rewrites themselves are passes (passes/equalize.py)."""
from __future__ import annotations

from tflq.config import ConvertConfig, Mode
from tflq.errors import InvalidConfigError
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph
from tflq.ir.qdq import QdqModel
from tflq.passes.equalize import equalize
from tflq.report import BiasCorrection, Equalization

BIAS_CORRECTION_SAMPLES = 64  # input means settle long before calibration's ranges do


def equalize_by_default(config: ConvertConfig) -> bool:
    """Cross-layer equalization pays where weights are quantized per tensor (uint8): a trained
    MobileNet's depthwise channels spread by 10^3-10^5 and per-tensor rounding zeroes the small
    ones (digits MobileNet: uint8 top-1 10.3% -> 98.3% = float). With int8's per-channel weights
    it only widens activation ranges (the same network: output SQNR 37.6 -> 35.7 dB).

    Statistics files (--stats, --save-stats, tflq calibrate) are of the graph as given unless
    --equalize is said on both sides: the default equalizes only a conversion that calibrates
    itself and shares no statistics."""
    return config.mode == Mode.FULL and config.dtype == DType.UINT8 and \
        config.calib is not None and not config.stats and not config.save_stats


def equalize_if_asked(graph: Graph, config: ConvertConfig, qdq: QdqModel | None) -> Equalization | None:
    """Run cross-layer equalization on the fused float graph when config.equalize asks for it
    (None: equalize_by_default). A QDQ model's weights come with their own grids: never."""
    asked = config.equalize
    if config.mode not in (Mode.FULL, Mode.WEIGHTS_ONLY) or asked is False:
        return None
    if qdq is not None:
        if asked:
            raise InvalidConfigError("--equalize rescales the weights; this model is quantized "
                                     "(QDQ) already and its weights carry their own grids")
        return None
    if asked is None and not equalize_by_default(config):
        return None
    return equalize(graph)


def bias_correction_by_default(config: ConvertConfig) -> bool:
    """Measured below; see correct_biases_if_asked."""
    return False


def correct_biases_if_asked(graph: Graph, config: ConvertConfig, dtype: DType,
                            qdq: QdqModel | None) -> BiasCorrection | None:
    """Empirical bias correction on the calibration data (config.bias_correction; None:
    bias_correction_by_default). Needs --calib: saved statistics hold no channel means. A QDQ
    model's weights lie on their grids already, so rounding shifts nothing: never."""
    asked = config.bias_correction
    if asked is False or (asked is None and not bias_correction_by_default(config)):
        return None
    if qdq is not None:
        if asked:
            raise InvalidConfigError("--bias-correction corrects the shift of rounding float "
                                     "weights; this model's weights are quantized (QDQ) already")
        return None
    if config.calib is None:
        if asked:
            raise InvalidConfigError("--bias-correction measures the layers' input means on "
                                     "calibration data: give --calib")
        return None
    from tflq.calibration.run import evaluation_samples
    from tflq.quantize.bias_correction import correct_biases

    samples = evaluation_samples(graph, config, BIAS_CORRECTION_SAMPLES)
    return correct_biases(graph, samples, dtype)
