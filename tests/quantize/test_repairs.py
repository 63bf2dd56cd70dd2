"""Accuracy repairs without retraining (issue 13) on the trained digits MobileNet
(sample_models/make_repair_models.py): cross-layer equalization and bias correction, each and
combined, in uint8 per-tensor and int8 per-channel, judged against onnxruntime's float model on
the held-out digits; CLE's float invariance; bias correction's removal of the mean shift."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import litert_per_sample, run_onnxruntime, save_model
from tflq.cli import main
from tflq.backend.tflite_reader import read_tflite
from tflq.config import ConvertConfig
from tflq.ir.quant import sqnr_db
from tflq.passes.equalize import channel_ranges, find_pairs
from tflq.pipeline import convert, prepare_graph
from tflq.quantize.bias_correction import correct_biases, input_means
from tflq.quantize.plan import weight_params
from tflq.runtime.interpreter import run_graph

SAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "sample_models")
MOBILENET = os.path.join(SAMPLES, "digits_mobilenet.onnx")
CALIB = os.path.join(SAMPLES, "digits_calib")


@pytest.fixture(scope="module")
def held_out():
    data = np.load(os.path.join(SAMPLES, "digits_eval.npz"))
    images, labels = data["input"], data["labels"]
    reference = run_onnxruntime(MOBILENET, {"input": images})[0]
    return images, labels, reference


def _logits(tflite: bytes, images: np.ndarray) -> np.ndarray:
    return litert_per_sample(tflite, images)


FLAGS = {"none": dict(equalize=False, bias_correction=False),
         "CLE": dict(equalize=True, bias_correction=False),
         "BC": dict(equalize=False, bias_correction=True),
         "AdaRound": dict(equalize=False, bias_correction=False, rounding="adaround"),
         "CLE+BC": dict(equalize=True, bias_correction=True),
         "all": dict(equalize=True, bias_correction=True, rounding="adaround")}


def _measure(model: str, dtype: str, step: str, images: np.ndarray, labels: np.ndarray,
             reference: np.ndarray) -> tuple[float, float]:
    report = convert(ConvertConfig(model=os.path.join(SAMPLES, f"{model}.onnx"), mode="full",
                                   dtype=dtype, calib=CALIB, **FLAGS[step]))
    logits = _logits(report.tflite, images)
    return float(np.mean(logits.argmax(1) == labels)), sqnr_db(reference, logits)


# Measured (top-1 on the 360 held-out digits; output SQNR over all of them, dB):
# digits_mobilenet, float 98.33%:
#   uint8: none 10.28% -0.8 | CLE 98.33% 28.4 | BC 10.28% 0.0 | AdaRound 10.00% -0.1 |
#          CLE+BC 98.33% 31.6 | all 98.06% 32.7
#   int8:  none 98.33% 37.6 | CLE 98.33% 35.7 | BC 98.33% 38.2 | AdaRound 98.33% 38.0 |
#          CLE+BC 98.33% 37.9 | all 98.33% 37.9
# digits_mnv3 (HardSwish, squeeze-excitation), float 98.61%:
#   uint8: none 98.61% 33.6 | CLE 98.61% 33.3 | BC 98.33% 33.9 | AdaRound 98.89% 33.8 |
#          CLE+BC 98.61% 33.8 | all 98.61% 33.7
#   int8:  none 98.61% 33.3 | CLE 98.61% 33.1 | BC 98.61% 33.6 | AdaRound 98.89% 33.5 |
#          CLE+BC 98.61% 33.8 | all 98.61% 33.6
# (model, dtype, step): (top-1 points it may lose, least SQNR dB); None: the unrepaired
# per-tensor MobileNet, which documents what the repairs fix (no step without CLE fixes it)
STEPS = {("digits_mobilenet", "uint8", "none"): (None, None),
         ("digits_mobilenet", "uint8", "CLE"): (0.5, 26.0),
         ("digits_mobilenet", "uint8", "BC"): (None, None),
         ("digits_mobilenet", "uint8", "AdaRound"): (None, None),
         ("digits_mobilenet", "uint8", "CLE+BC"): (0.5, 29.0),
         ("digits_mobilenet", "uint8", "all"): (0.5, 30.0),
         ("digits_mobilenet", "int8", "none"): (0.3, 35.0),
         ("digits_mobilenet", "int8", "CLE"): (0.3, 33.0),
         ("digits_mobilenet", "int8", "BC"): (0.3, 35.5),
         ("digits_mobilenet", "int8", "AdaRound"): (0.3, 35.5),
         ("digits_mobilenet", "int8", "CLE+BC"): (0.3, 35.5),
         ("digits_mobilenet", "int8", "all"): (0.3, 35.5),
         ("digits_mnv3", "uint8", "none"): (0.5, 31.0),
         ("digits_mnv3", "uint8", "all"): (0.5, 31.0),
         ("digits_mnv3", "int8", "none"): (0.3, 31.0),
         ("digits_mnv3", "int8", "all"): (0.3, 31.0)}


@pytest.fixture(scope="module")
def references():
    """model -> onnxruntime's float logits on the held-out digits."""
    images = np.load(os.path.join(SAMPLES, "digits_eval.npz"))["input"]
    return {model: run_onnxruntime(os.path.join(SAMPLES, f"{model}.onnx"), {"input": images})[0]
            for model in sorted({key[0] for key in STEPS})}


