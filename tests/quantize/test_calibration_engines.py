"""Calibration engines: onnxruntime (tensors read from the ONNX model, lowered ops computed in
onnxruntime or by tflq's kernels) and numpy agree; fallbacks say why; bad values are refused."""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from tests.conftest import importorskip, run_litert, run_onnxruntime
from tflq.calibration import engines
from tflq.calibration.engines import OnnxruntimeRunner, engines_agree, plan_onnxruntime
from tflq.calibration.run import _calibrate, calibrate
from tflq.cli import main
from tflq.config import ConvertConfig
from tflq.errors import CalibrationError, InvalidConfigError
from tflq.pipeline import convert, prepare_graph

importorskip("onnxruntime")
SAMPLES = 12


def _model(path, layer_norm: bool = False, external: bool = False) -> str:
    """Conv+BN+Relu (fused), a stride-2 Conv whose padding becomes an explicit PAD, a residual
    Add, MaxPool, and optionally a LayerNormalization (lowered into several ops)."""
    rng = np.random.default_rng(5)

    def const(name, *shape, scale=0.3, offset=0.0):
        return numpy_helper.from_array((rng.normal(0, scale, shape) + offset).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["n1"]),
             helper.make_node("Relu", ["n1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Conv", ["c2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "c3"], ["a"]),
             helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2])]
    last = "p"
    if layer_norm:
        nodes.append(helper.make_node("LayerNormalization", ["p", "ln_s", "ln_b"], ["ln"], axis=-1))
        last = "ln"
    nodes += [helper.make_node("GlobalAveragePool", [last], ["gap"]),
              helper.make_node("Flatten", ["gap"], ["f"]),
              helper.make_node("Gemm", ["f", "w4"], ["y"], transB=1)]
    inits = [const("w1", 8, 3, 3, 3), const("b1", 8), const("g", 8, offset=1.0), const("beta", 8),
             const("mean", 8), numpy_helper.from_array(rng.uniform(0.5, 2, 8).astype(np.float32), "var"),
             const("w2", 8, 8, 3, 3), const("b2", 8), const("w3", 8, 8, 3, 3), const("b3", 8),
             const("w4", 5, 8), const("ln_s", 4, offset=1.0), const("ln_b", 4)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", 1, [1, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if external:
        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                  location=os.path.basename(path) + ".data", size_threshold=0)
    else:
        onnx.save(model, path)
    return str(path)


def _samples(count: int = SAMPLES) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [{"x": rng.normal(0, 1, (1, 3, 16, 16)).astype(np.float32)} for _ in range(count)]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("engines")
    return {"plain": _model(folder / "net.onnx"), "ln": _model(folder / "ln.onnx", layer_norm=True),
            "external": _model(folder / "ext.onnx", external=True)}


def _both(model: str, histogram: bool, **options):
    graph, report = prepare_graph(ConvertConfig(model=model, mode="full", **options))
    runs = {}
    for engine in ("numpy", "onnxruntime"):
        runs[engine] = _calibrate(graph, _samples(), None, False, histogram, 1, None, engine, model, None)
    return graph, runs


def _assert_agree(numpy_stats, ort_stats):
    assert numpy_stats.tensors.keys() == ort_stats.tensors.keys()
    assert engines_agree(numpy_stats, ort_stats) == ""
    for name, ref in numpy_stats.tensors.items():
        got = ort_stats.tensors[name]
        scale = max(abs(ref.minimum), abs(ref.maximum), 1e-6)
        assert abs(got.minimum - ref.minimum) <= 1e-5 * scale and abs(got.maximum - ref.maximum) <= 1e-5 * scale, name
        if ref.has_histogram:
            assert got.exponent == ref.exponent and got.count == ref.count
            # a value on a bin edge may land next door in the other engine's rounding
            assert np.abs(got.counts - ref.counts).sum() <= 1e-3 * ref.count, name


@pytest.mark.parametrize("histogram", [False, True], ids=["minmax", "histogram"])
def test_onnxruntime_engine_agrees_with_numpy_on_every_tensor(models, histogram):
    graph, runs = _both(models["plain"], histogram)
    (numpy_stats, numpy_name), (ort_stats, ort_name) = runs["numpy"], runs["onnxruntime"]
    assert (numpy_name, ort_name) == ("numpy", "onnxruntime")
    assert ort_stats.samples == numpy_stats.samples == SAMPLES
    _assert_agree(numpy_stats, ort_stats)
    # the explicit PAD before the stride-2 Conv: its extremes follow from its input's (minmax),
    # or onnxruntime computes it too (histograms)
    assert any(op.kind == "PAD" for op in graph.ops)
    plan, _ = plan_onnxruntime(graph, frozenset(numpy_stats.tensors), histogram, models["plain"])
    assert plan.hybrid is None
    assert (plan.equivalents, len(plan.derived)) == ((1, 0) if histogram else (0, 1))


