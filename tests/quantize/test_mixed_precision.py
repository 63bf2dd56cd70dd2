"""Mixed precision: --int16-ops / --float-ops per node with requantizing QUANTIZE ops between the
int8 (or uint8) and int16 grids, and --target-sqnr promoting the fewest layers. Judged by LiteRT
against onnxruntime on every sample."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime, save_model
from tflq.backend.tflite_reader import read_tflite
from tflq.config import ConvertConfig
from tflq.errors import InvalidConfigError
from tflq.pipeline import convert
from tflq.quantize.precision import sample_sqnrs
from tflq.report import Promotion

OFFSET = 1000.0  # the bad layer: a BatchNormalization that removes a large offset from the input


def _model() -> onnx.ModelProto:
    """x (about OFFSET +- 1) -> BatchNormalization 'bn' (subtracts OFFSET: MUL then ADD, both from
    one node) -> Conv 'c0' -> Relu -> Conv 'c1'. In int8 the input's and the MUL's grids span
    0..1001 in steps of ~4, which wipes out the +-1 signal; in int16 the steps are ~0.03."""
    rng = np.random.default_rng(7)
    # (a scale just off 1: a MUL by 1 is no op, and the BatchNorm would be its ADD alone)
    inits = [numpy_helper.from_array(np.full(4, 1 + 2 ** -10, np.float32), "s"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b"),
             numpy_helper.from_array(np.full(4, OFFSET, np.float32), "m"),
             numpy_helper.from_array(np.ones(4, np.float32), "v"),
             numpy_helper.from_array(rng.normal(0, 0.3, (8, 4, 3, 3)).astype(np.float32), "w0"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b0"),
             numpy_helper.from_array(rng.normal(0, 0.2, (6, 8, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 6).astype(np.float32), "b1")]
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["n"], name="bn",
                              epsilon=0.0),
             helper.make_node("Conv", ["n", "w0", "b0"], ["a"], name="c0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w1", "b1"], ["y"], name="c1", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "bad_layer", [helper.make_tensor_value_info("x", 1, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", 1, [1, 6, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _samples(count: int = 8) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [{"x": (OFFSET + rng.uniform(-1, 1, (1, 4, 8, 8))).astype(np.float32)} for _ in range(count)]


def _litert_sqnr(model, tflite: bytes, samples) -> float:
    """The worst sample's SQNR of the file in LiteRT against onnxruntime."""
    return min(sample_sqnrs([run_onnxruntime(model, s) for s in samples],
                            [run_litert(tflite, [s["x"]]) for s in samples]))


def _held_out(count: int = 3) -> list[dict[str, np.ndarray]]:
    """Samples inside the calibrated ranges, other than the calibration samples."""
    return [{"x": (OFFSET + np.random.default_rng(20 + i).uniform(-0.9, 0.9, (1, 4, 8, 8)))
             .astype(np.float32)} for i in range(count)]


def _save_samples(samples, folder) -> str:
    folder.mkdir()
    for i, sample in enumerate(samples):
        np.save(folder / f"{i}.npy", sample["x"])
    return str(folder)


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib")
    for i, sample in enumerate(_samples()):
        np.save(folder / f"{i}.npy", sample["x"])
    return str(folder)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_int16_ops_requantize_at_the_boundaries(dtype, tmp_path):
    model = _model()
    path = save_model(model, tmp_path / "m.onnx")
    samples = _samples()
    plain = convert(ConvertConfig(model=path, mode="full", dtype=dtype, calib=samples))
    mixed = convert(ConvertConfig(model=path, mode="full", dtype=dtype, calib=samples, int16_ops=("bn",)))
    info = read_tflite(mixed.tflite)
    by_kind = {op.kind: op for op in info.ops}
    for kind in ("MUL", "ADD"):  # the BatchNormalization's two ops run on int16
        assert info.tensors[by_kind[kind].outputs[0]].dtype == "int16"
    assert info.tensors[by_kind["CONV_2D"].outputs[0]].dtype == dtype
    # x enters on int16, and the int16 'n' reaches the 8-bit convolution through QUANTIZE ops
    quantizes = [op for op in info.ops if op.kind == "QUANTIZE"]
    assert any(info.tensors[q.inputs[0]].dtype == "int16" and info.tensors[q.outputs[0]].dtype != "int16"
               for q in quantizes)
    before, after = _litert_sqnr(model, plain.tflite, samples), _litert_sqnr(model, mixed.tflite, samples)
    assert after > before + 20, (before, after)


