"""Accuracy repairs before quantization (issue 13): which ones run for a conversion, and their
summaries. The rewrites themselves are passes (passes/equalize.py)."""
from __future__ import annotations

import numpy as np

from tflq.calibration.parallel import one_blas_thread
from tflq.config import ConvertConfig, Mode
from tflq.errors import InvalidConfigError
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph
from tflq.ir.qdq import QdqModel
from tflq.ir.quant import QuantParams
from tflq.passes.equalize import equalize
from tflq.report import BiasCorrection, Equalization, Rounding

BIAS_CORRECTION_SAMPLES = 64  # input means settle long before calibration's ranges do


def _calibration_samples(graph: Graph, config: ConvertConfig, limit: int):
    """The first `limit` calibration samples (--calib), never --eval-data: the repairs fit the
    model to the data it is calibrated on, and --eval-data is what --target-sqnr judges the
    result on (fitting to it made that judgement a measurement on the training set)."""
    from dataclasses import replace

    from tflq.calibration.run import evaluation_samples

    return evaluation_samples(graph, replace(config, eval_data=None), limit)


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
    """On for int16x8 calibrated with --calib, where the int8 weights' rounding is what is left
    of the error and its mean shift is a real part of it: held-out output SQNR ResNet-18 36.4 ->
    41.4 dB (worst sample 35.5 -> 40.5), MobileNetV2 18.2 -> 19.0, digits CNN 45.1 -> 46.0 (worst
    35.6 -> 35.2, +2.6 with learned rounding, rounding_by_default); it costs ~10 s on ResNet-18.
    Off for the 8-bit types: there it raised the output SQNR over held-out data on every model
    measured (openwakeword's speech embedding int8 19.0 -> 23.9 dB, uint8 20.0 -> 23.2; digits
    MobileNet uint8 with CLE 28.4 -> 31.6, int8 37.6 -> 38.2; digits CNN +1.0/+0.9; digits
    MobileNetV3 +0.2/+0.2), but the worst sample lost in int8 on two of them (MobileNetV3
    20.5 -> 19.7, CNN 29.3 -> 28.9), and tflq eval's per-layer simulation reads the float biases
    of the graph, not the file's. The analytic form (no samples: weights-only, --stats) likewise:
    pooled SQNR up almost everywhere, the worst sample down on some (weights-only int8: digits
    MobileNet with its BatchNorms 48.4 -> 50.6 dB, worst 35.1 -> 41.6, but digits CNN worst
    37.9 -> 36.0; uint8: digits MobileNet worst 36.3 -> 34.3; full from --stats: bench
    MobileNetV2 uint8 12.0 -> 12.3, int8 12.7 -> 13.0, ResNet-18 uint8 28.7 -> 29.0, but digits
    MobileNetV3 uint8 33.6 -> 33.3, int8 worst 20.5 -> 18.6)."""
    return config.mode == Mode.FULL and config.dtype == DType.INT16 and config.calib is not None


def weight_grids(graph: Graph, plan) -> dict[int, tuple[int, QuantParams]]:
    """id(op) -> (weight input, the grid the plan gives it) for each quantized layer with a
    float constant weight that has an input-channel axis (CONV_2D, DEPTHWISE_CONV_2D, FC)."""
    from tflq import ops as registry

    grids = {}
    for op in plan.quantized_ops:
        rule = next((w for w in registry.spec(op.kind).weights if w.input_axis is not None), None)
        if rule is None or rule.index >= len(op.inputs) or not graph.is_constant(op.inputs[rule.index]):
            continue
        params = plan.required_inputs.get(id(op), {}).get(rule.index) or \
            plan.params.get(op.inputs[rule.index])
        if params is not None and graph.tensors[op.inputs[rule.index]].dtype.is_float:
            grids[id(op)] = (rule.index, params)
    return grids


def bias_correction_asked(config: ConvertConfig) -> bool:
    """Whether this conversion corrects its biases (config.bias_correction, else the default)."""
    asked = config.bias_correction
    return asked is True or (asked is None and bias_correction_by_default(config))


def measured_input_means(graph: Graph, config: ConvertConfig):
    """The empirical form's InputMeans for this conversion (None: it corrects no biases, or
    from BatchNorm statistics): measured once, for every plan correct_biases_if_asked is given."""
    if not bias_correction_asked(config) or config.calib is None:
        return None
    from tflq.quantize.bias_correction import measure_input_means

    with one_blas_thread():
        return measure_input_means(graph, _calibration_samples(graph, config, BIAS_CORRECTION_SAMPLES))


