"""tflq.evaluate / `tflq eval`: figures checked against numpy on the two runtimes' own outputs, the
layer ranking against real float-fallback conversions, and bad input."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import tflq
from tests.analysis.models import BAD_LAYER, bad_layer_model, samples
from tests.conftest import importorskip
from tflq.cli import main
from tflq.errors import TflqError

HERE = os.path.dirname(__file__)
SAMPLE = os.path.join(HERE, "..", "..", "sample_models", "digits_cnn.onnx")
CALIB = os.path.join(HERE, "..", "..", "sample_models", "digits_calib")
EVAL = os.path.join(HERE, "..", "..", "sample_models", "digits_eval.npz")
COUNT = 40  # evaluation samples of the digits model used here

# Figures agree to float32 rounding (the .tflite side is dequantized in float32).
# (mode, dtype, io_type): the float file, and uint8 / int8 files with float and 8-bit I/O
FILES = [("float", "uint8", "float"), ("full", "uint8", "float"), ("full", "uint8", "uint8"),
         ("full", "int8", "float"), ("full", "int8", "int8")]


def _run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory) -> dict[tuple, str]:
    directory = tmp_path_factory.mktemp("digits")
    paths = {}
    for mode, dtype, io_type in FILES:
        path = str(directory / f"digits_{mode}_{dtype}_{io_type}.tflite")
        tflq.convert(SAMPLE, path, mode=mode, dtype=dtype, io_type=io_type,
                     calib=CALIB if mode == "full" else None)
        paths[(mode, dtype, io_type)] = path
    return paths


def _oracle_outputs(tflite_path: str, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime on the ONNX file and LiteRT on the .tflite, fed by hand: NCHW -> NHWC, 8-bit
    inputs quantized with the file's scale and zero point, outputs dequantized."""
    ort = importorskip("onnxruntime")
    litert = importorskip("ai_edge_litert.interpreter")
    session = ort.InferenceSession(SAMPLE, providers=["CPUExecutionProvider"])
    interpreter = litert.Interpreter(model_path=tflite_path, num_threads=1)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    floats, quantized = [], []
    for x in xs:
        x = x[None]
        floats.append(session.run(None, {"input": x})[0])
        v = x.transpose(0, 2, 3, 1)
        if inp["dtype"] != np.float32:
            s, z = inp["quantization"]
            v = np.clip(np.floor(v / s + 0.5) + z, np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max)
        interpreter.set_tensor(inp["index"], v.astype(inp["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            s, z = out["quantization"]
            y = (y.astype(np.float64) - z) * s
        quantized.append(y)
    return np.concatenate(floats).astype(np.float64), np.concatenate(quantized).astype(np.float64)


@pytest.mark.parametrize("key", FILES, ids=["-".join(k) for k in FILES])
def test_figures_agree_with_numpy_on_both_runtimes(key, digits_files):
    data = np.load(EVAL)
    xs, labels = data["input"][:COUNT], data["labels"][:COUNT]
    reference, approx = _oracle_outputs(digits_files[key], xs)
    result = tflq.evaluate(SAMPLE, digits_files[key], {"input": xs[:, None]}, labels)
    o = result.output("logits")
    error = reference - approx
    with np.errstate(divide="ignore"):  # a sample without error: inf dB
        per_sample = 10 * np.log10(np.sum(reference ** 2, axis=1) / np.sum(error ** 2, axis=1))
    cosines = np.sum(reference * approx, axis=1) / (np.linalg.norm(reference, axis=1) *
                                                   np.linalg.norm(approx, axis=1))
    assert result.samples == COUNT and o.samples == COUNT
    assert o.sqnr_mean_db == pytest.approx(np.mean(per_sample[np.isfinite(per_sample)]), abs=1e-4)
    assert o.sqnr_worst_db == pytest.approx(np.min(per_sample), abs=1e-4)
    assert o.worst_sample == int(np.argmin(per_sample))
    assert o.sqnr_pooled_db == pytest.approx(
        10 * np.log10(np.sum(reference ** 2) / np.sum(error ** 2)), abs=1e-4)
    assert o.cosine_mean == pytest.approx(np.mean(cosines), abs=1e-7)
    assert o.cosine_worst == pytest.approx(np.min(cosines), abs=1e-7)
    assert o.max_abs_error == pytest.approx(np.max(np.abs(error)), rel=1e-5)
    assert o.top1_agreement == pytest.approx(np.mean(reference.argmax(1) == approx.argmax(1)))
    assert o.float_accuracy == pytest.approx(np.mean(reference.argmax(1) == labels))
    assert o.tflite_accuracy == pytest.approx(np.mean(approx.argmax(1) == labels))
    assert o.classifier and (o.scale is not None) == (key[2] != "float")
    assert result.float_runtime.startswith("onnxruntime")
    if key[0] == "float":
        assert o.sqnr_worst_db > 100
    else:
        assert 15 < o.sqnr_worst_db < 60


def test_reference_interpreter_stands_in_for_onnxruntime(digits_files):
    path = digits_files[("full", "int8", "float")]
    data = {"input": np.load(EVAL)["input"][:8, None]}
    ort = tflq.evaluate(SAMPLE, path, data).output("logits")
    result = tflq.evaluate(SAMPLE, path, data, float_runtime="tflq")
    assert result.float_runtime == "tflq reference interpreter"
    assert "tflq reference interpreter" in result.to_text()
    assert result.output("logits").sqnr_worst_db == pytest.approx(ort.sqnr_worst_db, abs=0.01)


def test_json_shape_is_stable_and_strict(digits_files):
    result = tflq.evaluate(SAMPLE, digits_files[("float", "uint8", "float")], EVAL, EVAL,
                           samples=10, min_sqnr=20, layers=True)
    data = json.loads(result.to_json())
    assert data["schema"] == 1 and data["samples"] == 10
    assert set(data["outputs"][0]) >= {"name", "sqnr_mean_db", "sqnr_worst_db", "worst_sample",
                                       "sqnr_pooled_db", "cosine_mean", "cosine_worst",
                                       "max_abs_error", "top1_agreement", "float_accuracy",
                                       "tflite_accuracy", "classifier"}
    assert data["checks"] == [{"option": "--min-sqnr", "output": "logits", "passed": True,
                               "figure": "worst-sample SQNR (dB, sample "
                                         f"{data['outputs'][0]['worst_sample']})",
                               "value": data["outputs"][0]["sqnr_worst_db"], "limit": 20.0}]
    assert data["layers"]["ranking"] == [] and data["layers"]["notes"]  # a float file: no grid


@pytest.fixture(scope="module")
def bad_layer(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("bad") / "bad.onnx")
    onnx.save(bad_layer_model(), path)
    return path


def _pooled_sqnr(reference: list[np.ndarray], approx: list[np.ndarray]) -> float:
    r, a = np.concatenate(reference).astype(np.float64), np.concatenate(approx).astype(np.float64)
    return float(10 * np.log10(np.sum(r ** 2) / np.sum((r - a) ** 2)))


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_worst_ranked_layer_is_the_one_whose_float_fallback_helps_most(dtype, bad_layer):
    """Ranking by simulated sensitivity vs real files: each of the top five kept float alone
    (tflq convert --float-ops), run in LiteRT against onnxruntime."""
    from tests.conftest import run_litert, run_onnxruntime

    calib, evaluation = samples(16, 1), samples(8, 2)
    converted = tflq.convert(bad_layer, None, mode="full", dtype=dtype, calib=calib).tflite
    result = tflq.evaluate(bad_layer, converted, evaluation, layers=True)
    analysis = result.layers
    assert analysis.ranking[0] == BAD_LAYER
    reference = [run_onnxruntime(bad_layer, s)[0] for s in evaluation]
    fallback = {}
    for node in analysis.ranking[:5]:
        data = tflq.convert(bad_layer, None, mode="full", dtype=dtype, calib=calib,
                            float_ops=[node]).tflite
        fallback[node] = _pooled_sqnr(reference, [run_litert(data, [s["input"]])[0] for s in evaluation])
    assert max(fallback, key=fallback.get) == analysis.ranking[0]
    assert analysis.fallback_check.best == BAD_LAYER and analysis.fallback_check.agrees
    # the simulated figures are the real ones: all quantized, and the bad layer kept float
    assert analysis.simulated_sqnr_db == pytest.approx(result.output("logits").sqnr_pooled_db, abs=1.5)
    assert analysis.fallback_check.fallback_sqnr_db[0] == pytest.approx(fallback[BAD_LAYER], abs=1.5)
    # per-tensor figures: the output tensor's against LiteRT's output (float IR vs onnxruntime)
    logits = next(t for layer in analysis.layers for t in layer.tensors if t.tensor.startswith("logits"))
    assert logits.sqnr_db == pytest.approx(result.output("logits").sqnr_pooled_db, abs=0.5)
    layer = analysis.layer(BAD_LAYER)
    assert layer.kinds == ["CONV_2D"] and layer.rank == 1
    assert all(t.histogram is not None and sum(t.histogram.counts) > 0 for t in layer.tensors)


def test_mixed_precision_file_is_replayed_on_its_own_grids(tmp_path):
    """A layer the file keeps float is not ranked, an int16 one keeps its int16 grid, and the
    replay of the file's grids (all layers) gives the SQNR LiteRT gives."""
    path = str(tmp_path / "mixed.tflite")
    tflq.convert(SAMPLE, path, mode="full", dtype="int8", calib=CALIB, float_ops=["/conv1/Conv"],
                 int16_ops=["/fc2/Gemm"])
    result = tflq.evaluate(SAMPLE, path, EVAL, samples=8, layers=True, layer_samples=8,
                           sensitivity_samples=2)
    analysis = result.layers
    assert "/conv1/Conv" not in analysis.ranking and "/fc2/Gemm" in analysis.ranking
    assert {t.dtype for t in analysis.layer("/fc2/Gemm").tensors} == {"int16"}
    assert analysis.simulated_sqnr_db == pytest.approx(result.output("logits").sqnr_pooled_db, abs=1.5)


def test_layers_table_and_gates_on_the_command_line(tmp_path, bad_layer):
    data = tmp_path / "eval.npy"
    np.save(data, np.concatenate([s["input"] for s in samples(6, 3)]))
    tflite = tmp_path / "bad.tflite"
    tflq.convert(bad_layer, str(tflite), mode="full", dtype="int8", calib=samples(16, 1))
    result = _run("eval", bad_layer, str(tflite), "--data", str(data), "--layers", "--min-sqnr", "30")
    assert result.exit_code == 1
    assert "Error: output 'logits': worst-sample SQNR" in result.output
    assert "below --min-sqnr 30" in result.output and "Traceback" not in result.output
    table = result.output.split("Layers ranked")[1].splitlines()
    assert table[2].split()[:1] == ["1"] and BAD_LAYER in table[2]
    ok = _run("eval", bad_layer, str(tflite), "--data", str(data), "--min-sqnr", "1",
              "--min-agreement", "0", "--json")
    assert ok.exit_code == 0, ok.output
    figures = json.loads(ok.output)
    assert [c["passed"] for c in figures["checks"]] == [True, True]


def test_agreement_gate_names_the_output(digits_files):
    result = _run("eval", SAMPLE, digits_files[("full", "uint8", "uint8")], "--data", EVAL,
                  "--samples", "20", "--min-agreement", "1.0", "--labels", EVAL)
    agreement = tflq.evaluate(SAMPLE, digits_files[("full", "uint8", "uint8")], EVAL, samples=20)
    if agreement.output("logits").top1_agreement < 1.0:
        assert result.exit_code == 1 and "top-1 agreement" in result.output
    else:
        assert result.exit_code == 0
    assert "accuracy" in result.output


# ---- bad input: one clear error, exit 1, nothing written ------------------------------------

def _refused(tmp_path, *args, expect: str) -> None:
    html = tmp_path / "report.html"
    result = _run("eval", *args, "--html", str(html))
    assert result.exit_code == 1, result.output
    assert expect in result.output, result.output
    assert "Traceback" not in result.output
    assert not html.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_bad_input_is_one_error_and_nothing_written(tmp_path, digits_files, bad_layer):
    digits = digits_files[("full", "int8", "float")]
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(tmp_path, SAMPLE, digits, "--data", str(empty), expect="evaluation data:")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((4, 3, 10, 10), np.float32))
    _refused(tmp_path, SAMPLE, digits, "--data", str(wrong), expect="does not fit input 'input'")
    other = tmp_path / "other.tflite"
    tflq.convert(bad_layer, str(other))
    _refused(tmp_path, SAMPLE, str(other), "--data", EVAL, expect="has shape [1, 10, 10, 3]")
    short = tmp_path / "short.npy"
    np.save(short, np.arange(5))
    _refused(tmp_path, SAMPLE, digits, "--data", EVAL, "--samples", "10", "--labels", str(short),
             expect="5 labels")
    floats = tmp_path / "floats.npy"
    np.save(floats, np.full(360, 0.5))
    _refused(tmp_path, SAMPLE, digits, "--data", EVAL, "--labels", str(floats),
             expect="labels must be integer class ids")
    text = tmp_path / "labels.txt"
    text.write_text("1\n2\ncat\n")
    _refused(tmp_path, SAMPLE, digits, "--data", EVAL, "--labels", str(text),
             expect="'cat' is not an integer class label")
    many = tmp_path / "many.npy"
    np.save(many, np.arange(400) % 10)
    _refused(tmp_path, SAMPLE, digits, "--data", EVAL, "--labels", str(many),
             expect="400 labels for 360 evaluation row(s)")
    big = tmp_path / "big.npy"
    np.save(big, np.full(360, 12))
    _refused(tmp_path, SAMPLE, digits, "--data", EVAL, "--labels", str(big),
             expect="label 12 is not a class of output 'logits' (10 classes)")
    over = _run("eval", SAMPLE, digits, "--data", EVAL, "--html", EVAL)
    assert over.exit_code == 1 and "--html would overwrite the evaluation data" in over.output
    with pytest.raises(TflqError, match="not a conversion of this model"):
        two_outputs = onnx.load(SAMPLE)
        two_outputs.graph.output.append(onnx.helper.make_tensor_value_info(
            "/fc1/Gemm_output_0", onnx.TensorProto.FLOAT, None))
        path = tmp_path / "two.onnx"
        onnx.save(two_outputs, str(path))
        tflq.evaluate(str(path), digits, EVAL)


def test_html_never_over_the_models_external_data(tmp_path):
    model = bad_layer_model()
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.data",
              size_threshold=0)
    data = tmp_path / "x.npy"
    np.save(data, samples(1, 4)[0]["input"])
    tflq.convert(str(tmp_path / "m.onnx"), str(tmp_path / "m.tflite"))
    before = (tmp_path / "m.data").read_bytes()
    result = _run("eval", str(tmp_path / "m.onnx"), str(tmp_path / "m.tflite"), "--data", str(data),
                  "--html", str(tmp_path / "m.data"))
    assert result.exit_code == 1 and "external data of the input model" in result.output
    assert (tmp_path / "m.data").read_bytes() == before


def test_html_without_matplotlib_names_the_extra(tmp_path, digits_files, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    html = tmp_path / "r.html"
    result = _run("eval", SAMPLE, digits_files[("full", "int8", "float")], "--data", EVAL,
                  "--html", str(html))
    assert result.exit_code == 1
    assert "pip install 'tflq[report]'" in result.output and not html.exists()


def test_convert_html_reports_on_the_calibration_samples(tmp_path):
    importorskip("matplotlib")
    out, html = tmp_path / "d.tflite", tmp_path / "d.html"
    result = _run("convert", SAMPLE, "-o", str(out), "--mode", "full", "--dtype", "int8",
                  "--calib", CALIB, "--calib-samples", "20", "--html", str(html), "-q")
    assert result.exit_code == 0, result.output
    text = html.read_text()
    assert text.count("<img class='plot'") >= 3 and "data:image/png;base64," in text
    assert "/fc2/Gemm" in text and "on 20 sample(s)" in text
    refused = _run("convert", SAMPLE, "-o", str(tmp_path / "e.tflite"), "--html", str(tmp_path / "e.html"))
    assert refused.exit_code == 1 and "give --calib" in refused.output
    assert not (tmp_path / "e.tflite").exists()


def test_infinite_sqnr_is_null_in_json():
    from tflq.analysis.result import EvalResult, OutputMetrics

    result = EvalResult("m.onnx", "m.tflite", "x", "y", 1, outputs=[OutputMetrics(
        "y", [1], [1], "float32", sqnr_mean_db=math.inf, sqnr_worst_db=math.inf)])
    assert json.loads(result.to_json())["outputs"][0]["sqnr_worst_db"] is None
    assert "inf dB worst" in result.to_text()


def test_layers_survive_a_layer_whose_simulation_divides_by_zero(tmp_path):
    """A LayerNorm as exported below opset 17 ((x - mean) / sqrt(var + eps)) calibrated on a constant
    row: with only var + eps on its 8-bit grid, that row's divisor rounds to 0 and the simulated
    output is inf/NaN. That layer's sensitivity has no signal left (-inf dB); `tflq eval --layers`
    used to stop there with 'math domain error' (exit 3)."""
    from onnx import TensorProto, helper

    def const(name, value):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(
            name, TensorProto.FLOAT, [], [value]))

    nodes = [const("two", 2.0), const("eps", 1e-5),
             helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1], keepdims=1),
             helper.make_node("Sub", ["x", "mean"], ["centred"]),
             helper.make_node("Pow", ["centred", "two"], ["squared"]),
             helper.make_node("ReduceMean", ["squared"], ["var"], axes=[-1], keepdims=1),
             helper.make_node("Add", ["var", "eps"], ["var_eps"], name="var_eps"),
             helper.make_node("Sqrt", ["var_eps"], ["std"]),
             helper.make_node("Div", ["centred", "std"], ["y"])]
    graph = helper.make_graph(nodes, "layernorm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model_path = str(tmp_path / "layernorm.onnx")
    onnx.save(model, model_path)
    rng = np.random.default_rng(0)
    calib, data = tmp_path / "calib", tmp_path / "data"
    calib.mkdir(), data.mkdir()
    for i in range(8):
        x = (rng.standard_normal((1, 4, 16)) * rng.uniform(0.5, 3, (1, 4, 1))).astype(np.float32)
        x[0, 0] = 0.25  # a constant row: variance 0
        np.save(calib / f"{i}.npy", x)
        np.save(data / f"{i}.npy", x)
    tflite = str(tmp_path / "layernorm.tflite")
    tflq.convert(model_path, tflite, mode="full", dtype="uint8", calib=str(calib))
    result = CliRunner().invoke(main, ["eval", model_path, tflite, "--data", str(data), "--layers"])
    assert result.exit_code == 0, result.output
    assert "Internal error" not in result.output
    analysis = tflq.evaluate(model_path, tflite, str(data), layers=True).layers
    sensitivities = [layer.sensitivity_db for layer in analysis.layers]
    assert all(not math.isnan(s) for s in sensitivities if s is not None)



def test_weight_error_leaves_out_the_channels_the_conversion_zeroed():
    """The digits MobileNet's depthwise convs read channels its uint8 grids hold at exactly 0, and
    the conversion zeroes those channels' weights (quantize/dead_channels.py). They multiply 0, so
    the layer's weight SQNR is that of the channels kept: computed here from the file's integers
    against the float graph's (folded, equalized) weights; counting the zeroed ones gave 2 dB."""
    from tflq.backend.tflite_reader import read_tflite
    from tflq.config import ConvertConfig
    from tflq.pipeline import prepare_graph

    mobilenet = os.path.join(HERE, "..", "..", "sample_models", "digits_mobilenet.onnx")
    quantized = tflq.convert(mobilenet, None, mode="full", dtype="uint8", calib=CALIB)
    evaluated = tflq.evaluate(mobilenet, quantized.tflite, CALIB, samples=8, layers=True)
    graph, _ = prepare_graph(ConvertConfig(model=mobilenet, mode="full", dtype="uint8", equalize=True))
    floats = {name: t.data for name, t in graph.tensors.items() if t.data is not None}
    node_of = {node.input[1]: node.name for node in onnx.load(mobilenet).graph.node
               if node.op_type == "Conv"}
    file = read_tflite(quantized.tflite)
    checked = 0
    for op in file.ops:
        if op.kind != "DEPTHWISE_CONV_2D" or \
                "/dead_channels_zeroed" not in (weight := file.tensors[op.inputs[1]]).name:
            continue
        reference = floats[weight.name.split("/dead_channels_zeroed")[0]].astype(np.float64)
        real = (weight.data.astype(np.float64) - weight.zero_point[0]) * weight.scale[0]
        kept = np.any(weight.data != weight.zero_point[0], axis=(0, 1, 2))
        assert 0 < kept.sum() < kept.size  # some channels zeroed, not all
        error = (reference - real)[..., kept]
        expected = 10 * math.log10(np.sum(reference[..., kept] ** 2) / np.sum(error ** 2))
        layer = evaluated.layers.layer(node_of[weight.name.split("/")[0]])
        assert layer.weight_sqnr_db == pytest.approx(expected, abs=0.01), layer.node
        assert layer.weight_sqnr_db > 20.0
        checked += 1
    assert checked >= 1