def test_target_sqnr_promotes_exactly_the_bad_layer(calib_dir, tmp_path):
    model = _model()
    path = save_model(model, tmp_path / "m.onnx")
    out = str(tmp_path / "m.tflite")
    report = convert(ConvertConfig(model=path, output=out, mode="full", dtype="int8", calib=calib_dir,
                                   target_sqnr=30.0))
    p = report.precision
    assert p.promoted == [Promotion("bn", "MUL", "int16")], p.promoted
    assert p.before_db < 10 <= 30 <= p.after_db
    assert "--target-sqnr 30 dB: 1 of" in report.to_text()
    reached = _litert_sqnr(model, report.tflite, _samples())
    assert reached >= 30, reached  # the written file, in LiteRT, on the calibration samples


def test_eval_data_is_what_the_target_is_measured_on(calib_dir, tmp_path):
    """--eval-data: the SQNR is measured on those samples (held out from calibration), and the
    written file reaches the target on each of them in LiteRT. Given with --stats, no --calib
    is needed."""
    from click.testing import CliRunner

    from tflq.cli import main

    model = _model()
    path = save_model(model, tmp_path / "m.onnx")
    held_out = _held_out()
    eval_dir = _save_samples(held_out, tmp_path / "eval")
    stats, out = str(tmp_path / "s.npz"), str(tmp_path / "m.tflite")
    convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=calib_dir, save_stats=stats))
    result = CliRunner().invoke(main, ["convert", path, "-o", out, "--mode", "full", "--dtype", "int8",
                                       "--stats", stats, "--target-sqnr", "27",
                                       "--eval-data", eval_dir], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "--target-sqnr 27 dB: 1 of" in result.output, result.output
    assert "(worst of 3 samples of --eval-data)" in result.output and "bn (MUL) -> int16" in result.output
    with open(out, "rb") as f:
        assert _litert_sqnr(model, f.read(), held_out) >= 27


def test_the_target_holds_for_the_worst_sample(calib_dir, tmp_path):
    """On these held-out samples 'bn' in int16 brings the pooled SQNR to 30 dB but leaves one
    sample below it: the target asks for more, and every sample of the file reaches it."""
    model = _model()
    path = save_model(model, tmp_path / "m.onnx")
    held_out = _held_out()
    bn_only = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=calib_dir,
                                    int16_ops=("bn",)))
    assert _litert_sqnr(model, bn_only.tflite, held_out) < 30
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=calib_dir,
                                   target_sqnr=30.0, eval_data=held_out))
    p = report.precision
    assert len(p.promoted) > 1 and p.after_db >= 30, p
    assert _litert_sqnr(model, report.tflite, held_out) >= 30


