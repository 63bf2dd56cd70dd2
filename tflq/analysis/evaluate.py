"""evaluate(): run the float ONNX model and the .tflite on the same samples and measure the error
per output (and, with layers=True, per layer). Raises TflqError; never prints or writes."""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Mapping, Sequence

import numpy as np

from tflq.analysis.labels import load_labels
from tflq.analysis.metrics import OutputAccumulator
from tflq.analysis.result import Check, EvalResult, IOInfo, OutputMetrics, Repairs
from tflq.analysis.runtimes import EvaluationError, FloatModel, TfliteModel, litert_version
from tflq.calibration.sources import graph_input_specs, load_samples
from tflq.config import ConvertConfig
from tflq.errors import CalibrationError
from tflq.passes.equalize import equalize, is_equalized

# Samples the per-layer analysis runs (each is one float run plus one LiteRT run with every
# tensor kept; the simulated fallback check is one run per sample and layer tried).
LAYER_SAMPLES = 8
EQUALIZED_AGAIN = ("tflq eval: the file says its layers were cross-layer equalized; the float model "
                   "was equalized alike")


def evaluate(onnx_path: str, tflite: str | bytes, data: Any, labels: Any = None, *,
             samples: int | None = None, input_shapes: Mapping[str, tuple[int, ...]] | None = None,
             keep_io_layout: bool = False, mean=None, std=None, scale=None,
             data_convert: bool = False, float_runtime: str = "auto",
             min_sqnr: float | None = None, min_agreement: float | None = None,
             layers: bool = False, layer_samples: int = LAYER_SAMPLES,
             sensitivity_samples: int | None = None,
             max_tensor_bytes: int = 2 * 1024 ** 3, report_path: str | None = None) -> EvalResult:
    """Compare the .tflite (a path, or the file's bytes) with the float ONNX model on `data`.

    data: what --calib takes (a folder or file of .npy/.npz/images, or an iterable of
    {input name: array} in ONNX layout); `samples` caps the count (default 500). labels: a
    file (see analysis/labels.py) or an array with one integer class per row. min_sqnr (dB)
    gates every output's worst-sample SQNR; min_agreement (0..1) every classifier output's
    top-1 agreement: `result.failures` lists the gates not met. layers: also analyse every
    quantized tensor and rank the layers (on the first `layer_samples` samples; the sensitivity
    on the first `sensitivity_samples` of them, default all: on MobileNetV2, 2 samples put three
    layers within 0.3 dB in the wrong order). report_path: where the caller will write the
    report, checked before any work against the model and its external data (nothing is written).
    """
    from tflq.pipeline import prepare_graph

    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise EvaluationError(f"--min-agreement {min_agreement:g}: give a fraction between 0 and 1")
    graph, _ = prepare_graph(ConvertConfig(model=onnx_path, input_shapes=dict(input_shapes or {}),
                                           keep_io_layout=keep_io_layout,
                                           max_tensor_bytes=max_tensor_bytes, html=report_path))
    if isinstance(tflite, (bytes, bytearray)):
        content, tflite_path = bytes(tflite), "(the converted file)"
    else:
        tflite_path = os.fspath(tflite)
        from tflq.fileio import not_a_regular_file

        problem = not_a_regular_file(tflite_path)
        if problem:
            raise EvaluationError(f"{tflite_path}: {problem}")
        try:
            with open(tflite_path, "rb") as f:
                content = f.read()
        except OSError as exc:
            raise EvaluationError(f"{tflite_path}: cannot be read ({exc.strerror or exc})") from None
    repairs = None
    if is_equalized(content):  # the file's layers are rescaled: compare with them rescaled alike
        repairs = Repairs(equalize(graph), source=EQUALIZED_AGAIN)
    model = TfliteModel(content, graph, tflite_path)
    float_model = FloatModel(onnx_path, graph, float_runtime)
    specs = [replace(s, convert=data_convert) for s in graph_input_specs(graph)]
    try:
        source = load_samples(data, specs, samples, mean=mean, std=std, scale=scale)
    except CalibrationError as exc:
        raise EvaluationError(f"evaluation data: {exc.message}") from None
    label_values = None
    if labels is not None:
        label_values = load_labels(labels) if isinstance(labels, (str, os.PathLike)) else \
            _label_array(labels)
    result = EvalResult(onnx_path, tflite_path, float_model.engine, litert_version(), 0,
                        repairs=repairs)
    result.inputs = [IOInfo(b.name, list(b.onnx_shape), list(b.file_shape), b.file_dtype.name,
                            *_quant(b)) for b in model.inputs]
    accumulators = [OutputAccumulator(b.onnx_shape) for b in model.outputs]
    classifiers = [i for i, a in enumerate(accumulators) if a.classifier]
    if label_values is not None and not classifiers:
        raise EvaluationError("--labels needs a classifier output ([batch, classes]); the model's "
                              "outputs are " + ", ".join(f"'{b.name}' {list(b.onnx_shape)}"
                                                         for b in model.outputs))
    if min_agreement is not None and not classifiers:
        raise EvaluationError("--min-agreement needs a classifier output ([batch, classes]); the "
                              "model has none")
    rows = model.outputs[classifiers[0]].onnx_shape[0] if classifiers else 1
    kept: list[dict[str, np.ndarray]] = []
    try:
        for index, sample in enumerate(source):
            reference = float_model.run(sample)
            approx = model.run(sample)
            batch_labels = None
            if label_values is not None:
                batch_labels = label_values[index * rows:(index + 1) * rows]
                if len(batch_labels) < rows:
                    raise EvaluationError(f"{labels}: {len(label_values)} labels, fewer than the "
                                          f"evaluation rows (sample {index} needs rows "
                                          f"{index * rows}..{(index + 1) * rows - 1})")
            for i, (acc, r, a) in enumerate(zip(accumulators, reference, approx)):
                if r.shape != a.shape:
                    raise EvaluationError(f"output '{model.outputs[i].name}': the float model gives "
                                          f"shape {list(r.shape)}, the .tflite {list(a.shape)}")
                if batch_labels is not None and i in classifiers:
                    classes = r.shape[1]
                    if batch_labels.max(initial=0) >= classes:
                        raise EvaluationError(f"{labels}: label {int(batch_labels.max())} is not a "
                                              f"class of output '{model.outputs[i].name}' "
                                              f"({classes} classes)")
                acc.add(r, a, batch_labels if i in classifiers else None)
            if layers and len(kept) < layer_samples:
                kept.append(sample)
            result.samples += 1
    except CalibrationError as exc:
        raise EvaluationError(f"evaluation data: {exc.message}") from None
    if label_values is not None:
        used = result.samples * rows
        limited = samples is not None and result.samples == samples
        if len(label_values) != used and not (limited and len(label_values) > used):
            raise EvaluationError(f"{labels}: {len(label_values)} labels for {used} evaluation "
                                  f"row(s): one label per row")
    for b, acc in zip(model.outputs, accumulators):
        result.outputs.append(OutputMetrics(b.name, list(b.onnx_shape), list(b.file_shape),
                                            b.file_dtype.name, *_quant(b), **acc.figures()))
    result.checks = _checks(result.outputs, min_sqnr, min_agreement)
    if layers:
        from tflq.analysis.layers import analyze_layers

        result.layers = analyze_layers(graph, content, tflite_path, kept,
                                       sensitivity_samples or len(kept))
    return result


def _quant(binding) -> tuple[float | None, int | None]:
    if binding.quant is None:
        return None, None
    return float(binding.quant.scale), int(binding.quant.zero_point)


def _label_array(values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise EvaluationError(f"labels must be a 1-D array of integer class ids, got "
                              f"{array.dtype} of shape {list(array.shape)}")
    return array.astype(np.int64)


def _checks(outputs: Sequence[OutputMetrics], min_sqnr: float | None,
            min_agreement: float | None) -> list[Check]:
    checks = []
    if min_sqnr is not None:
        for o in outputs:
            checks.append(Check("--min-sqnr", o.name, f"worst-sample SQNR (dB, sample {o.worst_sample})",
                                o.sqnr_worst_db, min_sqnr, o.sqnr_worst_db >= min_sqnr))
    if min_agreement is not None:
        for o in (o for o in outputs if o.top1_agreement is not None):
            checks.append(Check("--min-agreement", o.name, "top-1 agreement", o.top1_agreement,
                                min_agreement, o.top1_agreement >= min_agreement))
    return checks