def test_a_lowered_op_without_onnx_counterpart_is_computed_by_tflqs_kernels(models):
    graph, runs = _both(models["ln"], histogram=False)
    plan, reason = plan_onnxruntime(graph, frozenset(runs["numpy"][0].tensors), False, models["ln"])
    assert reason == "" and plan.hybrid is not None and plan.computed
    assert not plan.computed & set(plan.reduced)
    assert "computed by tflq's kernels" in plan.describe()
    assert runs["onnxruntime"][1] == "onnxruntime"
    _assert_agree(runs["numpy"][0], runs["onnxruntime"][0])


def test_file_calibrated_in_onnxruntime_is_as_close_to_the_onnx_model_as_numpys(models):
    """Both engines' int8 files in LiteRT against the float model in onnxruntime, worst sample:
    the grids differ by float rounding only, so the errors must too."""
    model = models["ln"]
    errors = {}
    for engine in ("numpy", "onnxruntime"):
        report = convert(ConvertConfig(model=model, mode="full", dtype="int8", calib=_samples(),
                                       calib_engine=engine))
        assert report.calibration["engine"] == engine
        errors[engine] = max(float(np.abs(run_litert(report.tflite, [s["x"]])[0] - run_onnxruntime(model, s)[0]).max())
                             for s in _samples(6))
    assert errors["onnxruntime"] <= 1.02 * errors["numpy"] + 1e-4, errors


def test_equalized_layers_are_computed_in_numpy_and_agree(models):
    model = models["plain"]
    graph, runs = _both(model, histogram=False, dtype="uint8", equalize=True, calib=_samples())
    graph2, report = prepare_graph(ConvertConfig(model=model, mode="full", dtype="uint8", equalize=True,
                                                 calib=_samples()))
    changed = engines.equalized_tensors(graph2, report.equalization)
    assert changed
    stats, name = _calibrate(graph2, _samples(), None, False, False, 1, None, "onnxruntime", model, None, changed)
    assert name == "onnxruntime"
    plan, _ = plan_onnxruntime(graph2, frozenset(stats.tensors), False, model, None, changed)
    assert changed <= plan.computed
    _assert_agree(runs["numpy"][0], stats)


def test_weights_in_external_data_calibrate_in_onnxruntime_as_the_same_model_inline(models, tmp_path):
    """torch.onnx.export writes its weights beside the model (model.onnx.data) by default: the
    weights are read in for onnxruntime as the loader reads them, and the file is the one the
    same model with its weights inline gives, as numpy's statistics say it should be."""
    inline = convert(ConvertConfig(model=models["plain"], output=str(tmp_path / "inline.tflite"), mode="full",
                                   dtype="int8", calib=_samples()))
    external = convert(ConvertConfig(model=models["external"], output=str(tmp_path / "external.tflite"),
                                     mode="full", dtype="int8", calib=_samples()))
    assert inline.calibration["engine"] == external.calibration["engine"] == "onnxruntime"
    assert (tmp_path / "inline.tflite").read_bytes() == (tmp_path / "external.tflite").read_bytes()
    graph, _ = prepare_graph(ConvertConfig(model=models["external"], mode="full"))
    runs = {engine: _calibrate(graph, _samples(), None, False, False, 1, None, engine, models["external"], None)
            for engine in ("numpy", "onnxruntime")}
    assert runs["onnxruntime"][1] == "onnxruntime"
    _assert_agree(runs["numpy"][0], runs["onnxruntime"][0])


def test_a_model_onnxruntime_refuses_falls_back_to_numpy(models, monkeypatch, caplog):
    def refuse(self, plan, histogram):
        raise engines.OnnxruntimeFailure("onnxruntime refused the model: nope")

    monkeypatch.setattr(OnnxruntimeRunner, "__init__", refuse)
    with caplog.at_level(logging.INFO, logger="tflq"):
        stats, name = _calibrate(*prepare_graph(ConvertConfig(model=models["plain"], mode="full"))[:1],
                                 _samples(), None, False, False, 1, None, "auto", models["plain"], None)
    assert name == "numpy" and stats.samples == SAMPLES
    assert "calibration engine: numpy (onnxruntime refused the model: nope)" in caplog.text