def correct_biases_if_asked(graph: Graph, config: ConvertConfig, qdq: QdqModel | None,
                            plan=None, originals: dict[str, np.ndarray] | None = None,
                            given: dict[str, QuantParams] | None = None,
                            means=None) -> BiasCorrection | None:
    """Bias correction (config.bias_correction; None: bias_correction_by_default) for the
    weights' own grids: the plan's in full mode (after the mark phase), weights-only mode's
    (plan None; before the weights are stored), from the float weights (`originals` for the
    ones learned rounding replaced). The empirical form where there are calibration samples
    (--calib), else the analytic one from BatchNorm statistics (weights-only without --calib,
    full mode from --stats). A QDQ model's layers whose weight or bias it gives a grid (`given`,
    by tensor name) keep both: only where the graph leaves them float is there rounding to
    correct, and a bias there. `means`: measured_input_means of this graph, if measured already."""
    if not bias_correction_asked(config):
        return None
    from tflq import ops as registry
    from tflq.quantize.bias_correction import correct_biases, correct_biases_analytic

    if plan is None:
        from tflq.quantize.weights import stored_grids

        fixed, ops = stored_grids(graph, config, qdq), []
    else:
        grids = weight_grids(graph, plan)
        ops = [op for op in plan.quantized_ops if id(op) in grids]
        fixed = {op.inputs[grids[id(op)][0]]: grids[id(op)][1] for op in ops}
    kept = []  # the layers a QDQ model gives their weight's or bias's grid
    for op in ops if given else []:
        spec = registry.spec(op.kind)
        slots = [rule.index for rule in spec.weights] + ([spec.bias.index] if spec.bias else [])
        names = {op.inputs[i] for i in slots if i < len(op.inputs) and op.inputs[i]}
        if names & set(given):
            kept.append(f"{op.origin}: the QDQ model gives its weights or bias their grid")
            for name in names:
                fixed.pop(name, None)
    biases = {id(op): op.inputs[registry.spec(op.kind).bias.index] for op in ops
              if registry.spec(op.kind).bias is not None and
              registry.spec(op.kind).bias.index < len(op.inputs)}
    dtype = plan.dtype if plan is not None else config.dtype
    if config.calib is None:  # (saved statistics hold no channel means)
        result = correct_biases_analytic(graph, dtype, fixed, originals)
    else:
        with one_blas_thread():  # as calibration: BLAS's own threads cost 7x on a busy machine
            result = correct_biases(graph, means or _calibration_samples(graph, config, BIAS_CORRECTION_SAMPLES),
                                    dtype, fixed, originals)
    result.skipped[:0] = kept
    for op in ops:  # the corrected biases keep their planned grids
        if id(op) in biases:
            new = op.inputs[registry.spec(op.kind).bias.index]
            if new != biases[id(op)] and biases[id(op)] in plan.params:
                plan.params[new] = plan.params[biases[id(op)]]
    return result


ROUNDING_SAMPLES = 16  # calibration samples whose layer inputs the rounding is fitted to
# What learned rounding by default may cost (rounding.fitting_work; about 2 s of one idle core,
# measured 6 s on the busy 2-core machine): the digits CNN's six layers take 1.6e9, one 3x3x512
# conv of ResNet-18 7e12 (it gained 1 dB of its own output in 30 s, nothing at the model's).
DEFAULT_ROUNDING_WORK = 1e10


def rounding_by_default(config: ConvertConfig, qdq: QdqModel | None = None) -> str:
    """adaround for int16x8 calibrated with --calib: with int16 activations the int8 weights'
    rounding is what is left of the error (output SQNR of the float models with their weights
    rounded to int8 in onnxruntime, against 16x8 without repairs: digits CNN 45.1 / 45.1 dB,
    ResNet-18 36.4 / 36.4, MobileNetV2 18.2 / 18.2), and learning it raised the held-out output SQNR 46.0 -> 48.2 dB (worst sample 35.2
    -> 37.8) with bias correction; within DEFAULT_ROUNDING_WORK, so the big layers of the
    benchmark models (where it gained < 0.1 dB in 30 s) are passed over. For int8 and uint8
    the activations' rounding dominates (digits CNN int8 +0.4 dB): nearest."""
    return "adaround" if config.mode == Mode.FULL and config.dtype == DType.INT16 and \
        config.calib is not None and qdq is None else "nearest"


def round_if_asked(graph: Graph, plan, config: ConvertConfig, originals: dict[str, np.ndarray],
                   qdq: QdqModel | None = None) -> Rounding | None:
    """--rounding adaround (None: rounding_by_default): learned rounding of the worst layers'
    weights, on the grids `plan` gives them (the plan's params then hold for the new, on-grid
    constants too). `originals` receives each replaced weight's float values under its new
    name (for bias correction). A QDQ model's weights keep their given rounding by default."""
    rounding = config.rounding or rounding_by_default(config, qdq)
    if rounding == "nearest":
        return None
    if rounding != "adaround":
        raise InvalidConfigError(f"--rounding {rounding}: use nearest or adaround")
    if config.calib is None:
        raise InvalidConfigError("--rounding adaround fits each layer to its calibration inputs: "
                                 "give --calib")
    from tflq.quantize.rounding import round_worst_layers

    grids = weight_grids(graph, plan)
    before = {id(op): (op.inputs[grids[id(op)][0]], graph.tensors[op.inputs[grids[id(op)][0]]].data)
              for op in plan.quantized_ops if id(op) in grids}
    samples = _calibration_samples(graph, config, ROUNDING_SAMPLES)
    with one_blas_thread():
        result = round_worst_layers(graph, grids, samples, config.rounding_layers,
                                    config.rounding_seconds, max_work=None if config.rounding
                                    else DEFAULT_ROUNDING_WORK)
    for op in plan.quantized_ops:
        if id(op) in grids:
            index, params = grids[id(op)]
            plan.params.setdefault(op.inputs[index], params)
            if op.inputs[index] != before[id(op)][0]:
                originals[op.inputs[index]] = before[id(op)][1]
    return result