def test_unreachable_target_says_by_how_much_and_writes_nothing(calib_dir, tmp_path):
    """Without --accept-below-target: exit 1, the shortfall in dB, no file; with it: the model
    with every layer promoted is written, exit 0, the warning says by how much it falls short."""
    from click.testing import CliRunner

    from tflq.cli import main

    model = _model()
    path = save_model(model, tmp_path / "m.onnx")
    out = tmp_path / "m.tflite"
    args = ["convert", path, "-o", str(out), "--mode", "full", "--calib", calib_dir, "--target-sqnr", "110"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "cannot be reached" in result.output and " dB short" in result.output
    assert "--accept-below-target" in result.output and "Traceback" not in result.output
    assert not os.path.exists(out)
    result = CliRunner().invoke(main, args + ["--accept-below-target", "-q"])
    assert result.exit_code == 0, result.output
    assert "Warning:" in result.output and " dB short" in result.output
    short = float(result.output.split(" dB short")[0].rsplit(" ", 1)[1])
    worst = _litert_sqnr(model, out.read_bytes(), _samples())
    assert 110 - worst == pytest.approx(short, abs=3.0), (worst, short)  # LiteRT vs the simulation
    report = convert(ConvertConfig(model=path, mode="full", calib=calib_dir, target_sqnr=110.0,
                                   accept_below_target=True))
    assert not report.precision.reached and len(report.precision.promoted) == report.precision.layers
    assert "written anyway (--accept-below-target)" in report.to_text()
    os.remove(out)
    with pytest.raises(InvalidConfigError, match="above what float arithmetic reaches"):
        convert(ConvertConfig(model=path, output=str(out), mode="full", calib=calib_dir,
                              target_sqnr=130.0, accept_below_target=True))
    assert not os.path.exists(out)


def test_unknown_node_names_are_listed_at_once(calib_dir, tmp_path):
    path = save_model(_model(), tmp_path / "m.onnx")
    with pytest.raises(InvalidConfigError) as err:
        convert(ConvertConfig(model=path, mode="full", calib=calib_dir, float_ops=("nope", "c0"),
                              int16_ops=("bn", "gone")))
    assert "--float-ops nope" in str(err.value) and "--int16-ops gone" in str(err.value)
    assert "c0" not in str(err.value).split(":", 1)[1]


def test_int16_request_for_an_op_without_a_16x8_kernel_stays_float(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("HardSwish", ["a"], ["y"], name="hs")]
    graph = helper.make_graph(nodes, "hs", [helper.make_tensor_value_info("x", 1, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", 1, [1, 3, 4, 4])])
    path = save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                      tmp_path / "m.onnx")
    calib = [{"x": np.random.default_rng(i).uniform(-3, 3, (1, 3, 4, 4)).astype(np.float32)}
             for i in range(4)]
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=calib, int16_ops=("hs",)))
    assert [(f.origin, f.reason) for f in report.float_ops] == [("hs", "LiteRT has no 16x8 kernel for it")]
    assert "no 16x8 kernel" in report.to_text()


def test_float_prefix_reuse_changes_no_figure(tmp_path):
    """The sensitivity runs start from the float run's values where the quantized graph computes
    what the float one does: the same figures as running the whole graph."""
    from tflq.calibration.run import collect_statistics
    from tflq.pipeline import _prepare, write_policy
    from tflq.quantize.full import _Context
    from tflq.quantize.precision import SqnrEvaluator, _float_prefix

    config = ConvertConfig(model=save_model(_model(), tmp_path / "m.onnx"), mode="full", dtype="int8",
                           calib=_samples())
    graph, report, config, _ = _prepare(config, write_policy(config))
    stats = collect_statistics(graph, config, report)
    context = lambda i16, f: _Context(config.dtype, config, stats, None, i16, f)  # noqa: E731
    feeds = [{"x": np.ascontiguousarray(s["x"].transpose(0, 2, 3, 1))} for s in _held_out()]
    whole, reused = SqnrEvaluator(graph, context, feeds, cached=0), SqnrEvaluator(graph, context, feeds)
    c0_alone = reused.quantized(frozenset(), frozenset({"bn", "c1"}))
    assert {op.kind for op in c0_alone.ops if id(op) in _float_prefix(c0_alone, graph)} == {"MUL", "ADD"}
    for int16, float_ in [((), ("bn", "c0")), ((), ("bn", "c1")), (("bn",), ()), ((), ())]:
        assert whole.sample_sqnrs(frozenset(int16), frozenset(float_)) == \
            reused.sample_sqnrs(frozenset(int16), frozenset(float_))


def test_noise_sources_name_the_nodes_that_take_them_out(tmp_path):
    """The input's grid is read by 'bn' alone: promoting 'bn' takes it out, and it is by far the
    largest source (its step is ~4 for a +-1 signal); the grid between 'bn' and 'c0' needs both;
    each convolution's weights need their own node only."""
    from tflq.calibration.run import collect_statistics
    from tflq.pipeline import _prepare, write_policy
    from tflq.quantize.full import _Context
    from tflq.quantize.plan import plan_quantization
    from tflq.quantize.precision import SqnrEvaluator, noise_sources

    config = ConvertConfig(model=save_model(_model(), tmp_path / "m.onnx"), mode="full", dtype="uint8",
                           calib=_samples())
    graph, report, config, _ = _prepare(config, write_policy(config))
    stats = collect_statistics(graph, config, report)
    context = lambda i16, f: _Context(config.dtype, config, stats, None, i16, f)  # noqa: E731
    feeds = [{"x": np.ascontiguousarray(s["x"].transpose(0, 2, 3, 1))} for s in _samples(2)]
    evaluator = SqnrEvaluator(graph, context, feeds)
    plan = plan_quantization(graph, context(frozenset(), frozenset()))
    sources = {s.name: s for s in noise_sources(evaluator, plan, {"bn", "c0", "c1"},
                                                frozenset({"bn", "c0", "c1"}))}
    assert sources["x"].layers == {"bn"} and max(sources.values(), key=lambda s: s.noise).name == "x"
    n = next(op.outputs[0] for op in graph.ops if op.origin == "bn" and op.kind == "ADD")
    assert sources[n].layers == {"bn", "c0"}
    assert sources["c0"].kind == "weights" and sources["c0"].layers == {"c0"}
    assert 0 < sources["c0"].kept < 1  # int16x8's per-channel int8 weights round less than uint8's


def _pair_model() -> onnx.ModelProto:
    """x -> Conv 'c0' -> t -> Conv 'c1' -> Relu -> Conv 'c2' -> y. Channel 0 of t is ~100 (c0's
    bias) and c1 ignores it (its weights there are 0), so t's 8-bit grid has a step of ~0.4
    over the +-1 signal of the other channels: that noise leaves only when c0 writes t in int16
    and c1 reads it in int16. Either alone still requantizes t to 8 bits between them."""
    rng = np.random.default_rng(11)
    w0 = rng.normal(0, 0.5, (4, 4, 1, 1)).astype(np.float32)
    w0[0], w0[0, 0] = 0.0, 0.1
    w1 = rng.normal(0, 0.5, (3, 4, 1, 1)).astype(np.float32)
    w1[:, 0] = 0.0
    w2 = rng.normal(0, 0.5, (3, 3, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(np.array([100, 0, 0, 0], np.float32), "b0"),
             numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["t"], name="c0"),
             helper.make_node("Conv", ["t", "w1"], ["u"], name="c1"),
             helper.make_node("Relu", ["u"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="c2")]
    graph = helper.make_graph(nodes, "pair", [helper.make_tensor_value_info("x", 1, [1, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", 1, [1, 3, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_grid_between_two_layers_needs_both_promoted(tmp_path):
    """Each of c0, c1 promoted alone leaves the file where it was in LiteRT; the search
    promotes exactly the two, and the file reaches the target on every sample."""
    model = _pair_model()
    path = save_model(model, tmp_path / "m.onnx")
    samples = [{"x": np.random.default_rng(i).uniform(-1, 1, (1, 4, 6, 6)).astype(np.float32)}
               for i in range(8)]

    def litert(tflite: bytes) -> float:
        return min(sample_sqnrs([run_onnxruntime(model, s) for s in samples],
                                [run_litert(tflite, [s["x"]]) for s in samples]))

    plain = litert(convert(ConvertConfig(model=path, mode="full", dtype="uint8", calib=samples)).tflite)
    for alone in ("c0", "c1"):
        one = convert(ConvertConfig(model=path, mode="full", dtype="uint8", calib=samples, int16_ops=(alone,)))
        assert litert(one.tflite) < plain + 3 < 15, (alone, plain)
    report = convert(ConvertConfig(model=path, mode="full", dtype="uint8", calib=samples, target_sqnr=35.0))
    assert report.precision.int16_nodes == {"c0", "c1"} and not report.precision.float_nodes, \
        report.precision.promoted
    assert litert(report.tflite) >= 35


def _offset_model() -> onnx.ModelProto:
    """x (mean 5) -> Conv 'c0' 1x1, whose weights (but two) sit 0.45 of a uint8 step above a
    grid point of their per-tensor grid: every one rounds down by about as much, and the
    output's mean shifts by the sum, which bias correction takes out."""
    rng = np.random.default_rng(5)
    step = 2 / 255  # the grid of weights spanning -1 .. 1 (zero on the grid)
    w = ((38.45 + rng.uniform(-0.02, 0.02, (4, 8, 1, 1))) * step).astype(np.float32)
    w[0, 0, 0, 0], w[1, 1, 0, 0] = -1.0, 1.0
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c0")], "offset",
                              [helper.make_tensor_value_info("x", 1, [1, 8, 6, 6])],
                              [helper.make_tensor_value_info("y", 1, [1, 4, 6, 6])],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_bias_correction_is_counted_in_the_search(tmp_path):
    """With --bias-correction the search measures the mixes as they are written, corrected:
    the uint8 file reaches 44 dB without any promotion (and the summary's figure is LiteRT's);
    without it, the target needs c0 in int16."""
    model = _offset_model()
    path = save_model(model, tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    samples = [{"x": (5 + rng.uniform(-1, 1, (1, 8, 6, 6))).astype(np.float32)} for _ in range(8)]

    def litert(tflite: bytes) -> float:
        return min(sample_sqnrs([run_onnxruntime(model, s) for s in samples],
                                [run_litert(tflite, [s["x"]]) for s in samples]))

    plain = convert(ConvertConfig(model=path, mode="full", dtype="uint8", calib=samples,
                                  bias_correction=False, target_sqnr=44.0))
    assert plain.precision.promoted == [Promotion("c0", "CONV_2D", "int16")]
    assert plain.precision.before_db < 40 and litert(plain.tflite) >= 44
    corrected = convert(ConvertConfig(model=path, mode="full", dtype="uint8", calib=samples,
                                      bias_correction=True, target_sqnr=44.0))
    p = corrected.precision
    assert p.promoted == [] and p.counted == "bias correction", p
    reached = litert(corrected.tflite)
    assert reached >= 44 and p.before_db == pytest.approx(reached, abs=0.5), (p.before_db, reached)
    assert "with bias correction)" in corrected.to_text()


def test_bias_correction_left_unsaid_is_tried_by_the_search(tmp_path):
    """bias_correction left unsaid (None, off for uint8): the search runs with it and without it
    and keeps it only where it promotes fewer ops. The offset model needs c0 in int16 without it
    and nothing with it, so the file is corrected, and LiteRT's worst sample is the summary's; the
    bad-layer model needs its BatchNormalization either way, so it is left off."""
    model = _offset_model()
    path = save_model(model, tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    samples = [{"x": (5 + rng.uniform(-1, 1, (1, 8, 6, 6))).astype(np.float32)} for _ in range(8)]
    report = convert(ConvertConfig(model=path, mode="full", dtype="uint8", calib=samples, target_sqnr=44.0))
    p = report.precision
    assert p.promoted == [] and p.counted == "bias correction" and report.bias_correction is not None, p
    assert "bias correction on (not asked for either way): 0 promoted TFLite ops with it, 1 without" \
        in report.to_text()
    reached = min(sample_sqnrs([run_onnxruntime(model, s) for s in samples],
                               [run_litert(report.tflite, [s["x"]]) for s in samples]))
    assert reached >= 44 and p.before_db == pytest.approx(reached, abs=0.5), (p.before_db, reached)

    bad = save_model(_model(), tmp_path / "bad.onnx")
    report = convert(ConvertConfig(model=bad, mode="full", calib=_samples(), target_sqnr=30.0))
    assert report.precision.promoted == [Promotion("bn", "MUL", "int16")], report.precision.promoted
    assert report.precision.counted == "" and report.bias_correction is None
    assert _litert_sqnr(_model(), report.tflite, _samples()) >= 30


def test_repairs_fit_calibration_samples_not_eval_data(tmp_path):
    """--eval-data is what --target-sqnr judges the file on; bias correction takes its input
    means from the calibration samples only. The offset model's correction is the weights'
    rounding times E[x]: eval data of mean 4.25 (calibration: 5, both inside its range) would
    shrink it by 15%. The file
    must be the one made with the calibration samples as eval data (byte for byte: no
    promotion at a 1 dB target, so only the bias could differ)."""
    model = _offset_model()
    path = save_model(model, tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    samples = [{"x": (5 + rng.uniform(-1, 1, (1, 8, 6, 6))).astype(np.float32)} for _ in range(8)]
    low = [{"x": (4 + (s["x"] - 4) / 4).astype(np.float32)} for s in samples]  # mean 4.25

    def written(eval_data) -> bytes:
        report = convert(ConvertConfig(model=path, mode="full", dtype="uint8", calib=samples,
                                       bias_correction=True, target_sqnr=1.0, eval_data=eval_data))
        assert report.precision.promoted == [] and report.bias_correction is not None
        return report.tflite

    assert written(low) == written(samples)


def _outlier_model() -> onnx.ModelProto:
    """x -> Conv 'c0' -> Relu -> Conv 'c1', on standard normal images."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 4, 3, 3)).astype(np.float32), "w0"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b0"),
             numpy_helper.from_array(rng.normal(0, 0.2, (6, 8, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 6).astype(np.float32), "b1")]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["a"], name="c0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w1", "b1"], ["y"], name="c1", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "outlier", [helper.make_tensor_value_info("x", 1, [1, 4, 16, 16])],
                              [helper.make_tensor_value_info("y", 1, [1, 6, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_grid_ranges_chosen_by_output_noise_spare_a_promotion(tmp_path):
    """One calibration sample with an outlier pixel (12 sigma) stretches every minmax grid about
    twice too wide for the other images. --target-sqnr first chooses each 8-bit grid's range by
    the output noise it causes on calibration samples (tflq.quantize.grid_ranges): the held-out
    images then reach a target plain uint8 misses by 2 dB with no layer promoted, where
    promotion alone needs at least one. LiteRT, worst held-out sample."""
    model = _outlier_model()
    path = save_model(model, tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    calib = [{"x": rng.normal(0, 1, (1, 4, 16, 16)).astype(np.float32)} for _ in range(16)]
    calib[9]["x"][0, :, 5, 5] = 12.0
    rng = np.random.default_rng(2)
    held_out = [{"x": rng.normal(0, 1, (1, 4, 16, 16)).astype(np.float32)} for _ in range(8)]

    def litert(tflite: bytes) -> float:
        return min(sample_sqnrs([run_onnxruntime(model, s) for s in held_out],
                                [run_litert(tflite, [s["x"]]) for s in held_out]))

    plain = litert(convert(ConvertConfig(model=path, mode="full", dtype="uint8", calib=calib)).tflite)
    assert plain < 31, plain
    report = convert(ConvertConfig(model=path, mode="full", dtype="uint8", calib=calib,
                                   eval_data=held_out, bias_correction=False, target_sqnr=32.5))
    p = report.precision
    assert p.promoted == [], p.promoted
    assert "3 of 3 grids narrowed" in p.grid_ranges and p.grid_ranges in report.to_text()
    reached = litert(report.tflite)
    assert reached >= 32.5 and p.before_db == pytest.approx(reached, abs=0.5), (p.before_db, reached)