def test_numpy_engine_when_asked_and_when_onnxruntime_is_missing(models, monkeypatch):
    model = models["plain"]
    config = dict(model=model, mode="full", dtype="int8", calib=_samples())
    assert convert(ConvertConfig(**config, calib_engine="numpy")).calibration["engine"] == "numpy"
    monkeypatch.setattr(engines, "onnxruntime_available", lambda: False)
    assert convert(ConvertConfig(**config)).calibration["engine"] == "numpy"
    with pytest.raises(InvalidConfigError, match="--calib-engine onnxruntime needs onnxruntime"):
        convert(ConvertConfig(**config, calib_engine="onnxruntime"))


@pytest.mark.parametrize("value", ["torch", None, 3])
def test_bad_engine_is_refused_from_python(models, value):
    with pytest.raises(InvalidConfigError, match="calib_engine must be one of"):
        ConvertConfig(model=models["plain"], mode="full", calib=_samples(), calib_engine=value)


def test_bad_engine_is_a_usage_error(models, tmp_path):
    np.save(tmp_path / "c.npy", np.concatenate([s["x"] for s in _samples(2)]))
    for command in (["convert", models["plain"], "-o", str(tmp_path / "m.tflite"), "--mode", "full"],
                    ["calibrate", models["plain"], "--save-stats", str(tmp_path / "s.npz")]):
        result = CliRunner().invoke(main, command + ["--calib", str(tmp_path / "c.npy"),
                                                     "--calib-engine", "tensorflow"])
        assert result.exit_code == 2 and "--calib-engine" in result.output
        assert not (tmp_path / "m.tflite").exists() and not (tmp_path / "s.npz").exists()


@pytest.mark.parametrize("engine", ["numpy", "onnxruntime"])
def test_every_number_of_jobs_writes_the_same_file_in_each_engine(models, engine):
    config = dict(model=models["ln"], mode="full", dtype="int8", calib=_samples(), calib_engine=engine,
                  calib_method="percentile")
    files = {jobs: convert(ConvertConfig(**config, jobs=jobs)).tflite for jobs in (1, 2)}
    assert files[1] == files[2]
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("bad,what", [(np.inf, "Inf"), (np.nan, "NaN")])
@pytest.mark.parametrize("engine", ["numpy", "onnxruntime"])
@pytest.mark.parametrize("jobs", [1, 3])
def test_a_non_finite_tensor_is_named_alike_by_both_engines(models, engine, bad, what, jobs):
    """The first sample holding it is named, however many threads or processes run the shards
    (a later one may fail first), and none of them is left running."""
    graph, _ = prepare_graph(ConvertConfig(model=models["plain"], mode="full"))
    samples = _samples()
    samples[5]["x"][0, 1, 2, 3] = bad
    samples[9]["x"][0, 0, 1, 1] = bad
    threads = threading.active_count()
    with pytest.raises(CalibrationError, match=rf"calibration sample 5: tensor 'x' \(graph input\) holds {what}"):
        calibrate(graph, samples, show_progress=False, histogram=False, jobs=jobs, engine=engine,
                  model=models["plain"])
    assert not multiprocessing.active_children() and threading.active_count() == threads