@pytest.mark.parametrize("model,dtype,step", list(STEPS), ids=["-".join(key) for key in STEPS])
def test_each_step_top1_and_sqnr(model, dtype, step, held_out, references):
    """The done-when table: uint8 per-tensor loses <= 0.5 top-1 point with the repairs on (the
    MobileNet loses 88 without: its depthwise channels spread by 10^3-10^5), int8 per-channel
    <= 0.3; each step and the combinations, on both trained models."""
    images, labels, _ = held_out
    reference = references[model]
    float_top1 = float(np.mean(reference.argmax(1) == labels))
    top1, sqnr = _measure(model, dtype, step, images, labels, reference)
    max_loss, min_sqnr = STEPS[(model, dtype, step)]
    if max_loss is None:  # documents the failure the repairs fix
        assert (float_top1 - top1) * 100 > 50, (top1, sqnr)
        return
    assert (float_top1 - top1) * 100 <= max_loss, f"top-1 {top1:.4f} vs float {float_top1:.4f}"
    assert sqnr >= min_sqnr, f"SQNR {sqnr:.1f} dB"


def test_repairs_are_on_by_default_where_they_help(tmp_path):
    uint8 = convert(ConvertConfig(model=MOBILENET, mode="full", dtype="uint8", calib=CALIB))
    int8 = convert(ConvertConfig(model=MOBILENET, mode="full", dtype="int8", calib=CALIB))
    shared = convert(ConvertConfig(model=MOBILENET, mode="full", dtype="uint8", calib=CALIB,
                                   save_stats=str(tmp_path / "s.npz")))
    # (statistics files are of the graph as given, unless --equalize is said on both sides)
    assert uint8.equalization is not None and int8.equalization is None
    assert shared.equalization is None
    assert uint8.bias_correction is None and int8.bias_correction is None
    text = uint8.to_text()
    assert "equalize: 7 layer pairs rescaled" in text
    # each equalized weight is one constant NAME/equalized, however many sweeps it took (one name
    # a sweep wrote "/equalized" twenty times into each name: 2.4 KB of this 24 KB file)
    names = [t.name for t in read_tflite(uint8.tflite).tensors]
    assert sum("/equalized" in n for n in names) >= 7
    assert not [n for n in names if n.count("/equalized") > 1]
    assert "left as is: /features/features.9/Conv -> /features/features.12/Conv: its fused RELU6" in text


def test_equalization_leaves_the_float_model_unchanged(held_out):
    images, _, reference = held_out
    graph, report = prepare_graph(ConvertConfig(model=MOBILENET, mode="full", dtype="uint8",
                                                input_shapes={"input": images.shape}, equalize=True))
    assert report.equalization is not None and len(report.equalization.pairs) == 7
    out = run_graph(graph, {"input": images.transpose(0, 2, 3, 1)})[graph.outputs[0]]
    assert sqnr_db(reference, out) >= 80.0
    for pair in find_pairs(graph)[0]:  # each channel's range now the same in both layers
        np.testing.assert_allclose(channel_ranges(graph, pair.first, output=True),
                                   channel_ranges(graph, pair.second, output=False), rtol=1e-2)
    spreads = {(p.first, p.second): p for p in report.equalization.pairs}
    first = spreads[("/features/features.0/Conv", "/features/features.3/Conv")]
    assert first.second_before > 1000 and first.second_after < 20  # the depthwise conv's channels