def _blocked_model(path) -> str:
    """Channel counts onnxruntime keeps whole in its blocked NCHWc layout (16, 32, 48: multiples
    of its block of 8 or 16) and padded up to the block (24; 20, not even a multiple of 8),
    depthwise convolutions and residual Adds (Conv+Add, which onnxruntime fuses when the Conv's
    output has no other use). The padded tensors hold values of one sign only, so that a zero of
    the padding would change their extremes."""
    rng = np.random.default_rng(11)
    inits = []

    def conv(name, source, out, cin, k=1, group=1, stride=1, scale=0.15, bias=0.0):
        inits.extend([numpy_helper.from_array(rng.normal(0, scale, (out, cin // group, k, k)).astype(np.float32),
                                              f"{name}.w"),
                      numpy_helper.from_array(rng.normal(bias, 0.2, out).astype(np.float32), f"{name}.b")])
        return helper.make_node("Conv", [source, f"{name}.w", f"{name}.b"], [name], group=group,
                                pads=[k // 2] * 4, strides=[stride, stride])

    inits += [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi"),
              numpy_helper.from_array(rng.normal(0, 0.3, (5, 20)).astype(np.float32), "fc")]
    nodes = [conv("c1", "x", 32, 3, k=3), helper.make_node("Relu", ["c1"], ["r1"]),
             conv("d1", "r1", 32, 32, k=3, group=32), helper.make_node("Clip", ["d1", "lo", "hi"], ["r2"]),
             conv("p1", "r2", 24, 32, scale=0.02, bias=8.0), conv("c2", "p1", 24, 24, k=3), helper.make_node("Add", ["p1", "c2"], ["a1"]),
             conv("e1", "a1", 48, 24), helper.make_node("Relu", ["e1"], ["r3"]),
             conv("d2", "r3", 48, 48, k=3, group=48, stride=2), helper.make_node("Relu", ["d2"], ["r4"]),
             conv("c3", "r4", 48, 48), helper.make_node("Add", ["r4", "c3"], ["a2"]),
             conv("c4", "a2", 16, 48), conv("c5", "c4", 16, 16, k=3), helper.make_node("Add", ["c4", "c5"], ["a3"]),
             conv("o", "a3", 20, 16, scale=0.01, bias=-8.0), helper.make_node("GlobalAveragePool", ["o"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    from tests.conftest import save_graph

    return save_graph(path, nodes, {"x": [1, 3, 16, 16]}, "y", inits)


def _plan(model, histogram=False):
    graph, _ = prepare_graph(ConvertConfig(model=model, mode="full"))
    tensors = frozenset(n for n, t in graph.tensors.items() if not t.is_constant and t.dtype.is_float)
    return plan_onnxruntime(graph, tensors, histogram, model)[0]


def test_reductions_on_blocked_tensors_give_onnxruntimes_and_numpys_extremes(tmp_path):
    """The two-step session (reductions reading onnxruntime's blocked tensors, run early) hands
    out bit for bit what a session of the planned model does, and agrees with numpy."""
    import onnxruntime

    model = _blocked_model(tmp_path / "blocked.onnx")
    _, runs = _both(model, histogram=False)
    assert runs["onnxruntime"][1] == "onnxruntime"
    _assert_agree(runs["numpy"][0], runs["onnxruntime"][0])

    plan = _plan(model)
    optimized = engines.optimized_in_memory(plan.model)
    if not hasattr(os, "memfd_create"):
        assert optimized is None
        return
    edited = onnx.load_from_string(optimized[0])
    from tflq.frontend.onnxruntime_model import NCHWC_DOMAIN

    if any(node.domain == NCHWC_DOMAIN for node in edited.graph.node):  # onnxruntime blocks on this CPU
        assert optimized[1] > 0
        for node in edited.graph.node:  # the copies left for reductions: of padded tensors only
            if node.op_type == "ReorderOutput" and any(
                    user.op_type.startswith("Reduce") for user in edited.graph.node if node.output[0] in user.input):
                assert next(a.i for a in node.attribute if a.name == "channels") % 16, node
    reference = onnxruntime.InferenceSession(plan.model, engines.session_options(), providers=["CPUExecutionProvider"])
    session = engines.calibration_session(plan.model)
    for sample in _samples(4):
        expected, got = reference.run(None, sample), session.run(None, sample)
        assert len(expected) == len(got) == len(plan.runs) + len(plan.fetched)
        for a, b in zip(expected, got):
            assert np.array_equal(a, b)


def test_the_edit_reads_only_unpadded_blocked_tensors_and_runs_reductions_early():
    """reductions_in_place on a hand-made graph of onnxruntime's blocked ops: a tensor stored
    with its 32 channels is reduced where it is made (its copy kept for another consumer), one
    of 24 channels stored as 32 keeps its copy; each reduction follows its tensor's producer."""
    from tflq.frontend.onnxruntime_model import NCHWC_DOMAIN, reduction_names, reductions_in_place

    (min0, max0), (min1, max1) = reduction_names(2)
    w = numpy_helper.from_array(np.zeros((32, 32, 1, 1), np.float32), "w")
    nodes = [helper.make_node("ReorderInput", ["x"], ["xb"], domain=NCHWC_DOMAIN),
             helper.make_node("Conv", ["xb", "w"], ["t0"], domain=NCHWC_DOMAIN),
             helper.make_node("Conv", ["t0", "w"], ["t1"], domain=NCHWC_DOMAIN),
             helper.make_node("Add", ["t1", "t0"], ["t2"]),
             helper.make_node("ReorderOutput", ["t1"], ["u1"], domain=NCHWC_DOMAIN, channels=24),
             helper.make_node("ReorderOutput", ["t2"], ["u2"], domain=NCHWC_DOMAIN, channels=32),
             helper.make_node("Flatten", ["u2"], ["y"]),
             helper.make_node("ReduceMin", ["u1"], [min0], keepdims=0),
             helper.make_node("ReduceMax", ["u1"], [max0], keepdims=0),
             helper.make_node("ReduceMin", ["u2"], [min1], keepdims=0),
             helper.make_node("ReduceMax", ["u2"], [max1], keepdims=0)]
    outputs = [helper.make_tensor_value_info(n, 1, None) for n in ("y", min0, max0, min1, max1)]
    model = helper.make_model(helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 32, 4, 4])],
                                                outputs, [w]))
    assert reductions_in_place(model) == 2
    order = [(n.op_type, list(n.input)) for n in model.graph.node]
    assert order == [("ReorderInput", ["x"]), ("Conv", ["xb", "w"]), ("Conv", ["t0", "w"]),
                     ("ReorderOutput", ["t1"]), ("ReduceMin", ["u1"]), ("ReduceMax", ["u1"]),
                     ("Add", ["t1", "t0"]), ("ReduceMin", ["t2"]), ("ReduceMax", ["t2"]),
                     ("ReorderOutput", ["t2"]), ("Flatten", ["u2"])]


def test_without_the_optimized_graph_the_session_runs_the_planned_model(tmp_path, monkeypatch):
    """No in-memory file (not Linux), or onnxruntime refusing its optimized graph: the session
    of the planned model, with the same extremes."""
    import onnxruntime

    plan = _plan(_blocked_model(tmp_path / "blocked.onnx"))
    reference = onnxruntime.InferenceSession(plan.model, engines.session_options(), providers=["CPUExecutionProvider"])
    expected = reference.run(None, _samples(1)[0])
    monkeypatch.delattr(os, "memfd_create", raising=False)
    assert engines.optimized_in_memory(plan.model) is None
    sessions = [engines.calibration_session(plan.model)]
    monkeypatch.setattr(engines, "optimized_in_memory", lambda model: (b"not a model", 0))
    sessions.append(engines.calibration_session(plan.model))
    for session in sessions:
        assert all(np.array_equal(a, b) for a, b in zip(expected, session.run(None, _samples(1)[0])))


def test_a_runner_called_shard_by_shard_gives_the_statistics_of_one_call(models):
    """run() writes only the extremes that moved since its last call into the same statistics;
    shard by shard, with a shard of another runner merged in between, or into new statistics,
    the result is that of one call over all samples."""
    from tflq.calibration.statistics import CalibrationStats

    plan = _plan(models["plain"])
    samples = _samples()
    whole = OnnxruntimeRunner(plan, False).run(samples)
    runner, other = OnnxruntimeRunner(plan, False), OnnxruntimeRunner(plan, False)
    stats = CalibrationStats(histogram=False)
    runner.run(samples[:4], 0, stats)
    stats.merge(other.run(samples[8:], 8))
    runner.run(samples[4:8], 4, stats)
    assert stats == whole
    assert runner.run(samples[:4]) == OnnxruntimeRunner(plan, False).run(samples[:4])


def test_extremes_come_out_in_one_output_per_run_of_rank_and_type(tmp_path):
    """finish() concatenates the extremes of each run of tensors of one rank and type: a scalar,
    matrices and 4-D tensors give onnxruntime's extremes of each, against numpy's."""
    import onnxruntime

    from tflq.frontend.onnxruntime_model import read_calibration_model

    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["b"]),
             helper.make_node("Flatten", ["a"], ["f"]), helper.make_node("Flatten", ["b"], ["g"]),
             helper.make_node("ReduceMean", ["x"], ["s"], keepdims=0),
             helper.make_node("Add", ["f", "s"], ["y"])]
    from tests.conftest import save_graph

    path = save_graph(tmp_path / "ranks.onnx", nodes, {"x": [1, 2, 3, 3]}, "y")
    reduced = ["s", "f", "g", "a", "b"]  # as plan_onnxruntime orders them: by rank
    ranks = {"s": 0, "f": 2, "g": 2, "a": 4, "b": 4}
    model, runs = read_calibration_model(path, None, 1 << 30)[0].finish(
        [], reduced, ["y"], dict.fromkeys(reduced + ["y"], np.float32), ranks)
    assert runs == (1, 2, 2)
    session = onnxruntime.InferenceSession(model, engines.session_options(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).normal(0, 1, (1, 2, 3, 3)).astype(np.float32)
    *extremes, y = session.run(None, {"x": x})
    got = np.concatenate([v.reshape(2, -1).T for v in extremes])
    values = {"s": x.mean(), "f": np.maximum(x, 0), "g": -x, "a": np.maximum(x, 0), "b": -x}
    expected = np.array([[np.min(values[n]), np.max(values[n])] for n in reduced])
    assert np.allclose(got, expected, rtol=1e-6, atol=1e-7) and y.shape == (1, 18)


def test_a_process_without_onnx_runs_the_planned_model_and_does_not_import_onnx(models):
    """Calibration workers leave onnx out of their preload (it takes ~1 s to import): their
    session runs the model as planned, and onnx stays unimported."""
    import pickle
    import subprocess
    import sys

    plan = _plan(models["plain"])
    script = ("import pickle, sys\n"
              "from tflq.calibration import engines\n"
              "model = pickle.loads(sys.stdin.buffer.read())\n"
              "print(engines.optimized_in_memory(model), len(engines.calibration_session(model).get_outputs()),\n"
              "      'onnx' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(plan.model), capture_output=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == ["None", str(len(plan.runs) + len(plan.fetched)), "False"]


def _session_plans(monkeypatch) -> list:
    """The plans calibration's onnxruntime runners are made of (made as usual)."""
    plans = []
    init = OnnxruntimeRunner.__init__

    def spy(self, plan, histogram):
        plans.append(plan)
        init(self, plan, histogram)

    monkeypatch.setattr(OnnxruntimeRunner, "__init__", spy)
    return plans


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="the optimized graph is had in memory on Linux")
@pytest.mark.parametrize("jobs", [2, 3])
def test_threads_share_onnxruntimes_optimized_graph_and_agree(models, monkeypatch, jobs):
    """--jobs N runs threads of this process on its one session of onnxruntime's optimized graph:
    no process is started, one session is made, and the statistics are those of one thread."""
    graph = prepare_graph(ConvertConfig(model=models["plain"], mode="full"))[0]
    alone, _ = _calibrate(graph, _samples(), None, False, False, 1, None, "onnxruntime", models["plain"], None)
    plans, siblings = _session_plans(monkeypatch), []
    sibling = OnnxruntimeRunner.sibling
    monkeypatch.setattr(OnnxruntimeRunner, "sibling", lambda self: siblings.append(1) or sibling(self))
    threads = threading.active_count()
    stats, name = _calibrate(graph, _samples(), None, False, False, jobs, None, "onnxruntime", models["plain"], None)
    assert name == "onnxruntime" and len(plans) == 1 and plans[0].optimized
    assert 1 < len(siblings) <= jobs  # (a thread given no shard makes none)
    assert stats.samples == SAMPLES
    assert {n: (t.minimum, t.maximum) for n, t in stats.tensors.items()} == \
        {n: (t.minimum, t.maximum) for n, t in alone.tensors.items()}
    assert not multiprocessing.active_children() and threading.active_count() == threads


def test_an_optimized_graph_onnxruntime_refuses_falls_back_to_the_planned_model(models, monkeypatch):
    session = engines.calibration_session

    def refuse_optimized(model, optimized=False):
        if optimized:
            raise RuntimeError("no")
        return session(model)

    monkeypatch.setattr(engines, "calibration_session", refuse_optimized)
    plans = _session_plans(monkeypatch)
    graph = prepare_graph(ConvertConfig(model=models["plain"], mode="full"))[0]
    stats, name = _calibrate(graph, _samples(), None, False, False, 2, None, "onnxruntime", models["plain"], None)
    assert name == "onnxruntime" and stats.samples == SAMPLES
    assert [plan.optimized for plan in plans] == [True, False]
    assert not multiprocessing.active_children()


def test_a_model_serialized_with_its_source_initializers_parses_as_the_model_and_runs_alike(models):
    """serialize_keeping_initializers: the bytes parse (onnx) as the edited model, message for
    message (the added initializers first), and onnxruntime runs them as it runs the model
    serialized the usual way."""
    from tflq.frontend.onnxruntime_model import read_calibration_model, serialize_keeping_initializers

    source = open(models["ln"], "rb").read()
    edited = onnx.load_from_string(source)
    # the kind of edit calibration makes: an added node and initializer, a new output
    edited.graph.initializer.append(numpy_helper.from_array(np.float32([2.0]), "two"))
    edited.graph.node.append(helper.make_node("Mul", ["p", "two"], ["p2"]))
    edited.graph.output.append(helper.make_tensor_value_info("p2", 1, None))
    usual = edited.SerializeToString()
    expected = onnx.load_from_string(usual)
    spliced = serialize_keeping_initializers(edited, source)
    assert _by_name(onnx.load_from_string(spliced)) == _by_name(expected)
    assert len(spliced) < len(usual) + 16  # the initializers once, not twice
    x = _samples(1)[0]["x"]
    outputs = [run_onnxruntime_bytes(data, {"x": x}) for data in (usual, spliced)]
    assert all(np.array_equal(a, b) for a, b in zip(*outputs))

    # a calibration model's outputs go out the same way
    model, _ = read_calibration_model(models["plain"], None, 1 << 30)
    data, runs = model.finish([], ["c1", "a"], ["p"], {"c1": np.float32, "a": np.float32, "p": np.float32},
                              {"c1": 4, "a": 4})
    assert model.source is None and runs == (2,)
    from tflq.frontend.onnxruntime_model import CalibrationModel

    again = CalibrationModel(onnx.load(models["plain"]))  # parsed whole, serialized the usual way
    assert _by_name(onnx.load_from_string(data)) == _by_name(onnx.load_from_string(
        again.finish([], ["c1", "a"], ["p"], {"c1": np.float32, "a": np.float32, "p": np.float32},
                     {"c1": 4, "a": 4})[0]))


def _by_name(model: onnx.ModelProto):
    """The model without its initializers, and its initializers by name."""
    initializers = {init.name: init.SerializeToString() for init in model.graph.initializer}
    del model.graph.initializer[:]
    return model, initializers


def test_initializers_not_of_the_source_are_refused_by_the_splice(models):
    from tflq.frontend.onnxruntime_model import serialize_keeping_initializers

    source = open(models["plain"], "rb").read()
    other = onnx.load_from_string(source)
    del other.graph.initializer[0]
    with pytest.raises(ValueError):
        serialize_keeping_initializers(other, source)
    with pytest.raises(ValueError):
        serialize_keeping_initializers(onnx.load_from_string(source), source[:-3])


def run_onnxruntime_bytes(model: bytes, feeds: dict) -> list:
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _clamped_model(path) -> str:
    """Three large tensors clamped at 0 (32 x 32 x 32 values each): "zeros" (Conv+Relu, half of
    its values 0), "late" (Conv+Clip(0, 6) of a bias of +4: no 0 but on the large samples) and
    "never" (a bias of +40: no 0 in any sample); then a residual Add, GAP and Gemm."""
    rng = np.random.default_rng(21)
    inits = [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi"),
             numpy_helper.from_array(rng.normal(0, 0.3, (5, 32)).astype(np.float32), "fc")]

    def conv(name, source, cin, bias, scale=0.2):
        inits.extend([numpy_helper.from_array(rng.normal(0, scale, (32, cin, 3, 3)).astype(np.float32), f"{name}.w"),
                      numpy_helper.from_array(np.full(32, bias, np.float32), f"{name}.b")])
        return helper.make_node("Conv", [source, f"{name}.w", f"{name}.b"], [name + ".c"], pads=[1, 1, 1, 1])

    nodes = [conv("zeros", "x", 3, 0.0), helper.make_node("Relu", ["zeros.c"], ["zeros"]),
             conv("late", "zeros", 32, 4.0, scale=0.05), helper.make_node("Clip", ["late.c", "lo", "hi"], ["late"]),
             conv("never", "late", 32, 40.0, scale=0.01), helper.make_node("Relu", ["never.c"], ["never"]),
             helper.make_node("Add", ["late", "never"], ["a"]), helper.make_node("GlobalAveragePool", ["a"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    from tests.conftest import save_graph

    return save_graph(path, nodes, {"x": [1, 3, 32, 32]}, "y", inits)


def _clamped_samples() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(8)
    return [{"x": (rng.normal(0, 1, (1, 3, 32, 32)) * (40.0 if i == 3 else 1.0)).astype(np.float32)}
            for i in range(5)]


def test_minima_of_large_clamped_tensors_are_sampled_and_still_exact(tmp_path, caplog):
    """A minimum of a tensor clamped at 0 is taken over ~1000 of its values: exact once one is 0.
    Where sample 0's values hold no 0 ("late" sees its first 0 in sample 3, "never" none), those
    minima are planned whole and sample 0 runs again: every extreme is numpy's (and the largest
    values of the clamped tensors, never sampled, too)."""
    model = _clamped_model(tmp_path / "clamped.onnx")
    graph, _ = prepare_graph(ConvertConfig(model=model, mode="full"))
    tensors = frozenset(n for n, t in graph.tensors.items() if not t.is_constant and t.dtype.is_float)
    plan = plan_onnxruntime(graph, tensors, False, model)[0]
    assert plan.sampled == {"zeros", "late", "never"}
    whole = plan_onnxruntime(graph, tensors, False, model, whole_minima=frozenset({"late"}))[0]
    assert whole.sampled == {"zeros", "never"}

    samples = _clamped_samples()
    reference = _calibrate(graph, samples, tensors, False, False, 1, None, "numpy", model, None)[0]
    assert reference.tensors["zeros"].minimum == 0 and reference.tensors["late"].minimum == 0
    assert reference.tensors["never"].minimum > 30
    with caplog.at_level(logging.DEBUG, logger="tflq.calibration.run"):
        got, name = _calibrate(graph, samples, tensors, False, False, 1, None, "onnxruntime", model, None)
    assert name == "onnxruntime"
    assert "2 sampled minima not settled by sample 0" in caplog.text
    _assert_agree(reference, got)
    # bit for bit what onnxruntime gives with every minimum whole
    everything = plan_onnxruntime(graph, tensors, False, model, whole_minima=plan.sampled)[0]
    assert not everything.sampled
    exact = OnnxruntimeRunner(everything, False).run(samples)
    for name in tensors:
        assert (got.tensors[name].minimum, got.tensors[name].maximum) == \
            (exact.tensors[name].minimum, exact.tensors[name].maximum), name

    # on two threads, after planning again, the same
    assert OnnxruntimeRunner(everything, False).run(samples[:1] + samples).tensors["never"].minimum == \
        _calibrate(graph, samples[:1] + samples, tensors, False, False, 2, None, "onnxruntime", model,
                   None)[0].tensors["never"].minimum

    # recording only tensors whose samples hold a 0 in sample 0: nothing is planned again
    caplog.clear()
    some = frozenset(n for n in tensors if n not in ("late", "never"))
    with caplog.at_level(logging.DEBUG, logger="tflq.calibration.run"):
        got = _calibrate(graph, samples, some, False, False, 1, None, "onnxruntime", model, None)[0]
    assert "not settled" not in caplog.text and "1 minima sampled" in caplog.text
    assert got.tensors["zeros"].minimum == 0


@pytest.mark.parametrize("shape", [(1, 32, 112, 112), (1, 960, 7, 7), (1, 3, 224, 224), (1, 64, 4096),
                                   (2048, 64), (65536,), (1, 16, 8, 8, 8)])
def test_sampling_steps_pick_about_a_thousand_values_across_the_tensor(shape):
    steps = engines.sampling_steps(shape)
    axes = shape[len(shape) - len(steps):]
    picked = int(np.prod(shape[:len(shape) - len(steps)], dtype=np.int64)) * int(np.prod(
        [-(-n // s) for n, s in zip(axes, steps)]))
    assert all(s >= 1 for s in steps)
    assert min(np.prod(shape), 500) <= picked <= max(4 * engines.SAMPLED_VALUES, np.prod(shape[:-2] or (1,)))


def test_the_calibration_model_is_parsed_without_its_weights(models):
    """read_calibration_model parses no copy of the weights (the size of the model): its
    initializers keep their names, types, shapes and data location, not their values; the
    model it serializes has them all, byte for byte those of the file."""
    from tflq.frontend.onnxruntime_model import parse_without_weights, read_calibration_model

    path = models["plain"]
    whole = onnx.load(path)
    model, _ = read_calibration_model(path, None, 1 << 30)
    stripped = model.model.graph.initializer
    assert len(stripped) > 0
    assert [(t.name, list(t.dims), t.data_type) for t in stripped] == \
        [(t.name, list(t.dims), t.data_type) for t in whole.graph.initializer]
    assert all(not t.raw_data and not t.float_data and not t.int64_data for t in stripped)
    data, _ = model.finish([], [], ["p"], {"p": np.float32}, {})
    for init in onnx.load_from_string(data).graph.initializer:
        original = next(t for t in whole.graph.initializer if t.name == init.name)
        np.testing.assert_array_equal(numpy_helper.to_array(init), numpy_helper.to_array(original))

    # values in typed fields (not raw_data) go too; a subgraph's initializers and the external
    # data fields stay; bytes that are not a model are a ValueError
    w = helper.make_tensor("w", onnx.TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    ext = onnx.TensorProto(name="e", data_type=onnx.TensorProto.FLOAT, dims=[2],
                           data_location=onnx.TensorProto.EXTERNAL)
    ext.external_data.add(key="location", value="weights.bin")
    inner = helper.make_graph([helper.make_node("Identity", ["k"], ["o"])], "body", [],
                              [helper.make_tensor_value_info("o", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor("k", onnx.TensorProto.FLOAT, [1], [5.0])])
    graph = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=inner)],
                              "g", [helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])], [w, ext])
    parsed = parse_without_weights(helper.make_model(graph).SerializeToString())
    stub_w, stub_e = parsed.graph.initializer
    assert (stub_w.name, list(stub_w.dims), list(stub_w.float_data)) == ("w", [3], [])
    assert stub_e.data_location == onnx.TensorProto.EXTERNAL and stub_e.external_data[0].value == "weights.bin"
    body = parsed.graph.node[0].attribute[0].g
    assert list(body.initializer[0].float_data) == [5.0]
    with pytest.raises(ValueError):
        parse_without_weights(b"\xff\xff\xff")