def _weight_rounded(graph, dtype):
    """A copy of the graph whose weights are rounded to the grids the file will have (the bias
    float): the quantization error bias correction is about, and nothing else."""
    from tflq import ops as registry

    g = graph.copy()
    for op in g.ops:
        for rule in registry.spec(op.kind).weights:
            if rule.input_axis is not None and g.is_constant(op.inputs[rule.index]):
                w = g.tensors[op.inputs[rule.index]].data
                params = weight_params(rule, w, dtype)
                op.inputs[rule.index] = g.add_constant("rounded", params.dequantize(params.quantize(w))
                                                       .astype(np.float32))
    return g


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_bias_correction_removes_the_mean_shift(dtype, held_out):
    """The mean of each layer's output over the held-out digits, with the weights rounded, is
    the float model's again after the correction (the first two layers, their activations
    taken off so that the output is the affine map the bias belongs to)."""
    from tflq.ir.dtypes import DType

    images = held_out[0].transpose(0, 2, 3, 1)
    graph, _ = prepare_graph(ConvertConfig(model=MOBILENET, mode="full", dtype="uint8",
                                           input_shapes={"input": (len(images), 1, 8, 8)},
                                           equalize=True))
    layers = [op for op in graph.ops if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")][:2]
    for op in layers:  # the mean of the pre-activation is what the bias moves
        op.replace_attrs(fused_activation="NONE")
    outputs = {op.outputs[0] for op in layers}  # (a set: input_means' argument)
    exact, _ = input_means(graph, outputs, [{"input": images}])
    rounded, _ = input_means(_weight_rounded(graph, DType.parse(dtype)), outputs, [{"input": images}])
    corrected_graph = graph.copy()
    result = correct_biases(corrected_graph, [{"input": images}], DType.parse(dtype))
    assert len(result.layers) >= 9 and result.samples == 1
    corrected, _ = input_means(_weight_rounded(corrected_graph, DType.parse(dtype)), outputs,
                               [{"input": images}])
    for op, bound in zip(layers, (0.2, 0.5)):
        name = op.outputs[0]
        before = np.abs(rounded[name] - exact[name]).mean()
        after = np.abs(corrected[name] - exact[name]).mean()
        # (not to zero: on 8x8 images the 3x3 taps at the zero-padded border see no mean, the
        # correction assumes every tap does. Measured uint8 0.0061 -> 0.0008, 0.035 -> 0.006;
        # int8 0.0022 -> 0.0002, 0.020 -> 0.007)
        assert after < bound * before, (name, before, after)


def _pair_model(w1_scale: float, w2_scale: float, bias: float) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    w1 = (rng.normal(size=(4, 3, 1, 1)) * np.array([1, 1, 1, w1_scale]).reshape(4, 1, 1, 1))
    w2 = (rng.normal(size=(2, 4, 1, 1)) * np.array([1, 1, 1, w2_scale]).reshape(1, 4, 1, 1))
    inits = [numpy_helper.from_array(w1.astype(np.float32), "w1"),
             numpy_helper.from_array(np.full(4, bias, np.float32), "b1"),
             numpy_helper.from_array(w2.astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]), helper.make_node("Relu", ["c1"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="second")]
    graph = helper.make_graph(nodes, "pair",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_pair_that_would_overflow_is_left_and_named(tmp_path):
    """A tiny channel feeding a large one: s = sqrt(1e-36 / 1e8) would lift the bias 1e20 to
    1e42, beyond float32 (the model itself stays within it). The pair stays as it is and the
    summary names it."""
    path = save_model(_pair_model(1e-36, 1e8, 1e20), tmp_path / "m.onnx")
    graph, report = prepare_graph(ConvertConfig(model=path, mode="full", dtype="uint8", equalize=True))
    assert report.equalization.pairs == []
    [skipped] = report.equalization.skipped
    assert skipped.second == "second" and "overflow float32" in skipped.reason
    x = np.random.default_rng(0).normal(size=(1, 3, 4, 4)).astype(np.float32)
    out = run_graph(graph, {"x": x.transpose(0, 2, 3, 1)})[graph.outputs[0]]
    np.testing.assert_allclose(out, run_onnxruntime(path, {"x": x})[0].transpose(0, 2, 3, 1), rtol=1e-5)


def test_equalize_on_a_qdq_model_is_a_one_line_error(tmp_path):
    qdq = os.path.join(SAMPLES, "digits_qat.onnx")
    result = CliRunner().invoke(main, ["convert", qdq, "-o", str(tmp_path / "q.tflite"), "--equalize"])
    assert result.exit_code == 1, result.output
    assert "--equalize" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "q.tflite").exists()


def test_bias_correction_without_data_names_the_layers_it_skips(tmp_path):
    stats = tmp_path / "s.stats"
    ok = CliRunner().invoke(main, ["convert", MOBILENET, "-o", str(tmp_path / "a.tflite"),
                                   "--mode", "full", "--calib", CALIB, "--save-stats", str(stats)])
    assert ok.exit_code == 0, ok.output
    result = CliRunner().invoke(main, ["convert", MOBILENET, "-o", str(tmp_path / "b.tflite"),
                                       "--mode", "full", "--stats", str(stats), "--bias-correction"])
    assert result.exit_code == 0, result.output
    # without samples the analytic form runs; this model's BatchNorms were folded at export
    assert "bias correction: 0 biases corrected from BatchNorm statistics" in result.output
    assert result.output.count("left as is:") == 10
    assert "left as is: /features/features.0/Conv: its input is a model input" in result.output
    assert "which no BatchNorm follows" in result.output
    assert (tmp_path / "b.tflite").read_bytes() == (tmp_path / "a.tflite").read_bytes()


def test_eval_compares_an_equalized_file_with_the_equalized_float_model():
    """The file says it was equalized; tflq eval then rescales its float reference alike, so the
    per-layer figures (simulated from the file's grids) match the real file's output."""
    import tflq
    from tflq.passes.equalize import is_equalized

    data = np.load(os.path.join(SAMPLES, "digits_eval.npz"))["input"][:24]
    report = convert(ConvertConfig(model=MOBILENET, mode="full", dtype="uint8", calib=CALIB))
    assert is_equalized(report.tflite)
    result = tflq.evaluate(MOBILENET, report.tflite, [{"input": x[None]} for x in data], layers=True)
    # simulated 27.3 dB, file 29.4 (before zeroing dead channels' weights, quantize/dead_channels.py:
    # 26.8 and 27.8): the simulation trails the file by 2 dB there, unexplained so far
    assert result.layers.simulated_sqnr_db == pytest.approx(result.output("logits").sqnr_pooled_db,
                                                            abs=2.5)


def test_adaround_rounds_the_worst_layers_within_its_budget(held_out):
    """Learned rounding on the uint8 equalized MobileNet: each rounded layer's output SQNR on
    the calibration inputs rises over nearest rounding, the whole model's on held-out digits too,
    the same seed gives the same file, and a zero budget rounds nothing."""
    images, labels, reference = held_out
    config = dict(model=MOBILENET, mode="full", dtype="uint8", calib=CALIB, equalize=True)
    nearest = convert(ConvertConfig(**config))
    learned = convert(ConvertConfig(**config, rounding="adaround", rounding_layers=4))
    rounding = learned.rounding
    assert rounding is not None and len(rounding.layers) == 4 and rounding.candidates == 10
    assert all(layer.learned_db > layer.nearest_db for layer in rounding.layers)
    assert "rounding adaround: 4 of 10 layers rounded" in learned.to_text()
    # measured 30.3 -> 30.9 dB over the held-out digits (28.4 -> 29.8 before dead channels'
    # weights were zeroed, quantize/dead_channels.py, which lifted nearest rounding most)
    assert sqnr_db(reference, _logits(learned.tflite, images)) > \
        sqnr_db(reference, _logits(nearest.tflite, images)) + 0.4
    again = convert(ConvertConfig(**config, rounding="adaround", rounding_layers=4))
    assert again.tflite == learned.tflite
    none = convert(ConvertConfig(**config, rounding="adaround", rounding_seconds=0))
    assert none.rounding.layers == [] and none.tflite == nearest.tflite
    assert none.rounding.fitted == 0 and "no time was left to fit a layer" in none.to_text()
    assert rounding.fitted == 4 and 0 < rounding.measure_seconds < rounding.seconds
    # bias correction after learned rounding takes the shift from the float weights (were it
    # from the rounded ones, which lie on their grids, every shift of theirs would be zero);
    # measured 30.3 (CLE, dead channels' weights zeroed) -> 32.6 dB with 8 layers rounded and the
    # biases corrected (28.4 -> 32.7 before the zeroing)
    both = convert(ConvertConfig(**config, rounding="adaround", bias_correction=True))
    rounded = {layer.layer for layer in both.rounding.layers}
    shifts = {shift.layer: shift.max_shift for shift in both.bias_correction.layers}
    assert len(rounded) == 8 and all(shifts[name] > 0 for name in rounded)
    assert sqnr_db(reference, _logits(both.tflite, images)) > \
        sqnr_db(reference, _logits(nearest.tflite, images)) + 1.8
